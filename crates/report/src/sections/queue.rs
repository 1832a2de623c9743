//! The queues of the designs that have one (async's in PostgreSQL, and any other design that
//! exports the same queue metrics, such as broker): depth and oldest-due age per channel.

use results::metric_names::{CHANNEL, QUEUE_DEPTH, QUEUE_OLDEST_DUE_SECONDS};

use super::{chart, each_design, label, series_key, telemetry};
use crate::Run;
use crate::charts::{self, LineChart, Look, Scale, Series, XAxis};

pub(super) fn render(runs: &[Run]) -> String {
    let queued: Vec<_> = each_design(runs)
        .filter_map(|(i, run, name, _)| {
            let t = telemetry(run, name)?;
            t.samples
                .iter()
                .any(|s| s.server.keys().any(|k| k.starts_with(QUEUE_DEPTH)))
                .then_some((i, name, t))
        })
        .collect();
    let mut names: Vec<&str> = queued.iter().map(|(_, name, _)| name.as_str()).collect();
    names.sort_by_key(|n| results::design_order(n));
    names.dedup();
    // With one design's queue, the channel says which line is which; with more, the design too.
    let what = |name: &str, channel: &str| {
        if names.len() > 1 {
            format!("{name} {channel}")
        } else {
            channel.to_string()
        }
    };
    let mut series = Vec::new();
    let mut secondary = Vec::new();
    for (i, name, t) in queued.iter().copied() {
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
                label: label(runs, i, &what(name, channel), "depth"),
                look,
                points: depth,
            });
            secondary.push(Series {
                label: label(runs, i, &what(name, channel), "oldest due (s)"),
                look: Look { width: 1, ..look },
                points: age,
            });
        }
    }
    let svg = if series.is_empty() {
        charts::note_svg("The queues", "no design with queue telemetry in this run")
    } else {
        charts::line_chart(&LineChart {
            title: format!(
                "Queue depth and oldest-due age per channel ({})",
                names.join(", ")
            ),
            x: XAxis::Seconds,
            y_label: "pending deliveries".into(),
            y_scale: Scale::Linear,
            series,
            secondary: Some(("oldest due (s)".into(), secondary)),
        })
    };
    chart(
        svg,
        "Pending deliveries per channel (left axis) and how long the oldest one has been due (right axis). A provider outage shows as one channel's backlog growing and draining while the others stay flat. With several designs' queues, each design keeps its dash and the broker's lines are a darker shade.",
    )
}
