//! p50 and p99 per second, against the offered rate.

use plotters::style::RGBColor;

use super::{chart, each_design, label, look};
use crate::charts::{self, LineChart, Look, Scale, Series, XAxis};
use crate::{Run, text};

pub(super) fn render(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, _, name, d) in each_design(runs) {
        let points = |f: fn(&results::Second) -> f64| -> Vec<(f64, f64)> {
            d.timeline
                .iter()
                .filter(|s| f(s) > 0.0)
                .map(|s| (f64::from(s.t), f(s)))
                .collect()
        };
        series.push(Series {
            label: label(runs, i, name, "p99"),
            look: look(name, i),
            points: points(|s| s.p99_ms),
        });
        let thin = Look {
            width: 1,
            ..look(name, i)
        };
        series.push(Series {
            label: label(runs, i, name, "p50"),
            look: thin,
            points: points(|s| s.p50_ms),
        });
    }
    let offered = runs
        .first()
        .and_then(|r| text::ordered(&r.results).first().map(|(_, d)| (*d).clone()))
        .map(|d| {
            d.timeline
                .iter()
                .map(|s| (f64::from(s.t), s.offered as f64))
                .collect()
        })
        .unwrap_or_default();
    let grey = Look {
        color: RGBColor(110, 110, 110),
        dashed: false,
        width: 1,
    };
    let svg = charts::line_chart(&LineChart {
        title: "p50 and p99 per second, with the offered rate".into(),
        x: XAxis::Seconds,
        y_label: "latency (ms, log)".into(),
        y_scale: Scale::Log,
        series,
        secondary: Some((
            "offered (sign-ups/s)".into(),
            vec![Series {
                label: "offered/s".into(),
                look: grey,
                points: offered,
            }],
        )),
    });
    chart(
        svg,
        "Latency of the requests scheduled in each second (left axis), against the sign-ups offered per second (grey, right axis).",
    )
}
