//! The connection pool (in use, waited for) and PostgreSQL lock waits, sampled every second.

use plotters::style::RGBColor;
use results::metric_names::{
    POOL_CONNECTIONS, POOL_STATE, POOL_STATE_IDLE, POOL_STATE_OPEN, POOL_WAITING,
};

use super::{chart, each_design, label, look, series_key, telemetry};
use crate::Run;
use crate::charts::{self, LineChart, Look, Scale, Series, XAxis};

pub(super) fn render(runs: &[Run]) -> String {
    let open_key = series_key(POOL_CONNECTIONS, POOL_STATE, POOL_STATE_OPEN);
    let idle_key = series_key(POOL_CONNECTIONS, POOL_STATE, POOL_STATE_IDLE);
    let mut series = Vec::new();
    for (i, run, name, _) in each_design(runs) {
        let Some(t) = telemetry(run, name) else {
            continue;
        };
        let get = |s: &results::TelemetrySample, k: &str| s.server.get(k).copied().unwrap_or(0.0);
        let in_use: Vec<(f64, f64)> = t
            .samples
            .iter()
            .map(|s| (s.t, get(s, &open_key) - get(s, &idle_key)))
            .collect();
        let waiting = t
            .samples
            .iter()
            .map(|s| (s.t, get(s, POOL_WAITING)))
            .collect();
        let locks = t
            .samples
            .iter()
            .map(|s| (s.t, s.postgres.locks_waiting as f64))
            .collect();
        series.push(Series {
            label: label(runs, i, name, "pool in use"),
            look: look(name, i),
            points: in_use,
        });
        series.push(Series {
            label: label(runs, i, name, "waiting for a connection"),
            look: Look {
                width: 1,
                ..look(name, i)
            },
            points: waiting,
        });
        series.push(Series {
            label: label(runs, i, name, "PostgreSQL lock waits"),
            look: Look {
                color: RGBColor(90, 90, 90),
                width: 1,
                ..look(name, i)
            },
            points: locks,
        });
    }
    let svg = if series.is_empty() {
        charts::note_svg(
            "Connection pool and PostgreSQL waits",
            "no server telemetry in this run",
        )
    } else {
        charts::line_chart(&LineChart {
            title: "Pool connections in use, requests waiting for one, and lock waits".into(),
            x: XAxis::Seconds,
            y_label: "count".into(),
            y_scale: Scale::Linear,
            series,
            secondary: None,
        })
    };
    chart(
        svg,
        "Sampled every second from each server's /metrics and from pg_stat_activity and pg_locks. A pool pinned at its size with requests queueing behind it is the sync design's collapse; lock waits are sign-ups queueing on the shared per-day counter row.",
    )
}
