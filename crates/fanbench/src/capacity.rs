//! `fanbench capacity`: for each design, the highest offered rate that meets its objective (SLO),
//! and what gave out first at the knee.
//!
//! The search climbs from a low rate, multiplying it until a step fails, then bisects between the
//! last pass and the first fail until they are within the resolution or the step budget is spent.
//! Each step is a child `fanbench run --design D` on a constant Poisson load, on a fresh
//! throwaway cluster (so every step starts drained: no queue, no pool waiters). Its first seconds
//! warm the design up (`[driver] warmup` in the step's scenario): the step is judged on the
//! requests scheduled after them, the measurement window the driver records apart
//! (`results::Window`); its send lag, validity, slopes and delivery stay the whole step's, so the
//! warm-up can fail a step but never pass one. A short step could still pass a rate above the design's
//! steady-state limit while its pool queue soaks up the excess, so a step whose pool waiters grow
//! through the load fails too. A step where the driver fell behind its schedule is
//! driver-limited: it is inconclusive, never the design's limit, and the search stops there.
//!
//! Each limit is read twice: past the knee ([`attribute`]: the first resource found at its
//! limit at the first failing step) and at it ([`closest_to_limit`]: each resource's use as a
//! share of what it has at the last passing step). `--sweep DESIGN.KEY=V1,V2,…` runs the search
//! once per value of one setting, each from its own scenario in its own folder.
//!
//! The search itself ([`search`]) is a pure function over a step oracle, so its tests run no load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use results::capacity::{
    Bottleneck, CapacityReport, DesignCapacity, Prediction, SCHEMA_VERSION, StepRecord, Stop, Sweep,
};
use results::{DesignResults, Telemetry};
use serde::Serialize;

use crate::attribution;
use crate::cli::{CapacityArgs, Design};

/// What a search measures: one of the designs (started by each step), or a server already
/// running (`--target URL`), read from the results under `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Sync,
    Async,
    Broker,
    Target,
}

impl Subject {
    pub fn name(self) -> &'static str {
        match self {
            Subject::Sync => results::SYNC,
            Subject::Async => results::ASYNC,
            Subject::Broker => results::BROKER,
            Subject::Target => results::TARGET,
        }
    }

    /// Designs that answer before they deliver: they have an end-to-end limit beside the ingest
    /// one.
    pub fn has_queue(self) -> bool {
        matches!(self, Subject::Async | Subject::Broker)
    }

    /// A design by its name in `--set`, `--sweep` and `--slo DESIGN:EXPR`.
    fn named(name: &str) -> Option<Subject> {
        match name {
            "sync" => Some(Subject::Sync),
            "async" => Some(Subject::Async),
            "broker" => Some(Subject::Broker),
            _ => None,
        }
    }
}

impl TryFrom<Design> for Subject {
    type Error = anyhow::Error;

    fn try_from(d: Design) -> Result<Self> {
        match d {
            Design::Sync => Ok(Subject::Sync),
            Design::Async => Ok(Subject::Async),
            Design::Broker => Ok(Subject::Broker),
        }
    }
}
use crate::steps::{
    backlog_slope, cores, cores_text, delivery_reasons, fanbench, read_design, series_slope,
    write_json,
};

/// The capacity document's JSON Schema, committed beside this crate (the tests hold the written
/// document to it).
#[cfg(test)]
const SCHEMA: &str = include_str!("../capacity.schema.json");

// ---------------------------------------------------------------------------------------------
// The search

/// How one step went, as far as the search is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The driver could not keep to the schedule: the step says nothing about the design.
    DriverLimited,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchPlan {
    pub start: u32,
    pub factor: f64,
    pub resolution: f64,
    pub max_steps: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The highest rate that passed.
    pub pass: Option<u32>,
    /// The lowest rate that failed.
    pub fail: Option<u32>,
    /// Every step, in the order it ran.
    pub tried: Vec<(u32, Verdict)>,
    pub stop: Stop,
}

/// One step's answer to the search: its verdict, and whether it was already known (a step an
/// earlier search ran), which costs nothing from the step budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub verdict: Verdict,
    pub known: bool,
}

impl From<Verdict> for Probe {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            known: false,
        }
    }
}

/// Rates above this are not tried (the driver could not offer them anyway).
const MAX_RATE: u32 = 1_000_000;

/// Climbs from `plan.start` by `plan.factor` until a step fails (descending by the same factor
/// when the first step fails), then bisects until (fail − pass) ÷ pass ≤ `plan.resolution`.
/// Stops at the first driver-limited step, or when `plan.max_steps` steps have run (steps already
/// known are free).
pub fn search<P: Into<Probe>>(
    plan: &SearchPlan,
    mut oracle: impl FnMut(u32) -> Result<P>,
) -> Result<Found> {
    let factor = plan.factor.max(1.01);
    let (mut pass, mut fail): (Option<u32>, Option<u32>) = (None, None);
    let mut tried = Vec::new();
    let mut spent = 0;
    let stop = loop {
        let next = match (pass, fail) {
            (None, None) => plan.start.clamp(1, MAX_RATE),
            (Some(p), None) => {
                if p >= MAX_RATE {
                    break Stop::Budget;
                }
                ((f64::from(p) * factor).ceil() as u32).clamp(p + 1, MAX_RATE)
            }
            (None, Some(f)) => {
                if f <= 1 {
                    break Stop::NeverPassed;
                }
                ((f64::from(f) / factor).floor() as u32).clamp(1, f - 1)
            }
            (Some(p), Some(f)) => {
                let mid = p + (f - p) / 2;
                if f64::from(f - p) / f64::from(p) <= plan.resolution || mid == p {
                    break Stop::Converged;
                }
                mid
            }
        };
        if spent >= plan.max_steps {
            break Stop::Budget;
        }
        let probe: Probe = oracle(next)?.into();
        if !probe.known {
            spent += 1;
        }
        let verdict = probe.verdict;
        tried.push((next, verdict));
        match verdict {
            Verdict::Pass => pass = Some(next),
            Verdict::Fail => fail = Some(next),
            Verdict::DriverLimited => break Stop::DriverLimited,
        }
    };
    Ok(Found {
        pass,
        fail,
        tried,
        stop,
    })
}

// ---------------------------------------------------------------------------------------------
// The objective

/// One objective, written relative to a design (`latency_ms_by_class.2xx.p99 < 250`) and held as
/// a gate rule on that design (`async.latency_ms_by_class.2xx.p99 < 250`).
#[derive(Debug, Clone)]
pub struct Slo {
    pub text: String,
    rule: gates::Rule,
}

/// The built-in objectives: an accepted sign-up's p99 under a bound suited to the design (the
/// sync design answers after three provider calls, so seconds; the async one after a commit),
/// and refusals under 1 %. The async design must also keep up with delivery (checked apart, see
/// [`delivery_reasons`]).
pub fn default_slo(design: Subject) -> Vec<&'static str> {
    match design {
        Subject::Sync => vec![
            "latency_ms_by_class.2xx.p99 < 6000",
            "requests.share.503 < 0.01",
        ],
        Subject::Async | Subject::Broker => vec![
            "latency_ms_by_class.2xx.p99 < 250",
            "requests.share.503 < 0.01",
        ],
        Subject::Target => vec![
            "latency_ms_by_class.2xx.p99 < 1000",
            "requests.share.503 < 0.01",
        ],
    }
}

/// Prefixes every metric path in `text` with `design.` (a metric is a run of letters, digits,
/// `_` and `.` that starts with a letter or `_`; numbers start with a digit).
fn prefix_metrics(design: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            out.push_str(design);
            out.push('.');
        }
        out.push_str(word);
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Parses one objective for `design`; `origin` says where it was written (`--slo`, the
/// scenario's `[capacity] slo`), for the error.
pub fn parse_slo(design: Subject, text: &str, origin: &str) -> Result<Slo> {
    let prefixed = prefix_metrics(design.name(), text);
    let rule = gates::parse_rule(&prefixed)
        .and_then(|r| r.check_names().map(|()| r))
        .map_err(|e| anyhow!("{origin} `{text}` for the {} design: {e}", design.name()))?;
    Ok(Slo {
        text: text.to_string(),
        rule,
    })
}

/// Each design's objectives: `--slo` (`EXPR` for every design, `DESIGN:EXPR` for one) replaces
/// the scenario's `[capacity] slo`, which replaces the built-in ones.
pub fn objectives(
    design: Subject,
    flags: &[String],
    scenario: &BTreeMap<String, Vec<String>>,
    scenario_path: &Path,
) -> Result<Vec<Slo>> {
    let mine: Vec<&str> = flags
        .iter()
        .filter_map(|f| match f.split_once(':') {
            Some((d, expr)) if d.trim() == design.name() => Some(expr),
            Some((d, _)) if results::DESIGNS.contains(&d.trim()) => None,
            _ => Some(f.as_str()),
        })
        .collect();
    if !mine.is_empty() {
        return mine.iter().map(|t| parse_slo(design, t, "--slo")).collect();
    }
    if let Some(list) = scenario.get(design.name()) {
        let origin = format!(
            "{} [capacity] slo.{}",
            scenario_path.display(),
            design.name()
        );
        return list.iter().map(|t| parse_slo(design, t, &origin)).collect();
    }
    default_slo(design)
        .into_iter()
        .map(|t| parse_slo(design, t, "the built-in objective"))
        .collect()
}

/// The objectives a step missed, in words (empty when it met them all).
fn missed(design: Subject, slo: &[Slo], d: &DesignResults) -> Result<Vec<String>> {
    let doc = serde_json::json!({ "designs": { design.name(): serde_json::to_value(d)? } });
    let mut why = Vec::new();
    for s in slo {
        match s.rule.evaluate(std::slice::from_ref(&doc)) {
            Ok(r) if r.passed => {}
            Ok(r) => why.push(format!("{} (was {})", s.text, round(r.value))),
            Err(gates::GateError::EmptyClass { class, .. }) => {
                why.push(format!("{}: no request fell into class {class}", s.text));
            }
            Err(e) => why.push(format!("{}: {e}", s.text)),
        }
    }
    Ok(why)
}

fn round(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

// ---------------------------------------------------------------------------------------------
// The document

// The types are `results::capacity`'s, so the capacity page (crates/report) reads what this
// writes; how a step counts for the search is decided here.

/// How a step counts for the objective's search.
fn verdict(step: &StepRecord) -> Verdict {
    if step.driver_limited() {
        Verdict::DriverLimited
    } else if step.passed {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// How a step counts for the end-to-end search: it must also have kept up with delivery.
fn delivery_verdict(step: &StepRecord) -> Verdict {
    match verdict(step) {
        Verdict::Pass if !step.passed_end_to_end() => Verdict::Fail,
        v => v,
    }
}

// ---------------------------------------------------------------------------------------------
// Running it

struct Run {
    /// In a sweep, the value's key (`async[concurrency=64]`): its name in capacity.json and in
    /// the progress lines.
    label: Option<String>,
    base: toml::Table,
    scenario: scenario::Scenario,
    out: PathBuf,
    duration: Duration,
    /// The first part of each step, left out of its judgement.
    warmup: Duration,
    delivery_p99: f64,
    /// `--target URL`: the server every step drives instead of starting a design.
    target: Option<String>,
    /// `--allow-remote`: the target may be outside the loopback range.
    allow_remote: bool,
    /// Runs of each rate that decides a limit (`--repeat`).
    repeats: u32,
    /// `--quiet`: no progress lines.
    quiet: bool,
}

impl Run {
    /// What `design`'s search is called here: the design's name, or a sweep value's key.
    fn name(&self, design: Subject) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| design.name().to_string())
    }
}

pub async fn run(args: CapacityArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: CapacityArgs) -> Result<()> {
    let path = args.scenario.clone();
    let scenario = scenario::Scenario::load(&path).map_err(anyhow::Error::from)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let mut base: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    // What-if settings: applied to the scenario every step is written from, then read back
    // through the scenario's own checks, so a wrong key or value fails here, not at a step.
    let out = match &args.out {
        Some(d) => d.clone(),
        None => PathBuf::from("reports/capacity")
            .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    // The changed scenario is kept in the run folder: a record of what the steps ran.
    let scenario = if args.set.is_empty() {
        scenario
    } else {
        for set in &args.set {
            apply_set(&mut base, set)?;
        }
        let file = out.join("scenario-with-overrides.toml");
        std::fs::write(&file, toml::to_string(&base)?)
            .with_context(|| format!("could not write {}", file.display()))?;
        scenario::Scenario::load(&file)
            .map_err(|e| anyhow!("--set {}: {e}", args.set.join(" --set ")))?
    };
    let cap = scenario.capacity.clone();
    let duration = args
        .step_duration
        .map(Duration::from)
        .or(cap.step_duration)
        .unwrap_or(Duration::from_secs(20));
    if duration < Duration::from_secs(3) {
        bail!("--step-duration: a step shorter than 3 s has too few seconds to judge");
    }
    let warmup = args
        .warmup
        .map(Duration::from)
        .or(cap.warmup)
        .unwrap_or((duration / 4).min(Duration::from_secs(5)));
    if duration.saturating_sub(warmup) < Duration::from_secs(2) {
        bail!(
            "--warmup {}: a {} step must keep 2 s or more to judge after its warm-up",
            humantime::format_duration(warmup),
            humantime::format_duration(duration)
        );
    }
    let plan = |design: Subject| SearchPlan {
        start: args
            .start_rate
            .or_else(|| cap.start_rate.as_ref()?.for_design(design.name()))
            .unwrap_or(match design {
                Subject::Sync | Subject::Target => 8,
                Subject::Async | Subject::Broker => 200,
            }),
        factor: args.factor.or(cap.factor).unwrap_or(2.0),
        resolution: args.resolution.or(cap.resolution).unwrap_or(0.1),
        max_steps: args.max_steps.or(cap.max_steps).unwrap_or(10),
    };
    if plan(Subject::Sync).factor <= 1.0 {
        bail!("--factor must be above 1");
    }
    let repeats = args.repeat.or(cap.repeat).unwrap_or(3);
    if !(1..=10).contains(&repeats) {
        bail!(
            "{} [capacity] repeat = {repeats}: run each deciding rate 1 to 10 times",
            path.display()
        );
    }
    let sweep = args.sweep.as_deref().map(parse_sweep).transpose()?;
    // Every objective is checked before the first step runs.
    let mut designs: Vec<Subject> = if args.target.is_some() {
        vec![Subject::Target]
    } else if let Some(sweep) = &sweep {
        vec![sweep.0]
    } else {
        args.designs
            .iter()
            .map(|&d| Subject::try_from(d))
            .collect::<Result<_>>()?
    };
    designs.sort();
    designs.dedup();
    let slos: Vec<(Subject, Vec<Slo>)> = designs
        .iter()
        .map(|&d| Ok((d, objectives(d, &args.slo, &cap.slo, &path)?)))
        .collect::<Result<_>>()?;
    // Checked before any step runs: a typo costs nothing.
    let gates = capacity_gates(&cap.gates, &args.gates, &path)?;
    if let Some(url) = &args.target {
        crate::plan::check_loopback(url, args.allow_remote)?;
    }

    let ctx = Run {
        label: None,
        base,
        scenario,
        out: out.clone(),
        duration,
        warmup,
        delivery_p99: args.delivery_p99,
        target: args.target.clone(),
        allow_remote: args.allow_remote,
        repeats,
        quiet: args.quiet,
    };
    // A sweep: one run of the searches per value, each from the scenario with that value set,
    // all of them read back through the scenario's checks before any step runs.
    let points: Vec<Run> = match &sweep {
        None => vec![ctx],
        Some((design, key, values)) => {
            if args.set.iter().any(|s| {
                s.split_once('=')
                    .is_some_and(|(n, _)| n.trim() == format!("{}.{key}", design.name()))
            }) {
                bail!(
                    "--sweep and --set both change {}.{key}: give its values to --sweep alone",
                    design.name()
                );
            }
            values
                .iter()
                .map(|value| sweep_point(&ctx, *design, key, value))
                .collect::<Result<_>>()?
        }
    };
    if !args.quiet {
        eprintln!(
            "capacity: {} ; {} a step, the first {} warm-up ; each deciding rate run {} times ; results in {}",
            path.display(),
            humantime::format_duration(duration),
            humantime::format_duration(warmup),
            repeats,
            out.display()
        );
    }

    let mut report = CapacityReport {
        schema_version: SCHEMA_VERSION,
        scenario: path.display().to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        step_duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        factor: plan(Subject::Sync).factor,
        resolution: plan(Subject::Sync).resolution,
        max_steps: plan(Subject::Sync).max_steps,
        overrides: args.set.clone(),
        designs: BTreeMap::new(),
        sweep: sweep.map(|(design, setting, values)| Sweep {
            design: design.name().to_string(),
            setting,
            values,
        }),
    };
    for (design, slo) in &slos {
        for point in &points {
            let result = capacity_of(point, *design, slo, &plan(*design))?;
            report.designs.insert(point.name(*design), result);
        }
    }
    let table = table(&report);
    print!("{table}");
    write_json(&out.join("capacity.json"), &report)?;
    std::fs::write(out.join("summary.md"), summary_md(&report))
        .with_context(|| format!("could not write {}", out.join("summary.md").display()))?;
    // The page is drawn from capacity.json as `fanbench report OUT` would.
    let doc = report::capacity::load(&out).with_context(|| {
        format!(
            "could not read back {}",
            out.join("capacity.json").display()
        )
    })?;
    let html = report::capacity::write(&out, &doc).context("could not write the capacity page")?;
    println!("\nreport: {}", html.display());
    judge_gates(&gates, &report, &out)
}

/// `--sweep DESIGN.KEY=V1,V2,…`: the design, the key and at least two distinct values.
fn parse_sweep(text: &str) -> Result<(Subject, String, Vec<String>)> {
    let bad = || {
        anyhow!("--sweep {text}: expected DESIGN.KEY=V1,V2,…, e.g. --sweep sync.pool_size=10,20,40")
    };
    let (name, values) = text.split_once('=').ok_or_else(bad)?;
    let (design, key) = name.trim().split_once('.').ok_or_else(bad)?;
    let Some(design) = Subject::named(design.trim()) else {
        bail!(
            "--sweep {text}: the setting is `sync.KEY`, `async.KEY` or `broker.KEY` (a key of [servers.sync], [servers.async] or [servers.broker])"
        );
    };
    let key = key.trim();
    if key.is_empty() || key.contains('.') {
        return Err(bad());
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.len() < 2 || values.iter().any(String::is_empty) {
        bail!("--sweep {text}: give two values or more, separated by commas");
    }
    if let Some(v) = values
        .iter()
        .enumerate()
        .find_map(|(i, v)| values[..i].contains(v).then_some(v))
    {
        bail!("--sweep {text}: the value {v} is given twice");
    }
    Ok((design, key.to_string(), values))
}

/// One value of a sweep: the run's scenario with `design.key = value`, written to (and read back
/// from) its own folder, OUT/<key>=<value>/, where its steps go too.
fn sweep_point(ctx: &Run, design: Subject, key: &str, value: &str) -> Result<Run> {
    let set = format!("{}.{key}={value}", design.name());
    let mut base = ctx.base.clone();
    apply_set(&mut base, &set)?;
    let out = ctx.out.join(format!("{key}={value}"));
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    let file = out.join("scenario.toml");
    std::fs::write(&file, toml::to_string(&base)?)
        .with_context(|| format!("could not write {}", file.display()))?;
    let scenario = scenario::Scenario::load(&file).map_err(|e| anyhow!("--sweep {set}: {e}"))?;
    Ok(Run {
        label: Some(results::capacity::sweep_key(design.name(), key, value)),
        base,
        scenario,
        out,
        duration: ctx.duration,
        warmup: ctx.warmup,
        delivery_p99: ctx.delivery_p99,
        target: ctx.target.clone(),
        allow_remote: ctx.allow_remote,
        repeats: ctx.repeats,
        quiet: ctx.quiet,
    })
}

/// Applies one `--set DESIGN.KEY=VALUE` to the scenario's `[servers.DESIGN]` table. The value is
/// read as TOML (`20`, `true`, `"5s"`), or taken as a string when it is not (`5s`). The key joins
/// the scenario's `what_if` list: a setting changed for one design is a what-if by definition, so
/// the scenario's like-for-like check lets it differ from the other designs'.
fn apply_set(base: &mut toml::Table, set: &str) -> Result<()> {
    let bad = || anyhow!("--set {set}: expected DESIGN.KEY=VALUE, e.g. --set sync.pool_size=20");
    let (name, value) = set.split_once('=').ok_or_else(bad)?;
    let (design, key) = name.trim().split_once('.').ok_or_else(bad)?;
    if Subject::named(design).is_none() || key.is_empty() || key.contains('.') {
        return Err(anyhow!(
            "--set {set}: the setting is `sync.KEY`, `async.KEY` or `broker.KEY` (a key of [servers.sync], [servers.async] or [servers.broker])"
        ));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let servers = base
        .entry("servers")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let servers = servers
        .as_table_mut()
        .ok_or_else(|| anyhow!("--set {set}: the scenario's `servers` is not a table"))?;
    let table = servers
        .entry(design)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| anyhow!("--set {set}: the scenario's `servers.{design}` is not a table"))?;
    table.insert(key.to_string(), parsed);
    let what_if = base
        .entry("what_if")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| anyhow!("--set {set}: the scenario's `what_if` is not a list"))?;
    let marked = toml::Value::String(format!("{design}.{key}"));
    if !what_if.contains(&marked) {
        what_if.push(marked);
    }
    Ok(())
}

/// Metric paths a capacity gate may name after its design: what capacity.json holds as numbers.
const GATE_METRICS: [&str; 7] = [
    "capacity_rps",
    "first_fail_rps",
    "delivery_capacity_rps",
    "delivery_first_fail_rps",
    "prediction.predicted_rps",
    "prediction.measured_rps",
    "prediction.ratio",
];

/// Parses the scenario's and the flags' capacity gates and checks every name they use.
fn capacity_gates(
    from_scenario: &[String],
    from_flags: &[String],
    path: &Path,
) -> Result<Vec<gates::Rule>> {
    let scenario = from_scenario
        .iter()
        .map(|g| (g, format!("{} [capacity] gates", path.display())));
    let flags = from_flags.iter().map(|g| (g, "--gate".to_string()));
    scenario
        .chain(flags)
        .map(|(text, origin)| {
            let rule = gates::parse_rule(text).map_err(|e| anyhow!("{origin}: {e}"))?;
            for metric in rule.metrics() {
                let field = metric.path.join(".");
                if !results::DESIGNS.contains(&metric.design.as_str()) {
                    bail!(
                        "{origin}: `{text}` names `{}`: a capacity metric starts with one of {}",
                        metric.name(),
                        results::DESIGNS.join(", ")
                    );
                }
                if !GATE_METRICS.contains(&field.as_str()) {
                    bail!(
                        "{origin}: `{text}` names `{}`, which capacity.json does not hold; \
                         after the design it may name {}",
                        metric.name(),
                        GATE_METRICS.join(", ")
                    );
                }
            }
            Ok(rule)
        })
        .collect()
}

/// A gate held at every end of the intervals it reads: each limit it names (`capacity_rps`,
/// `delivery_capacity_rps`) takes in turn the low and the high end of its interval (the limit is
/// at least low and below high), and the gate passes only if it passes at every combination. So
/// `sync.capacity_rps > 20` is held to the low end and `sync.capacity_rps < 80` to the high one,
/// and a ratio of two designs' limits to its least favourable pair. The result shown is the
/// least favourable one; an end that is unknown is left out, saying so.
fn at_every_end(
    rule: &gates::Rule,
    doc: &serde_json::Value,
    report: &CapacityReport,
) -> Result<gates::GateResult> {
    let mut docs = vec![(doc.clone(), Vec::<String>::new())];
    let mut unknown = Vec::new();
    for metric in rule.metrics() {
        let field = metric.path.join(".");
        let Some(d) = report.designs.get(&metric.design) else {
            continue;
        };
        let ci = match field.as_str() {
            "capacity_rps" => d.capacity_ci,
            "delivery_capacity_rps" => d.delivery_capacity_ci,
            _ => None,
        };
        let Some([low, high]) = ci else {
            continue;
        };
        let ends: Vec<(&str, u32)> = [("low", low), ("high", high)]
            .into_iter()
            .filter_map(|(end, v)| v.map(|v| (end, v)))
            .collect();
        if ends.len() < 2 {
            unknown.push(metric.name());
        }
        if ends.is_empty() {
            continue;
        }
        let mut next = Vec::with_capacity(docs.len() * ends.len());
        for (doc, said) in &docs {
            for (end, v) in &ends {
                let mut doc = doc.clone();
                doc["designs"][metric.design.as_str()][field.as_str()] = serde_json::json!(v);
                let mut said = said.clone();
                said.push(format!("{} at its {end} end, {v}", metric.name()));
                next.push((doc, said));
            }
        }
        docs = next;
    }
    let mut worst: Option<(gates::GateResult, Vec<String>)> = None;
    for (doc, said) in docs {
        let r = rule
            .evaluate(std::slice::from_ref(&doc))
            .map_err(|e| anyhow!("{e}"))?;
        let worse = worst.as_ref().is_none_or(|(w, _)| {
            (w.passed && !r.passed) || (w.passed == r.passed && r.margin < w.margin)
        });
        if worse {
            worst = Some((r, said));
        }
    }
    let (mut result, said) = worst.ok_or_else(|| anyhow!("no document to evaluate"))?;
    let mut detail: Vec<String> = Vec::new();
    if !said.is_empty() {
        detail.push(format!("least favourable end: {}", said.join(", ")));
    }
    if !unknown.is_empty() {
        detail.push(format!(
            "an end of {}'s interval is unknown and was left out",
            unknown.join(", ")
        ));
    }
    if !detail.is_empty() {
        result.detail = detail.join("; ");
    }
    Ok(result)
}

/// Evaluates the gates on the document, prints them, writes OUT/gates.json and OUT/gates.md,
/// and fails (exit 1) when any gate failed. A gate naming a design this run did not search is
/// skipped, saying so.
fn judge_gates(rules: &[gates::Rule], report: &CapacityReport, out: &Path) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let doc = serde_json::to_value(report)?;
    let results: Vec<gates::GateResult> = rules
        .iter()
        .map(|rule| {
            let missing: Vec<String> = rule
                .metrics()
                .iter()
                .filter(|m| !report.designs.contains_key(&m.design))
                .map(|m| m.design.clone())
                .collect();
            if let Some(design) = missing.first() {
                let why = match &report.sweep {
                    Some(sw) => format!(
                        "this run is a sweep of {}.{}: its searches are named {}",
                        sw.design,
                        sw.setting,
                        sw.keys().join(", ")
                    ),
                    None => format!("the {design} design was not searched in this run"),
                };
                return Ok(gates::GateResult::skipped(
                    rule.text.clone(),
                    rule.kind(),
                    why,
                ));
            }
            at_every_end(rule, &doc, report)
        })
        .collect::<Result<_>>()?;
    println!();
    print!("{}", gates::text(&results));
    write_json(&out.join("gates.json"), &results)?;
    std::fs::write(out.join("gates.md"), gates::markdown(&results))
        .with_context(|| format!("could not write {}", out.join("gates.md").display()))?;
    let (passed, failed, skipped) = gates::tally(&results);
    println!("gates: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        return Err(crate::gating::GatesFailed {
            failed,
            total: results.len(),
        }
        .into());
    }
    Ok(())
}

/// The steps one design's searches ran, by rate and run (0 the search's own, 1 and up its
/// repeats), in the order they ran; a step already run is recalled, not run again.
struct Steps<'a> {
    ctx: &'a Run,
    design: Subject,
    slo: &'a [Slo],
    runs: BTreeMap<(u32, u32), StepRecord>,
    order: Vec<(u32, u32)>,
}

impl Steps<'_> {
    /// The `k`-th run of `rate`, and whether it was already known (free to the step budget).
    fn get(&mut self, rate: u32, k: u32) -> Result<(StepRecord, bool)> {
        if let Some(s) = self.runs.get(&(rate, k)) {
            return Ok((s.clone(), true));
        }
        let s = run_step(self.ctx, self.design, self.slo, rate, k)?;
        if !self.ctx.quiet {
            eprintln!(
                "capacity: {} at {rate}/s{}: {}",
                self.ctx.name(self.design),
                if k > 0 {
                    format!(" (repeat {k})")
                } else {
                    String::new()
                },
                match delivery_verdict(&s) {
                    Verdict::Pass => "met the objective".to_string(),
                    Verdict::DriverLimited =>
                        "DRIVER-LIMITED (inconclusive: the driver fell behind its schedule)".into(),
                    Verdict::Fail => format!("missed: {}", s.why.join("; ")),
                }
            );
        }
        self.order.push((rate, k));
        self.runs.insert((rate, k), s.clone());
        Ok((s, false))
    }

    /// The search's own run of `rate`.
    fn first(&self, rate: Option<u32>) -> Option<&StepRecord> {
        self.runs.get(&(rate?, 0))
    }
}

fn capacity_of(
    ctx: &Run,
    design: Subject,
    slo: &[Slo],
    plan: &SearchPlan,
) -> Result<DesignCapacity> {
    let mut steps = Steps {
        ctx,
        design,
        slo,
        runs: BTreeMap::new(),
        order: Vec::new(),
    };
    let judge = |s: &StepRecord, delivery: bool| {
        if delivery {
            delivery_verdict(s)
        } else {
            verdict(s)
        }
    };
    // One limit: its search, then its repeats, which settle where it lies; the search's bracket
    // is replaced by the majority's.
    let limit = |steps: &mut Steps, delivery: bool| -> Result<(Found, [Option<u32>; 2])> {
        let mut found = search(plan, |r| {
            let (s, known) = steps.get(r, 0)?;
            Ok(Probe {
                verdict: judge(&s, delivery),
                known,
            })
        })?;
        let settled = crate::repeats::settle(&found, ctx.repeats, |r, k| {
            Ok(judge(&steps.get(r, k)?.0, delivery))
        })?;
        found.pass = settled.pass;
        found.fail = settled.fail;
        Ok((found, settled.ci))
    };
    // A design with a queue has two limits; the end-to-end one (lower) is searched first, and
    // the ingest search then reuses its steps.
    let delivery = if design.has_queue() {
        Some(limit(&mut steps, true)?)
    } else {
        None
    };
    let (ingest, ingest_ci) = limit(&mut steps, false)?;
    let delivery_ci = delivery.as_ref().map(|(_, ci)| *ci);
    let delivery = delivery.map(|(f, _)| f);
    let records = |steps: &Steps| -> Vec<StepRecord> {
        steps
            .order
            .iter()
            .filter_map(|key| steps.runs.get(key).cloned())
            .collect()
    };
    // The USL fitted to these steps, and one step at its predicted knee to check it (usl.rs);
    // that step is one of the design's steps like any other.
    let usl = crate::usl::fit_and_confirm(&records(&steps), |r| {
        if !ctx.quiet {
            eprintln!(
                "capacity: {}: the USL predicts the knee at {r}/s; confirming with one step",
                ctx.name(design)
            );
        }
        Ok(steps.get(r, 0)?.0)
    })?;
    let records = records(&steps);

    // Each limit is read from the search's own run of the rate that decides it.
    let knee = |rate: Option<u32>| -> Option<Bottleneck> {
        attribute(ctx, design, steps.first(rate)?).ok()
    };
    let limited = |f: &Found| match f.stop {
        Stop::DriverLimited => f.tried.last().map(|(r, _)| *r),
        _ => f.fail,
    };
    let bottleneck = knee(limited(&ingest));
    let delivery_bottleneck = delivery.as_ref().and_then(|f| knee(limited(f)));
    // And at the knee itself: what was closest to its limit at the last rate that passed.
    let closest = |rate: Option<u32>, delivery: bool| -> Option<Bottleneck> {
        closest_to_limit(ctx, design, steps.first(rate)?, delivery).ok()
    };
    // A design without a queue has one limit, and its channels are its request path's.
    let at_knee = closest(ingest.pass, delivery.is_none());
    let delivery_at_knee = delivery.as_ref().and_then(|f| closest(f.pass, true));
    let prediction = match design {
        Subject::Sync => ingest
            .fail
            .or(ingest.pass)
            .and_then(|r| steps.first(Some(r)))
            .and_then(|s| littles_law(ctx, s, ingest.pass)),
        Subject::Async | Subject::Broker => delivery.as_ref().and_then(|f| {
            let at = f.fail.or_else(|| f.tried.last().map(|(r, _)| *r))?;
            channels_law(ctx, design, steps.first(Some(at))?, f.pass)
        }),
        Subject::Target => None,
    };
    Ok(DesignCapacity {
        slo: slo.iter().map(|s| s.text.clone()).collect(),
        capacity_rps: ingest.pass,
        first_fail_rps: ingest.fail,
        stop: ingest.stop,
        repeats: ctx.repeats,
        capacity_ci: Some(ingest_ci),
        delivery_capacity_rps: delivery.as_ref().and_then(|f| f.pass),
        delivery_first_fail_rps: delivery.as_ref().and_then(|f| f.fail),
        delivery_capacity_ci: delivery_ci,
        delivery_stop: delivery.as_ref().map(|f| f.stop),
        steps: records,
        bottleneck,
        delivery_bottleneck,
        knee: at_knee,
        delivery_knee: delivery_at_knee,
        prediction,
        usl: Some(usl),
    })
}

/// The step's scenario: the capacity scenario's payload, driver, providers and servers, on a
/// constant Poisson load at `rate` for the step's duration: a `warm-up` phase, then a `measure`
/// phase at the same rate, and the driver told where the measurement window starts.
fn step_scenario(
    base: &toml::Table,
    design: Subject,
    rate: u32,
    duration: Duration,
    warmup: Duration,
    size_for: Option<Duration>,
) -> Result<String> {
    let mut t = base.clone();
    // The driver's users are sized for the latency this design's objective allows, not for the
    // scenario's `max_latency` (which must fit the slowest design): a step that met the objective
    // never needed more, and one that needed more missed it on the server's own time (see
    // `missed_on_service_time`). A scenario that fixes `users` keeps them.
    if let Some(bound) = size_for {
        let driver = t
            .entry("driver")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("the scenario's `driver` is not a table"))?;
        if !driver.contains_key("users") {
            driver.insert(
                "max_latency".into(),
                toml::Value::String(humantime::format_duration(bound).to_string()),
            );
        }
    }
    t.remove("capacity");
    t.remove("gates");
    t.insert(
        "name".into(),
        toml::Value::String(format!("capacity-{}-{rate}", design.name())),
    );
    t.insert(
        "description".into(),
        toml::Value::String(format!(
            "fanbench capacity: {rate} sign-ups/s, Poisson arrivals"
        )),
    );
    let phase = |name: &str, length: Duration| {
        let mut phase = toml::Table::new();
        phase.insert("kind".into(), "constant".into());
        phase.insert("name".into(), name.into());
        phase.insert(
            "duration".into(),
            toml::Value::String(humantime::format_duration(length).to_string()),
        );
        phase.insert("rate".into(), toml::Value::Integer(i64::from(rate)));
        toml::Value::Table(phase)
    };
    let phases = if warmup.is_zero() {
        vec![phase("measure", duration)]
    } else {
        let driver = t
            .entry("driver")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("the scenario's `driver` is not a table"))?;
        driver.insert(
            "warmup".into(),
            toml::Value::String(humantime::format_duration(warmup).to_string()),
        );
        vec![
            phase("warm-up", warmup),
            phase("measure", duration.saturating_sub(warmup)),
        ]
    };
    let mut arrivals = toml::Table::new();
    arrivals.insert("process".into(), "poisson".into());
    arrivals.insert("seed".into(), toml::Value::Integer(1));
    arrivals.insert("phases".into(), toml::Value::Array(phases));
    t.insert("arrivals".into(), toml::Value::Table(arrivals));
    toml::to_string(&t).context("could not write a step's scenario")
}

/// The latency an objective allows: the loosest plain upper bound it sets on a latency metric
/// (`latency_ms_by_class.2xx.p99 < 250` → 250 ms). `None` when it bounds no latency.
fn latency_bound(slo: &[Slo]) -> Option<Duration> {
    slo.iter()
        .filter_map(|s| s.rule.upper_bound())
        .filter(|(m, _)| m.path.first().is_some_and(|p| p.starts_with("latency_ms")))
        .map(|(_, ms)| ms)
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .reduce(f64::max)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
}

/// Whether a step the driver fell behind on is still the design's miss: the requests the driver
/// did send took longer than the objective's latency bound (p99) on the server's own time, from
/// their actual send to the answer, so a punctual driver, adding the load it held back, could
/// not have passed. That holds only while the driver read answers as they came: its load runs on
/// `threads` threads, each able to use one core, so a driver process under `threads` cores had
/// idle time on its load threads, and a busy thread, which would hold answers unread and inflate
/// the service time too, is ruled out.
fn missed_on_service_time(
    bound: Option<Duration>,
    service_p99_ms: f64,
    driver_cores: Option<f64>,
    threads: u32,
) -> bool {
    let Some(bound) = bound else {
        return false;
    };
    service_p99_ms > bound.as_secs_f64() * 1000.0
        && driver_cores.is_some_and(|c| c < f64::from(threads.max(1)))
}

/// How fast the pool's waiters may grow before a step counts as falling behind: 5 % of the
/// offered rate a second, and at least 2 (Poisson arrivals make a kept-up queue wobble).
pub fn waiting_growth_limit(rate: u32) -> f64 {
    (f64::from(rate) * 0.05).max(2.0)
}

/// Runs the `k`-th run of `rate` (0 the search's own, 1 and up its repeats) in its own folder.
fn run_step(ctx: &Run, design: Subject, slo: &[Slo], rate: u32, k: u32) -> Result<StepRecord> {
    let folder = ctx.out.join(design.name());
    std::fs::create_dir_all(&folder)?;
    let name = if k == 0 {
        format!("step-{rate}")
    } else {
        format!("step-{rate}.r{k}")
    };
    let scenario = folder.join(format!("{name}.toml"));
    let bound = latency_bound(slo);
    std::fs::write(
        &scenario,
        step_scenario(&ctx.base, design, rate, ctx.duration, ctx.warmup, bound)?,
    )?;
    let dir = folder.join(&name);
    let mut cmd = fanbench()?;
    match (design, &ctx.target) {
        (Subject::Target, Some(url)) if ctx.allow_remote => {
            cmd.args(["run", "--quiet", "--allow-remote", "--target", url])
        }
        (Subject::Target, Some(url)) => cmd.args(["run", "--quiet", "--target", url]),
        _ => cmd.args(["run", "--quiet", "--design", design.name()]),
    };
    cmd.arg("--scenario").arg(&scenario).arg("--out").arg(&dir);
    if !ctx.quiet {
        eprintln!(
            "capacity: {} at {rate}/s for {} …",
            ctx.name(design),
            humantime::format_duration(ctx.duration)
        );
    }
    let status = cmd.status().context("could not start a capacity step")?;
    let d = read_design(&dir, design.name())
        .with_context(|| format!("the {rate}/s step ({status}) left no results"))?;
    let mut why = Vec::new();
    if !d.valid {
        why.push(format!("invalid: {}", d.invalid_reasons.join(", ")));
    }
    let step_cores = cores(&d);
    let missed_despite_lag = !d.trustworthy
        && missed_on_service_time(
            bound,
            d.service_time_ms.p99,
            step_cores.get("driver").copied(),
            d.driver.as_ref().map_or(1, |r| r.threads),
        );
    if missed_despite_lag {
        why.push(format!(
            "the driver fell behind its schedule (send lag p99 {:.1} ms), but the requests it sent \
             already took p99 {:.0} ms from their actual send, over the objective's {:.0} ms",
            d.send_lag_ms.p99,
            d.service_time_ms.p99,
            bound.map_or(0.0, |b| b.as_secs_f64() * 1000.0)
        ));
    } else if !d.trustworthy {
        why.push(format!(
            "the driver fell behind its schedule (send lag p99 {:.1} ms)",
            d.send_lag_ms.p99
        ));
    }
    // The objective is held to the measurement window; the driver's lag and the run's validity
    // above are the whole step's.
    let judged = judged(&d);
    why.extend(missed(design, slo, &judged)?);
    // A pool queue that grows through the step is a design that does not keep up: a longer step
    // would turn the wait into timeouts and 503s. Without this, a short step passes rates well
    // above the design's steady-state limit while the queue absorbs the excess.
    let waiting_slope = series_slope(&dir, design.name(), "fanbench_pool_waiting", ctx.duration);
    if let Some(w) = waiting_slope {
        let limit = waiting_growth_limit(rate);
        if w > limit {
            why.push(format!(
                "requests waiting for a connection grew by {w:.1}/s (limit {limit:.1})"
            ));
        }
    }
    let passed = why.is_empty();
    let slope = design
        .has_queue()
        .then(|| backlog_slope(&dir, design.name(), ctx.duration))
        .flatten();
    let delivery_keeps_up = design.has_queue().then(|| {
        let late = delivery_reasons(rate, &d, slope, ctx.delivery_p99);
        let ok = late.is_empty();
        why.extend(late.into_iter().map(|w| format!("delivery: {w}")));
        ok
    });
    Ok(StepRecord {
        offered_rps: rate,
        repeat: k,
        throughput_rps: judged.throughput_rps,
        sent: judged.requests.sent,
        accepted: judged.requests.status.get("2xx").copied().unwrap_or(0),
        status_503: judged.requests.status.get("503").copied().unwrap_or(0),
        share_503: judged.requests.share.get("503").copied().unwrap_or(0.0),
        accepted_p99_ms: judged.latency_ms_by_class.get("2xx").map(|c| c.latency.p99),
        latency_p99_ms: judged.latency_ms.p99,
        accepted_mean_ms: judged
            .latency_ms_by_class
            .get("2xx")
            .map(|c| c.latency.mean),
        send_lag_p99_ms: d.send_lag_ms.p99,
        service_p99_ms: Some(d.service_time_ms.p99),
        missed_despite_lag,
        backlog_slope_per_s: slope,
        pool_waiting_slope_per_s: waiting_slope,
        delivery_p99_ms: d
            .delivery
            .iter()
            .map(|(c, v)| (c.clone(), v.p99_ms))
            .collect(),
        cores: step_cores,
        valid: d.valid,
        trustworthy: d.trustworthy,
        passed,
        delivery_keeps_up,
        why,
        dir: dir.display().to_string(),
    })
}

/// What a step's objective is held to: its measurement window's requests, latencies and
/// throughput when the step had a warm-up; everything else, and a step without one, whole.
fn judged(d: &DesignResults) -> DesignResults {
    match &d.window {
        Some(w) => DesignResults {
            requests: w.requests.clone(),
            latency_ms: w.latency_ms,
            latency_ms_by_class: w.latency_ms_by_class.clone(),
            throughput_rps: w.throughput_rps,
            ..d.clone()
        },
        None => d.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Attribution

fn read_telemetry(dir: &Path, design: Subject) -> Result<Vec<results::TelemetrySample>> {
    let path = dir.join("telemetry.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let mut t: Telemetry = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a telemetry file", path.display()))?;
    Ok(t.designs
        .remove(design.name())
        .map(|d| d.samples)
        .unwrap_or_default())
}

fn pool_size(ctx: &Run, design: Subject) -> u32 {
    match design {
        Subject::Sync => ctx.scenario.servers.sync.pool_size,
        Subject::Async => ctx.scenario.servers.async_.pool_size,
        Subject::Broker => ctx.scenario.servers.broker.pool_size,
        // Unknown: the pool test is skipped.
        Subject::Target => 0,
    }
}

/// Names the resource that saturated at `step`: its telemetry (one scrape a second) over the
/// measurement window, reduced to per-resource figures and judged by
/// [`crate::attribution::judge`]'s rules (driver, database locks, pool or what holds it, a
/// provider's rate limit, a channel's send slots, CPU).
fn attribute(ctx: &Run, design: Subject, step: &StepRecord) -> Result<Bottleneck> {
    // A `--target` run has no telemetry: the driver's figures and the processes remain.
    let samples = read_telemetry(Path::new(&step.dir), design).unwrap_or_default();
    let input = attribution::StepInput {
        offered_rps: step.offered_rps,
        // A step the design missed on its own time while the driver lagged is the design's
        // (`missed_despite_lag`): its resources are read like any failing step's.
        trustworthy: !step.driver_limited(),
        send_lag_p99_ms: step.send_lag_p99_ms,
        cores: step.cores.clone(),
        // The first second of a step judged whole is its start-up.
        from_s: ctx.warmup.as_secs_f64().max(1.0),
        to_s: ctx.duration.as_secs_f64(),
        pool_size: pool_size(ctx, design),
        claim_batch: (design == Subject::Async).then_some(ctx.scenario.servers.async_.batch),
        cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    };
    Ok(attribution::judge(&attribution::summarise(
        &input, &samples,
    )))
}

/// At a step that passed, the resource closest to its limit, and how close: each resource's use
/// as a share of what it has (the pool's connections in use, a channel's in-flight sends against
/// its concurrency limit, the machine's cores), the highest named, the others as evidence. Read
/// beside the first failing step's [`attribute`], it shows what was filling up before it gave
/// out.
///
/// `delivery` says which limit the knee is of: a channel's send slots count for the end-to-end
/// limit only, since they do not stand between a sign-up and its answer.
fn closest_to_limit(
    ctx: &Run,
    design: Subject,
    step: &StepRecord,
    delivery: bool,
) -> Result<Bottleneck> {
    let read = attribute(ctx, design, step)?;
    let s = &read.signals;
    let get = |k: &str| s.get(k).copied();
    let mut uses: Vec<(String, f64, String)> = Vec::new();
    if let (Some(size), Some(in_use)) = (get("pool_size"), get("pool_in_use_mean"))
        && size > 0.0
    {
        uses.push((
            "connection pool".into(),
            in_use / size,
            format!("{in_use:.1} of {size:.0} connections in use on average"),
        ));
    }
    for (k, v) in s.iter().filter(|_| delivery) {
        if let Some(c) = k
            .strip_prefix("channel_")
            .and_then(|r| r.strip_suffix("_in_flight_share_of_limit"))
        {
            uses.push((
                format!("channel concurrency ({c})"),
                *v,
                "in-flight sends against the concurrency limit, on average".to_string(),
            ));
        }
    }
    // The machine's busy cores when the telemetry has them (whoever used them), else the run's
    // own processes' over the whole run.
    if let (Some(used), Some(cpus)) = (
        get("machine_cores_busy").or(get("cores_used")),
        get("cores_available"),
    ) && cpus > 0.0
    {
        let whose = if get("machine_cores_busy").is_some() {
            " machine-wide"
        } else {
            ""
        };
        uses.push((
            "CPU".into(),
            used / cpus,
            match cores_text(&step.cores) {
                t if t.is_empty() => format!("{used:.2} of {cpus:.0} cores busy{whose}"),
                t => format!("{used:.2} of {cpus:.0} cores busy{whose} (the run's: {t})"),
            },
        ));
    }
    uses.sort_by(|a, b| b.1.total_cmp(&a.1));
    let Some((resource, _, _)) = uses.first().cloned() else {
        bail!("no resource's use was measured at {}/s", step.offered_rps);
    };
    Ok(Bottleneck {
        offered_rps: step.offered_rps,
        resource,
        evidence: uses
            .iter()
            .map(|(r, u, what)| format!("{r} at {:.0} % of its limit: {what}", u * 100.0))
            .collect(),
        signals: read.signals,
    })
}

/// Little's law for the sync design: each accepted sign-up holds a pooled connection for its
/// whole fan-out, so the pool serves at most pool size ÷ mean hold time a second. The hold time
/// is the sum of the server's measured phase times after the acquire (the provider calls and the
/// database work, `fanbench_phase_seconds`), per sign-up that reached the database.
fn littles_law(ctx: &Run, step: &StepRecord, measured: Option<u32>) -> Option<Prediction> {
    let samples = read_telemetry(Path::new(&step.dir), Subject::Sync).ok()?;
    let last = samples.last()?;
    let get = |phase: &str, what: &str| {
        last.server
            .get(&format!(
                "fanbench_phase_seconds_{what}{{phase=\"{phase}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let held: f64 = ["provider_email", "provider_sms", "provider_push", "db"]
        .iter()
        .map(|p| get(p, "sum"))
        .sum();
    let count = get("db", "count");
    if count <= 0.0 || held <= 0.0 {
        return None;
    }
    let hold_s = held / count;
    let size = f64::from(ctx.scenario.servers.sync.pool_size);
    let predicted = size / hold_s;
    let ratio = measured.map(|m| f64::from(m) / predicted);
    Some(Prediction {
        method: "Little's law: pool size ÷ mean connection hold time (measured phase times)".into(),
        predicted_rps: predicted,
        measured_rps: measured,
        ratio,
        detail: format!(
            "{size:.0} connections ÷ {:.0} ms held per sign-up (at the {}/s step) = {predicted:.1}/s{}",
            hold_s * 1000.0,
            step.offered_rps,
            ratio.map_or(String::new(), |r| format!(
                "; measured {} is {:.0} % {} it",
                measured.unwrap_or(0),
                ((r - 1.0) * 100.0).abs(),
                if r < 1.0 { "below" } else { "above" }
            ))
        ),
    })
}

/// A queue design's channels: each delivers at most its concurrency ceiling (`max_concurrency`
/// sends in flight: both queue designs' send slots adapt up to it) ÷ the provider's
/// mean latency sends a second, which is that
/// ÷ the channel's share of sign-ups (every sign-up has an email; `phone_share` an SMS,
/// `device_share` a push) sign-ups a second. The least of the three is the end-to-end limit the
/// workers allow. The latencies are the simulator's own, measured at `step`.
fn channels_law(
    ctx: &Run,
    design: Subject,
    step: &StepRecord,
    measured: Option<u32>,
) -> Option<Prediction> {
    let samples = read_telemetry(Path::new(&step.dir), design).ok()?;
    let last = samples.last()?;
    let ceiling = f64::from(match design {
        Subject::Broker => ctx.scenario.servers.broker.max_concurrency,
        _ => ctx.scenario.servers.async_.max_concurrency,
    });
    let payload = &ctx.scenario.payload;
    let mut parts = Vec::new();
    let mut least: Option<(String, f64)> = None;
    for (channel, share) in [
        ("email", 1.0),
        ("sms", payload.phone_share),
        ("push", payload.device_share),
    ] {
        let get = |what: &str| {
            last.providers
                .get(&format!(
                    "provider_sim_latency_seconds_{what}{{channel=\"{channel}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        };
        let (sum, count) = (get("sum"), get("count"));
        if count <= 0.0 || sum <= 0.0 || share <= 0.0 {
            continue;
        }
        let latency = sum / count;
        let signups = ceiling / latency / share;
        parts.push(format!(
            "{channel} {ceiling:.0} ÷ {:.0} ms ÷ {share} = {signups:.0}/s",
            latency * 1000.0
        ));
        if least.as_ref().is_none_or(|(_, l)| signups < *l) {
            least = Some((channel.to_string(), signups));
        }
    }
    let (channel, predicted) = least?;
    let ratio = measured.map(|m| f64::from(m) / predicted);
    Some(Prediction {
        method: "each channel's concurrency ceiling ÷ its provider's mean latency ÷ its share of sign-ups"
            .into(),
        predicted_rps: predicted,
        measured_rps: measured,
        ratio,
        detail: format!(
            "{} (at the {}/s step): {channel} allows the least, {predicted:.0}/s{}",
            parts.join("; "),
            step.offered_rps,
            ratio.map_or(String::new(), |r| format!(
                "; measured {} is {:.0} % of it",
                measured.unwrap_or(0),
                r * 100.0
            ))
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Output

fn limit_text(pass: Option<u32>, fail: Option<u32>, stop: Stop) -> String {
    let base = match (pass, fail) {
        (Some(p), Some(f)) => format!("{p}/s (failed at {f}/s)"),
        (Some(p), None) => format!("at least {p}/s"),
        (None, Some(f)) => format!("below {f}/s: no rate met it"),
        (None, None) => "not measured".to_string(),
    };
    match stop {
        Stop::Converged => base,
        Stop::Budget => format!("{base}; the step budget ran out first"),
        Stop::DriverLimited => format!("{base}; the driver capped the search (inconclusive)"),
        Stop::NeverPassed => format!("{base}; even 1/s failed"),
    }
}

fn table(r: &CapacityReport) -> String {
    let mut s = format!(
        "\nfanbench capacity: {} ({} cores, {:.0} s a step judged after a {:.0} s warm-up, resolution {:.0} %)\n",
        r.scenario,
        r.cpus,
        r.step_duration_s,
        r.warmup_s,
        r.resolution * 100.0
    );
    for (name, d) in report::capacity::ordered(r) {
        s.push_str(&format!("\n{name}: objective {}\n", d.slo.join(" and ")));
        s.push_str(&format!(
            "  {:>8} {:>11} {:>12} {:>8} {:>11} {:>12} {:>12}  {}\n",
            "offered",
            "answered/s",
            "2xx p99 ms",
            "503 %",
            "lag p99 ms",
            "waiting +/s",
            "queue row/s",
            "verdict"
        ));
        for st in &d.steps {
            let verdict = if st.driver_limited() {
                "DRIVER-LIMITED".to_string()
            } else if st.passed && st.delivery_keeps_up != Some(false) {
                "pass".to_string()
            } else {
                format!("FAIL: {}", st.why.join("; "))
            };
            s.push_str(&format!(
                "  {:>8} {:>11.1} {:>12} {:>8.2} {:>11.2} {:>12} {:>12}  {verdict}\n",
                if st.repeat > 0 {
                    format!("{}/s r{}", st.offered_rps, st.repeat)
                } else {
                    format!("{}/s", st.offered_rps)
                },
                st.throughput_rps,
                st.accepted_p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
                st.share_503 * 100.0,
                st.send_lag_p99_ms,
                st.pool_waiting_slope_per_s
                    .map_or("-".into(), |v| format!("{v:+.1}")),
                st.backlog_slope_per_s
                    .map_or("-".into(), |v| format!("{v:+.1}")),
            ));
        }
        s.push_str(&verdict_lines(name, d, r.resolution).join("\n"));
        s.push('\n');
    }
    if let Some((what, rows)) = sweep_rows(r) {
        s.push_str(&format!("\nwhat {what} does:\n"));
        for [value, cap, e2e, past] in rows {
            s.push_str(&format!("  {what}={value}: capacity {cap}"));
            if e2e != "-" {
                s.push_str(&format!("; end to end {e2e}"));
            }
            s.push_str(&format!("; past the knee: {past}\n"));
        }
    }
    s
}

fn verdict_lines(name: &str, d: &DesignCapacity, resolution: f64) -> Vec<String> {
    let mut lines = vec![format!(
        "{name} capacity{}: {}{}",
        if d.delivery_stop.is_some() {
            " (ingest)"
        } else {
            ""
        },
        limit_text(d.capacity_rps, d.first_fail_rps, d.stop),
        report::capacity::interval_text(d.capacity_ci, d.repeats, resolution)
    )];
    if let Some(stop) = d.delivery_stop {
        lines.push(format!(
            "{name} capacity (end to end, delivery keeping up): {}{}",
            limit_text(d.delivery_capacity_rps, d.delivery_first_fail_rps, stop),
            report::capacity::interval_text(d.delivery_capacity_ci, d.repeats, resolution)
        ));
    }
    // (what the line says before the rate, after it, the read)
    let reads = [
        ("at the knee (", "/s), closest to its limit", &d.knee),
        ("bottleneck at ", "/s", &d.bottleneck),
        (
            "at the end-to-end knee (",
            "/s), closest to its limit",
            &d.delivery_knee,
        ),
        ("bottleneck (delivery) at ", "/s", &d.delivery_bottleneck),
    ];
    for (before, after, b) in reads {
        if let Some(b) = b {
            lines.push(format!(
                "  {before}{}{after}: {} — {}",
                b.offered_rps,
                b.resource,
                b.evidence.join("; ")
            ));
        }
    }
    if let Some(p) = &d.prediction {
        lines.push(format!("  prediction: {}: {}", p.method, p.detail));
    }
    if let Some(u) = &d.usl {
        lines.push(format!("  {}", crate::usl::verdict_line(u)));
    }
    lines
}

/// A sweep in one table: per value, each limit and what gave out past it.
fn sweep_rows(r: &CapacityReport) -> Option<(String, Vec<[String; 4]>)> {
    let sweep = r.sweep.as_ref()?;
    let rows = sweep
        .keys()
        .iter()
        .zip(&sweep.values)
        .filter_map(|(key, value)| {
            let d = r.designs.get(key)?;
            let resource = |b: &Option<Bottleneck>| {
                b.as_ref().map_or("-".to_string(), |b| {
                    format!("{} at {}/s", b.resource, b.offered_rps)
                })
            };
            Some([
                value.clone(),
                limit_text(d.capacity_rps, d.first_fail_rps, d.stop),
                d.delivery_stop.map_or("-".into(), |stop| {
                    limit_text(d.delivery_capacity_rps, d.delivery_first_fail_rps, stop)
                }),
                match d.delivery_stop {
                    Some(_) => format!(
                        "{}; end to end: {}",
                        resource(&d.bottleneck),
                        resource(&d.delivery_bottleneck)
                    ),
                    None => resource(&d.bottleneck),
                },
            ])
        })
        .collect();
    Some((format!("{}.{}", sweep.design, sweep.setting), rows))
}

fn summary_md(r: &CapacityReport) -> String {
    let mut s = format!(
        "# Capacity: {}\n\n{} cores; each step {:.0} s of constant Poisson load, judged on what followed its {:.0} s warm-up; \
         bisection to {:.0} % or {} steps a search.\n",
        r.scenario,
        r.cpus,
        r.step_duration_s,
        r.warmup_s,
        r.resolution * 100.0,
        r.max_steps
    );
    if let Some((what, rows)) = sweep_rows(r) {
        s.push_str(&format!(
            "\n## What `{what}` does\n\n| {what} | capacity | end to end | gave out past the knee |\n| ---: | --- | --- | --- |\n"
        ));
        for row in rows {
            s.push_str(&format!("| {} |\n", row.join(" | ")));
        }
    }
    for (name, d) in report::capacity::ordered(r) {
        s.push_str(&format!(
            "\n## {name}\n\nObjective: `{}`\n\n",
            d.slo.join("`, `")
        ));
        for line in verdict_lines(name, d, r.resolution) {
            s.push_str(&format!("- {}\n", line.trim()));
        }
        s.push_str(
            "\n| offered/s | answered/s | 2xx p99 ms | 503 % | send lag p99 ms | verdict |\n",
        );
        s.push_str("| ---: | ---: | ---: | ---: | ---: | --- |\n");
        for st in &d.steps {
            s.push_str(&format!(
                "| {}{} | {:.1} | {} | {:.2} | {:.2} | {} |\n",
                st.offered_rps,
                if st.repeat > 0 {
                    format!(" (repeat {})", st.repeat)
                } else {
                    String::new()
                },
                st.throughput_rps,
                st.accepted_p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
                st.share_503 * 100.0,
                st.send_lag_p99_ms,
                if st.driver_limited() {
                    "driver-limited".to_string()
                } else if st.passed && st.delivery_keeps_up != Some(false) {
                    "pass".to_string()
                } else {
                    format!("fail: {}", st.why.join("; ").replace('|', "\\|"))
                }
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::label;

    fn plan() -> SearchPlan {
        SearchPlan {
            start: 10,
            factor: 2.0,
            resolution: 0.05,
            max_steps: 20,
        }
    }

    /// A design that meets its objective up to `limit`.
    fn up_to(limit: u32) -> impl FnMut(u32) -> Result<Verdict> {
        move |r| {
            Ok(if r <= limit {
                Verdict::Pass
            } else {
                Verdict::Fail
            })
        }
    }

    #[test]
    fn the_search_converges_within_the_resolution() {
        for limit in [1, 7, 10, 33, 100, 157, 999, 5000] {
            let f = search(&plan(), up_to(limit)).unwrap();
            assert_eq!(f.stop, Stop::Converged, "limit {limit}: {f:?}");
            let (p, fail) = (f.pass.unwrap(), f.fail.unwrap());
            assert!(p <= limit && fail > limit, "limit {limit}: {f:?}");
            assert!(
                f64::from(fail - p) / f64::from(p) <= 0.05 || fail == p + 1,
                "limit {limit}: {f:?}"
            );
            // Every rate is tried once.
            let mut rates: Vec<u32> = f.tried.iter().map(|(r, _)| *r).collect();
            rates.sort_unstable();
            rates.dedup();
            assert_eq!(rates.len(), f.tried.len(), "{f:?}");
        }
    }

    #[test]
    fn a_driver_limited_step_is_inconclusive_and_stops_the_search() {
        // The design holds everything; the driver cannot offer more than 150/s.
        let f = search(&plan(), |r| {
            Ok(if r > 150 {
                Verdict::DriverLimited
            } else {
                Verdict::Pass
            })
        })
        .unwrap();
        assert_eq!(f.stop, Stop::DriverLimited);
        assert_eq!(f.pass, Some(80), "the last rate that passed");
        assert_eq!(f.fail, None, "a driver-limited step is never the limit");
        assert_eq!(f.tried.last(), Some(&(160, Verdict::DriverLimited)));
        // Met while bisecting, too.
        let f = search(&plan(), |r| {
            Ok(match r {
                ..=40 => Verdict::Pass,
                60 => Verdict::DriverLimited,
                _ => Verdict::Fail,
            })
        })
        .unwrap();
        assert_eq!(
            (f.pass, f.fail, f.stop),
            (Some(40), Some(80), Stop::DriverLimited)
        );
    }

    #[test]
    fn the_search_respects_the_step_budget() {
        let tight = SearchPlan {
            max_steps: 4,
            ..plan()
        };
        let f = search(&tight, up_to(1000)).unwrap();
        assert_eq!(f.tried.len(), 4);
        assert_eq!(f.stop, Stop::Budget);
        assert_eq!(f.pass, Some(80));
        let none = SearchPlan {
            max_steps: 0,
            ..plan()
        };
        let f = search(&none, up_to(1000)).unwrap();
        assert!(f.tried.is_empty() && f.pass.is_none());
    }

    #[test]
    fn steps_already_known_cost_nothing_from_the_budget() {
        let tight = SearchPlan {
            max_steps: 3,
            ..plan()
        };
        // 10, 20 and 40 are known from an earlier search: three more steps can run.
        let f = search(&tight, |r| {
            Ok(Probe {
                verdict: Verdict::Pass,
                known: r <= 40,
            })
        })
        .unwrap();
        assert_eq!(f.tried.len(), 6, "{f:?}");
        assert_eq!((f.pass, f.stop), (Some(320), Stop::Budget));
    }

    #[test]
    fn the_search_descends_when_the_first_step_fails() {
        let f = search(&plan(), up_to(3)).unwrap();
        assert_eq!(f.pass, Some(3));
        assert_eq!(f.fail, Some(4));
        let f = search(&plan(), up_to(0)).unwrap();
        assert_eq!((f.pass, f.fail, f.stop), (None, Some(1), Stop::NeverPassed));
    }

    #[test]
    fn objectives_are_prefixed_with_their_design() {
        assert_eq!(
            prefix_metrics("sync", "latency_ms_by_class.2xx.p99 < 6000"),
            "sync.latency_ms_by_class.2xx.p99 < 6000"
        );
        assert_eq!(
            prefix_metrics("async", "requests.status.503 / requests.sent<0.01"),
            "async.requests.status.503 / async.requests.sent<0.01"
        );
        for d in [Subject::Sync, Subject::Async] {
            for t in default_slo(d) {
                parse_slo(d, t, "built-in").unwrap();
            }
        }
    }

    #[test]
    fn a_bad_objective_is_an_error_naming_the_flag() {
        for (text, says) in [
            ("latncy_ms.p99 < 250", "no metric `sync.latncy_ms.p99`"),
            ("latency_ms.p99 <", "--slo `latency_ms.p99 <`"),
            ("throughput_rps", "expected a comparison"),
        ] {
            let e = parse_slo(Subject::Sync, text, "--slo")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--slo `"), "{e}");
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = objectives(
            Subject::Async,
            &[
                "async:latency_ms.p99 < 1".into(),
                "sync:nonsense.x < 1".into(),
            ],
            &BTreeMap::new(),
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(
            e.len(),
            1,
            "a DESIGN: objective applies to that design only"
        );
        let mut from_file = BTreeMap::new();
        from_file.insert("sync".to_string(), vec!["nope < 1".to_string()]);
        let e = objectives(Subject::Sync, &[], &from_file, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml [capacity] slo.sync"), "{e}");
    }

    #[test]
    fn series_labels_are_read() {
        let k = r#"provider_sim_sends_total{channel="sms",outcome="rate_limited"}"#;
        assert_eq!(label(k, "channel"), Some("sms"));
        assert_eq!(label(k, "outcome"), Some("rate_limited"));
        assert_eq!(label("x", "channel"), None);
    }

    #[test]
    fn a_step_scenario_is_a_valid_scenario() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/capacity.toml"),
        )
        .unwrap();
        let base: toml::Table = toml::from_str(&text).unwrap();
        let step = step_scenario(
            &base,
            Subject::Async,
            123,
            Duration::from_secs(20),
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        let s = scenario::Scenario::parse(&step, Path::new("step.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{step}"));
        assert!(s.capacity.is_empty() && s.gates.is_empty());
        assert_eq!(s.name, "capacity-async-123");
        // A warm-up phase, then the measurement at the same rate; the driver knows where it starts.
        let names: Vec<&str> = s.arrivals.phases.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["warm-up", "measure"]);
        let lengths: Vec<Duration> = s.arrivals.phases.iter().map(|p| p.duration()).collect();
        assert_eq!(lengths, [Duration::from_secs(5), Duration::from_secs(15)]);
        assert_eq!(s.driver.warmup, Some(Duration::from_secs(5)));
        // The scenario's own driver settings stay.
        assert_eq!(s.driver.max_latency, Duration::from_secs(6));
        // No warm-up: one phase, judged whole.
        let whole = step_scenario(
            &base,
            Subject::Sync,
            10,
            Duration::from_secs(8),
            Duration::ZERO,
            None,
        )
        .unwrap();
        let s = scenario::Scenario::parse(&whole, Path::new("step.toml")).unwrap();
        assert_eq!(s.arrivals.phases.len(), 1);
        assert_eq!(s.driver.warmup, None);
    }

    #[test]
    fn a_steps_users_are_sized_for_its_designs_objective_unless_the_scenario_fixes_them() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/capacity.toml"),
        )
        .unwrap();
        let mut base: toml::Table = toml::from_str(&text).unwrap();
        let slo = objectives(Subject::Async, &[], &BTreeMap::new(), Path::new("x")).unwrap();
        let bound = latency_bound(&slo);
        assert_eq!(bound, Some(Duration::from_millis(250)));
        let step = |base: &toml::Table| {
            let text = step_scenario(
                base,
                Subject::Async,
                3200,
                Duration::from_secs(20),
                Duration::from_secs(5),
                bound,
            )
            .unwrap();
            scenario::Scenario::parse(&text, Path::new("step.toml")).unwrap()
        };
        // The scenario's 6 s (sized for the sync design) would be 28,800 users at 3,200/s.
        let s = step(&base);
        assert_eq!(s.driver.max_latency, Duration::from_millis(250));
        assert_eq!(driver::users_for(3200.0, s.driver.max_latency), 1200);
        // A scenario that says how many users keeps them, and its max_latency.
        base["driver"]
            .as_table_mut()
            .unwrap()
            .insert("users".into(), toml::Value::Integer(64));
        let s = step(&base);
        assert_eq!(s.driver.users, Some(64));
        assert_eq!(s.driver.max_latency, Duration::from_secs(6));
    }

    #[test]
    fn an_objectives_latency_bound_is_its_loosest_upper_bound_on_a_latency() {
        let slo = |texts: &[&str]| -> Vec<Slo> {
            texts
                .iter()
                .map(|t| parse_slo(Subject::Sync, t, "test").unwrap())
                .collect()
        };
        assert_eq!(
            latency_bound(&slo(&[
                "latency_ms_by_class.2xx.p50 < 100",
                "latency_ms_by_class.2xx.p99 < 6000",
                "requests.share.503 < 0.01",
            ])),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            latency_bound(&slo(&["latency_ms.p99 <= 80"])),
            Some(Duration::from_millis(80))
        );
        assert_eq!(latency_bound(&slo(&["requests.share.503 < 0.01"])), None);
        assert_eq!(latency_bound(&slo(&["latency_ms.p99 > 1"])), None);
    }

    #[test]
    fn a_late_driver_leaves_a_step_inconclusive_unless_the_server_missed_on_its_own_time() {
        let bound = Some(Duration::from_millis(250));
        // The server took longer than the bound from each actual send, the driver was not busy.
        assert!(missed_on_service_time(bound, 900.0, Some(0.4), 1));
        // Within the bound on its own time: the lateness may be all the driver's.
        assert!(!missed_on_service_time(bound, 200.0, Some(0.4), 1));
        // A driver using a whole core per load thread may have held answers unread: no
        // conclusion.
        assert!(!missed_on_service_time(bound, 900.0, Some(1.0), 1));
        assert!(!missed_on_service_time(bound, 900.0, Some(2.0), 2));
        assert!(!missed_on_service_time(bound, 900.0, None, 1));
        // Two load threads had idle time at 1.5 cores.
        assert!(missed_on_service_time(bound, 900.0, Some(1.5), 2));
        // No latency bound, nothing to hold the service time to.
        assert!(!missed_on_service_time(None, 900.0, Some(0.4), 1));
    }

    #[test]
    fn a_step_is_judged_on_its_window_when_it_had_a_warm_up() {
        let mut d: DesignResults = serde_json::from_value(
            serde_json::from_str::<serde_json::Value>(include_str!(
                "../../results/fixtures/smoke/results.json"
            ))
            .unwrap()["designs"]["async"]
                .clone(),
        )
        .unwrap();
        assert_eq!(judged(&d), d, "no warm-up: the whole step");
        let mut window_latency = d.latency_ms_by_class.clone();
        for class in window_latency.values_mut() {
            class.latency.p99 = 1.0;
        }
        d.window = Some(results::Window {
            from_s: 5.0,
            duration_s: 15.0,
            requests: d.requests.clone(),
            latency_ms: d.latency_ms,
            latency_ms_by_class: window_latency,
            send_lag_ms: d.send_lag_ms,
            throughput_rps: 123.0,
        });
        let j = judged(&d);
        assert_eq!(j.throughput_rps, 123.0);
        assert_eq!(j.latency_ms_by_class["2xx"].latency.p99, 1.0);
        assert_eq!(
            j.send_lag_ms, d.send_lag_ms,
            "the lag stays the whole step's"
        );
        assert_eq!(j.trustworthy, d.trustworthy);
    }

    fn run_in(dir: &Path) -> Run {
        let text = "name = \"t\"\n[arrivals]\nphases = [{ kind = \"constant\", duration = \"10s\", rate = 1 }]\n";
        Run {
            label: None,
            base: toml::from_str(text).unwrap(),
            scenario: scenario::Scenario::parse(text, Path::new("t.toml")).unwrap(),
            out: dir.to_path_buf(),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            delivery_p99: 1000.0,
            target: None,
            allow_remote: false,
            repeats: 1,
            quiet: true,
        }
    }

    /// A step folder whose telemetry has `server` series: gauges the same each second, counters
    /// (`_sum`, `_count`, `_total`) growing at an even pace to their value at the last second.
    fn step_in(dir: &Path, server: &[(&str, f64)], trustworthy: bool) -> StepRecord {
        let counter = |k: &str| {
            ["_sum{", "_count{", "_total{"]
                .iter()
                .any(|c| k.contains(c))
        };
        let samples = (0..=10)
            .map(|t| results::TelemetrySample {
                t: f64::from(t),
                server: server
                    .iter()
                    .map(|(k, v)| {
                        let v = if counter(k) {
                            v * f64::from(t) / 10.0
                        } else {
                            *v
                        };
                        (k.to_string(), v)
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let telemetry = Telemetry {
            schema_version: 1,
            designs: BTreeMap::from([("sync".to_string(), results::DesignTelemetry { samples })]),
        };
        std::fs::write(
            dir.join("telemetry.json"),
            serde_json::to_string(&telemetry).unwrap(),
        )
        .unwrap();
        StepRecord {
            trustworthy,
            dir: dir.display().to_string(),
            ..sample_report().designs["sync"].steps[0].clone()
        }
    }

    #[test]
    fn the_knee_is_attributed_to_what_ran_out() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        let full = [
            ("fanbench_pool_connections{state=\"open\"}", 10.0),
            ("fanbench_pool_connections{state=\"idle\"}", 0.0),
            ("fanbench_pool_waiting", 40.0),
            ("fanbench_phase_seconds_sum{phase=\"pool_acquire\"}", 300.0),
            (
                "fanbench_phase_seconds_count{phase=\"pool_acquire\"}",
                400.0,
            ),
        ];
        let b = attribute(&run, Subject::Sync, &step_in(dir.path(), &full, true)).unwrap();
        assert_eq!(b.resource, "connection pool", "{b:?}");
        assert!(b.evidence[0].contains("10.0 of 10 connections"), "{b:?}");
        assert!(b.evidence[1].contains("750 ms"), "{b:?}");
        // The driver comes first: its step says nothing about the design.
        let b = attribute(&run, Subject::Sync, &step_in(dir.path(), &full, false)).unwrap();
        assert_eq!(b.resource, "driver", "{b:?}");
        // A pool with room and nothing else at a limit: said plainly.
        let idle = [
            ("fanbench_pool_connections{state=\"open\"}", 10.0),
            ("fanbench_pool_connections{state=\"idle\"}", 8.0),
        ];
        let b = attribute(&run, Subject::Sync, &step_in(dir.path(), &idle, true)).unwrap();
        assert_eq!(b.resource, "unclear", "{b:?}");
        // An async channel at its concurrency limit.
        let channel = [
            ("fanbench_deliveries_in_flight{channel=\"sms\"}", 64.0),
            (
                "fanbench_deliveries_concurrency_limit{channel=\"sms\"}",
                64.0,
            ),
        ];
        let b = attribute(&run, Subject::Sync, &step_in(dir.path(), &channel, true)).unwrap();
        assert_eq!(b.resource, "channel concurrency (sms)", "{b:?}");
    }

    #[test]
    fn a_send_limit_still_growing_while_busy_is_named_and_a_growing_idle_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        // The async design's SMS limit doubles each second from 2 up to 64 (t = 5), then holds;
        // in-flight sends stay at `share` of it. The window is the measurement window: from the
        // 2 s warm-up to the step's 10 s.
        let write = |share: f64, grows_until: u32| {
            let samples = (0..=10)
                .map(|t| {
                    let limit = f64::from(2u32 << t.min(grows_until));
                    results::TelemetrySample {
                        t: f64::from(t),
                        server: BTreeMap::from([
                            (
                                "fanbench_deliveries_in_flight{channel=\"sms\"}".to_string(),
                                limit * share,
                            ),
                            (
                                "fanbench_deliveries_concurrency_limit{channel=\"sms\"}"
                                    .to_string(),
                                limit,
                            ),
                        ]),
                        ..Default::default()
                    }
                })
                .collect();
            let telemetry = Telemetry {
                schema_version: 1,
                designs: BTreeMap::from([(
                    "async".to_string(),
                    results::DesignTelemetry { samples },
                )]),
            };
            std::fs::write(
                dir.path().join("telemetry.json"),
                serde_json::to_string(&telemetry).unwrap(),
            )
            .unwrap();
            StepRecord {
                dir: dir.path().display().to_string(),
                ..sample_report().designs["sync"].steps[0].clone()
            }
        };
        // Growing in 4 of the window's 9 samples (t = 2…5), then at 80 % of 64: within the claim
        // loop's refill band (64 − ⌈min(32, 64) ÷ 2⌉ = 48 in flight or more) for the other 5.
        let b = attribute(&run, Subject::Async, &write(0.8, 5)).unwrap();
        assert_eq!(b.resource, "channel concurrency (sms)", "{b:?}");
        assert!(b.evidence[0].contains("grew from 8 to 64"), "{b:?}");
        assert!(b.evidence[0].contains("9 of 9 s"), "{b:?}");
        // The same growth, then at 30 % (19 in flight, below 48): saturated 4 samples of 9.
        let b = attribute(&run, Subject::Async, &write(0.3, 5)).unwrap();
        assert_ne!(b.resource, "channel concurrency (sms)", "{b:?}");
        // A limit that grows every second of the window was saturated every second (it grows
        // only then), however few sends the gauge caught in flight.
        let b = attribute(&run, Subject::Async, &write(0.3, 10)).unwrap();
        assert_eq!(b.resource, "channel concurrency (sms)", "{b:?}");
    }

    #[test]
    fn at_the_knee_the_resource_closest_to_its_limit_is_named_with_the_others_as_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        // The scenario's pool has 10 connections; 9 in use, the sms channel at half its limit.
        let filling = [
            ("fanbench_pool_connections{state=\"open\"}", 10.0),
            ("fanbench_pool_connections{state=\"idle\"}", 1.0),
            ("fanbench_deliveries_in_flight{channel=\"sms\"}", 32.0),
            (
                "fanbench_deliveries_concurrency_limit{channel=\"sms\"}",
                64.0,
            ),
        ];
        let step = StepRecord {
            cores: BTreeMap::from([("postgres".to_string(), 0.2)]),
            ..step_in(dir.path(), &filling, true)
        };
        let b = closest_to_limit(&run, Subject::Sync, &step, true).unwrap();
        assert_eq!(b.resource, "connection pool", "{b:?}");
        assert_eq!(b.offered_rps, step.offered_rps);
        assert_eq!(b.evidence.len(), 3, "{b:?}");
        assert!(
            b.evidence[0].starts_with("connection pool at 90 %"),
            "{b:?}"
        );
        assert!(
            b.evidence[1].starts_with("channel concurrency (sms) at 50 %"),
            "{b:?}"
        );
        assert!(b.evidence[2].starts_with("CPU at "), "{b:?}");
        // A channel nearer its limit than the pool is named instead.
        let channel = [
            ("fanbench_pool_connections{state=\"open\"}", 10.0),
            ("fanbench_pool_connections{state=\"idle\"}", 8.0),
            ("fanbench_deliveries_in_flight{channel=\"sms\"}", 60.0),
            (
                "fanbench_deliveries_concurrency_limit{channel=\"sms\"}",
                64.0,
            ),
        ];
        let step = step_in(dir.path(), &channel, true);
        let b = closest_to_limit(&run, Subject::Sync, &step, true).unwrap();
        assert_eq!(b.resource, "channel concurrency (sms)", "{b:?}");
        // At an ingest knee the channels' send slots are not in the request's way.
        let b = closest_to_limit(&run, Subject::Sync, &step, false).unwrap();
        assert!(b.evidence.iter().all(|e| !e.contains("sms")), "{b:?}");
    }

    #[test]
    fn the_channels_law_names_the_channel_that_allows_the_least() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        let series = |c: &str, sum: f64, count: f64| {
            [
                (
                    format!("provider_sim_latency_seconds_sum{{channel=\"{c}\"}}"),
                    sum,
                ),
                (
                    format!("provider_sim_latency_seconds_count{{channel=\"{c}\"}}"),
                    count,
                ),
            ]
        };
        // Mean latencies 100 ms (email), 200 ms (sms), 50 ms (push).
        let providers: BTreeMap<String, f64> = series("email", 10.0, 100.0)
            .into_iter()
            .chain(series("sms", 20.0, 100.0))
            .chain(series("push", 5.0, 100.0))
            .collect();
        let telemetry = Telemetry {
            schema_version: 1,
            designs: BTreeMap::from([(
                "async".to_string(),
                results::DesignTelemetry {
                    samples: vec![results::TelemetrySample {
                        t: 10.0,
                        providers,
                        ..Default::default()
                    }],
                },
            )]),
        };
        std::fs::write(
            dir.path().join("telemetry.json"),
            serde_json::to_string(&telemetry).unwrap(),
        )
        .unwrap();
        let step = StepRecord {
            dir: dir.path().display().to_string(),
            ..sample_report().designs["sync"].steps[0].clone()
        };
        let p = channels_law(&run, Subject::Async, &step, Some(1000)).unwrap();
        let ceiling = f64::from(run.scenario.servers.async_.max_concurrency);
        let share = run.scenario.payload.phone_share;
        // SMS: the slowest provider; it allows the least unless few sign-ups carry a phone.
        let sms = ceiling / 0.2 / share;
        let email = ceiling / 0.1;
        assert!((p.predicted_rps - sms.min(email)).abs() < 1e-6, "{p:?}");
        assert_eq!(p.ratio, Some(1000.0 / p.predicted_rps));
    }

    fn sample_report() -> CapacityReport {
        let step = StepRecord {
            offered_rps: 40,
            repeat: 0,
            throughput_rps: 30.5,
            sent: 800,
            accepted: 700,
            status_503: 100,
            share_503: 0.125,
            accepted_p99_ms: Some(5100.0),
            latency_p99_ms: 5200.0,
            accepted_mean_ms: Some(900.0),
            send_lag_p99_ms: 0.2,
            service_p99_ms: Some(5000.0),
            missed_despite_lag: false,
            backlog_slope_per_s: None,
            pool_waiting_slope_per_s: Some(12.5),
            delivery_p99_ms: BTreeMap::new(),
            cores: BTreeMap::from([("postgres".to_string(), 0.3)]),
            valid: true,
            trustworthy: true,
            passed: false,
            delivery_keeps_up: None,
            why: vec!["requests.share.503 < 0.01 (was 0.125)".into()],
            dir: "out/sync/step-40".into(),
        };
        let sync = DesignCapacity {
            slo: vec!["requests.share.503 < 0.01".into()],
            capacity_rps: Some(30),
            first_fail_rps: Some(40),
            stop: Stop::Converged,
            repeats: 1,
            capacity_ci: None,
            delivery_capacity_rps: None,
            delivery_first_fail_rps: None,
            delivery_capacity_ci: None,
            delivery_stop: None,
            steps: vec![step.clone()],
            bottleneck: Some(Bottleneck {
                offered_rps: 40,
                resource: "connection pool".into(),
                evidence: vec!["10 of 10 in use".into()],
                signals: BTreeMap::from([("pool_size".to_string(), 10.0)]),
            }),
            delivery_bottleneck: None,
            knee: None,
            delivery_knee: None,
            prediction: Some(Prediction {
                method: "Little's law".into(),
                predicted_rps: 32.0,
                measured_rps: Some(30),
                ratio: Some(30.0 / 32.0),
                detail: "x".into(),
            }),
            usl: Some(results::capacity::Usl {
                points: 7,
                sigma: Some(0.05),
                kappa: Some(0.002),
                lambda: Some(3.0),
                r_squared: Some(0.98),
                knee_concurrency: Some(21.8),
                predicted_knee_rps: Some(31.4),
                note: "x".into(),
                confirmation: Some(results::capacity::Confirmation {
                    rate: 31,
                    throughput_rps: 29.0,
                    ratio: 29.0 / 31.4,
                    passed: true,
                    verdict: results::capacity::ConfirmationVerdict::Confirmed,
                    dir: "out/sync/step-31".into(),
                }),
            }),
        };
        let async_ = DesignCapacity {
            slo: vec![],
            capacity_rps: None,
            first_fail_rps: None,
            stop: Stop::DriverLimited,
            repeats: 1,
            capacity_ci: None,
            delivery_capacity_rps: Some(400),
            delivery_first_fail_rps: None,
            delivery_capacity_ci: Some([Some(400), None]),
            delivery_stop: Some(Stop::Budget),
            steps: vec![StepRecord {
                backlog_slope_per_s: Some(1.5),
                delivery_keeps_up: Some(true),
                trustworthy: false,
                ..step
            }],
            bottleneck: None,
            delivery_bottleneck: None,
            knee: None,
            delivery_knee: None,
            prediction: None,
            usl: Some(crate::usl::record(&crate::usl::usl_for(&[]))),
        };
        CapacityReport {
            schema_version: SCHEMA_VERSION,
            scenario: "scenarios/capacity.toml".into(),
            cpus: 2,
            step_duration_s: 20.0,
            warmup_s: 5.0,
            factor: 2.0,
            resolution: 0.1,
            max_steps: 10,
            overrides: vec!["sync.pool_size=20".into()],
            designs: BTreeMap::from([("sync".to_string(), sync), ("async".to_string(), async_)]),
            sweep: None,
        }
    }

    #[test]
    fn the_document_validates_against_its_schema() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let doc = serde_json::to_value(sample_report()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // And the schema is strict: a stray field is refused.
        let mut bad = doc.clone();
        bad["designs"]["sync"]["capacity"] = serde_json::json!(1);
        assert!(!validator.is_valid(&bad));
        // The outputs render from it.
        let r = sample_report();
        assert!(table(&r).contains("sync capacity: 30/s (failed at 40/s)"));
        assert!(summary_md(&r).contains("driver-limited"));
    }

    #[test]
    fn capacity_gates_check_their_names_before_any_step() {
        let path = Path::new("scenarios/capacity.toml");
        let rules = capacity_gates(
            &["sync.capacity_rps > 25".to_string()],
            &["async.delivery_capacity_rps / sync.capacity_rps > 10".to_string()],
            path,
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        let typo = capacity_gates(&[], &["sync.capacty_rps > 25".to_string()], path)
            .unwrap_err()
            .to_string();
        assert!(typo.starts_with("--gate:"), "{typo}");
        assert!(
            typo.contains("sync.capacty_rps") && typo.contains("capacity_rps"),
            "{typo}"
        );
        let design = capacity_gates(&["sink.capacity_rps > 1".to_string()], &[], path)
            .unwrap_err()
            .to_string();
        assert!(
            design.contains("[capacity] gates") && design.contains("sink"),
            "{design}"
        );
    }

    #[test]
    fn capacity_gates_pass_fail_and_skip_on_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::new("x.toml");
        // sync found 30/s; async's end-to-end limit is at least 400/s.
        let passing = capacity_gates(
            &[],
            &[
                "sync.capacity_rps > 25".to_string(),
                "async.delivery_capacity_rps / sync.capacity_rps > 10".to_string(),
            ],
            path,
        )
        .unwrap();
        judge_gates(&passing, &sample_report(), dir.path()).unwrap();
        let written: Vec<gates::GateResult> =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("gates.json")).unwrap())
                .unwrap();
        assert_eq!(written.len(), 2);
        assert!(written.iter().all(|g| g.passed), "{written:?}");

        let failing = capacity_gates(&[], &["sync.capacity_rps > 35".to_string()], path).unwrap();
        let err = judge_gates(&failing, &sample_report(), dir.path()).unwrap_err();
        assert!(
            err.downcast_ref::<crate::gating::GatesFailed>().is_some(),
            "{err}"
        );

        let mut sync_only = sample_report();
        sync_only.designs.remove("async");
        let skipped = capacity_gates(
            &[],
            &["async.delivery_capacity_rps / sync.capacity_rps > 10".to_string()],
            path,
        )
        .unwrap();
        judge_gates(&skipped, &sync_only, dir.path()).unwrap();
        let written: Vec<gates::GateResult> =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("gates.json")).unwrap())
                .unwrap();
        assert!(
            written[0]
                .skipped
                .as_deref()
                .unwrap_or_default()
                .contains("async")
        );
    }

    #[test]
    fn capacity_gates_hold_at_the_least_favourable_end_of_each_interval() {
        let path = Path::new("x.toml");
        // sync's limit is 30/s by majority; its repeats put it at least 28/s and below 34/s.
        let mut report = sample_report();
        let sync = report.designs.get_mut("sync").unwrap();
        sync.repeats = 3;
        sync.capacity_ci = Some([Some(28), Some(34)]);
        let gate_on = |report: &CapacityReport, text: &str| {
            let rules = capacity_gates(&[], &[text.to_string()], path).unwrap();
            at_every_end(&rules[0], &serde_json::to_value(report).unwrap(), report).unwrap()
        };
        let gate = |text: &str| gate_on(&report, text);
        // 30 > 29, but the low end, 28, is not.
        let low = gate("sync.capacity_rps > 29");
        assert!(!low.passed, "{low:?}");
        assert_eq!(low.value, 28.0);
        assert!(
            low.detail.contains("sync.capacity_rps at its low end, 28"),
            "{low:?}"
        );
        // 30 < 32, but the limit may be as high as just under 34.
        let high = gate("sync.capacity_rps < 32");
        assert!(!high.passed && high.value == 34.0, "{high:?}");
        // Clear of both ends: passes, and says which end it was held to.
        let clear = gate("sync.capacity_rps > 20");
        assert!(clear.passed && clear.value == 28.0, "{clear:?}");
        // A ratio takes the least favourable end for its denominator too.
        let ratio = gate("async.delivery_capacity_rps / sync.capacity_rps > 10");
        assert!(ratio.detail.contains("high end, 34"), "{ratio:?}");
        // A figure without an interval is taken as it is.
        let plain = gate("sync.first_fail_rps > 31");
        assert!(plain.passed && plain.detail.is_empty(), "{plain:?}");
        // An unknown end is left out, saying so.
        report.designs.get_mut("sync").unwrap().capacity_ci = Some([Some(28), None]);
        let open = gate_on(&report, "sync.capacity_rps < 32");
        assert!(open.passed && open.detail.contains("unknown"), "{open:?}");
    }

    #[test]
    fn a_sweep_is_one_setting_of_one_design_and_two_distinct_values_or_more() {
        let (design, key, values) = parse_sweep("async.max_concurrency=16, 64,256").unwrap();
        assert_eq!(design, Subject::Async);
        assert_eq!(key, "max_concurrency");
        assert_eq!(values, ["16", "64", "256"]);
        let (design, key, _) = parse_sweep("broker.concurrency=16,64").unwrap();
        assert_eq!((design, key.as_str()), (Subject::Broker, "concurrency"));
        assert!(design.has_queue() && Subject::Async.has_queue() && !Subject::Sync.has_queue());
        for (bad, says) in [
            ("pool_size=10,20", "expected DESIGN.KEY=V1,V2"),
            (
                "sink.pool_size=10,20",
                "`sync.KEY`, `async.KEY` or `broker.KEY`",
            ),
            ("sync.pool_size=10", "two values or more"),
            ("sync.pool_size=10,,20", "two values or more"),
            ("sync.pool_size=10,20,10", "the value 10 is given twice"),
            ("sync.a.b=1,2", "expected DESIGN.KEY=V1,V2"),
        ] {
            let e = parse_sweep(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--sweep {bad}")), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_sweep_value_runs_from_its_own_scenario_in_its_own_folder() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path());
        let point = sweep_point(&run, Subject::Sync, "pool_size", "20").unwrap();
        assert_eq!(point.name(Subject::Sync), "sync[pool_size=20]");
        assert_eq!(point.scenario.servers.sync.pool_size, 20);
        assert_eq!(
            point.scenario.what_if,
            ["sync.pool_size"],
            "a swept setting is a what-if, so it may differ from the other designs'"
        );
        assert_eq!(point.out, dir.path().join("pool_size=20"));
        assert!(point.out.join("scenario.toml").is_file());
        // The base run is untouched, and a value the scenario refuses is an error naming it.
        assert_eq!(run.scenario.servers.sync.pool_size, 10);
        let e = sweep_point(&run, Subject::Sync, "pool_size", "many")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("--sweep sync.pool_size=many"), "{e}");
    }

    #[test]
    fn set_changes_one_design_setting_and_refuses_what_is_not_one() {
        let mut base: toml::Table =
            toml::from_str("name = \"x\"\n[servers.sync]\npool_size = 10\n").unwrap();
        apply_set(&mut base, "sync.pool_size=20").unwrap();
        apply_set(&mut base, "sync.acquire_timeout=2s").unwrap();
        apply_set(&mut base, "async.max_concurrency = 128").unwrap();
        assert_eq!(base["servers"]["sync"]["pool_size"].as_integer(), Some(20));
        assert_eq!(
            base["servers"]["sync"]["acquire_timeout"].as_str(),
            Some("2s")
        );
        assert_eq!(
            base["servers"]["async"]["max_concurrency"].as_integer(),
            Some(128)
        );
        // Each key set is a what-if, once however often it is set.
        apply_set(&mut base, "sync.pool_size=30").unwrap();
        let what_if: Vec<&str> = base["what_if"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(
            what_if,
            [
                "sync.pool_size",
                "sync.acquire_timeout",
                "async.max_concurrency"
            ]
        );
        for bad in [
            "pool_size=20",
            "sink.pool_size=1",
            "sync.pool_size",
            "sync.a.b=1",
        ] {
            let e = apply_set(&mut base, bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--set {bad}")), "{e}");
        }
    }
}
