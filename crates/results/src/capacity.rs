//! The capacity document: `capacity.json`, written by `fanbench capacity` (its JSON Schema is
//! `crates/fanbench/capacity.schema.json`). Per design, the highest offered rate that met the
//! objective, every load step the search ran, and what saturated at the knee. The capacity page
//! reads it through these types; they mirror the schema field for field, every field required,
//! absent values written as `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped on any change a reader of `capacity.json` must know about.
pub const SCHEMA_VERSION: u32 = 1;

/// `capacity.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub schema_version: u32,
    /// The scenario file every step's payload, providers and server settings came from.
    pub scenario: String,
    /// Cores on the machine that ran the steps.
    pub cpus: usize,
    /// Each step's load, seconds, warm-up included.
    pub step_duration_s: f64,
    /// The first seconds of each step, left out of its judgement (0: judged whole, as documents
    /// written before the warm-up existed were).
    #[serde(default)]
    pub warmup_s: f64,
    /// The climb's multiplier between steps.
    pub factor: f64,
    /// Bisection stops when (first fail − last pass) ÷ last pass is at most this.
    pub resolution: f64,
    /// Load steps each search may run.
    pub max_steps: u32,
    /// Design settings changed for this run only (`--set sync.pool_size=20`), as given.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// By design name (`sync`, `async`); in a sweep, by [`sweep_key`] (`async[concurrency=64]`),
    /// one search per value.
    pub designs: BTreeMap<String, DesignCapacity>,
    /// `--sweep DESIGN.KEY=V1,V2,…`: the one setting whose values this run compared. Absent from
    /// documents written before it existed.
    #[serde(default)]
    pub sweep: Option<Sweep>,
}

/// A what-if over several values of one design setting: one search of the design per value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub design: String,
    /// The key of `[servers.DESIGN]` (`concurrency`, `pool_size`).
    pub setting: String,
    /// The values, in the order given; each search is `designs[sweep_key(design, setting, v)]`.
    pub values: Vec<String>,
}

impl Sweep {
    /// The `designs` key of each value's search, in the order given.
    pub fn keys(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| sweep_key(&self.design, &self.setting, v))
            .collect()
    }
}

/// The `designs` key of one value of a sweep: `async[concurrency=64]`.
pub fn sweep_key(design: &str, setting: &str, value: &str) -> String {
    format!("{design}[{setting}={value}]")
}

/// Why a search stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The last pass and the first fail are within the resolution.
    Converged,
    /// The step budget ran out first.
    Budget,
    /// A step was driver-limited: the design's limit is above what the driver could offer.
    DriverLimited,
    /// Even 1 sign-up a second failed.
    NeverPassed,
}

/// One design's search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesignCapacity {
    /// The objectives each step was held to, in the gate language relative to the design.
    pub slo: Vec<String>,
    /// The highest offered rate that met the objectives (the async design's ingest limit).
    pub capacity_rps: Option<u32>,
    /// The lowest offered rate that did not.
    pub first_fail_rps: Option<u32>,
    pub stop: Stop,
    /// How many times the steps that decide each limit were run (`--repeat`); 1 in documents
    /// written before repeats existed.
    #[serde(default = "one")]
    pub repeats: u32,
    /// Where the limit lies, from the repeats: `[low, high]`, low the highest rate every one of
    /// whose runs met the objective, high the lowest rate every one of whose runs missed it
    /// (`null` where no such rate was run). The limit is at least low and below high. Absent
    /// from documents written before repeats existed.
    #[serde(default)]
    pub capacity_ci: Option<[Option<u32>; 2]>,
    /// Designs with a queue: the highest rate that also kept up with delivery (end to end).
    pub delivery_capacity_rps: Option<u32>,
    pub delivery_first_fail_rps: Option<u32>,
    /// The end-to-end limit's interval, as [`DesignCapacity::capacity_ci`].
    #[serde(default)]
    pub delivery_capacity_ci: Option<[Option<u32>; 2]>,
    /// `None` for designs without a queue.
    pub delivery_stop: Option<Stop>,
    /// Every step, in the order it ran.
    pub steps: Vec<StepRecord>,
    /// What saturated at the first failing (or driver-limited) step of the objective's search.
    pub bottleneck: Option<Bottleneck>,
    /// The same, at the first step that did not keep up with delivery.
    pub delivery_bottleneck: Option<Bottleneck>,
    /// At the knee itself (the last step that met the objective): the resource closest to its
    /// limit there, and how close. Absent from documents written before it existed.
    #[serde(default)]
    pub knee: Option<Bottleneck>,
    /// The same at the end-to-end knee (the last step that kept up with delivery).
    #[serde(default)]
    pub delivery_knee: Option<Bottleneck>,
    /// A first-principles limit beside the measured one.
    pub prediction: Option<Prediction>,
    /// The Universal Scalability Law fitted to the steps, its predicted knee and the step run
    /// there to check it. Absent from documents written before it existed.
    #[serde(default)]
    pub usl: Option<Usl>,
}

/// One load step: a constant offered rate, judged on its measurement window (after the warm-up):
/// the counts, throughput and latencies below are the window's; send lag, validity, slopes and
/// delivery are the whole step's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub offered_rps: u32,
    /// Which run of this rate it was: 0 the search's own, 1 and up the repeats that settle a
    /// limit (`--repeat`). Absent (0) from documents written before repeats existed.
    #[serde(default)]
    pub repeat: u32,
    /// Answers a second over the step.
    pub throughput_rps: f64,
    pub sent: u64,
    /// Answered 2xx.
    pub accepted: u64,
    pub status_503: u64,
    /// 503s as a share of the requests sent.
    pub share_503: f64,
    /// p99 of accepted sign-ups from each request's intended send time; `None` when none was.
    pub accepted_p99_ms: Option<f64>,
    /// p99 of every answer.
    pub latency_p99_ms: f64,
    /// Mean of accepted sign-ups from each request's intended send time: with the throughput, the
    /// sign-ups in the system (Little's law) the USL fit needs. Absent from documents written
    /// before it existed.
    #[serde(default)]
    pub accepted_mean_ms: Option<f64>,
    /// How late the driver sent, p99: its trustworthiness.
    pub send_lag_p99_ms: f64,
    /// p99 of every answer from the moment it was actually sent: the server's own time, which
    /// no lateness of the driver's is in. Absent (`null`) from documents written before it
    /// existed.
    #[serde(default)]
    pub service_p99_ms: Option<f64>,
    /// The driver fell behind its schedule, yet the requests it did send already missed the
    /// objective's latency bound on the server's own time, while the driver had CPU to spare: a
    /// punctual driver would only have added load, so the step is the design's miss, not an
    /// inconclusive one.
    #[serde(default)]
    pub missed_despite_lag: bool,
    /// Designs with a queue: the queue depth's slope over the second half of the load, rows a
    /// second.
    pub backlog_slope_per_s: Option<f64>,
    /// Requests waiting for a pooled connection: their slope over the second half of the load, a
    /// second (growing too fast fails the step: the design is not keeping up).
    pub pool_waiting_slope_per_s: Option<f64>,
    /// Per channel, intended send time to the provider's receipt.
    pub delivery_p99_ms: BTreeMap<String, f64>,
    /// Cores each process (server, postgres, simulator, driver) used on average.
    pub cores: BTreeMap<String, f64>,
    pub valid: bool,
    /// False: the driver fell behind its schedule, the step is driver-limited.
    pub trustworthy: bool,
    /// Valid, trustworthy and met every objective (delivery is judged apart).
    pub passed: bool,
    /// Designs with a queue: delivery kept up. `None` for the others.
    pub delivery_keeps_up: Option<bool>,
    /// What it missed, in words.
    pub why: Vec<String>,
    /// The step's run folder.
    pub dir: String,
}

fn one() -> u32 {
    1
}

/// Whether an interval is wider than the search's resolution: its repeats disagree by more than
/// the search could tell apart, or one end is unknown. `None` for a limit never settled.
pub fn wider_than(ci: Option<[Option<u32>; 2]>, resolution: f64) -> Option<bool> {
    match ci? {
        [Some(low), Some(high)] if low > 0 => {
            Some(f64::from(high.saturating_sub(low)) / f64::from(low) > resolution)
        }
        _ => Some(true),
    }
}

impl StepRecord {
    /// Inconclusive: the driver fell behind its schedule and the design did not miss its
    /// objective on its own time ([`StepRecord::missed_despite_lag`]).
    pub fn driver_limited(&self) -> bool {
        !self.trustworthy && !self.missed_despite_lag
    }

    /// Met the objective and, for a design with a queue, kept up with delivery.
    pub fn passed_end_to_end(&self) -> bool {
        self.passed && self.delivery_keeps_up != Some(false)
    }
}

/// What gave out at a step, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// The step it was read from.
    pub offered_rps: u32,
    /// `driver`, `connection pool`, `channel concurrency (<channel>)`,
    /// `provider rate limit (<channel>)`, `row locks`, `CPU (<process>)`, or `unclear`.
    pub resource: String,
    pub evidence: Vec<String>,
    /// The figures behind the evidence, by name.
    pub signals: BTreeMap<String, f64>,
}

/// A first-principles limit beside the measured one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub method: String,
    pub predicted_rps: f64,
    pub measured_rps: Option<u32>,
    /// measured ÷ predicted.
    pub ratio: Option<f64>,
    pub detail: String,
}

/// The Universal Scalability Law, X(N) = λN ÷ (1 + σ(N−1) + κN(N−1)), fitted to a design's
/// steps with N the accepted sign-ups in the system (throughput × mean latency, Little's law).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usl {
    /// Steps the fit used (valid, trustworthy, something accepted, a mean latency known).
    pub points: u32,
    /// Contention; `None` when nothing was fitted.
    pub sigma: Option<f64>,
    /// Coherency (crosstalk): above zero, throughput falls past the knee.
    pub kappa: Option<f64>,
    /// Sign-ups a second with one in the system.
    pub lambda: Option<f64>,
    /// Share of the variance of N ÷ X the fit explains.
    pub r_squared: Option<f64>,
    /// The concurrency where throughput peaks, √((1−σ)÷κ).
    pub knee_concurrency: Option<f64>,
    /// The throughput there, X(N*): the offered rate the model says the design peaks at.
    pub predicted_knee_rps: Option<f64>,
    /// Why there is no fit or no knee, or what the knee means, in words.
    pub note: String,
    /// The step run at the predicted knee; `None` without a knee.
    pub confirmation: Option<Confirmation>,
}

/// The step run at the USL's predicted knee, and what it said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The offered rate: the predicted knee, rounded.
    pub rate: u32,
    /// Accepted sign-ups a second measured there.
    pub throughput_rps: f64,
    /// Measured ÷ predicted throughput.
    pub ratio: f64,
    /// The step met the objective.
    pub passed: bool,
    pub verdict: ConfirmationVerdict,
    /// The step's run folder.
    pub dir: String,
}

/// What the confirmation step says of the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmationVerdict {
    /// The measured throughput is within 20 % of the predicted one.
    Confirmed,
    /// The design served more than 20 % less than predicted there: the model is optimistic.
    BelowPrediction,
    /// The driver fell behind its schedule, or the step was invalid: no verdict.
    Inconclusive,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../fixtures/capacity/capacity.json");
    const SCHEMA: &str = include_str!("../../fanbench/capacity.schema.json");

    fn fixture() -> serde_json::Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    #[test]
    fn the_fixture_validates_and_round_trips() {
        let doc = fixture();
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let parsed: CapacityReport = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(parsed.schema_version, SCHEMA_VERSION);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
        let sync = &parsed.designs["sync"];
        assert_eq!(sync.stop, Stop::Converged);
        assert_eq!(sync.delivery_stop, None);
        assert!(parsed.designs["async"].delivery_stop.is_some());
    }

    /// Every object the schema describes has exactly the fields these types write, so a field
    /// added to one and not the other fails here rather than in a reader.
    #[test]
    fn the_types_write_exactly_the_schemas_fields() {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let doc =
            serde_json::to_value(serde_json::from_value::<CapacityReport>(fixture()).unwrap())
                .unwrap();
        let design = &doc["designs"]["sync"];
        let pairs = [
            (&schema["properties"], &doc),
            (&schema["$defs"]["design"]["properties"], design),
            (&schema["$defs"]["step"]["properties"], &design["steps"][0]),
            (
                &schema["$defs"]["bottleneck"]["properties"],
                &design["bottleneck"],
            ),
            (
                &schema["$defs"]["prediction"]["properties"],
                &design["prediction"],
            ),
            (&schema["$defs"]["usl"]["properties"], &design["usl"]),
            (
                &schema["$defs"]["usl"]["properties"]["confirmation"]["oneOf"][1]["properties"],
                &design["usl"]["confirmation"],
            ),
        ];
        for (defined, written) in pairs {
            assert_eq!(keys(defined), keys(written));
        }
        // And the stop reasons are the schema's.
        let stops: Vec<String> = schema["$defs"]["stop"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let ours: Vec<String> = [
            Stop::Converged,
            Stop::Budget,
            Stop::DriverLimited,
            Stop::NeverPassed,
        ]
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        assert_eq!(stops, ours);
    }

    /// A document written before the USL fit (no `usl`, no step `accepted_mean_ms`) is still
    /// valid and still reads.
    #[test]
    fn a_document_from_before_the_usl_fit_still_validates_and_reads() {
        let mut doc = fixture();
        for design in doc["designs"].as_object_mut().unwrap().values_mut() {
            design.as_object_mut().unwrap().remove("usl");
            for step in design["steps"].as_array_mut().unwrap() {
                step.as_object_mut().unwrap().remove("accepted_mean_ms");
            }
        }
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(validator.is_valid(&doc));
        let parsed: CapacityReport = serde_json::from_value(doc).unwrap();
        assert_eq!(parsed.designs["sync"].usl, None);
        assert_eq!(parsed.designs["sync"].steps[0].accepted_mean_ms, None);
    }

    #[test]
    fn a_step_passes_end_to_end_only_when_delivery_kept_up() {
        let parsed: CapacityReport = serde_json::from_value(fixture()).unwrap();
        let steps = &parsed.designs["async"].steps;
        let at = |r: u32| steps.iter().find(|s| s.offered_rps == r).unwrap();
        assert!(at(800).passed && !at(800).passed_end_to_end());
        assert!(at(500).passed_end_to_end());
        assert!(parsed.designs["sync"].steps[0].passed_end_to_end());
    }
}
