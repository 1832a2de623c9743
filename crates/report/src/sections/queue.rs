//! The async design's queue: depth and oldest-due age per channel.

use results::metric_names::{CHANNEL, QUEUE_DEPTH, QUEUE_OLDEST_DUE_SECONDS};

use super::{chart, each_design, label, series_key, telemetry};
use crate::Run;
use crate::charts::{self, LineChart, Look, Scale, Series, XAxis};

pub(super) fn render(runs: &[Run]) -> String {
    let mut series = Vec::new();
    let mut secondary = Vec::new();
    for (i, run, name, _) in each_design(runs) {
        let Some(t) = telemetry(run, name) else {
            continue;
        };
        if !t
            .samples
            .iter()
            .any(|s| s.server.keys().any(|k| k.starts_with(QUEUE_DEPTH)))
        {
            continue;
        }
        for channel in signup_core::Channel::ALL.map(signup_core::Channel::as_str) {
            let depth_key = series_key(QUEUE_DEPTH, CHANNEL, channel);
            let age_key = series_key(QUEUE_OLDEST_DUE_SECONDS, CHANNEL, channel);
            let depth = t
                .samples
                .iter()
                .map(|s| (s.t, s.server.get(&depth_key).copied().unwrap_or(0.0)))
                .collect();
            let age = t
                .samples
                .iter()
                .map(|s| (s.t, s.server.get(&age_key).copied().unwrap_or(0.0)))
                .collect();
            let look = charts::channel_look(channel, name);
            series.push(Series {
                label: label(runs, i, channel, "depth"),
                look,
                points: depth,
            });
            secondary.push(Series {
                label: label(runs, i, channel, "oldest due (s)"),
                look: Look { width: 1, ..look },
                points: age,
            });
        }
    }
    let svg = if series.is_empty() {
        charts::note_svg(
            "The async queue",
            "no async design with queue telemetry in this run",
        )
    } else {
        charts::line_chart(&LineChart {
            title: "Queue depth and oldest-due age per channel (async)".into(),
            x: XAxis::Seconds,
            y_label: "pending deliveries".into(),
            y_scale: Scale::Linear,
            series,
            secondary: Some(("oldest due (s)".into(), secondary)),
        })
    };
    chart(
        svg,
        "Pending deliveries per channel (left axis) and how long the oldest one has been due (right axis). A provider outage shows as one channel's backlog growing and draining while the others stay flat.",
    )
}
