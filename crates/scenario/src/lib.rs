//! The plan of a run: what a scenario file says. It reads the TOML (unknown keys rejected), checks
//! it, and points every error at the file, line and column of the element at fault, using the toml
//! crate's spans. It holds the driver's part (arrivals, payload, driver settings: `driver`'s own
//! types), the provider behaviour (`provider_sim::SimConfig`), each design's settings (the design
//! crates' own types, so each default is written once) and the gates.
//!
//! **Like for like.** The settings that are not part of a design's architecture
//! (`signup_core::shared::KEYS`: pool, timeouts, send slots, attempts, lease, drain) must be the
//! same for every design that has them, or a comparison measures a setting instead of a design. A
//! scenario that gives two designs different values for one (written out, or one design's value
//! against another's default) is refused at the line of the value, naming both, unless its
//! top-level `what_if` list names the key (`what_if = ["broker.concurrency"]`): then the difference
//! is the question the scenario asks. `fanbench capacity --set` and `--sweep` add their keys to it.
//!
//! This crate does no I/O beyond reading the file, and runs nothing.

use std::path::{Path, PathBuf};

use driver::{Arrivals, DriverSettings, Payload};
use provider_sim::SimConfig;
use serde::{Deserialize, Serialize};

/// A load scenario: how sign-ups arrive, what they carry, how the providers behave, and the
/// settings of each design's server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub arrivals: Arrivals,
    #[serde(default)]
    pub payload: Payload,
    #[serde(default)]
    pub driver: DriverSettings,
    /// Provider behaviour, applied to the simulator when each design's run starts (so outage
    /// windows count from the start of load).
    #[serde(default)]
    pub providers: SimConfig,
    #[serde(default)]
    pub servers: Servers,
    /// `DESIGN.KEY` settings this scenario changes on purpose (`["broker.concurrency"]`): a shared
    /// setting named here may differ from the other designs' (see the crate's *Like for like*).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub what_if: Vec<String>,
    /// CI gates: thresholds, design invariants, regressions against a baseline.
    #[serde(default, skip_serializing_if = "gates::GateSpecs::is_empty")]
    pub gates: gates::GateSpecs,
    /// `fanbench capacity`'s defaults; `fanbench run` and `compare` ignore them.
    #[serde(default, skip_serializing_if = "Capacity::is_empty")]
    pub capacity: Capacity,
    /// Where the file was read from; relative trace paths resolve against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Per-design server settings: each design crate's own type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Servers {
    #[serde(default)]
    pub sync: sync_server::Config,
    #[serde(default, rename = "async")]
    pub async_: async_server::Settings,
    #[serde(default)]
    pub broker: broker_server::Settings,
}

/// `[capacity]`: how `fanbench capacity` searches for each design's highest rate that meets its
/// objective. Its flags override each value. Each step runs the scenario's payload, providers and
/// server settings on a constant Poisson load; the scenario's own arrivals are not used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// The first step's offered rate, sign-ups per second: one for every design (`start_rate =
    /// 16`) or one each (`start_rate = { sync = 16, async = 400 }`).
    pub start_rate: Option<StartRate>,
    /// Each step's rate is the last one's times this until a step fails (above 1).
    pub factor: Option<f64>,
    /// Bisection stops when (first failing − last passing) ÷ last passing is at most this.
    pub resolution: Option<f64>,
    /// Load steps at most, per design.
    pub max_steps: Option<u32>,
    /// Runs of each rate that decides a limit (the last pass and the first fail), so each limit
    /// gets an interval (`fanbench capacity --repeat`).
    pub repeat: Option<u32>,
    /// How long each step's load lasts.
    #[serde(with = "humantime_serde")]
    pub step_duration: Option<std::time::Duration>,
    /// The first part of each step that warms the design up and is left out of its judgement.
    #[serde(with = "humantime_serde")]
    pub warmup: Option<std::time::Duration>,
    /// Each design's objective (`sync = ["latency_ms_by_class.2xx.p99 < 6000"]`), in the gate
    /// language, each metric relative to the design. A design left out keeps the built-in one.
    pub slo: std::collections::BTreeMap<String, Vec<String>>,
    /// Gates on what the search found, in the gate language over capacity.json
    /// (`async.capacity_rps / sync.capacity_rps > 10`, `sync.capacity_rps > 25`).
    pub gates: Vec<String>,
}

impl Capacity {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// `[capacity] start_rate`: one rate for every design, or one per design by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a rate (16) or a rate per design ({ sync = 16, async = 400 })"
)]
pub enum StartRate {
    All(u32),
    PerDesign(std::collections::BTreeMap<String, u32>),
}

impl StartRate {
    /// The first rate for `design`; `None` when a per-design table leaves it out.
    pub fn for_design(&self, design: &str) -> Option<u32> {
        match self {
            StartRate::All(r) => Some(*r),
            StartRate::PerDesign(m) => m.get(design).copied(),
        }
    }
}

/// A scenario that could not be read; the message names the file and, where it can, the line.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("could not read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Trace(#[from] driver::schedule::TraceError),
}

/// One step of the path to an element of the file: a key, or an index into an array.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// A semantic error: where it is in the file, and what is wrong.
type Invalid = (Vec<Step>, String);

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses scenario text; `path` is used in messages and to resolve a trace file.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|e| invalid(format_toml_error(&e, text)))?;
        scenario.source = path.to_path_buf();
        scenario
            .validate()
            .and_then(|()| scenario.like_for_like(text))
            .map_err(|(at, message)| {
                let place = locate(text, &at)
                    .map(|(line, column)| format!("line {line}, column {column}: "))
                    .unwrap_or_default();
                invalid(format!("{place}{message}"))
            })?;
        Ok(scenario)
    }

    /// Each design's settings as TOML, by the name `[servers.*]` gives it: what a design's value of
    /// a key is, written out or its default.
    fn design_settings(&self) -> Result<Vec<(&'static str, toml::Table)>, String> {
        let table = |v: Result<toml::Value, toml::ser::Error>| match v {
            Ok(toml::Value::Table(t)) => Ok(t),
            Ok(_) => Err("a design's settings are not a table".to_string()),
            Err(e) => Err(e.to_string()),
        };
        Ok(vec![
            ("sync", table(toml::Value::try_from(&self.servers.sync))?),
            ("async", table(toml::Value::try_from(&self.servers.async_))?),
            (
                "broker",
                table(toml::Value::try_from(&self.servers.broker))?,
            ),
        ])
    }

    /// Like for like: every design that has a shared key (`signup_core::shared::KEYS`) has the same
    /// value for it, unless `what_if` names the key for one of the two designs that differ. Every
    /// `what_if` entry must be a design's setting.
    fn like_for_like(&self, text: &str) -> Result<(), Invalid> {
        use Step::{Index, Key};
        let designs = self
            .design_settings()
            .map_err(|e| (vec![Key("servers")], e))?;
        for (i, entry) in self.what_if.iter().enumerate() {
            let known = entry.split_once('.').is_some_and(|(design, key)| {
                designs
                    .iter()
                    .any(|(name, settings)| *name == design && settings.contains_key(key))
            });
            if !known {
                return Err((
                    vec![Key("what_if"), Index(i)],
                    format!(
                        "what_if: `{entry}` is not a design's setting (DESIGN.KEY, a key of [servers.sync], [servers.async] or [servers.broker])"
                    ),
                ));
            }
        }
        let raw: toml::Table = toml::from_str(text).unwrap_or_default();
        let written = |design: &str, key: &str| {
            raw.get("servers")
                .and_then(|s| s.get(design))
                .and_then(|d| d.get(key))
                .is_some()
        };
        let what_if = |design: &str, key: &str| {
            self.what_if
                .iter()
                .any(|e| e.split_once('.') == Some((design, key)))
        };
        for shared in signup_core::shared::KEYS {
            let key = shared.key;
            let having: Vec<(&'static str, &toml::Value)> = designs
                .iter()
                .filter_map(|(name, settings)| settings.get(key).map(|v| (*name, v)))
                .collect();
            for (i, &(a, va)) in having.iter().enumerate() {
                for &(b, vb) in &having[i + 1..] {
                    if va == vb || what_if(a, key) || what_if(b, key) {
                        continue;
                    }
                    // Point at a value written out (the later one when both are), and name the
                    // other with its line, or as its design's default.
                    let ((here, v_here), (there, v_there)) = if written(b, key) {
                        ((b, vb), (a, va))
                    } else {
                        ((a, va), (b, vb))
                    };
                    let there_is = if written(there, key) {
                        locate(text, &[Key("servers"), Key(there), Key(key)])
                            .map_or_else(String::new, |(line, _)| format!(" (line {line})"))
                    } else {
                        " (its default)".to_string()
                    };
                    return Err((
                        vec![Key("servers"), Key(here), Key(key)],
                        format!(
                            "servers.{here}.{key} = {v_here}, but servers.{there}.{key} = {v_there}{there_is}: \
                             a setting that is not architecture ({}) must be the same for every design, \
                             or the comparison measures the setting; make them equal, or say the \
                             difference is the question: what_if = [\"{here}.{key}\"]",
                            shared.why
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Semantic checks serde cannot do; each error carries the path of the element at fault.
    fn validate(&self) -> Result<(), Invalid> {
        use Step::{Index, Key};
        let a = &self.arrivals;
        match (a.phases.is_empty(), &a.trace) {
            (true, None) => {
                return Err((
                    vec![Key("arrivals")],
                    "arrivals need `phases` or a `trace`".into(),
                ));
            }
            (false, Some(_)) => {
                return Err((
                    vec![Key("arrivals"), Key("trace")],
                    "arrivals take `phases` or a `trace`, not both".into(),
                ));
            }
            _ => {}
        }
        for (i, phase) in a.phases.iter().enumerate() {
            phase.validate().map_err(|m| {
                (
                    vec![Key("arrivals"), Key("phases"), Index(i)],
                    format!("arrivals.phases[{i}]: {m}"),
                )
            })?;
        }
        if let Some(trace) = &a.trace {
            if !(trace.speed.is_finite() && trace.speed > 0.0) {
                return Err((
                    vec![Key("arrivals"), Key("trace"), Key("speed")],
                    format!("trace speed must be above zero, not {}", trace.speed),
                ));
            }
        }
        for (key, share) in [
            ("phone_share", self.payload.phone_share),
            ("device_share", self.payload.device_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err((
                    vec![Key("payload"), Key(key)],
                    format!("payload.{key} must be between 0 and 1, not {share}"),
                ));
            }
        }
        for channel in signup_core::Channel::ALL {
            self.providers.channel(channel).validate().map_err(|m| {
                (
                    vec![Key("providers"), Key(channel.as_str())],
                    format!("providers.{channel}: {m}"),
                )
            })?;
        }
        if let Err((text, e)) = self.gates.check() {
            let (list, index) = gate_position(&self.gates, &text);
            return Err((
                vec![Key("gates"), Key(list), Index(index)],
                format!("gates: {e}"),
            ));
        }
        if self.driver.users == Some(0) {
            return Err((
                vec![Key("driver"), Key("users")],
                "driver.users must be at least 1".into(),
            ));
        }
        if self.driver.threads == Some(0) {
            return Err((
                vec![Key("driver"), Key("threads")],
                "driver.threads must be at least 1".into(),
            ));
        }
        let share = self.driver.max_unanswered_share;
        if !(0.0..=1.0).contains(&share) {
            return Err((
                vec![Key("driver"), Key("max_unanswered_share")],
                format!("driver.max_unanswered_share must be between 0 and 1, not {share}"),
            ));
        }
        let length: std::time::Duration = a.phases.iter().map(|p| p.duration()).sum();
        if let Some(w) = self.driver.warmup
            && a.trace.is_none()
            && w >= length
        {
            return Err((
                vec![Key("driver"), Key("warmup")],
                format!(
                    "driver.warmup ({}) must be shorter than the arrivals ({}), or nothing is left to measure",
                    humantime::format_duration(w),
                    humantime::format_duration(length)
                ),
            ));
        }
        Ok(())
    }

    /// Where the trace file is, resolved against the scenario's folder.
    pub fn trace_path(&self) -> Option<PathBuf> {
        let trace = self.arrivals.trace.as_ref()?;
        let base = self.source.parent().unwrap_or(Path::new("."));
        Some(base.join(&trace.file))
    }

    /// The arrival schedule this scenario describes.
    pub fn schedule(&self) -> Result<driver::Schedule, ScenarioError> {
        Ok(driver::Schedule::new(
            &self.arrivals,
            &self.payload,
            self.trace_path().as_deref(),
        )?)
    }

    /// The schedule's overall shape (length, peak rate, phases).
    pub fn shape(&self) -> Result<driver::Shape, ScenarioError> {
        Ok(driver::Schedule::shape(
            &self.arrivals,
            self.trace_path().as_deref(),
        )?)
    }
}

/// Which list of `[gates]` a failing gate's text is in, and where.
fn gate_position(gates: &gates::GateSpecs, text: &str) -> (&'static str, usize) {
    if let Some(i) = gates.rules.iter().position(|r| r == text) {
        return ("rules", i);
    }
    let i = gates
        .regressions
        .iter()
        .position(|r| r.metric == text)
        .unwrap_or(0);
    ("regressions", i)
}

/// The line and column (1-based) where the element at `path` starts, from the toml crate's spans.
/// The deepest step that exists is used, so a missing key points at its table.
fn locate(text: &str, path: &[Step]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for step in path {
        let next = match step {
            Step::Key(key) => table
                .or_else(|| value.and_then(DeValue::as_table))
                .and_then(|t| t.iter().find(|(k, _)| k.get_ref() == key))
                .map(|(_, v)| v),
            Step::Index(i) => value.and_then(DeValue::as_array).and_then(|a| a.get(*i)),
        };
        let Some(next) = next else { break };
        span = next.span();
        value = Some(next.get_ref());
        table = None;
    }
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let column = start - text[..start].rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, column))
}

/// A parse error at the line and column of toml's own span. For an unknown key or variant the span
/// covers its whole table (an inline table in an array included), so the name is looked for inside
/// that span only, to point at the key itself.
fn format_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let (start, end) = (span.start.min(text.len()), span.end.min(text.len()));
    let mut at = start;
    for prefix in ["unknown field `", "unknown variant `"] {
        if let Some(name) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
        {
            let within = text.get(start..end).unwrap_or_default();
            if let Some(offset) = within.find(name) {
                // A variant is written quoted; point at the quote.
                at = start + offset - usize::from(prefix.contains("variant") && offset > 0);
            }
        }
    }
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use driver::settings::Process;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, Path::new("scenarios/test.toml")).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = r#"
name = "t"
[arrivals]
phases = [{ kind = "constant", duration = "2s", rate = 10 }]
"#;

    #[test]
    fn a_capacity_table_is_read_and_its_typos_rejected() {
        let s = parse(&format!(
            "{MINIMAL}[capacity]\nstart_rate = 5\nstep_duration = \"15s\"\n\
             slo = {{ sync = [\"latency_ms.p99 < 10\"] }}\n\
             gates = [\"sync.capacity_rps > 25\"]\n"
        ))
        .unwrap();
        assert_eq!(s.capacity.start_rate, Some(StartRate::All(5)));
        assert_eq!(s.capacity.step_duration, Some(Duration::from_secs(15)));
        assert_eq!(s.capacity.slo["sync"], ["latency_ms.p99 < 10"]);
        assert_eq!(s.capacity.gates, ["sync.capacity_rps > 25"]);
        assert!(parse(MINIMAL).unwrap().capacity.is_empty());
        let typo = parse(&format!("{MINIMAL}[capacity]\nstart_rat = 5\n")).unwrap_err();
        assert!(typo.contains("unknown field `start_rat`"), "{typo}");
    }

    #[test]
    fn a_start_rate_is_one_for_all_or_one_per_design() {
        let s = parse(&format!(
            "{MINIMAL}[capacity]\nstart_rate = {{ sync = 16, async = 400 }}\n"
        ))
        .unwrap();
        let rate = s.capacity.start_rate.unwrap();
        assert_eq!(rate.for_design("sync"), Some(16));
        assert_eq!(rate.for_design("async"), Some(400));
        assert_eq!(rate.for_design("target"), None);
        assert_eq!(StartRate::All(5).for_design("async"), Some(5));
        let bad = parse(&format!("{MINIMAL}[capacity]\nstart_rate = \"fast\"\n")).unwrap_err();
        assert!(bad.contains("line 6"), "{bad}");
        assert!(bad.contains("a rate per design"), "{bad}");
    }

    #[test]
    fn a_warm_up_must_leave_something_to_measure() {
        let s = parse(&format!("{MINIMAL}[driver]\nwarmup = \"1s\"\n")).unwrap();
        assert_eq!(s.driver.warmup, Some(Duration::from_secs(1)));
        let e = parse(&format!("{MINIMAL}[driver]\nwarmup = \"2s\"\n")).unwrap_err();
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("must be shorter than the arrivals (2s)"), "{e}");
    }

    #[test]
    fn load_threads_are_at_least_one_and_default_to_the_rate() {
        let s = parse(&format!("{MINIMAL}[driver]\nthreads = 2\n")).unwrap();
        assert_eq!(s.driver.threads, Some(2));
        assert_eq!(parse(MINIMAL).unwrap().driver.threads, None);
        let e = parse(&format!("{MINIMAL}[driver]\nthreads = 0\n")).unwrap_err();
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("driver.threads must be at least 1"), "{e}");
    }

    #[test]
    fn a_minimal_scenario_gets_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.arrivals.process, Process::Poisson);
        assert_eq!(s.servers.sync.pool_size, 10);
        assert_eq!(s.servers.async_.concurrency, 64);
        assert_eq!(s.driver.request_timeout, Duration::from_secs(15));
        assert_eq!(s.providers, SimConfig::default());
    }

    #[test]
    fn errors_name_the_file_line_and_what_was_expected() {
        let cases = [
            (
                "name = \"t\"\n[arrivals]\nphases = []\nrat = 3\n",
                "line 4",
                "unknown field `rat`",
            ),
            (
                "name = \"t\"\n[arrivals]\nphases = [{ kind = \"constant\", duration = \"2s\", rate = \"x\" }]\n",
                "line 3",
                "invalid type",
            ),
            (
                "name = \"t\"\n[arrivals]\nphases = [{ kind = \"wave\", duration = \"2s\" }]\n",
                "line 3",
                "unknown variant `wave`, expected one of `constant`, `ramp`, `step`",
            ),
            (
                "name = \"t\"\n[arrivals]\nphases = [{ kind = \"constant\", duration = \"2 parsecs\", rate = 1 }]\n",
                "line 3",
                "duration",
            ),
            (
                "name = \"t\"\n[arrivals]\n",
                "line 2",
                "arrivals need `phases` or a `trace`",
            ),
            (
                "name = \"t\"\n[arrivals]\nphases = [{ kind = \"constant\", duration = \"2s\", rate = -1 }]\n",
                "line 3",
                "rate must be zero or more",
            ),
            (
                "name = \"t\"\n[arrivals]\nphases = [{ kind = \"constant\", duration = \"2s\", rate = 1 }]\n[payload]\nphone_share = 2\n",
                "line 5",
                "phone_share must be between 0 and 1",
            ),
            (
                "name = \"t\"\n[arrivals]\nphases = [{ kind = \"constant\", duration = \"2s\", rate = 1 }]\n[servers.sync]\npool = 3\n",
                "line 5",
                "unknown field `pool`",
            ),
        ];
        for (text, line, what) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with("scenarios/test.toml: "), "{err}");
            assert!(err.contains(line), "want {line} in: {err}");
            assert!(err.contains(what), "want {what:?} in: {err}");
        }
    }

    #[test]
    fn a_typo_inside_a_phase_points_at_its_own_line() {
        let text = "name = 't'\n[arrivals]\nphases = [\n  { kind = 'constant', duration = '2s', rate = 1 },\n  { kind = 'constant', duraton = '2s', rate = 1 },\n]\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.contains("line 5, column 24") && err.contains("unknown field `duraton`"),
            "{err}"
        );
        let text = "name = 't'\n[arrivals]\nphases = [\n  { kind = 'constant', duration = '2s', rate = 1 },\n  { kind = \"constnat\", duration = '2s', rate = 1 },\n]\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.contains("line 5") && err.contains("unknown variant `constnat`"),
            "{err}"
        );
    }

    #[test]
    fn gates_with_unknown_metrics_name_their_line() {
        let text = format!(
            "{MINIMAL}[gates]\nrules = [\n  \"async.latency_ms.p99 < 100\",\n  \"async.latency_ms.p98 < 100\",\n]\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("line 8, column 3:") && err.contains("no metric `async.latency_ms.p98`"),
            "{err}"
        );
        let ok = format!(
            "{MINIMAL}[gates]\nrules = [\"async.latency_ms.p99 < 100\"]\nregressions = [{{ metric = \"async.latency_ms.p99\", tolerance = \"25%\" }}]\n"
        );
        let s = parse(&ok).unwrap();
        assert_eq!(s.gates.regressions[0].tolerance.0, 0.25);
    }

    #[test]
    fn providers_and_servers_read_from_the_scenario() {
        let text = format!(
            "{MINIMAL}\n[providers.sms]\nlatency = {{ dist = \"fixed\", value = \"1s\" }}\nerror_rate = 0.1\n\
             [servers.async]\nconcurrency = 8\ndrain_timeout = \"5s\"\n\
             [servers.broker]\nconcurrency = 8\ndrain_timeout = \"5s\"\nbatch = 16\n"
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.providers.sms.error_rate, 0.1);
        assert_eq!(s.servers.async_.concurrency, 8);
        assert_eq!(s.servers.async_.drain_timeout, Duration::from_secs(5));
        assert_eq!(s.servers.broker.concurrency, 8);
        assert_eq!(s.servers.broker.drain_timeout, Duration::from_secs(5));
        assert_eq!(s.servers.broker.batch, 16);
    }

    #[test]
    fn an_error_in_the_fourth_phase_points_at_that_phase() {
        let text = "name = 't'\n[arrivals]\nphases = [\n  { kind = 'constant', duration = '2s', rate = 1 },\n  { kind = 'ramp', duration = '2s', from = 1, to = 5 },\n  { kind = 'constant', duration = '2s', rate = 5 },\n  { kind = 'constant', duration = '2s', rate = -3 },\n]\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.contains("line 7, column 3:")
                && err.contains("arrivals.phases[3]: rate must be zero or more"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_point_at_their_element_not_the_first_mention_of_its_key() {
        // `phone_share` appears in a comment first; the error is about the table's own key.
        let text = format!(
            "# phone_share is the share of sign-ups with a phone\n{MINIMAL}[payload]\ndevice_share = 0.5\nphone_share = 1.5\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("line 8, column 15:")
                && err.contains("phone_share must be between 0 and 1"),
            "{err}"
        );
        // A bad gate points at its own entry of the list.
        let text = format!(
            "{MINIMAL}[gates]\nrules = [\n  \"async.valid == 1\",\n  \"async.latency_ms.p98 < 1\",\n]\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(err.contains("line 8, column 3:"), "{err}");
        // A provider's error points at its own table, not at the first [providers.*] header.
        let text = format!(
            "{MINIMAL}[providers.email]\nlatency = {{ dist = \"fixed\", value = \"5ms\" }}\nerror_rate = 0.1\n\
             [providers.sms]\nlatency = {{ dist = \"fixed\", value = \"5ms\" }}\nerror_rate = 2\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("line 8,")
                && err.contains("providers.sms: error_rate must be between 0 and 1"),
            "{err}"
        );
        // A key that is also a top-level key elsewhere is found where it is unknown.
        let text = format!("{MINIMAL}[driver]\nname = \"x\"\n");
        let err = parse(&text).unwrap_err();
        assert!(
            err.contains("line 6, column 1:") && err.contains("unknown field `name`"),
            "{err}"
        );
        let text = format!(
            "{MINIMAL}[gates]\nrules = [\n  \"async.valid == 1\",\n  \"async.latency_ms.p98 < 1\",\n]\n"
        );
        let err = parse(&text).unwrap_err();
        assert!(err.contains("line 8, column 3:"), "{err}");
    }

    /// Like for like: a shared setting that differs between designs is refused at its line, both
    /// values named, unless `what_if` names it; architecture-specific settings may differ.
    #[test]
    fn shared_settings_differ_only_as_a_what_if() {
        /// Ok, or Err with the line and what the message must say.
        type Expected = Result<(), (&'static str, &'static [&'static str])>;
        // (what_if, [servers.*] tables, what loading says)
        let cases: &[(&str, &str, Expected)] = &[
            ("", "", Ok(())),
            (
                "",
                "[servers.broker]\nconcurrency = 256\n",
                Err((
                    "line 6, column 15:",
                    &[
                        "servers.broker.concurrency = 256",
                        "servers.async.concurrency = 64 (its default)",
                        "what_if = [\"broker.concurrency\"]",
                    ],
                )),
            ),
            (
                "",
                "[servers.async]\nconcurrency = 128\n[servers.broker]\nconcurrency = 128\n",
                Ok(()),
            ),
            (
                "what_if = [\"broker.concurrency\"]\n",
                "[servers.broker]\nconcurrency = 256\n",
                Ok(()),
            ),
            // Either side of the difference may be the what-if.
            (
                "what_if = [\"async.max_concurrency\"]\n",
                "[servers.async]\nmax_concurrency = 8\n",
                Ok(()),
            ),
            // The sync design against both queue designs' defaults.
            (
                "",
                "[servers.sync]\npool_size = 20\n",
                Err((
                    "line 6, column 13:",
                    &[
                        "servers.sync.pool_size = 20",
                        "servers.async.pool_size = 10 (its default)",
                    ],
                )),
            ),
            // Both written: the later is pointed at, the earlier named with its line.
            (
                "",
                "[servers.async]\ndrain_timeout = \"30s\"\n[servers.broker]\ndrain_timeout = \"2m\"\n",
                Err((
                    "line 8, column 17:",
                    &[
                        "servers.broker.drain_timeout = \"2m\"",
                        "servers.async.drain_timeout = \"30s\" (line 6)",
                    ],
                )),
            ),
            // A what-if of one design leaves the other two to agree.
            (
                "what_if = [\"sync.pool_size\"]\n",
                "[servers.sync]\npool_size = 20\n",
                Ok(()),
            ),
            (
                "what_if = [\"sync.pool_size\"]\n",
                "[servers.async]\npool_size = 20\n[servers.sync]\npool_size = 20\n",
                Err((
                    "line 7, column 13:",
                    &[
                        "servers.async.pool_size = 20",
                        "servers.broker.pool_size = 10 (its default)",
                    ],
                )),
            ),
            // The same value written another way is the same value.
            (
                "",
                "[servers.async]\nacquire_timeout = \"5000ms\"\n",
                Ok(()),
            ),
            // Architecture-specific settings differ freely.
            (
                "",
                "[servers.async]\nbatch = 8\npoll_interval = \"10ms\"\n",
                Ok(()),
            ),
            // A what-if names a design's setting.
            (
                "what_if = [\"async.batch\", \"broker.concurency\"]\n",
                "",
                Err((
                    "line 1, column 27:",
                    &["what_if: `broker.concurency` is not a design's setting"],
                )),
            ),
            (
                "what_if = [\"sync.concurrency\"]\n",
                "",
                Err(("line 1, column 12:", &["`sync.concurrency`"])),
            ),
        ];
        for (what_if, servers, expected) in cases {
            let text = format!("{what_if}{MINIMAL}{servers}");
            match (parse(&text), expected) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err((line, says))) => {
                    assert!(e.contains(line), "want {line} in: {e}\n{text}");
                    for said in *says {
                        assert!(e.contains(said), "want {said:?} in: {e}\n{text}");
                    }
                }
                (got, _) => panic!("{text}\nwant {expected:?}, got {got:?}"),
            }
        }
    }

    /// The designs' defaults agree on every shared key (each is `signup_core::shared`'s), and
    /// each shared key is a setting of two designs or more: listing it would mean nothing else.
    #[test]
    fn the_designs_defaults_are_like_for_like() {
        let s = parse(MINIMAL).unwrap();
        let designs = s.design_settings().unwrap();
        for shared in signup_core::shared::KEYS {
            let values: Vec<&toml::Value> = designs
                .iter()
                .filter_map(|(_, settings)| settings.get(shared.key))
                .collect();
            assert!(values.len() >= 2, "{}: {values:?}", shared.key);
            assert!(values.windows(2).all(|w| w[0] == w[1]), "{}", shared.key);
        }
    }

    #[test]
    fn every_committed_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.extension().is_some_and(|e| e == "toml") && name != "providers.example.toml" {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                s.shape().unwrap_or_else(|e| panic!("{name}: {e}"));
                loaded += 1;
            }
        }
        assert!(loaded >= 5, "{loaded}");
    }
}
