//! The driver's own plan: how sign-ups arrive (phases or a trace), what each carries, and how the
//! driver runs. A scenario file holds these under `[arrivals]`, `[payload]` and `[driver]`; the
//! `scenario` crate reads the file, this crate only what it needs to send load.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

    /// Checks the phase's numbers; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
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
    /// Load threads, each with its own event loop, users and interleaved part of the schedule; by
    /// default from the peak rate (`driver::threads_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
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
    /// The schedule's first seconds that warm the system up. The run is still recorded whole;
    /// results.json also holds the measurement window after them (`window`), which `fanbench
    /// capacity` judges its steps on.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup: Option<Duration>,
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
            threads: None,
            max_latency: default_max_latency(),
            request_timeout: default_request_timeout(),
            lag_threshold: default_lag_threshold(),
            max_unanswered_share: default_max_unanswered_share(),
            warmup: None,
        }
    }
}

/// The driver's part of a scenario file: its arrivals and payload (other tables are ignored). The
/// `scenario` crate reads whole files; this is for the trace generator and the driver's tests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Load {
    pub arrivals: Arrivals,
    #[serde(default)]
    pub payload: Payload,
}
