//! The results model: what one run measured, as plain data. It is the boundary between measuring
//! and reporting: the driver fills it, `results.json` stores it (its JSON Schema is
//! `results.schema.json` beside this crate, versioned by [`SCHEMA_VERSION`]), and the report and
//! the gates read it, never the driver.
//!
//! The capacity document (`capacity.json`, `fanbench capacity`) is modelled in [`capacity`].
//!
//! This crate does no I/O and knows nothing of HTTP, goose or the designs.

pub mod capacity;
pub mod metric_names;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bumped on any change a reader of `results.json` must know about. Optional fields added since
/// (`processes`) leave it alone: a file without them is still a whole version-2 file.
pub const SCHEMA_VERSION: u32 = 2;

/// The histograms' range, in microseconds: 1 µs to 10 minutes, 3 significant digits.
pub const HISTOGRAM_MAX_US: u64 = 600_000_000;
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// A histogram of microseconds with the range every fanbench histogram uses.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's preconditions (low >= 1, high >= 2 * low,
    // sigfig <= 5): construction cannot fail.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// One run: a scenario against one or more designs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub schema_version: u32,
    /// `<UTC time>-<scenario>`, also the run folder's name.
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub scenario: ScenarioInfo,
    pub environment: Environment,
    /// By design name (`sync`, `async`, `broker`, `target` for `fanbench run --target`, or any
    /// other name a design is given).
    pub designs: BTreeMap<String, DesignResults>,
    /// Present when this run drove one shard of the scenario's schedule (`fanbench run --shard
    /// i/n`): every `n`-th arrival, starting at the `i`-th. Absent from whole runs and older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardOf>,
    /// Present when this run was merged from shard runs (`fanbench merge`): which shards it holds,
    /// and which of the schedule's shards are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<Merged>,
}

/// Which part of a schedule a shard run drove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOf {
    /// From 1 to `count`.
    pub index: u32,
    /// How many shards the schedule was split into.
    pub count: u32,
}

/// What a merged run was made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// How many shards the schedule was split into (each shard's `count`).
    pub count: u32,
    /// The shards merged, by index.
    pub shards: Vec<MergedShard>,
    /// The indices of the shards not merged: the run then holds only part of the schedule and is
    /// invalid.
    pub missing: Vec<u32>,
}

/// One shard run inside a merged run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedShard {
    pub index: u32,
    /// The shard run's own `run_id`, and where it was read from.
    pub run_id: String,
    pub path: String,
    /// RFC 3339, UTC: when that shard's schedule started.
    pub started_at: String,
    /// Requests that shard was scheduled to send, over all its designs.
    pub intended: u64,
    /// Whether every design of that shard was valid and trustworthy.
    pub valid: bool,
    pub trustworthy: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    /// The file it was read from.
    pub path: String,
    /// Seconds of offered load: the phases' total length, or a trace's last offset.
    pub duration_s: f64,
    /// Highest offered rate over any one second, requests per second.
    pub peak_rps: f64,
    /// The whole scenario as parsed, so the run can be reproduced.
    pub definition: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub fanbench_version: String,
    pub git_sha: Option<String>,
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub memory_bytes: Option<u64>,
    pub postgres_version: Option<String>,
    pub database: String,
}

/// What one design did under the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesignResults {
    /// The URL load was sent to.
    pub target: String,
    /// The server settings the design ran with.
    pub settings: serde_json::Value,
    pub requests: Requests,
    /// From the *intended* send time: corrected for coordinated omission. Every answer, whatever
    /// its outcome.
    pub latency_ms: Percentiles,
    /// The same latency split by outcome, the way k6 separates expected responses: keys
    /// [`LATENCY_CLASSES`] (`2xx` is how long an accepted sign-up took, `503` how long a refusal
    /// took); classes nothing fell into are left out.
    pub latency_ms_by_class: BTreeMap<String, ClassLatency>,
    /// From the actual send time.
    pub service_time_ms: Percentiles,
    /// The corrected latency's whole percentile spectrum, for percentile plots.
    pub latency_spectrum: Vec<SpectrumPoint>,
    /// Actual minus intended send time: the driver's own delay.
    pub send_lag_ms: Lag,
    /// 2xx answers per second of offered load.
    pub throughput_rps: f64,
    /// Requests offered per second, on average.
    pub offered_rps: f64,
    pub duration_s: f64,
    /// One entry per second of the run, by intended send time.
    pub timeline: Vec<Second>,
    /// Per channel, from the intended send time of the sign-up to the provider's receipt.
    pub delivery: BTreeMap<String, ChannelDelivery>,
    /// Present when fanbench ran the design itself and could read its provider ledger.
    pub reconciliation: Option<Reconciliation>,
    /// Present for designs that deliver after answering (async).
    pub drain: Option<Drain>,
    /// Who used the machine: CPU time and peak memory of each process of the run, over this
    /// design's window. Absent from files written before fanbench recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Processes>,
    /// How the driver ran this design's load. Absent from files written before fanbench recorded
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverRun>,
    /// After a warm-up (the scenario's `[driver] warmup`): the same figures for the requests
    /// scheduled after it only. Absent when the run had no warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// False when the driver could not keep to the schedule: the numbers then understate latency.
    pub trustworthy: bool,
    /// False when the run measured something other than the design under load: its server died,
    /// too many requests never got an answer, or nothing was accepted. `invalid_reasons` says why.
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    /// Everything a reader must know before trusting the numbers.
    pub warnings: Vec<String>,
}

/// How the driver ran a design's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverRun {
    /// Load threads the schedule was split between (interleaved, each with its own event loop and
    /// users); in a merged run, the sum over its shards.
    pub threads: u32,
    /// Concurrent users, each carrying one request at a time; in a merged run, the sum.
    pub users: u64,
    /// Scheduled requests that fell due while every user was busy, and waited for one to finish.
    /// It tells the two causes of send lag apart: non-zero, the server (or too few users) kept
    /// every user busy; zero with a large send lag, the driver's CPU fell behind.
    pub slots_waited_for_user: u64,
}

/// The measurement window after a warm-up: the requests scheduled from `from_s` to the end of
/// the schedule, counted and timed as the whole run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds from the schedule's start where the window begins (the warm-up's length).
    pub from_s: f64,
    pub duration_s: f64,
    pub requests: Requests,
    pub latency_ms: Percentiles,
    pub latency_ms_by_class: BTreeMap<String, ClassLatency>,
    pub send_lag_ms: Lag,
    /// 2xx answers a second over the window.
    pub throughput_rps: f64,
}

/// Request counts. `status` holds every class, each key present even when zero: `2xx`, `409`,
/// `4xx` (other 4xx), `503`, `5xx` (other 5xx), `timeout`, `connection_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub intended: u64,
    pub sent: u64,
    pub completed: u64,
    pub status: BTreeMap<String, u64>,
    /// Each class of `status` as a share of the requests sent (0 to 1; 0 when nothing was sent),
    /// so a gate can say `async.requests.share.503 < 0.01`.
    pub share: BTreeMap<String, f64>,
    /// Requests that got no HTTP answer, by what went wrong (`connection refused`, `timeout`, …).
    pub transport_errors: BTreeMap<String, u64>,
}

impl Requests {
    /// Requests that got no answer at all: timeouts, connection errors, and any sent that never
    /// completed.
    pub fn unanswered(&self) -> u64 {
        self.status.get("timeout").copied().unwrap_or(0)
            + self.status.get("connection_error").copied().unwrap_or(0)
            + self.sent.saturating_sub(self.completed)
    }

    /// The shares of `status` in `sent`.
    pub fn shares(status: &BTreeMap<String, u64>, sent: u64) -> BTreeMap<String, f64> {
        status
            .iter()
            .map(|(k, v)| {
                let share = if sent == 0 {
                    0.0
                } else {
                    *v as f64 / sent as f64
                };
                (k.clone(), share)
            })
            .collect()
    }
}

/// The design names fanbench knows: its designs, in report order, and `target` for `fanbench run
/// --target`. A scenario's gates may name only these, so a misspelt design is an error when the
/// scenario loads rather than a gate skipped on every run; gates on a finished run may also name
/// any design that run holds.
pub const DESIGNS: [&str; 4] = [SYNC, ASYNC, BROKER, TARGET];

/// The naive design's name.
pub const SYNC: &str = "sync";
/// The queue-based design's name (the queue in PostgreSQL).
pub const ASYNC: &str = "async";
/// The broker design's name: an outbox relayed to NATS JetStream, a consumer per channel.
pub const BROKER: &str = "broker";
/// The name a design gets when the driver ran against a server it did not start
/// (`fanbench run --target`).
pub const TARGET: &str = "target";

/// Where a design sorts in every report, table and list: sync, async, broker, target, then any
/// other name alphabetically. Sort by this key so every reader shows designs in one stable order.
pub fn design_order(name: &str) -> (usize, &str) {
    let rank = DESIGNS
        .iter()
        .position(|d| *d == name)
        .unwrap_or(DESIGNS.len());
    (rank, name)
}

/// Design names in [`design_order`].
pub fn ordered_designs<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_by_key(|n| design_order(n));
    names.dedup();
    names
}

/// The outcome classes latency is split by, in report order: `2xx` (accepted), `503` (refused),
/// `4xx` (every other 4xx, 409 included), `5xx` (every other 5xx), `error` (no answer: transport
/// errors and timeouts, timed to when the driver gave up).
pub const LATENCY_CLASSES: [&str; 5] = ["2xx", "503", "4xx", "5xx", "error"];

/// Latency of the requests of one outcome class, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ClassLatency {
    pub count: u64,
    #[serde(flatten)]
    pub latency: Percentiles,
}

/// When a design's run counts as invalid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidityRules {
    /// Largest share of sent requests that may end without an answer (timeouts and connection
    /// errors) before the run is invalid.
    pub max_unanswered_share: f64,
}

/// Why a run is invalid, from its request counts alone; empty when it is valid on that count. The
/// caller adds what only it can see (the server process exiting).
pub fn invalid_reasons(requests: &Requests, rules: ValidityRules) -> Vec<String> {
    let mut reasons = Vec::new();
    let unanswered = requests.unanswered();
    if requests.sent > 0 {
        let share = unanswered as f64 / requests.sent as f64;
        if share > rules.max_unanswered_share {
            let kinds: Vec<String> = requests
                .transport_errors
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            reasons.push(format!(
                "{unanswered} of {} requests sent ({:.1} %) got no answer{}, more than the {:.1} % allowed \
                 (driver.max_unanswered_share)",
                requests.sent,
                share * 100.0,
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", kinds.join(", "))
                },
                rules.max_unanswered_share * 100.0
            ));
        }
    }
    if requests.status.get("2xx").copied().unwrap_or(0) == 0 {
        reasons.push(if requests.sent == 0 {
            "no request was sent".to_string()
        } else {
            "no request was answered 2xx: nothing was accepted, so no latency or delivery figure \
             describes the design"
                .to_string()
        });
    }
    reasons
}

/// The status classes, in report order.
pub const STATUS_CLASSES: [&str; 7] = [
    "2xx",
    "409",
    "4xx",
    "503",
    "5xx",
    "timeout",
    "connection_error",
];

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of microseconds; all zero when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Lag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lag {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let p = Percentiles::from_histogram(h);
        Self {
            p50: p.p50,
            p99: p.p99,
            max: p.max,
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run's start.
    pub t: u32,
    /// Requests scheduled in this second.
    pub offered: u64,
    /// Requests actually sent in this second.
    pub sent: u64,
    /// Answers (or failures) that arrived in this second.
    pub completed: u64,
    /// Of those, 2xx.
    pub ok: u64,
    /// Of those, 503.
    pub status_503: u64,
    /// Of those, any other error (4xx, 5xx, timeouts, connection errors).
    pub errors: u64,
    /// Corrected latency of requests scheduled in this second; zero when none completed.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelDelivery {
    pub delivered: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub spectrum: Vec<SpectrumPoint>,
}

/// One point of a percentile spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SpectrumPoint {
    /// 0 to 100.
    pub percentile: f64,
    pub ms: f64,
}

/// The percentile spectrum of a histogram of microseconds, HdrHistogram style: points crowd
/// towards the tail (five per halving of the distance to 100 %).
pub fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| SpectrumPoint {
            percentile: v.quantile_iterated_to() * 100.0,
            ms: v.value_iterated_to() as f64 / 1000.0,
        })
        .collect()
}

/// Server-side telemetry of a run (`telemetry.json`): what the servers, the simulator and
/// PostgreSQL said every second, on the same clock as the results' timeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Telemetry {
    pub schema_version: u32,
    pub designs: BTreeMap<String, DesignTelemetry>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DesignTelemetry {
    pub samples: Vec<TelemetrySample>,
}

/// One second's scrape.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TelemetrySample {
    /// Seconds since the run's zero (the same clock as `timeline`).
    pub t: f64,
    /// The server's `/metrics` series (histogram buckets left out), by name with labels.
    pub server: BTreeMap<String, f64>,
    /// The simulator's `/metrics` series, likewise.
    pub providers: BTreeMap<String, f64>,
    pub postgres: PgSample,
    /// The whole machine's CPU, whoever used it (absent from telemetry written before it was
    /// sampled, and off Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineSample>,
}

/// The machine's CPU as Linux counts it, every process included (not only the run's): what a
/// process the run did not start, such as another job on the same cores, takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineSample {
    /// Cores the kernel schedules on (the `cpuN` lines of `/proc/stat`).
    pub cores: u32,
    /// CPU seconds spent busy since boot, all cores together (`/proc/stat`: every state but idle
    /// and iowait). The difference of two samples ÷ the seconds between them is the cores in use.
    pub busy_s: f64,
    /// Seconds since boot during which at least one runnable task waited for a core (pressure
    /// stall information, `/proc/pressure/cpu` `some total`); absent when the kernel does not
    /// keep it. Its rate is the share of time demand for cores exceeded the cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_stall_s: Option<f64>,
    /// Tasks runnable at the moment of the sample (`procs_running`), the sampler's own included.
    pub procs_running: u32,
}

/// `pg_stat_activity` and `pg_locks` for the design's database.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PgSample {
    /// Connections by state (`active`, `idle`, `idle in transaction`, …).
    pub connections: BTreeMap<String, u64>,
    /// Active connections by wait event (`Lock:transactionid`, `IO:WalSync`, …; `none` when running).
    pub wait_events: BTreeMap<String, u64>,
    /// Lock requests not granted.
    pub locks_waiting: u64,
}

/// Set arithmetic over what was accepted and what the providers received. Notification counts
/// add up: `expected = delivered + lost + dead + undelivered`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reconciliation {
    /// Sign-ups answered 2xx.
    pub accepted: u64,
    /// Sign-ups the database committed (more than `accepted` when some committed after the driver
    /// stopped waiting for their answer).
    pub committed: u64,
    /// Notifications owed: one per channel of every sign-up the database committed, plus one for
    /// each accepted sign-up the database does not hold.
    pub expected: u64,
    /// Of those, delivered (each counted once).
    pub delivered: u64,
    /// Owed, not delivered, and not held anywhere that would still deliver it: a sign-up with no
    /// delivery row, a row that says done while the provider has nothing, or an accepted sign-up
    /// the database lost (counted as one notification, its email). Zero means nothing was lost.
    pub lost: u64,
    /// Owed and dead-lettered after the last attempt: given up on, visible, replayable.
    pub dead: u64,
    /// Owed and still queued when the drain deadline passed: backlog, not loss.
    pub undelivered: u64,
    /// Sends the providers received again for a key already delivered (absorbed, not re-delivered).
    pub duplicates: u64,
    /// Deliveries for sign-ups the database does not hold (e.g. the sync design's emails sent
    /// before a rolled-back failure).
    pub unexpected: u64,
    /// Sign-ups refused (503 or other 5xx, timeouts, connection errors) whose user the database
    /// does not hold: users never notified because they never got in. A refused or timed-out
    /// sign-up that committed anyway is counted as committed (and its notifications as owed), not
    /// here.
    pub never_notified: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Drain {
    /// Whether every delivery finished before the drain timeout.
    pub drained: bool,
    /// Seconds from the end of load until the queue was empty (or the timeout).
    pub seconds: f64,
}

/// CPU time and peak memory of the processes of one design's run, over its *window*: from just
/// before its load started to the end of its drain (the end of the load for designs that do not
/// drain). Each role is always listed; a figure that could not be read is `None`, and the entry's
/// `missing` says why (never a 0 standing in for "unknown").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Processes {
    /// The window's length in seconds: CPU seconds over this are cores used on average.
    pub window_s: f64,
    /// The fanbench process itself: the driver (goose runs in-process), the telemetry sampler and
    /// the drain poller.
    pub driver: ProcessUsage,
    /// The design's server process.
    pub server: ProcessUsage,
    /// The provider simulator process.
    pub simulator: ProcessUsage,
    /// PostgreSQL: the postmaster and every process under it.
    pub postgres: ProcessUsage,
    /// The broker design's message broker (its nats-server); absent for designs without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<ProcessUsage>,
}

impl Processes {
    /// The roles in report order, with their entries (the broker only where there is one).
    pub fn roles(&self) -> Vec<(&'static str, &ProcessUsage)> {
        let mut roles = vec![
            (PROCESS_ROLES[0], &self.driver),
            (PROCESS_ROLES[1], &self.server),
            (PROCESS_ROLES[2], &self.simulator),
            (PROCESS_ROLES[3], &self.postgres),
        ];
        if let Some(b) = &self.broker {
            roles.push((PROCESS_ROLES[4], b));
        }
        roles
    }
}

/// The roles of [`Processes`], in report order, as `results.json` names them.
pub const PROCESS_ROLES: [&str; 5] = ["driver", "server", "simulator", "postgres", "broker"];

/// One role's share of the machine during a design's window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// User plus system CPU seconds spent in the window (a difference of two readings; for
    /// PostgreSQL summed over the tree, with the backends that exited meanwhile included).
    pub cpu_seconds: Option<f64>,
    /// The largest memory figure seen in the window, in bytes; what it counts is `memory`.
    pub peak_rss_bytes: Option<u64>,
    /// How `peak_rss_bytes` was measured.
    pub memory: MemoryMeasure,
    /// Why a figure is `None`, one sentence each; empty when both were read.
    pub missing: Vec<String>,
}

/// What a peak memory figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryMeasure {
    /// The kernel's exact high-water mark of one process's resident set (`VmHWM`: anonymous,
    /// file-backed and shared pages), reset at the window's start.
    #[default]
    VmHwm,
    /// The largest of per-second samples of a process tree's proportional set size (`Pss`
    /// summed over the processes, so pages they share, such as PostgreSQL's shared buffers, are
    /// counted once). A peak between two samples is missed.
    PssSumSampled,
}

/// The committed JSON Schema of `results.json`.
pub const SCHEMA: &str = include_str!("../results.schema.json");

/// Checks a results document against [`SCHEMA`]; the error lists what does not conform.
pub fn validate(document: &serde_json::Value) -> Result<(), String> {
    let schema: serde_json::Value =
        serde_json::from_str(SCHEMA).map_err(|e| format!("the schema is not JSON: {e}"))?;
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| format!("the schema is invalid: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_microseconds() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::from_histogram(&h);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.5, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.5, "{p:?}");
        assert_eq!(
            Percentiles::from_histogram(&new_histogram()),
            Percentiles::default()
        );
    }

    fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!("../fixtures/smoke/results.json")).unwrap()
    }

    #[test]
    fn the_fixture_validates_and_round_trips() {
        let doc = fixture();
        validate(&doc).unwrap();
        let parsed: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
    }

    #[test]
    fn the_schema_rejects_what_a_reader_could_not_use() {
        let mut doc = fixture();
        doc["designs"]["sync"]["requests"]["status"]
            .as_object_mut()
            .unwrap()
            .remove("503");
        assert!(validate(&doc).unwrap_err().contains("503"));
        let mut doc = fixture();
        doc["schema_version"] = (SCHEMA_VERSION - 1).into();
        assert!(validate(&doc).is_err(), "an older results file is refused");
        let mut doc = fixture();
        doc["designs"]["async"]["latency_ms"]["p99"] = "fast".into();
        assert!(validate(&doc).is_err());
    }

    /// A `processes` block as `fanbench compare` writes it: every figure read but the server's
    /// memory.
    fn processes() -> serde_json::Value {
        serde_json::json!({
            "window_s": 14.5,
            "driver": {"cpu_seconds": 2.31, "peak_rss_bytes": 61_440_000u64, "memory": "vm_hwm", "missing": []},
            "server": {"cpu_seconds": 1.2, "peak_rss_bytes": null, "memory": "vm_hwm",
                       "missing": ["its peak memory could not be read: permission denied"]},
            "simulator": {"cpu_seconds": 0.4, "peak_rss_bytes": 20_000_000u64, "memory": "vm_hwm", "missing": []},
            "postgres": {"cpu_seconds": 3.05, "peak_rss_bytes": 180_000_000u64, "memory": "pss_sum_sampled", "missing": []}
        })
    }

    #[test]
    fn processes_validate_round_trip_and_read_back_as_absent_figures() {
        let mut doc = fixture();
        doc["designs"]["async"]["processes"] = processes();
        validate(&doc).unwrap();
        let parsed: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
        let p = parsed.designs["async"].processes.as_ref().unwrap();
        assert_eq!(p.server.peak_rss_bytes, None, "unknown is None, not 0");
        assert_eq!(p.server.missing.len(), 1);
        assert_eq!(p.postgres.memory, MemoryMeasure::PssSumSampled);
        let roles: Vec<&str> = p.roles().iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, PROCESS_ROLES[..4], "no broker role without a broker");
        assert_eq!(p.roles()[3].1.cpu_seconds, Some(3.05));
        // The broker design's run has its broker too, last.
        let mut with_broker = processes();
        with_broker["broker"] = with_broker["simulator"].clone();
        doc["designs"]["async"]["processes"] = with_broker.clone();
        validate(&doc).unwrap();
        let parsed: RunResults = serde_json::from_value(doc).unwrap();
        let p = parsed.designs["async"].processes.as_ref().unwrap();
        let roles: Vec<&str> = p.roles().iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, PROCESS_ROLES);
        // The roles are the struct's fields, by the same names.
        let keys: Vec<String> = with_broker.as_object().unwrap().keys().cloned().collect();
        for role in PROCESS_ROLES {
            assert!(keys.contains(&role.to_string()), "{role}");
        }
    }

    #[test]
    fn the_schema_rejects_processes_a_reader_could_not_use() {
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut doc = fixture();
            let mut p = processes();
            edit(&mut p);
            doc["designs"]["sync"]["processes"] = p;
            validate(&doc)
        };
        assert!(with(&|_| {}).is_ok());
        assert!(
            with(&|p| p["browser"] = p["driver"].clone()).is_err(),
            "an unknown role"
        );
        assert!(
            with(&|p| {
                p.as_object_mut().unwrap().remove("postgres");
            })
            .is_err(),
            "every role is listed, even when nothing could be read"
        );
        assert!(with(&|p| p["postgres"]["memory"] = "rss".into()).is_err());
        assert!(with(&|p| p["driver"]["cpu_seconds"] = (-1.0).into()).is_err());
        assert!(
            with(&|p| {
                p["driver"].as_object_mut().unwrap().remove("missing");
            })
            .is_err()
        );
    }

    /// Files written before `processes` existed still load: the committed baseline and the smoke
    /// fixture have none.
    #[test]
    fn results_without_processes_still_load() {
        let baseline: serde_json::Value = serde_json::from_str(include_str!(
            "../../../reports/baseline/peak-registration/results.json"
        ))
        .unwrap();
        for doc in [fixture(), baseline] {
            validate(&doc).unwrap();
            let run: RunResults = serde_json::from_value(doc.clone()).unwrap();
            assert!(run.designs.values().all(|d| d.processes.is_none()));
            assert_eq!(
                serde_json::to_value(&run).unwrap(),
                doc,
                "writes back as it was"
            );
        }
    }

    fn requests(sent: u64, pairs: &[(&str, u64)]) -> Requests {
        let mut status: BTreeMap<String, u64> =
            STATUS_CLASSES.iter().map(|k| (k.to_string(), 0)).collect();
        for (k, v) in pairs {
            status.insert(k.to_string(), *v);
        }
        Requests {
            intended: sent,
            sent,
            completed: sent,
            share: Requests::shares(&status, sent),
            status,
            transport_errors: BTreeMap::new(),
        }
    }

    #[test]
    fn validity_from_request_counts() {
        let rules = ValidityRules {
            max_unanswered_share: 0.01,
        };
        // (sent, statuses, a word each reason must hold, one per reason)
        type Case<'a> = (u64, &'a [(&'a str, u64)], &'a [&'a str]);
        let cases: &[Case] = &[
            (1000, &[("2xx", 1000)], &[]),
            // The sync design's refusals are answers: valid.
            (1000, &[("2xx", 400), ("503", 600)], &[]),
            (1000, &[("2xx", 990), ("timeout", 10)], &[]),
            (
                1000,
                &[("2xx", 989), ("timeout", 6), ("connection_error", 5)],
                &["no answer"],
            ),
            (40, &[("connection_error", 40)], &["no answer", "2xx"]),
            (100, &[("503", 100)], &["2xx"]),
            (0, &[], &["no request was sent"]),
        ];
        for (sent, pairs, want) in cases {
            let reasons = invalid_reasons(&requests(*sent, pairs), rules);
            assert_eq!(reasons.len(), want.len(), "{pairs:?}: {reasons:?}");
            for (reason, word) in reasons.iter().zip(want.iter()) {
                assert!(reason.contains(word), "{reason:?} should say {word:?}");
            }
        }
    }

    #[test]
    fn how_the_driver_ran_is_optional_and_checked() {
        // Older files have no `driver` block and still read.
        let doc = fixture();
        assert!(doc["designs"]["async"].get("driver").is_none());
        let parsed: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(parsed.designs["async"].driver, None);
        // A file with one validates and round-trips.
        let mut doc = fixture();
        doc["designs"]["async"]["driver"] =
            serde_json::json!({"threads": 2, "users": 600, "slots_waited_for_user": 17});
        validate(&doc).unwrap();
        let parsed: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(
            parsed.designs["async"].driver,
            Some(DriverRun {
                threads: 2,
                users: 600,
                slots_waited_for_user: 17
            })
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
        // And what a reader could not use is refused.
        for bad in [
            serde_json::json!({"threads": 0, "users": 600, "slots_waited_for_user": 0}),
            serde_json::json!({"threads": 1, "users": 600}),
            serde_json::json!({"threads": 1, "users": 600, "slots_waited_for_user": -1}),
            serde_json::json!({"threads": 1, "users": 6, "slots_waited_for_user": 0, "x": 1}),
        ] {
            let mut doc = fixture();
            doc["designs"]["async"]["driver"] = bad.clone();
            assert!(validate(&doc).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_holds_latency_by_class_and_the_split_reconciliation() {
        let doc = fixture();
        for design in ["sync", "async"] {
            let d = &doc["designs"][design];
            assert!(d["latency_ms_by_class"]["2xx"]["count"].as_u64().unwrap() > 0);
            let r = &d["reconciliation"];
            let parts: u64 = ["delivered", "lost", "dead", "undelivered"]
                .iter()
                .map(|k| r[k].as_u64().unwrap())
                .sum();
            assert_eq!(r["expected"].as_u64().unwrap(), parts, "{design}: {r}");
        }
        let mut doc = fixture();
        doc["designs"]["async"]["latency_ms_by_class"]["slow"] =
            doc["designs"]["async"]["latency_ms_by_class"]["2xx"].clone();
        assert!(validate(&doc).unwrap_err().contains("slow"));
        let mut doc = fixture();
        doc["designs"]["async"]["latency_ms_by_class"]["2xx"]
            .as_object_mut()
            .unwrap()
            .remove("count");
        assert!(validate(&doc).is_err());
        let mut doc = fixture();
        doc["designs"]["async"]["reconciliation"]["dead_lettered"] = 0.into();
        assert!(validate(&doc).is_err(), "the old field is gone");
        let mut doc = fixture();
        doc["designs"]["async"]
            .as_object_mut()
            .unwrap()
            .remove("valid");
        assert!(validate(&doc).is_err());
    }

    #[test]
    fn shard_and_merged_are_optional_and_checked() {
        let mut doc = fixture();
        assert!(doc.get("shard").is_none() && doc.get("merged").is_none());
        validate(&doc).unwrap();
        let run: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!((run.shard, &run.merged), (None, &None));
        let written = serde_json::to_value(&run).unwrap();
        assert!(written.get("shard").is_none(), "absent stays absent");

        doc["shard"] = serde_json::json!({ "index": 2, "count": 3 });
        validate(&doc).unwrap();
        let run: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(run.shard, Some(ShardOf { index: 2, count: 3 }));
        doc["shard"]["index"] = 0.into();
        assert!(validate(&doc).unwrap_err().contains("shard"));

        let mut doc = fixture();
        let shard = serde_json::json!({
            "index": 1, "run_id": "r", "path": "p", "started_at": "t", "intended": 5,
            "valid": true, "trustworthy": true
        });
        doc["merged"] = serde_json::json!({ "count": 2, "shards": [shard], "missing": [2] });
        validate(&doc).unwrap();
        let run: RunResults = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(run.merged.map(|m| m.missing), Some(vec![2]));
        doc["merged"]["shards"] = serde_json::json!([]);
        assert!(validate(&doc).is_err(), "a merge of nothing");
    }

    #[test]
    fn the_histogram_covers_ten_minutes() {
        let mut h = new_histogram();
        h.record(HISTOGRAM_MAX_US).unwrap();
        assert!(h.record(HISTOGRAM_MAX_US * 2).is_err());
    }

    // The smoke fixture checked by hand: facts a person can verify from the scenario and from
    // arithmetic on the file itself, rather than code output compared with code output. The run:
    // scenarios/smoke.toml, 3 s at 10/s, 6 s at 60/s, 3 s at 10/s, Poisson, seed 11; payload
    // phone_share 0.8, device_share 0.6; both designs.

    fn smoke() -> RunResults {
        serde_json::from_value(fixture()).unwrap()
    }

    /// Equal up to the last bits a JSON round trip of a quotient may change.
    fn assert_close(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{what}: {got} is not {want}"
        );
    }

    /// Whether `count` is within four standard deviations of a Poisson count of mean `mean`.
    fn poisson_ok(count: u64, mean: f64) -> bool {
        (count as f64 - mean).abs() <= 4.0 * mean.sqrt()
    }

    /// The fixture is the run described above, so the numbers below are about it.
    #[test]
    fn the_smoke_fixture_is_the_scenario_the_hand_checks_assume() {
        let doc = fixture();
        let arrivals = &doc["scenario"]["definition"]["arrivals"];
        let phases: Vec<(&str, &str, f64)> = arrivals["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["kind"].as_str().unwrap(),
                    p["duration"].as_str().unwrap(),
                    p["rate"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            phases,
            [
                ("constant", "3s", 10.0),
                ("constant", "6s", 60.0),
                ("constant", "3s", 10.0)
            ]
        );
        assert_eq!(arrivals["process"], "poisson");
        assert_eq!(arrivals["seed"], 11);
        let payload = &doc["scenario"]["definition"]["payload"];
        assert_eq!(payload["phone_share"], 0.8);
        assert_eq!(payload["device_share"], 0.6);
        let run = smoke();
        assert_eq!(run.scenario.duration_s, 12.0, "3 s + 6 s + 3 s");
        assert_eq!(run.scenario.peak_rps, 60.0);
        assert_eq!(run.designs.keys().collect::<Vec<_>>(), ["async", "sync"]);
    }

    #[test]
    fn the_smoke_fixture_offered_a_poisson_count_of_the_scenario() {
        let run = smoke();
        // 10 × 3 + 60 × 6 + 10 × 3 = 420 arrivals on average; Poisson, so ± 4 × √420 (about 82).
        let mean = 10.0 * 3.0 + 60.0 * 6.0 + 10.0 * 3.0;
        for (name, d) in &run.designs {
            let intended = d.requests.intended;
            assert!(
                poisson_ok(intended, mean),
                "{name}: {intended} intended, expected {mean} ± {:.0}",
                4.0 * f64::sqrt(mean)
            );
            // And phase by phase, from the timeline's seconds (offered is by intended second).
            let offered = |from: usize, to: usize| -> u64 {
                d.timeline
                    .iter()
                    .filter(|s| (from..to).contains(&(s.t as usize)))
                    .map(|s| s.offered)
                    .sum()
            };
            for (from, to, rate) in [(0, 3, 10.0), (3, 9, 60.0), (9, 12, 10.0)] {
                let count = offered(from, to);
                let mean = rate * (to - from) as f64;
                assert!(
                    poisson_ok(count, mean),
                    "{name}: {count} offered in seconds {from} to {to}, expected {mean}"
                );
            }
            assert_eq!(offered(12, usize::MAX), 0, "{name}: nothing after 12 s");
        }
        // One seed, one schedule: both designs were offered the same sign-ups, second by second.
        let offered =
            |d: &DesignResults| -> Vec<u64> { d.timeline.iter().map(|s| s.offered).collect() };
        let (a, s) = (&run.designs["async"], &run.designs["sync"]);
        assert_eq!(a.requests.intended, s.requests.intended);
        let n = a.timeline.len().min(s.timeline.len());
        assert_eq!(offered(a)[..n], offered(s)[..n]);
    }

    #[test]
    fn the_smoke_fixture_request_counts_add_up() {
        for (name, d) in &smoke().designs {
            let r = &d.requests;
            assert_eq!(
                (r.sent, r.completed),
                (r.intended, r.intended),
                "{name}: everything intended was sent and completed"
            );
            let keys: Vec<&str> = r.status.keys().map(String::as_str).collect();
            let mut want = STATUS_CLASSES.to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "{name}: every status class, no other");
            assert_eq!(
                r.status.values().sum::<u64>(),
                r.completed,
                "{name}: the status classes sum to completed"
            );
            assert_eq!(
                r.share.keys().collect::<Vec<_>>(),
                r.status.keys().collect::<Vec<_>>()
            );
            for (class, n) in &r.status {
                assert_close(
                    r.share[class],
                    *n as f64 / r.sent as f64,
                    &format!("{name}: share of {class}"),
                );
            }
            // Latency classes: 4xx holds 409 and the other 4xx, error the timeouts and
            // connection errors; a class nothing fell into is left out (count 0).
            let s = |k: &str| r.status[k];
            let want = [
                ("2xx", s("2xx")),
                ("503", s("503")),
                ("4xx", s("409") + s("4xx")),
                ("5xx", s("5xx")),
                ("error", s("timeout") + s("connection_error")),
            ];
            for (class, count) in want {
                let got = d.latency_ms_by_class.get(class).map_or(0, |c| c.count);
                assert_eq!(got, count, "{name}: latency class {class}");
            }
            assert_eq!(
                d.latency_ms_by_class.values().map(|c| c.count).sum::<u64>(),
                r.completed,
                "{name}: the latency classes sum to completed"
            );
            assert!(
                d.latency_ms_by_class.values().all(|c| c.count > 0),
                "{name}: an empty class is left out, not listed with count 0"
            );
        }
    }

    #[test]
    fn the_smoke_fixture_percentiles_are_ordered() {
        let ordered = |p: &Percentiles, what: &str| {
            assert!(
                p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
                "{what}: {p:?}"
            );
            assert!(0.0 < p.mean && p.mean <= p.max, "{what}: {p:?}");
        };
        for (name, d) in &smoke().designs {
            ordered(&d.latency_ms, &format!("{name} latency_ms"));
            ordered(&d.service_time_ms, &format!("{name} service_time_ms"));
            for (class, c) in &d.latency_ms_by_class {
                ordered(&c.latency, &format!("{name} latency_ms_by_class.{class}"));
            }
            // Every answer is in one class, so the slowest answer is the slowest of some class.
            let slowest_class = d
                .latency_ms_by_class
                .values()
                .map(|c| c.latency.max)
                .fold(0.0, f64::max);
            assert_eq!(d.latency_ms.max, slowest_class, "{name}");
            let lag = &d.send_lag_ms;
            assert!(lag.p50 <= lag.p99 && lag.p99 <= lag.max, "{name}: {lag:?}");
            for (channel, c) in &d.delivery {
                assert!(
                    c.p50_ms <= c.p99_ms && c.p99_ms <= c.max_ms,
                    "{name} delivery.{channel}"
                );
                assert!(
                    c.spectrum
                        .windows(2)
                        .all(|w| w[0].percentile <= w[1].percentile && w[0].ms <= w[1].ms),
                    "{name} delivery.{channel}: the spectrum rises"
                );
            }
            for s in &d.timeline {
                assert!(
                    s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms,
                    "{name} timeline second {}",
                    s.t
                );
            }
            assert!(
                d.latency_spectrum
                    .windows(2)
                    .all(|w| w[0].percentile <= w[1].percentile && w[0].ms <= w[1].ms),
                "{name}: the latency spectrum rises"
            );
        }
    }

    #[test]
    fn the_smoke_fixture_rates_are_counts_over_the_duration() {
        for (name, d) in &smoke().designs {
            assert_eq!(d.duration_s, 12.0, "{name}: 3 s + 6 s + 3 s");
            assert_close(
                d.throughput_rps,
                d.requests.status["2xx"] as f64 / d.duration_s,
                &format!("{name}: throughput_rps"),
            );
            assert_close(
                d.offered_rps,
                d.requests.intended as f64 / d.duration_s,
                &format!("{name}: offered_rps"),
            );
        }
    }

    #[test]
    fn the_smoke_fixture_timeline_sums_to_the_totals() {
        for (name, d) in &smoke().designs {
            let ts: Vec<u32> = d.timeline.iter().map(|s| s.t).collect();
            let want: Vec<u32> = (0..ts.len() as u32).collect();
            assert_eq!(ts, want, "{name}: one entry per second, in order");
            let sum = |f: fn(&Second) -> u64| d.timeline.iter().map(f).sum::<u64>();
            let r = &d.requests;
            assert_eq!(sum(|s| s.offered), r.intended, "{name}: offered");
            assert_eq!(sum(|s| s.sent), r.sent, "{name}: sent");
            assert_eq!(sum(|s| s.completed), r.completed, "{name}: completed");
            assert_eq!(sum(|s| s.ok), r.status["2xx"], "{name}: ok");
            assert_eq!(sum(|s| s.status_503), r.status["503"], "{name}: 503");
            assert_eq!(
                sum(|s| s.errors),
                r.completed - r.status["2xx"] - r.status["503"],
                "{name}: errors"
            );
        }
    }

    #[test]
    fn the_smoke_fixture_reconciliation_adds_up() {
        for (name, d) in &smoke().designs {
            let rec = d.reconciliation.as_ref().unwrap();
            assert_eq!(
                rec.expected,
                rec.delivered + rec.lost + rec.dead + rec.undelivered,
                "{name}: {rec:?}"
            );
            assert_eq!(rec.accepted, d.requests.status["2xx"], "{name}");
            // Email always, SMS and push only with a phone or a device token.
            assert!(
                rec.committed <= rec.expected && rec.expected <= 3 * rec.committed,
                "{name}: {rec:?}"
            );
            assert_eq!(
                d.delivery.values().map(|c| c.delivered).sum::<u64>(),
                rec.delivered,
                "{name}: the channels' deliveries sum to the reconciled ones"
            );
            // This run lost nothing and left nothing queued, so each channel delivered exactly
            // what it owed: an email per committed sign-up, and SMS and push to a binomial
            // share of them (0.8 and 0.6, ± 4 standard deviations).
            assert_eq!((rec.lost, rec.dead, rec.undelivered), (0, 0, 0), "{name}");
            assert_eq!(d.delivery["email"].delivered, rec.committed, "{name}");
            let n = rec.committed as f64;
            for (channel, p) in [("sms", 0.8), ("push", 0.6)] {
                let got = d.delivery[channel].delivered as f64;
                assert!(
                    (got - n * p).abs() <= 4.0 * (n * p * (1.0 - p)).sqrt(),
                    "{name}: {got} {channel} deliveries of {n} sign-ups, share {p}"
                );
            }
        }
    }

    /// A run of any number of designs, under any names, is one the schema and the model accept:
    /// the design names are map keys, not an enumeration.
    #[test]
    fn a_run_may_hold_three_designs_or_any_name() {
        let mut doc = fixture();
        for name in [BROKER, "kafka"] {
            doc["designs"][name] = doc["designs"][ASYNC].clone();
        }
        validate(&doc).unwrap();
        let parsed: RunResults = serde_json::from_value(doc).unwrap();
        assert_eq!(
            ordered_designs(parsed.designs.keys().map(String::as_str)),
            [SYNC, ASYNC, BROKER, "kafka"]
        );
    }

    #[test]
    fn designs_sort_sync_async_broker_target_then_by_name() {
        assert_eq!(
            ordered_designs(["zeta", TARGET, BROKER, "alpha", ASYNC, SYNC, ASYNC]),
            [SYNC, ASYNC, BROKER, TARGET, "alpha", "zeta"]
        );
    }
}
