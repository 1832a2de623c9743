//! Each design's whole latency distribution, by percentile.

use super::{chart, each_design, label, look};
use crate::Run;
use crate::charts::{self, LineChart, Scale, Series, XAxis};

pub(super) fn render(runs: &[Run]) -> String {
    let series = each_design(runs)
        .map(|(i, _, name, d)| Series {
            label: label(runs, i, name, ""),
            look: look(name, i),
            points: d
                .latency_spectrum
                .iter()
                .map(|p| (charts::percentile_x(p.percentile), p.ms.max(0.001)))
                .collect(),
        })
        .collect();
    let svg = charts::line_chart(&LineChart {
        title: "Latency by percentile (from intended send time)".into(),
        x: XAxis::Percentile,
        y_label: "latency (ms, log)".into(),
        y_scale: Scale::Log,
        series,
        secondary: None,
    });
    chart(
        svg,
        "Each line is one design's whole latency distribution over all answers (accepted and refused alike), HdrHistogram style: the further right, the rarer the request. A flat line far above another is a design that is slow for everyone.",
    )
}
