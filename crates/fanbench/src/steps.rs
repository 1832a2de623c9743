//! What `fanbench bench e2e` and `fanbench capacity` share: a load step is a child process
//! (`fanbench run`) on a constant Poisson load, its results and telemetry read back from its run
//! folder, and the async design's step judged end to end (delivery keeps up, the queue does not
//! grow).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result};
use results::{DesignResults, RunResults};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct E2eStep {
    pub offered_rps: u32,
    pub accepted_p99_ms: f64,
    pub status_503: u64,
    /// Delivery p99 per channel, from the sign-up's intended send time to the provider's receipt.
    pub delivery_p99_ms: BTreeMap<String, f64>,
    /// The queue's growth over the second half of the load, rows a second, all channels.
    pub backlog_slope_per_s: Option<f64>,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub undelivered: u64,
    /// Cores each process used on average over the step (CPU seconds ÷ window): who used the
    /// machine, and so what ran out first.
    pub cores: BTreeMap<String, f64>,
    pub trustworthy: bool,
    pub valid: bool,
    pub passed: bool,
    pub why: Vec<String>,
}

pub(crate) fn e2e_step(
    rate: u32,
    d: &DesignResults,
    slope: Option<f64>,
    p99_bound: f64,
    delivery_bound: f64,
) -> E2eStep {
    let status_503 = d.requests.status.get("503").copied().unwrap_or(0);
    let accepted_p99 = d
        .latency_ms_by_class
        .get("2xx")
        .map_or(f64::INFINITY, |c| c.latency.p99);
    let delivery: BTreeMap<String, f64> = d
        .delivery
        .iter()
        .map(|(c, v)| (c.clone(), v.p99_ms))
        .collect();
    let rec = d.reconciliation.clone().unwrap_or_default();
    let mut why = Vec::new();
    if !d.valid {
        why.push(format!("invalid: {}", d.invalid_reasons.join(", ")));
    }
    if !d.trustworthy {
        why.push("the driver could not keep to the schedule".into());
    }
    if status_503 > 0 {
        why.push(format!("{status_503} refused (503)"));
    }
    if accepted_p99 >= p99_bound {
        why.push(format!(
            "accepted p99 {accepted_p99:.1} ms ≥ {p99_bound} ms"
        ));
    }
    why.extend(delivery_reasons(rate, d, slope, delivery_bound));
    let cores = cores(d);
    E2eStep {
        cores,
        offered_rps: rate,
        accepted_p99_ms: accepted_p99,
        status_503,
        delivery_p99_ms: delivery,
        backlog_slope_per_s: slope,
        expected: rec.expected,
        delivered: rec.delivered,
        lost: rec.lost,
        undelivered: rec.undelivered,
        trustworthy: d.trustworthy,
        valid: d.valid,
        passed: why.is_empty(),
        why,
    }
}

/// Why the async design's delivery did not keep up at `rate` (empty when it did): a channel's
/// delivery p99 at or over `delivery_bound` ms, nothing delivered, anything lost, dead or left
/// queued after the drain, or the queue growing (`slope`, rows a second over the second half of
/// the load) by more than 1 % of the notifications arriving.
pub(crate) fn delivery_reasons(
    rate: u32,
    d: &DesignResults,
    slope: Option<f64>,
    delivery_bound: f64,
) -> Vec<String> {
    let rec = d.reconciliation.clone().unwrap_or_default();
    let mut why = Vec::new();
    for (channel, c) in &d.delivery {
        let p99 = c.p99_ms;
        if p99 >= delivery_bound {
            why.push(format!(
                "{channel} delivery p99 {p99:.0} ms ≥ {delivery_bound} ms"
            ));
        }
    }
    if d.delivery.is_empty() {
        why.push("nothing was delivered".into());
    }
    if rec.lost > 0 || rec.undelivered > 0 || rec.dead > 0 {
        why.push(format!(
            "{} lost, {} dead, {} still queued after the drain",
            rec.lost, rec.dead, rec.undelivered
        ));
    }
    // Growing by more than 1 % of the notifications arriving (about three per sign-up) is a
    // queue that falls behind, not noise.
    if let Some(s) = slope {
        let limit = (f64::from(rate) * 3.0 * 0.01).max(5.0);
        if s > limit {
            why.push(format!(
                "the queue grew by {s:.0} rows/s (limit {limit:.0})"
            ));
        }
    }
    why
}

/// Cores each process used on average over the run (CPU seconds ÷ window), by role.
pub(crate) fn cores(d: &DesignResults) -> BTreeMap<String, f64> {
    d.processes
        .iter()
        .flat_map(|p| {
            p.roles().into_iter().map(|(role, usage)| {
                (
                    role.to_string(),
                    usage.cpu_seconds.map(|c| c / p.window_s.max(f64::EPSILON)),
                )
            })
        })
        .filter_map(|(role, cores)| Some((role, cores?)))
        .collect()
}

/// Cores by process, as one line: `driver 0.15, postgres 0.81, …`.
pub(crate) fn cores_text(cores: &BTreeMap<String, f64>) -> String {
    cores
        .iter()
        .map(|(role, c)| format!("{role} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The least-squares slope of a queue design's whole backlog over the second half of the load:
/// its queue depth (all channels, the server's `fanbench_queue_depth` gauge sampled each second)
/// plus, for the broker design, the outbox rows not yet published (`fanbench_outbox_unpublished`).
/// Slopes over the same samples add up, so the sum's slope is the sum of the slopes.
pub(crate) fn backlog_slope(dir: &Path, design: &str, duration: Duration) -> Option<f64> {
    ["fanbench_queue_depth", "fanbench_outbox_unpublished"]
        .iter()
        .filter_map(|prefix| series_slope(dir, design, prefix, duration))
        .reduce(|a, b| a + b)
}

/// The least-squares slope of the sum of `design`'s server series whose names start with
/// `prefix`, sampled each second, over the second half of the load.
pub(crate) fn series_slope(
    dir: &Path,
    design: &str,
    prefix: &str,
    duration: Duration,
) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("telemetry.json")).ok()?;
    let telemetry: results::Telemetry = serde_json::from_str(&text).ok()?;
    let samples = &telemetry.designs.get(design)?.samples;
    let end = duration.as_secs_f64();
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= end / 2.0 && s.t <= end)
        .map(|s| {
            let depth = s
                .server
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v)
                .sum::<f64>();
            (s.t, depth)
        })
        .collect();
    slope(&points)
}

pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// A constant Poisson load of sign-ups with every channel, as the story's users sign up.
pub(crate) fn signup_scenario(
    name: &str,
    rate: u32,
    duration: Duration,
    drain: Option<&str>,
) -> String {
    let mut s = format!(
        "name = \"{name}-{rate}\"\n\
         description = \"fanbench bench: {rate} sign-ups/s, Poisson arrivals, every channel\"\n\
         [arrivals]\nprocess = \"poisson\"\nseed = 1\n\
         phases = [{{ kind = \"constant\", duration = \"{}\", rate = {rate} }}]\n\
         [payload]\nphone_share = 1.0\ndevice_share = 1.0\n\
         [driver]\nmax_latency = \"200ms\"\n",
        humantime::format_duration(duration)
    );
    if let Some(drain) = drain {
        // For both queue designs: a shared setting (like for like).
        s.push_str(&format!(
            "[servers.async]\ndrain_timeout = \"{drain}\"\n[servers.broker]\ndrain_timeout = \"{drain}\"\n"
        ));
    }
    s
}

pub(crate) fn fanbench() -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the fanbench executable")?;
    let mut cmd = Command::new(exe);
    cmd.stdout(std::process::Stdio::null());
    Ok(cmd)
}

/// Runs `cmd` to the end; returns how it ended and the user + system CPU time it and its own
/// children used, from the kernel's accounting of reaped children (`getrusage(RUSAGE_CHILDREN)`
/// before and after). Steps run one at a time, so nothing else is reaped in between.
pub(crate) async fn timed(mut cmd: Command) -> Result<(ExitStatus, Duration)> {
    tokio::task::spawn_blocking(move || {
        let before = children_cpu()?;
        let status = cmd.status().context("could not start a benchmark step")?;
        let after = children_cpu()?;
        Ok((status, after.saturating_sub(before)))
    })
    .await?
}

pub(crate) fn children_cpu() -> Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(tv(usage.user_time()) + tv(usage.system_time()))
}

pub(crate) fn read_design(dir: &Path, design: &str) -> Result<DesignResults> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let mut run: RunResults = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a results file", path.display()))?;
    run.designs
        .remove(design)
        .with_context(|| format!("{} has no {design} results", path.display()))
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("could not write {}", path.display()))?;
    eprintln!("fanbench: wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_queue_has_a_positive_slope() {
        let growing: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 100.0 * t as f64)).collect();
        assert!((slope(&growing).unwrap() - 100.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 7.0)).collect();
        assert_eq!(slope(&flat), Some(0.0));
        assert_eq!(slope(&[(0.0, 1.0)]), None);
    }
}
