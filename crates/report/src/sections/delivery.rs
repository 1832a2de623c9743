//! Delivery latency per channel, from reconciliation: sign-up to provider receipt.

use super::{chart, each_design, label};
use crate::charts::{self, LineChart, Scale, Series, XAxis};
use crate::{Run, escape};

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
    let explain = format!(
        "How long a user waited for each notification, from the moment the sign-up was meant to be sent to the provider's receipt, for the sign-ups that got in. The colour is the channel; {}.",
        line_styles(runs)
    );
    chart(svg, &escape(&explain))
}

/// How each design's lines are drawn on the per-channel charts, in words: "dashed lines are the
/// sync design, solid lines the async design".
fn line_styles(runs: &[Run]) -> String {
    let mut names: Vec<&str> = each_design(runs).map(|(_, _, n, _)| n.as_str()).collect();
    names.sort_by_key(|n| results::design_order(n));
    names.dedup();
    let words: Vec<String> = names
        .iter()
        .map(|name| {
            let look = charts::channel_look("email", name);
            let dash = if look.dashed { "dashed" } else { "solid" };
            let shade = if *name == results::BROKER {
                " and darker"
            } else {
                ""
            };
            format!("{dash}{shade} lines the {name} design")
        })
        .collect();
    words.join(", ").replacen(" lines", " lines are", 1)
}
