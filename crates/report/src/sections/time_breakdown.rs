//! Where a sign-up's time goes: the mean per phase, at the baseline and at the spike, from the
//! servers' phase histograms.

use results::metric_names::{
    PHASE, PHASE_DB, PHASE_POOL_ACQUIRE, PHASE_PROVIDER_PREFIX, PHASE_SECONDS,
};
use results::{DesignResults, DesignTelemetry, RunResults};
use signup_core::Channel;

use super::{chart, each_design, label, series_key, telemetry};
use crate::Run;
use crate::charts::{self, Bar};

/// The mean of a phase (ms) between two samples, from the histogram's sum and count.
fn phase_mean(t: &DesignTelemetry, phase: &str, from: f64, to: f64) -> Option<f64> {
    let at = |when: f64| {
        t.samples
            .iter()
            .rev()
            .find(|s| s.t <= when)
            .or(t.samples.first())
    };
    let (a, b) = (at(from)?, at(to)?);
    let sum = series_key(&format!("{PHASE_SECONDS}_sum"), PHASE, phase);
    let count = series_key(&format!("{PHASE_SECONDS}_count"), PHASE, phase);
    let d_sum = b.server.get(&sum)? - a.server.get(&sum).copied().unwrap_or(0.0);
    let d_count = b.server.get(&count)? - a.server.get(&count).copied().unwrap_or(0.0);
    (d_count > 0.0).then(|| d_sum / d_count * 1000.0)
}

/// The baseline (the first phase, at most ten seconds) and the ten seconds with the most offered load.
fn windows(r: &RunResults, d: &DesignResults) -> [(&'static str, f64, f64); 2] {
    let first_phase = r.scenario.definition["arrivals"]["phases"][0]["duration"]
        .as_str()
        .and_then(seconds);
    let baseline = first_phase.unwrap_or(10.0).min(10.0);
    let offered: Vec<u64> = d.timeline.iter().map(|s| s.offered).collect();
    let busiest = (0..offered.len().saturating_sub(9).max(1))
        .max_by_key(|i| offered.iter().skip(*i).take(10).sum::<u64>())
        .unwrap_or(0) as f64;
    [
        ("baseline", 0.0, baseline),
        ("spike", busiest, busiest + 10.0),
    ]
}

/// Seconds in a duration as the results' scenario definition holds it. The driver writes it with
/// `humantime_serde` (`3s`, `500ms`, `1m 30s`), so it is read back with the same crate.
fn seconds(text: &str) -> Option<f64> {
    humantime::parse_duration(text.trim())
        .ok()
        .map(|d| d.as_secs_f64())
}

/// The phases a design's sign-ups go through, in order, with how the chart names them.
fn phases(design: &str) -> Vec<(String, &'static str)> {
    let mut phases = vec![(PHASE_POOL_ACQUIRE.to_string(), "waiting for a connection")];
    if design == results::SYNC {
        for channel in Channel::ALL {
            let text = match channel {
                Channel::Email => "email provider",
                Channel::Sms => "SMS provider",
                Channel::Push => "push provider",
            };
            phases.push((format!("{PHASE_PROVIDER_PREFIX}{channel}"), text));
        }
    }
    phases.push((PHASE_DB.to_string(), "database work"));
    phases
}

pub(super) fn render(runs: &[Run]) -> String {
    let mut bars = Vec::new();
    for (i, run, name, d) in each_design(runs) {
        let Some(t) = telemetry(run, name) else {
            continue;
        };
        let phases = phases(name);
        for (window, from, to) in windows(&run.results, d) {
            let segments: Vec<(String, f64)> = phases
                .iter()
                .filter_map(|(p, text)| phase_mean(t, p, from, to).map(|v| (text.to_string(), v)))
                .collect();
            if !segments.is_empty() {
                bars.push(Bar {
                    label: format!("{} · {window}", label(runs, i, name, "")),
                    segments,
                });
            }
        }
    }
    let svg = if bars.is_empty() {
        charts::note_svg(
            "Where the time goes",
            "no server telemetry in this run (telemetry.json is missing or empty)",
        )
    } else {
        charts::stacked_bars(
            "Mean time per sign-up, by phase",
            "milliseconds per sign-up",
            &bars,
        )
    };
    chart(
        svg,
        "The mean time a sign-up spent in each phase, in the first ten seconds and in the busiest ten. The sync design waits for each provider in turn while holding its connection; at the spike most of its time is spent waiting for a connection another sign-up holds.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_durations_read_back_as_humantime_writes_them() {
        // What humantime_serde writes for 90 s, which the hand-rolled parser read as nothing.
        assert_eq!(seconds("1m 30s"), Some(90.0));
        assert_eq!(seconds("1s 500ms"), Some(1.5));
        assert_eq!(
            seconds(&humantime::format_duration(std::time::Duration::from_secs(125)).to_string()),
            Some(125.0)
        );
        // The forms the scenario files use.
        assert_eq!(seconds("3s"), Some(3.0));
        assert_eq!(seconds("250ms"), Some(0.25));
        assert_eq!(seconds("2m"), Some(120.0));
        assert_eq!(seconds(" 10s "), Some(10.0));
        assert_eq!(seconds("soon"), None);
        assert_eq!(seconds(""), None);
    }
}
