//! 503s and every other failure, per second.

use super::{chart, each_design, label, look};
use crate::Run;
use crate::charts::{self, LineChart, Look, Scale, Series, XAxis};

pub(super) fn render(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, _, name, d) in each_design(runs) {
        let points = |f: fn(&results::Second) -> u64| -> Vec<(f64, f64)> {
            d.timeline
                .iter()
                .map(|s| (f64::from(s.t), f(s) as f64))
                .collect()
        };
        series.push(Series {
            label: label(runs, i, name, "503/s"),
            look: look(name, i),
            points: points(|s| s.status_503),
        });
        let thin = Look {
            width: 1,
            ..look(name, i)
        };
        series.push(Series {
            label: label(runs, i, name, "other errors/s"),
            look: thin,
            points: points(|s| s.errors),
        });
    }
    let svg = charts::line_chart(&LineChart {
        title: "503s and other errors per second".into(),
        x: XAxis::Seconds,
        y_label: "answers per second".into(),
        y_scale: Scale::Linear,
        series,
        secondary: None,
    });
    chart(
        svg,
        "Refusals (503: no database connection within the acquire timeout) and every other failure, by the second they arrived. A 503 here is a user who never got in.",
    )
}
