//! Delivery latency per channel, from reconciliation: sign-up to provider receipt.

use super::{chart, each_design, label};
use crate::Run;
use crate::charts::{self, LineChart, Scale, Series, XAxis};

pub(super) fn render(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, _, name, d) in each_design(runs) {
        for (channel, c) in &d.delivery {
            if c.spectrum.is_empty() {
                continue;
            }
            series.push(Series {
                label: label(runs, i, name, channel),
                look: charts::channel_look(channel, name),
                points: c
                    .spectrum
                    .iter()
                    .map(|p| (charts::percentile_x(p.percentile), p.ms.max(0.001)))
                    .collect(),
            });
        }
    }
    let svg = if series.is_empty() {
        charts::note_svg(
            "Delivery latency per channel",
            "no reconciliation in this run (the target was not started by fanbench)",
        )
    } else {
        charts::line_chart(&LineChart {
            title: "Sign-up (intended send) to provider receipt, by percentile".into(),
            x: XAxis::Percentile,
            y_label: "delivery latency (ms, log)".into(),
            y_scale: Scale::Log,
            series,
            secondary: None,
        })
    };
    chart(
        svg,
        "How long a user waited for each notification, from the moment the sign-up was meant to be sent to the provider's receipt, for the sign-ups that got in. Dashed lines are the sync design, solid the async design.",
    )
}
