//! `fanbench plan`: the planning question asked of a capacity folder. "Our launch peaks at R
//! sign-ups a second for D: which design and settings carry it with the headroom, and for the
//! queue designs, how big does the backlog get and how long does it take to drain?" With
//! `--verify`, that spike is replayed once against each queue design that would queue it, and the
//! measured backlog and drain time are set beside the predicted ones.
//!
//! **The model.** The spike: R sign-ups a second for D, then the baseline B (0 unless
//! `--baseline-rate`) from then on. A design carries a rate when its measured limit is at least
//! that rate: the sync design's one limit, a queue design's ingest limit for taking the sign-ups
//! and its end-to-end limit C for delivering them as they come. With headroom h the rate to
//! carry is R × (1 + h). A queue design whose ingest carries R but whose end-to-end limit is below
//! R takes every sign-up and delivers at its drain rate C' meanwhile, so its backlog (sign-ups
//! not yet notified on the slowest channel) grows at R − C' for D:
//!
//!   backlog peak = (R − C') × D,   drain time = peak ÷ (C' − B)   (never, when B ≥ C').
//!
//! C' is the rate the slowest channel delivers at while it has a backlog. Every capacity step that
//! did not keep up with delivery measured it: after its load, its backlog fell at exactly that
//! rate, so C' is the median over those steps of the backlog's fall (a least-squares slope over
//! the telemetry's seconds from the peak until empty). Without their telemetry, the search's
//! bracket stands in: the last rate that kept up (C) is at or below C' and the first that did not
//! at or above it, so their midpoint. The "carries" verdict keeps to C itself, the rate known to
//! keep up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use results::capacity::{CapacityReport, DesignCapacity};
use serde::Serialize;

use crate::cli::PlanArgs;
use crate::steps::{fanbench, read_design, write_json};

/// A replay's drain time within this share of the prediction lands.
pub const TOLERANCE: f64 = 0.25;

/// The question.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ask {
    pub peak_rps: f64,
    pub headroom: f64,
    pub spike_duration_s: f64,
    pub baseline_rps: f64,
}

impl Ask {
    /// The rate a design must carry: the peak with the headroom on top.
    pub fn needed_rps(&self) -> f64 {
        self.peak_rps * (1.0 + self.headroom)
    }
}

/// What one design (or one value of a sweep) does with the spike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Carries the peak with the headroom, end to end.
    Carries,
    /// Carries the peak, end to end, but with less than the headroom.
    Thin,
    /// A queue design: takes every sign-up but delivers slower than the peak; the backlog drains
    /// after the spike.
    Queues,
    /// A queue design whose backlog never drains: the baseline is at or above its drain rate.
    NeverDrains,
    /// Cannot take the peak: sign-ups are refused or slow past the objective.
    Refuses,
    /// Its limit was not found (the search never failed) and what it found is below the need.
    Unknown,
}

impl Verdict {
    fn words(self) -> &'static str {
        match self {
            Verdict::Carries => "carries it with the headroom",
            Verdict::Thin => "carries the peak, short of the headroom",
            Verdict::Queues => "takes it, delivers late (a backlog)",
            Verdict::NeverDrains => "takes it, the backlog never drains",
            Verdict::Refuses => "does not carry the peak",
            Verdict::Unknown => "unknown: limit not found, below the need",
        }
    }
}

/// One row of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The capacity document's key: a design, or a sweep value (`async[concurrency=64]`).
    pub key: String,
    pub design: String,
    pub ingest_limit_rps: Option<u32>,
    /// Queue designs: the end-to-end limit (delivery keeping up).
    pub end_to_end_limit_rps: Option<u32>,
    /// Queue designs: the rate the backlog drains at (see the module's model).
    pub drain_rate_rps: Option<f64>,
    /// The drain rate was measured (the backlog's fall after the load of the overloaded steps),
    /// not taken from the search's bracket.
    pub drain_rate_measured: bool,
    pub verdict: Verdict,
    /// The limit that decides the verdict ÷ the peak − 1: the headroom the design has.
    pub headroom: Option<f64>,
    /// Sign-ups not yet notified on the slowest channel at the end of the spike.
    pub backlog_peak: Option<f64>,
    /// Seconds from the end of the spike until the backlog is gone.
    pub drain_s: Option<f64>,
}

/// A design's name from its capacity key (`async[concurrency=64]` → `async`).
fn design_of(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

fn has_queue(design: &str) -> bool {
    matches!(design, "async" | "broker")
}

/// The limit a plan can count on: the low end of its interval when the search repeated the
/// rates that decide it (every run there met the objective), else the search's own figure.
fn dependable(limit: Option<u32>, ci: Option<[Option<u32>; 2]>) -> Option<u32> {
    match ci {
        Some([Some(low), _]) => Some(low),
        _ => limit,
    }
}

/// The plan for one design's capacity; `measured_drain` is the rate its backlog fell at after the
/// load of its overloaded steps ([`drain_rate`]), when their telemetry could be read.
pub fn assess(key: &str, d: &DesignCapacity, ask: &Ask, measured_drain: Option<f64>) -> Entry {
    let design = design_of(key).to_string();
    let needed = ask.needed_rps();
    let peak = ask.peak_rps;
    let ingest = dependable(d.capacity_rps, d.capacity_ci);
    let ingest_f = ingest.map(f64::from);
    let found_ingest = d.first_fail_rps.is_some();
    let mut entry = Entry {
        key: key.to_string(),
        design: design.clone(),
        ingest_limit_rps: ingest,
        end_to_end_limit_rps: dependable(d.delivery_capacity_rps, d.delivery_capacity_ci),
        drain_rate_rps: None,
        drain_rate_measured: false,
        verdict: Verdict::Refuses,
        headroom: None,
        backlog_peak: None,
        drain_s: None,
    };
    let unknown_or_refuses = |limit: Option<f64>, found: bool| {
        if !found && limit.is_none_or(|l| l < needed) && limit.is_some() {
            Verdict::Unknown
        } else {
            Verdict::Refuses
        }
    };
    // The request path first: a design that cannot take the sign-ups refuses them.
    if ingest_f.is_none_or(|l| l < peak) {
        entry.verdict = unknown_or_refuses(ingest_f, found_ingest);
        entry.headroom = ingest_f.map(|l| l / peak - 1.0);
        return entry;
    }
    if !has_queue(&design) || d.delivery_stop.is_none() {
        let l = ingest_f.unwrap_or(0.0);
        entry.headroom = Some(l / peak - 1.0);
        entry.verdict = if l >= needed {
            Verdict::Carries
        } else if found_ingest {
            Verdict::Thin
        } else {
            Verdict::Unknown
        };
        return entry;
    }
    // A queue design: what carries the peak end to end is the delivery limit.
    let e2e = dependable(d.delivery_capacity_rps, d.delivery_capacity_ci).map(f64::from);
    let bracket = match (d.delivery_capacity_rps, d.delivery_first_fail_rps) {
        (Some(p), Some(f)) => Some((f64::from(p) + f64::from(f)) / 2.0),
        (Some(p), None) => Some(f64::from(p)),
        (None, Some(f)) => Some(f64::from(f) / 2.0),
        (None, None) => None,
    };
    let drain_rate = measured_drain.or(bracket);
    entry.drain_rate_measured = measured_drain.is_some();
    entry.drain_rate_rps = drain_rate;
    entry.headroom = e2e.map(|c| c / peak - 1.0);
    match (e2e, drain_rate) {
        (Some(c), _) if c >= needed => entry.verdict = Verdict::Carries,
        (Some(c), _) if c >= peak => {
            entry.verdict = if d.delivery_first_fail_rps.is_some() {
                Verdict::Thin
            } else {
                Verdict::Unknown
            }
        }
        (_, Some(drain)) if drain < peak => {
            let backlog = (peak - drain) * ask.spike_duration_s;
            entry.backlog_peak = Some(backlog);
            if drain > ask.baseline_rps {
                entry.verdict = Verdict::Queues;
                entry.drain_s = Some(backlog / (drain - ask.baseline_rps));
            } else {
                entry.verdict = Verdict::NeverDrains;
            }
        }
        // The drain rate (midpoint) is at or above the peak while the last rate known to keep
        // up is below it: the search did not resolve which.
        _ => entry.verdict = Verdict::Unknown,
    }
    entry
}

/// The plan: every design of the document, or those named. `steps` reads a step's telemetry
/// samples from its folder (`None` when it cannot).
pub fn plan(
    report: &CapacityReport,
    ask: &Ask,
    designs: &[String],
    steps: impl Fn(&str, &str) -> Option<Vec<results::TelemetrySample>>,
) -> Vec<Entry> {
    report
        .designs
        .iter()
        .filter(|(key, _)| designs.is_empty() || designs.iter().any(|d| d == design_of(key)))
        .map(|(key, d)| {
            let design = design_of(key);
            // Every step that fell behind on delivery drained a backlog after its load: the
            // rate it fell at is the drain rate itself. Only where the driver kept to its
            // schedule: a late driver was still sending after the schedule's end, so the fall it
            // shows then is delivery net of arrivals.
            let rates: Vec<f64> = if has_queue(design) {
                d.steps
                    .iter()
                    .filter(|s| s.delivery_keeps_up == Some(false) && s.trustworthy)
                    .filter_map(|s| drain_rate(&steps(&s.dir, design)?, report.step_duration_s))
                    .collect()
            } else {
                Vec::new()
            };
            assess(key, d, ask, median(rates))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The rate a step's backlog fell at once its load had ended (`load_end_s`, on the samples'
/// clock), sign-ups a second: minus the least-squares slope of the backlog ([`backlog`]) from
/// the end of the load over the seconds it was still above zero. Only then does nothing arrive,
/// so the fall is the drain itself; a fall during the load is delivery net of arrivals. `None`
/// with fewer than three such seconds (a step that hardly queued says nothing of its drain
/// rate) or a backlog that did not fall.
pub fn drain_rate(samples: &[results::TelemetrySample], load_end_s: f64) -> Option<f64> {
    let series = backlog(samples);
    let from = series.iter().position(|(t, _)| *t >= load_end_s)?;
    let falling: Vec<(f64, f64)> = series[from..]
        .iter()
        .take_while(|(_, b)| *b > 0.0)
        .copied()
        .collect();
    if falling.len() < 3 {
        return None;
    }
    let slope = crate::steps::slope(&falling)?;
    (slope < 0.0).then_some(-slope)
}

/// A step's telemetry, from the folder capacity.json names, or, when the folder has moved with
/// its capacity folder, from the same place under `capacity`.
fn step_samples(capacity: &Path, dir: &str, design: &str) -> Option<Vec<results::TelemetrySample>> {
    let given = PathBuf::from(dir);
    let parts: Vec<_> = given.components().collect();
    let tails = (2..=3).filter_map(|n| {
        let tail: PathBuf = parts.get(parts.len().checked_sub(n)?..)?.iter().collect();
        Some(capacity.join(tail))
    });
    std::iter::once(given.clone())
        .chain(tails)
        .find(|p| p.join("telemetry.json").exists())
        .and_then(|p| std::fs::read_to_string(p.join("telemetry.json")).ok())
        .and_then(|t| serde_json::from_str::<results::Telemetry>(&t).ok())
        .and_then(|mut t| t.designs.remove(design))
        .map(|t| t.samples)
}

/// The answer in a sentence.
pub fn answer(entries: &[Entry], ask: &Ask) -> String {
    let names = |v: Verdict| -> Vec<&str> {
        entries
            .iter()
            .filter(|e| e.verdict == v)
            .map(|e| e.key.as_str())
            .collect()
    };
    let carries = names(Verdict::Carries);
    if !carries.is_empty() {
        return format!(
            "{} carr{} {:.0} sign-ups/s with {:.0} % headroom end to end",
            carries.join(", "),
            if carries.len() == 1 { "ies" } else { "y" },
            ask.peak_rps,
            ask.headroom * 100.0
        );
    }
    let queues: Vec<String> = entries
        .iter()
        .filter(|e| e.verdict == Verdict::Queues)
        .map(|e| {
            format!(
                "{} (backlog {:.0}, drained {:.0} s after the spike)",
                e.key,
                e.backlog_peak.unwrap_or(0.0),
                e.drain_s.unwrap_or(0.0)
            )
        })
        .collect();
    if !queues.is_empty() {
        return format!(
            "nothing carries {:.0} sign-ups/s end to end with the headroom; {} {}",
            ask.peak_rps,
            queues.join(", "),
            if queues.len() == 1 {
                "takes every sign-up and catches up"
            } else {
                "take every sign-up and catch up"
            }
        );
    }
    let thin = names(Verdict::Thin);
    if !thin.is_empty() {
        return format!(
            "{} carr{} the peak, but with less than {:.0} % headroom",
            thin.join(", "),
            if thin.len() == 1 { "ies" } else { "y" },
            ask.headroom * 100.0
        );
    }
    format!(
        "no design measured here carries {:.0} sign-ups/s",
        ask.peak_rps
    )
}

fn opt_rate(r: Option<u32>) -> String {
    r.map_or("—".into(), |r| format!("{r}/s"))
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}{unit}"))
}

fn rows(entries: &[Entry]) -> Vec<[String; 7]> {
    entries
        .iter()
        .map(|e| {
            [
                e.key.clone(),
                opt_rate(e.ingest_limit_rps),
                match (e.end_to_end_limit_rps, e.drain_rate_rps) {
                    (c, Some(d)) if e.drain_rate_measured => {
                        format!("{} (drains {d:.1}/s, measured)", opt_rate(c))
                    }
                    (Some(c), Some(d)) if f64::from(c) != d => format!("{c}/s (drains {d:.0}/s)"),
                    (c, _) => opt_rate(c),
                },
                e.headroom
                    .map_or("—".into(), |h| format!("{:+.0} %", h * 100.0)),
                e.verdict.words().to_string(),
                opt(e.backlog_peak, ""),
                e.drain_s.map_or("—".into(), |s| format!("{s:.1} s")),
            ]
        })
        .collect()
}

const HEADER: [&str; 7] = [
    "design",
    "ingest limit",
    "end-to-end limit",
    "headroom",
    "verdict",
    "backlog peak",
    "drain",
];

fn intro(ask: &Ask, capacity: &Path) -> String {
    format!(
        "plan: {:.0} sign-ups/s for {}, then {:.0}/s; headroom {:.0} % (carry {:.0}/s); from {}",
        ask.peak_rps,
        humantime::format_duration(Duration::from_secs_f64(ask.spike_duration_s)),
        ask.baseline_rps,
        ask.headroom * 100.0,
        ask.needed_rps(),
        capacity.display()
    )
}

/// The table printed on the terminal.
pub fn table(entries: &[Entry], ask: &Ask, capacity: &Path) -> String {
    let rows = rows(entries);
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([HEADER[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = intro(ask, capacity) + "\n\n";
    out.push_str(&line(HEADER.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out.push_str(&format!("\n{}\n", answer(entries, ask)));
    out
}

/// One spike replayed, predicted against measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub key: String,
    pub predicted_backlog_peak: f64,
    /// The most sign-ups waiting on the slowest channel (plus, for the broker design, those not
    /// yet published) in any second of the replay's telemetry.
    pub measured_backlog_peak: Option<f64>,
    pub predicted_drain_s: f64,
    /// Seconds from the end of the spike until the backlog was gone (results.json's drain time
    /// when the spike ends the load; from the telemetry when a baseline follows it).
    pub measured_drain_s: Option<f64>,
    /// |measured − predicted| ÷ predicted drain time.
    pub drain_error: Option<f64>,
    pub within_tolerance: bool,
    /// Why the replay could not be judged, when it could not.
    pub why: Option<String>,
    /// What a reader should know of a replay that was judged.
    pub notes: Vec<String>,
    /// The replay's run folder.
    pub dir: String,
}

/// plan.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanDocument {
    pub capacity: String,
    #[serde(flatten)]
    pub ask: Ask,
    pub needed_rps: f64,
    pub model: String,
    pub entries: Vec<Entry>,
    pub answer: String,
    pub verifications: Vec<Verification>,
}

const MODEL: &str = "spike: the peak R for D, then the baseline B; a design carries a rate when its \
    measured limit is at least that rate (ingest, and end to end for a queue design); headroom h \
    asks for R × (1 + h); a queue design taking R but delivering at C' < R: backlog peak = \
    (R − C') × D sign-ups, drain time = backlog ÷ (C' − B); C' = the rate the backlog fell at \
    after the load in the steps that did not keep up (median), else the midpoint of the last rate \
    that kept up and the first that did not";

/// plan.md.
pub fn markdown(doc: &PlanDocument, capacity: &Path) -> String {
    let mut out = format!("# Capacity plan\n\n{}\n\n", intro(&doc.ask, capacity));
    out.push_str(&format!("| {} |\n", HEADER.join(" | ")));
    out.push_str(&format!("|{}\n", " --- |".repeat(HEADER.len())));
    for r in rows(&doc.entries) {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out.push_str(&format!("\n**{}.**\n\nModel: {}.\n", doc.answer, doc.model));
    if !doc.verifications.is_empty() {
        out.push_str(
            "\n## Replayed\n\n| design | backlog peak predicted | measured | drain predicted | measured | off by | verdict |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for v in &doc.verifications {
            out.push_str(&format!(
                "| {} | {:.0} | {} | {:.1} s | {} | {} | {} |\n",
                v.key,
                v.predicted_backlog_peak,
                opt(v.measured_backlog_peak, ""),
                v.predicted_drain_s,
                v.measured_drain_s
                    .map_or("—".into(), |s| format!("{s:.1} s")),
                v.drain_error
                    .map_or("—".into(), |e| format!("{:.0} %", e * 100.0)),
                verification_words(v)
            ));
        }
    }
    out
}

fn verification_words(v: &Verification) -> String {
    match (&v.why, v.within_tolerance) {
        (Some(why), _) => format!("OFF: {why}"),
        (None, true) => format!("within {:.0} %", TOLERANCE * 100.0),
        (None, false) => format!("OFF by more than {:.0} %", TOLERANCE * 100.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Replaying the spike

/// The replay missed its prediction: `fanbench plan --verify` exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{off} of {total} replays missed the predicted drain time by more than 25 %")]
pub struct OffPrediction {
    pub off: usize,
    pub total: usize,
}

/// The scenario the capacity search's steps for `key` were written from: a sweep value's own
/// (OUT/<setting>=<value>/scenario.toml), the run's with its `--set` overrides
/// (OUT/scenario-with-overrides.toml), or the file capacity.json names.
fn base_scenario(dir: &Path, report: &CapacityReport, key: &str) -> PathBuf {
    if let Some(inner) = key.split_once('[').and_then(|(_, r)| r.strip_suffix(']')) {
        return dir.join(inner).join("scenario.toml");
    }
    let overridden = dir.join("scenario-with-overrides.toml");
    if overridden.exists() {
        return overridden;
    }
    PathBuf::from(&report.scenario)
}

/// The replay's scenario: the base scenario's payload, providers and servers under the spike (a
/// Poisson phase at the peak, then the baseline for long enough to drain), its gates and capacity
/// table left out, and the design's drain timeout long enough for the predicted drain.
pub fn spike_scenario(
    base: &toml::Table,
    design: &str,
    ask: &Ask,
    predicted_drain_s: f64,
) -> Result<String> {
    let mut t = base.clone();
    t.remove("capacity");
    t.remove("gates");
    t.insert(
        "name".into(),
        toml::Value::String(format!("plan-spike-{design}")),
    );
    t.insert(
        "description".into(),
        toml::Value::String(format!(
            "fanbench plan --verify: {:.0} sign-ups/s for {:.0} s, then {:.0}/s",
            ask.peak_rps, ask.spike_duration_s, ask.baseline_rps
        )),
    );
    if let Some(driver) = t.get_mut("driver").and_then(toml::Value::as_table_mut) {
        // The whole spike is measured: a warm-up would leave its start out of the counts.
        driver.remove("warmup");
    }
    let secs = |s: f64| toml::Value::String(format!("{}ms", (s * 1000.0).round() as u64));
    let phase = |name: &str, length: f64, rate: f64| {
        let mut phase = toml::Table::new();
        phase.insert("kind".into(), "constant".into());
        phase.insert("name".into(), name.into());
        phase.insert("duration".into(), secs(length));
        phase.insert("rate".into(), toml::Value::Float(rate));
        toml::Value::Table(phase)
    };
    let mut phases = vec![phase("spike", ask.spike_duration_s, ask.peak_rps)];
    if ask.baseline_rps > 0.0 {
        // Long enough for the backlog to drain under the baseline, with room to be wrong.
        let after = (predicted_drain_s * 2.0).max(5.0) + 5.0;
        phases.push(phase("baseline", after, ask.baseline_rps));
    }
    let mut arrivals = toml::Table::new();
    arrivals.insert("process".into(), "poisson".into());
    arrivals.insert("seed".into(), toml::Value::Integer(1));
    arrivals.insert("phases".into(), toml::Value::Array(phases));
    t.insert("arrivals".into(), toml::Value::Table(arrivals));
    let servers = t
        .entry("servers")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| anyhow!("the scenario's `servers` is not a table"))?;
    // Three times the prediction and half a minute: a drain that takes longer is off anyway. It
    // is the harness's wait, shared by the designs with a queue (signup_core::shared), so each of
    // them gets it, and the scenario stays like for like.
    let timeout = predicted_drain_s * 3.0 + 30.0;
    for queued in ["async", "broker"] {
        servers
            .entry(queued)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("the scenario's `servers.{queued}` is not a table"))?
            .insert("drain_timeout".into(), secs(timeout));
    }
    toml::to_string(&t).context("could not write the spike's scenario")
}

/// The backlog each second: the slowest channel's queue (`fanbench_queue_depth{channel=…}`) plus
/// the outbox rows not yet published (`fanbench_outbox_unpublished`, the broker design's).
pub fn backlog(samples: &[results::TelemetrySample]) -> Vec<(f64, f64)> {
    samples
        .iter()
        .map(|s| {
            let mut channels: BTreeMap<&str, f64> = BTreeMap::new();
            let mut unpublished = 0.0;
            for (name, v) in &s.server {
                if name.starts_with("fanbench_queue_depth") {
                    *channels.entry(name.as_str()).or_default() += v;
                } else if name.starts_with("fanbench_outbox_unpublished") {
                    unpublished += v;
                }
            }
            let slowest = channels.values().copied().fold(0.0, f64::max);
            (s.t, slowest + unpublished)
        })
        .collect()
}

/// Seconds from `from` until the backlog first falls to `floor` or below; `None` when it never
/// does in the samples.
pub fn drained_after(backlog: &[(f64, f64)], from: f64, floor: f64) -> Option<f64> {
    backlog
        .iter()
        .find(|(t, b)| *t >= from && *b <= floor)
        .map(|(t, _)| t - from)
}

fn verify(
    dir: &Path,
    report: &CapacityReport,
    entry: &Entry,
    ask: &Ask,
    out: &Path,
    quiet: bool,
) -> Result<Verification> {
    let (Some(predicted_backlog), Some(predicted_drain)) = (entry.backlog_peak, entry.drain_s)
    else {
        bail!("{} has no backlog to replay", entry.key);
    };
    let base_path = base_scenario(dir, report, &entry.key);
    let text = std::fs::read_to_string(&base_path).with_context(|| {
        format!(
            "could not read {}, the scenario {}'s steps ran",
            base_path.display(),
            entry.key
        )
    })?;
    let base: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", base_path.display()))?;
    let slug: String = entry
        .key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let slug = slug.trim_end_matches('-');
    let scenario = out.join(format!("spike-{slug}.toml"));
    std::fs::write(
        &scenario,
        spike_scenario(&base, &entry.design, ask, predicted_drain)?,
    )
    .with_context(|| format!("could not write {}", scenario.display()))?;
    let run_dir = out.join(format!("spike-{slug}"));
    if !quiet {
        eprintln!(
            "plan: replaying the spike against {} ({}) …",
            entry.key,
            run_dir.display()
        );
    }
    let mut cmd = fanbench()?;
    cmd.args(["run", "--quiet", "--design", &entry.design])
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(&run_dir);
    let status = cmd.status().context("could not start the spike's replay")?;
    let d = read_design(&run_dir, &entry.design)
        .with_context(|| format!("the replay ({status}) left no results"))?;
    let telemetry: Option<results::Telemetry> =
        std::fs::read_to_string(run_dir.join("telemetry.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let series = telemetry
        .as_ref()
        .and_then(|t| t.designs.get(&entry.design))
        .map(|t| backlog(&t.samples))
        .unwrap_or_default();
    let measured_backlog = series.iter().map(|p| p.1).reduce(f64::max);
    let mut why = None;
    let measured_drain = if ask.baseline_rps > 0.0 {
        // Under a baseline the queue never empties: drained is back to a twentieth of the peak.
        let floor = measured_backlog.unwrap_or(0.0) * 0.05;
        let drained = drained_after(&series, ask.spike_duration_s, floor);
        if drained.is_none() {
            why = Some("the backlog did not come back down during the replay".to_string());
        }
        drained
    } else {
        match &d.drain {
            Some(drain) if drain.drained => Some(drain.seconds),
            Some(drain) => {
                why = Some(format!("not drained after {:.0} s", drain.seconds));
                None
            }
            None => {
                why = Some("the run measured no drain".into());
                None
            }
        }
    };
    // What the drain depends on is that the whole spike arrived: a driver sending some sign-ups
    // tens of milliseconds late (untrustworthy for latency) still built the same backlog.
    let mut notes = Vec::new();
    if !d.valid {
        why = Some(format!("invalid replay: {}", d.invalid_reasons.join(", ")));
    } else if d.requests.sent < d.requests.intended {
        why = Some(format!(
            "the driver sent {} of the spike's {} sign-ups",
            d.requests.sent, d.requests.intended
        ));
    } else if !d.trustworthy {
        notes.push(format!(
            "the driver sent late (send lag p99 {:.1} ms) but sent the whole spike",
            d.send_lag_ms.p99
        ));
    }
    let drain_error = measured_drain.map(|m| (m - predicted_drain).abs() / predicted_drain);
    let within = why.is_none() && drain_error.is_some_and(|e| e <= TOLERANCE);
    Ok(Verification {
        key: entry.key.clone(),
        predicted_backlog_peak: predicted_backlog,
        measured_backlog_peak: measured_backlog,
        predicted_drain_s: predicted_drain,
        measured_drain_s: measured_drain,
        drain_error,
        within_tolerance: within,
        why,
        notes,
        dir: run_dir.display().to_string(),
    })
}

pub async fn run(args: PlanArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: PlanArgs) -> Result<()> {
    if !(args.headroom >= 0.0 && args.headroom.is_finite()) {
        bail!("--headroom must be 0 or more (0.3 is 30 %)");
    }
    let spike = Duration::from(args.spike_duration);
    if spike.is_zero() {
        bail!("--spike-duration must be above zero");
    }
    let ask = Ask {
        peak_rps: f64::from(args.peak),
        headroom: args.headroom,
        spike_duration_s: spike.as_secs_f64(),
        baseline_rps: f64::from(args.baseline_rate),
    };
    let report = report::capacity::load(&args.capacity).with_context(|| {
        format!(
            "could not read {}",
            args.capacity.join(report::capacity::FILE).display()
        )
    })?;
    let designs: Vec<String> = args.designs.iter().map(|d| d.name().to_string()).collect();
    let entries = plan(&report, &ask, &designs, |dir, design| {
        step_samples(&args.capacity, dir, design)
    });
    if entries.is_empty() {
        bail!(
            "{} holds none of the designs asked for ({} searched)",
            args.capacity.display(),
            report
                .designs
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.capacity.join("plan"));
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    print!("{}", table(&entries, &ask, &args.capacity));

    let mut verifications = Vec::new();
    if args.verify {
        let queued: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.verdict == Verdict::Queues)
            .collect();
        if queued.is_empty() {
            println!(
                "\nverify: nothing to replay: no queue design takes this spike into a backlog"
            );
        }
        for entry in queued {
            let v = verify(&args.capacity, &report, entry, &ask, &out, args.quiet)?;
            println!(
                "\nverify {}: backlog peak {:.0} predicted, {} measured; drain {:.1} s predicted, {} measured: {}",
                v.key,
                v.predicted_backlog_peak,
                opt(v.measured_backlog_peak, ""),
                v.predicted_drain_s,
                v.measured_drain_s
                    .map_or("—".into(), |s| format!("{s:.1} s")),
                verification_words(&v)
            );
            for note in &v.notes {
                println!("  note: {note}");
            }
            verifications.push(v);
        }
    }
    let doc = PlanDocument {
        capacity: args.capacity.display().to_string(),
        ask,
        needed_rps: ask.needed_rps(),
        model: MODEL.to_string(),
        answer: answer(&entries, &ask),
        entries,
        verifications,
    };
    write_json(&out.join("plan.json"), &doc)?;
    let md = out.join("plan.md");
    std::fs::write(&md, markdown(&doc, &args.capacity))
        .with_context(|| format!("could not write {}", md.display()))?;
    if !args.quiet {
        eprintln!("fanbench: wrote {}", md.display());
    }
    let off = doc
        .verifications
        .iter()
        .filter(|v| !v.within_tolerance)
        .count();
    if off > 0 {
        return Err(OffPrediction {
            off,
            total: doc.verifications.len(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::capacity::Stop;

    fn capacity(
        ingest: (Option<u32>, Option<u32>),
        e2e: Option<(Option<u32>, Option<u32>)>,
    ) -> DesignCapacity {
        DesignCapacity {
            slo: vec![],
            capacity_rps: ingest.0,
            first_fail_rps: ingest.1,
            stop: Stop::Converged,
            repeats: 1,
            capacity_ci: None,
            delivery_capacity_rps: e2e.and_then(|e| e.0),
            delivery_first_fail_rps: e2e.and_then(|e| e.1),
            delivery_capacity_ci: None,
            delivery_stop: e2e.map(|_| Stop::Converged),
            steps: vec![],
            bottleneck: None,
            delivery_bottleneck: None,
            knee: None,
            delivery_knee: None,
            prediction: None,
            usl: None,
        }
    }

    fn ask(peak: f64) -> Ask {
        Ask {
            peak_rps: peak,
            headroom: 0.3,
            spike_duration_s: 60.0,
            baseline_rps: 0.0,
        }
    }

    #[test]
    fn each_design_is_judged_against_the_peak_with_its_headroom() {
        let sync = capacity((Some(32), Some(34)), None);
        // 20 × 1.3 = 26 ≤ 32: carries; 30 ≤ 32 < 39: thin; 40 > 32: refuses.
        assert_eq!(
            assess("sync", &sync, &ask(20.0), None).verdict,
            Verdict::Carries
        );
        assert_eq!(
            assess("sync", &sync, &ask(30.0), None).verdict,
            Verdict::Thin
        );
        let refused = assess("sync", &sync, &ask(40.0), None);
        assert_eq!(refused.verdict, Verdict::Refuses);
        assert_eq!(refused.backlog_peak, None);
        // A limit never found (the search did not fail) below the need is not a no.
        let open = capacity((Some(32), None), None);
        assert_eq!(
            assess("sync", &open, &ask(30.0), None).verdict,
            Verdict::Unknown
        );
        let async_ = capacity((Some(1200), Some(1300)), Some((Some(500), Some(550))));
        let carried = assess("async", &async_, &ask(300.0), None);
        assert_eq!(carried.verdict, Verdict::Carries);
        assert!((carried.headroom.unwrap() - (500.0 / 300.0 - 1.0)).abs() < 1e-9);
        assert_eq!(
            assess("async", &async_, &ask(400.0), None).verdict,
            Verdict::Thin
        );
        assert_eq!(
            assess("async", &async_, &ask(1250.0), None).verdict,
            Verdict::Refuses
        );
    }

    #[test]
    fn a_repeated_limit_is_counted_at_the_low_end_of_its_interval() {
        // The majority put sync at 32/s, but only 28/s passed every run.
        let mut sync = capacity((Some(32), Some(34)), None);
        sync.repeats = 3;
        sync.capacity_ci = Some([Some(28), Some(34)]);
        // 22 × 1.3 = 28.6: carried by 32, not by the 28 every run met.
        let e = assess("sync", &sync, &ask(22.0), None);
        assert_eq!(e.ingest_limit_rps, Some(28));
        assert_eq!(e.verdict, Verdict::Thin);
        let mut async_ = capacity((Some(1200), Some(1300)), Some((Some(500), Some(550))));
        async_.delivery_capacity_ci = Some([Some(450), Some(550)]);
        let e = assess("async", &async_, &ask(400.0), None);
        assert_eq!(e.end_to_end_limit_rps, Some(450));
        assert!((e.headroom.unwrap() - (450.0 / 400.0 - 1.0)).abs() < 1e-9);
    }

    #[test]
    fn a_queue_design_slower_than_the_peak_queues_it_and_drains_at_its_limit() {
        // Delivery keeps up at 500/s, not at 550/s: it drains at 525/s.
        let d = capacity((Some(1200), Some(1300)), Some((Some(500), Some(550))));
        let e = assess("async", &d, &ask(800.0), None);
        assert_eq!(e.verdict, Verdict::Queues);
        assert_eq!(e.drain_rate_rps, Some(525.0));
        // (800 − 525) × 60 s = 16 500 sign-ups, drained at 525/s: 31.4 s.
        assert!((e.backlog_peak.unwrap() - 16_500.0).abs() < 1e-9);
        assert!((e.drain_s.unwrap() - 16_500.0 / 525.0).abs() < 1e-9);
        // With a baseline of 125/s after the spike, it drains at 400/s.
        let with_baseline = Ask {
            baseline_rps: 125.0,
            ..ask(800.0)
        };
        let e = assess("async", &d, &with_baseline, None);
        assert!((e.drain_s.unwrap() - 16_500.0 / 400.0).abs() < 1e-9);
        // A baseline at or above the drain rate never drains.
        let e = assess(
            "async",
            &d,
            &Ask {
                baseline_rps: 525.0,
                ..ask(800.0)
            },
            None,
        );
        assert_eq!(e.verdict, Verdict::NeverDrains);
        assert_eq!(e.drain_s, None);
        // A drain rate measured in the overloaded steps replaces the bracket's midpoint.
        let e = assess("async", &d, &ask(800.0), Some(400.0));
        assert!(e.drain_rate_measured);
        assert!((e.backlog_peak.unwrap() - 400.0 * 60.0).abs() < 1e-9);
        assert!((e.drain_s.unwrap() - 60.0).abs() < 1e-9);
    }

    fn samples(backlog: &[f64]) -> Vec<results::TelemetrySample> {
        backlog
            .iter()
            .enumerate()
            .map(|(t, b)| results::TelemetrySample {
                t: t as f64,
                server: [("fanbench_queue_depth{channel=\"sms\"}".to_string(), *b)].into(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn the_drain_rate_is_how_fast_the_backlog_fell_after_its_peak() {
        // Grows for 5 s, then falls by 18 a second until empty.
        let grows = [0.0, 20.0, 40.0, 60.0, 80.0, 90.0];
        let falls: Vec<f64> = (1..=5).map(|i| 90.0 - 18.0 * f64::from(i)).collect();
        let series: Vec<f64> = grows
            .iter()
            .copied()
            .chain(falls)
            .chain([0.0, 0.0])
            .collect();
        // The load ends at 5 s, at the backlog's peak.
        let rate = drain_rate(&samples(&series), 5.0).unwrap();
        assert!((rate - 18.0).abs() < 1e-9, "{rate}");
        // A step that hardly queued says nothing.
        assert_eq!(drain_rate(&samples(&[0.0, 5.0, 3.0, 0.0]), 1.0), None);
        // A fall during the load is delivery net of arrivals, not the drain: a backlog that
        // peaked early, fell slowly and was empty when the load ended says nothing.
        let early = [0.0, 90.0, 80.0, 70.0, 60.0, 50.0, 0.0, 0.0];
        assert_eq!(drain_rate(&samples(&early), 6.0), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn the_answer_names_what_carries_or_what_catches_up() {
        let report_designs = [
            ("sync", capacity((Some(32), Some(34)), None)),
            (
                "async",
                capacity((Some(1200), Some(1300)), Some((Some(500), Some(550)))),
            ),
        ];
        let entries = |peak: f64| -> Vec<Entry> {
            report_designs
                .iter()
                .map(|(k, d)| assess(k, d, &ask(peak), None))
                .collect()
        };
        assert_eq!(
            answer(&entries(20.0), &ask(20.0)),
            "sync, async carry 20 sign-ups/s with 30 % headroom end to end"
        );
        let a = answer(&entries(800.0), &ask(800.0));
        assert!(a.starts_with("nothing carries 800"), "{a}");
        assert!(a.contains("async (backlog 16500, drained 31 s"), "{a}");
        assert_eq!(
            answer(&entries(5000.0), &ask(5000.0)),
            "no design measured here carries 5000 sign-ups/s"
        );
        let t = table(&entries(800.0), &ask(800.0), Path::new("cap"));
        assert!(t.contains("500/s (drains 525/s)"), "{t}");
        assert!(t.contains("31.4 s"), "{t}");
    }

    #[test]
    fn sweep_values_are_planned_as_their_design_and_filtered_by_it() {
        let mut designs = std::collections::BTreeMap::new();
        designs.insert(
            "async[concurrency=2]".to_string(),
            capacity((Some(900), Some(1000)), Some((Some(18), Some(22)))),
        );
        designs.insert("sync".to_string(), capacity((Some(32), Some(34)), None));
        let report = CapacityReport {
            schema_version: 1,
            scenario: "s.toml".into(),
            cpus: 2,
            step_duration_s: 5.0,
            warmup_s: 0.0,
            factor: 2.0,
            resolution: 0.1,
            max_steps: 5,
            overrides: vec![],
            designs,
            sweep: None,
        };
        let entries = plan(&report, &ask(40.0), &["async".to_string()], |_, _| None);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].design, "async");
        assert_eq!(entries[0].verdict, Verdict::Queues);
        assert_eq!(
            base_scenario(Path::new("cap"), &report, "async[concurrency=2]"),
            Path::new("cap/concurrency=2/scenario.toml")
        );
        assert_eq!(
            base_scenario(Path::new("cap"), &report, "sync"),
            Path::new("s.toml")
        );
    }

    #[test]
    fn the_spike_scenario_is_a_valid_scenario_with_room_to_drain() {
        let base: toml::Table = toml::from_str(
            "name = 'x'\n[arrivals]\nphases = [{ kind = 'constant', duration = '2s', rate = 5 }]\n\
             [driver]\nwarmup = '1s'\n[servers.async]\nconcurrency = 2\nmax_concurrency = 2\n\
             [servers.broker]\nconcurrency = 2\nmax_concurrency = 2\n\
             [capacity]\nstep_duration = '5s'\n",
        )
        .unwrap();
        let ask = Ask {
            peak_rps: 40.0,
            headroom: 0.3,
            spike_duration_s: 6.0,
            baseline_rps: 0.0,
        };
        let text = spike_scenario(&base, "async", &ask, 6.0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spike.toml");
        std::fs::write(&file, &text).unwrap();
        let s = scenario::Scenario::load(&file).unwrap();
        assert_eq!(s.servers.async_.concurrency, 2);
        assert_eq!(s.servers.async_.drain_timeout, Duration::from_secs(48));
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert!(t.get("capacity").is_none());
        assert!(t["driver"].get("warmup").is_none());
        assert_eq!(t["arrivals"]["phases"].as_array().unwrap().len(), 1);
        // A baseline follows the spike for twice the predicted drain and more.
        let with_baseline = Ask {
            baseline_rps: 5.0,
            ..ask
        };
        let text = spike_scenario(&base, "async", &with_baseline, 6.0).unwrap();
        std::fs::write(&file, &text).unwrap();
        scenario::Scenario::load(&file).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        let phases = t["arrivals"]["phases"].as_array().unwrap();
        assert_eq!(phases[1]["duration"].as_str(), Some("17000ms"));
    }

    #[test]
    fn the_backlog_is_the_slowest_channel_plus_what_is_unpublished() {
        let sample = |t: f64, series: &[(&str, f64)]| results::TelemetrySample {
            t,
            server: series.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        };
        let samples = vec![
            sample(0.0, &[("fanbench_queue_depth{channel=\"email\"}", 0.0)]),
            sample(
                1.0,
                &[
                    ("fanbench_queue_depth{channel=\"email\"}", 10.0),
                    ("fanbench_queue_depth{channel=\"sms\"}", 30.0),
                    ("fanbench_outbox_unpublished", 5.0),
                    ("fanbench_pool_waiting", 100.0),
                ],
            ),
            sample(2.0, &[("fanbench_queue_depth{channel=\"sms\"}", 12.0)]),
            sample(3.0, &[("fanbench_queue_depth{channel=\"sms\"}", 0.0)]),
        ];
        let b = backlog(&samples);
        assert_eq!(b, vec![(0.0, 0.0), (1.0, 35.0), (2.0, 12.0), (3.0, 0.0)]);
        assert_eq!(drained_after(&b, 1.0, 0.0), Some(2.0));
        assert_eq!(drained_after(&b, 1.0, 12.0), Some(1.0));
        assert_eq!(drained_after(&b[..3], 1.0, 0.0), None);
    }
}
