//! Scenario files: TOML, unknown keys rejected, every error naming the file, line and column.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// CI gates: thresholds, design invariants, regressions against a baseline.
    #[serde(default, skip_serializing_if = "gates::GateSpecs::is_empty")]
    pub gates: gates::GateSpecs,
    /// Where the file was read from; relative trace paths resolve against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

/// How sign-ups arrive: phases of rate, or a recorded trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// `poisson` (random, like independent users) or `uniform` (evenly spaced).
    #[serde(default)]
    pub process: Process,
    /// Seeds the arrival times and the payload mix; the same seed gives the same schedule.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    #[default]
    Poisson,
    Uniform,
}

/// One phase of offered load. Rates are sign-ups per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Phase {
    /// `{ kind = "constant", name = "baseline", duration = "20s", rate = 20 }`
    Constant {
        #[serde(default)]
        name: String,
        #[serde(with = "humantime_serde")]
        duration: Duration,
        rate: f64,
    },
    /// A linear ramp: `{ kind = "ramp", duration = "10s", from = 20, to = 150 }`
    Ramp {
        #[serde(default)]
        name: String,
        #[serde(with = "humantime_serde")]
        duration: Duration,
        from: f64,
        to: f64,
    },
    /// A staircase of `steps` equal steps from `from` to `to`.
    Step {
        #[serde(default)]
        name: String,
        #[serde(with = "humantime_serde")]
        duration: Duration,
        from: f64,
        to: f64,
        steps: u32,
    },
}

impl Phase {
    pub fn name(&self) -> &str {
        match self {
            Phase::Constant { name, .. } | Phase::Ramp { name, .. } | Phase::Step { name, .. } => {
                name
            }
        }
    }

    pub fn duration(&self) -> Duration {
        match self {
            Phase::Constant { duration, .. }
            | Phase::Ramp { duration, .. }
            | Phase::Step { duration, .. } => *duration,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        match self {
            Phase::Constant { rate, .. } if !rate_ok(*rate) => {
                Err(format!("rate must be zero or more, not {rate}"))
            }
            Phase::Ramp { from, to, .. } | Phase::Step { from, to, .. }
                if !rate_ok(*from) || !rate_ok(*to) =>
            {
                Err(format!(
                    "from and to must be zero or more, not {from} and {to}"
                ))
            }
            Phase::Step { steps: 0, .. } => Err("steps must be at least 1".into()),
            p if p.duration().is_zero() => Err("duration must be above zero".into()),
            _ => Ok(()),
        }
    }
}

/// A recorded trace: a CSV with a header and an `offset_ms` column (send offsets from the start),
/// and optional `phone` and `device_token` columns (empty means absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    /// Relative to the scenario file's folder.
    pub file: PathBuf,
    /// Replay speed: 2.0 sends the trace in half the time.
    #[serde(default = "one")]
    pub speed: f64,
}

fn one() -> f64 {
    1.0
}

/// What each synthetic sign-up carries. Every sign-up has an email (unique per run); these shares
/// decide how many also have a phone (SMS) and a device (push).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    #[serde(default = "default_phone_share")]
    pub phone_share: f64,
    #[serde(default = "default_device_share")]
    pub device_share: f64,
}

fn default_phone_share() -> f64 {
    1.0
}
fn default_device_share() -> f64 {
    1.0
}

impl Default for Payload {
    fn default() -> Self {
        Self {
            phone_share: default_phone_share(),
            device_share: default_device_share(),
        }
    }
}

/// How the driver runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSettings {
    /// Concurrent users; by default peak rate × `max_latency` × 1.5 (Little's law with margin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
    /// The worst latency to size users for.
    #[serde(default = "default_max_latency", with = "humantime_serde")]
    pub max_latency: Duration,
    /// A request still unanswered after this counts as a timeout.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Send lag (p99) past which the driver counts as the bottleneck and the run is untrustworthy.
    #[serde(default = "default_lag_threshold", with = "humantime_serde")]
    pub lag_threshold: Duration,
    /// The largest share of sent requests that may get no answer (timeouts and connection
    /// errors) before a design's run is invalid: past it, the run measured a broken connection,
    /// not the design.
    #[serde(default = "default_max_unanswered_share")]
    pub max_unanswered_share: f64,
}

fn default_max_latency() -> Duration {
    Duration::from_secs(6)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_lag_threshold() -> Duration {
    Duration::from_millis(10)
}
fn default_max_unanswered_share() -> f64 {
    0.01
}

impl Default for DriverSettings {
    fn default() -> Self {
        Self {
            users: None,
            max_latency: default_max_latency(),
            request_timeout: default_request_timeout(),
            lag_threshold: default_lag_threshold(),
            max_unanswered_share: default_max_unanswered_share(),
        }
    }
}

/// Per-design server settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Servers {
    #[serde(default)]
    pub sync: SyncSettings,
    #[serde(default, rename = "async")]
    pub async_: AsyncSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default = "default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub provider_timeout: Duration,
}

fn default_pool_size() -> u32 {
    10
}
fn default_acquire_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_provider_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            pool_size: default_pool_size(),
            acquire_timeout: default_acquire_timeout(),
            provider_timeout: default_provider_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncSettings {
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default = "default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub provider_timeout: Duration,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long to wait after the load for the queue to drain before reconciling.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

fn default_concurrency() -> u32 {
    64
}
fn default_batch() -> u32 {
    32
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    8
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            pool_size: default_pool_size(),
            acquire_timeout: default_acquire_timeout(),
            provider_timeout: default_provider_timeout(),
            concurrency: default_concurrency(),
            batch: default_batch(),
            poll_interval: default_poll_interval(),
            lease: default_lease(),
            max_attempts: default_max_attempts(),
            drain_timeout: default_drain_timeout(),
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
}

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
        scenario.validate().map_err(|(key, message)| {
            let line = line_of(text, &key)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            invalid(format!("{line}{message}"))
        })?;
        Ok(scenario)
    }

    /// Semantic checks serde cannot do; the error carries a key to locate it in the text.
    fn validate(&self) -> Result<(), (String, String)> {
        let a = &self.arrivals;
        match (a.phases.is_empty(), &a.trace) {
            (true, None) => {
                return Err((
                    "[arrivals]".into(),
                    "arrivals need `phases` or a `trace`".into(),
                ));
            }
            (false, Some(_)) => {
                return Err((
                    "trace".into(),
                    "arrivals take `phases` or a `trace`, not both".into(),
                ));
            }
            _ => {}
        }
        for (i, phase) in a.phases.iter().enumerate() {
            phase
                .validate()
                .map_err(|m| ("kind".to_string(), format!("arrivals.phases[{i}]: {m}")))?;
        }
        if let Some(trace) = &a.trace {
            if !(trace.speed.is_finite() && trace.speed > 0.0) {
                return Err((
                    "speed".into(),
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
                    key.into(),
                    format!("payload.{key} must be between 0 and 1, not {share}"),
                ));
            }
        }
        self.providers
            .validate()
            .map_err(|m| ("[providers".to_string(), format!("providers.{m}")))?;
        if let Err((text, e)) = self.gates.check() {
            return Err((text, format!("gates: {e}")));
        }
        if self.driver.users == Some(0) {
            return Err(("users".into(), "driver.users must be at least 1".into()));
        }
        let share = self.driver.max_unanswered_share;
        if !(0.0..=1.0).contains(&share) {
            return Err((
                "max_unanswered_share".into(),
                format!("driver.max_unanswered_share must be between 0 and 1, not {share}"),
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
}

/// toml's message already has the line and column and a caret; keep it, minus its leading
/// "TOML parse error" noise.
fn format_toml_error(e: &toml::de::Error, text: &str) -> String {
    // Inside an inline table in an array, toml points at the array; an unknown key or variant can
    // be found by its name, so point at it instead.
    let message = e.message();
    for (prefix, suffix) in [("unknown field `", "="), ("unknown variant `", "")] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let name = rest.split('`').next().unwrap_or_default();
            let needle = if suffix.is_empty() {
                format!("\"{name}\"")
            } else {
                name.to_string()
            };
            let hit = text.lines().enumerate().find_map(|(i, line)| {
                let col = line.find(&needle).or_else(|| {
                    if suffix.is_empty() {
                        line.find(&format!("'{name}'"))
                    } else {
                        None
                    }
                })?;
                let after = line[col + needle.len()..].trim_start();
                (suffix.is_empty() || after.starts_with(suffix)).then_some((i + 1, col + 1))
            });
            if let Some((line, col)) = hit {
                return format!("line {line}, column {col}: {message}");
            }
        }
    }
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let col = span.start
                - text[..span.start.min(text.len())]
                    .rfind('\n')
                    .map_or(0, |i| i + 1)
                + 1;
            format!("line {line}, column {col}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

/// The first line mentioning `key`, to point a semantic error at.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(key)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, Path::new("scenarios/test.toml")).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = r#"
name = "t"
[arrivals]
phases = [{ kind = "constant", duration = "2s", rate = 10 }]
"#;

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
            err.contains("line 8:") && err.contains("no metric `async.latency_ms.p98`"),
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
             [servers.async]\nconcurrency = 8\ndrain_timeout = \"5s\"\n"
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.providers.sms.error_rate, 0.1);
        assert_eq!(s.servers.async_.concurrency, 8);
        assert_eq!(s.servers.async_.drain_timeout, Duration::from_secs(5));
    }
}
