//! CI performance gates over results: absolute thresholds (`async.latency_ms.p99 < 100`), design
//! invariants (`sync.latency_ms.p99 / async.latency_ms.p99 > 10`) and regressions against a
//! baseline run, decided so that noise on a small runner does not cry wolf.
//!
//! A gate reads `results.json` documents (one per repeat of a run) and nothing else: not the
//! driver, not the servers.
//!
//! **Noise.** With repeats, every value a gate compares is the *median* over the repeats. A
//! regression fails only when the median got worse by more than its tolerance *and* every
//! candidate repeat is worse than every baseline repeat (the repeat ranges do not overlap): with
//! three repeats a side, a difference of pure noise separates that way with probability 1/20, and
//! must also clear the tolerance. docs/PERFORMANCE.md records the false-alarm rate measured with
//! A/A runs and the smallest regression caught.

mod expr;
mod output;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use expr::{Metric, Rule, parse_rule};
pub use output::{junit, markdown, text};

/// A problem with a gate itself (not a failed gate): exit code 2.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("`{rule}`: {message}")]
    Syntax { rule: String, message: String },
    #[error("`{rule}`: no metric `{metric}`: {message}")]
    UnknownMetric {
        rule: String,
        metric: String,
        message: String,
    },
    #[error("`{rule}`: the run has no `{design}` design (it has {have})")]
    MissingDesign {
        rule: String,
        design: String,
        have: String,
    },
    #[error("`{rule}`: `{metric}` has no value in this run ({message})")]
    MissingValue {
        rule: String,
        metric: String,
        message: String,
    },
    #[error("invalid regression gate: {0}")]
    Regression(String),
    /// The metric is a percentile of an outcome class no request fell into: there is nothing to
    /// hold against the limit, so the gate is skipped (its `count` reads 0 instead).
    #[error("`{rule}`: no request fell into latency class `{class}`")]
    EmptyClass { rule: String, class: String },
}

/// Which direction of change is a regression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Worse {
    /// Latencies, errors: a higher value is worse.
    #[default]
    Higher,
    /// Throughput: a lower value is worse.
    Lower,
}

/// "This metric may not get worse than `tolerance` against the baseline."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionSpec {
    pub metric: String,
    /// `"20%"` or a fraction (`0.2`).
    #[serde(default = "default_tolerance")]
    pub tolerance: Tolerance,
    #[serde(default)]
    pub worse: Worse,
    /// A change smaller than this, in the metric's own units, is never a regression: for metrics
    /// whose baseline is often 0 (a 503 share), where any relative change is infinite.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_change: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn default_tolerance() -> Tolerance {
    Tolerance(0.10)
}

/// A relative tolerance, written `"20%"` or `0.2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance(pub f64);

impl<'de> Deserialize<'de> for Tolerance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Fraction(f64),
            Text(String),
        }
        let value = match Raw::deserialize(d)? {
            Raw::Fraction(f) => f,
            Raw::Text(t) => {
                let number = t.trim().strip_suffix('%').ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "tolerance `{t}`: write a percentage like \"20%\""
                    ))
                })?;
                number
                    .trim()
                    .parse::<f64>()
                    .map_err(|e| serde::de::Error::custom(format!("tolerance `{t}`: {e}")))?
                    / 100.0
            }
        };
        if !(value.is_finite() && value >= 0.0) {
            return Err(serde::de::Error::custom(format!(
                "tolerance must be zero or more, not {value}"
            )));
        }
        Ok(Tolerance(value))
    }
}

/// Parsed gates: the rules, and each regression with its metric.
pub type Checked = (Vec<Rule>, Vec<(RegressionSpec, Metric)>);

/// The gates of a scenario (`[gates]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpecs {
    /// Thresholds and design invariants, e.g. `"async.latency_ms.p99 < 100"`.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Regressions against a baseline run.
    #[serde(default)]
    pub regressions: Vec<RegressionSpec>,
}

impl GateSpecs {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.regressions.is_empty()
    }

    /// Parses every gate and checks every metric name against the results schema; the first
    /// problem is returned with the text it is in, so the caller can point at its line.
    pub fn check(&self) -> Result<Checked, (String, GateError)> {
        self.check_in(&[])
    }

    /// [`GateSpecs::check`] for gates on a finished run: a metric may also name any design the
    /// run holds (`present`), so a design fanbench does not know by name can still be gated.
    pub fn check_in(&self, present: &[&str]) -> Result<Checked, (String, GateError)> {
        let mut rules = Vec::new();
        for text in &self.rules {
            let rule = parse_rule(text).map_err(|e| (text.clone(), e))?;
            rule.check_names_in(present)
                .map_err(|e| (text.clone(), e))?;
            rules.push(rule);
        }
        let mut regressions = Vec::new();
        for spec in &self.regressions {
            let metric = Metric::parse(&spec.metric).map_err(|m| {
                (
                    spec.metric.clone(),
                    GateError::Syntax {
                        rule: spec.metric.clone(),
                        message: m,
                    },
                )
            })?;
            metric
                .check_name_in(&spec.metric, present)
                .map_err(|e| (spec.metric.clone(), e))?;
            regressions.push((spec.clone(), metric));
        }
        Ok((rules, regressions))
    }
}

/// What kind of gate a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Threshold,
    Invariant,
    Regression,
}

/// One evaluated gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub name: String,
    pub kind: Kind,
    /// The measured value (median over repeats).
    pub value: f64,
    /// What it was held against.
    pub limit: f64,
    /// Headroom: positive when passing, negative by how much it failed (in the value's units).
    pub margin: f64,
    pub passed: bool,
    /// How the verdict was reached, in words.
    pub detail: String,
    /// Set when the gate was not evaluated, saying why (it names a design the run did not run):
    /// a skipped gate neither passes nor fails, and `value`, `limit` and `margin` are 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl GateResult {
    /// A gate that was not evaluated, and why.
    pub fn skipped(name: String, kind: Kind, reason: String) -> Self {
        Self {
            name,
            kind,
            value: 0.0,
            limit: 0.0,
            margin: 0.0,
            passed: false,
            detail: String::new(),
            skipped: Some(reason),
        }
    }

    /// Evaluated and failed.
    pub fn failed(&self) -> bool {
        !self.passed && self.skipped.is_none()
    }
}

/// Counts of a set of gate results: passed, failed, skipped.
pub fn tally(results: &[GateResult]) -> (usize, usize, usize) {
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    let failed = results.iter().filter(|r| r.failed()).count();
    (results.len() - skipped - failed, failed, skipped)
}

/// Why a gate naming `designs` cannot be evaluated on `doc`: the designs it names that the run
/// did not run. `None` when every one is there.
fn absent_designs<'a>(designs: impl IntoIterator<Item = &'a str>, doc: &Value) -> Option<String> {
    let mut absent: Vec<&str> = designs
        .into_iter()
        .filter(|d| doc["designs"].get(*d).is_none())
        .collect();
    absent.sort_unstable();
    absent.dedup();
    if absent.is_empty() {
        return None;
    }
    let have: Vec<&str> = doc["designs"]
        .as_object()
        .map(|o| results::ordered_designs(o.keys().map(String::as_str)))
        .unwrap_or_default();
    Some(format!(
        "the run has no {} design (it ran {})",
        absent
            .iter()
            .map(|d| format!("`{d}`"))
            .collect::<Vec<_>>()
            .join(" or "),
        if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        }
    ))
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Evaluates threshold and invariant rules on the repeats of a run. A rule naming a design the
/// run did not run is skipped, saying so.
pub fn evaluate_rules(rules: &[Rule], repeats: &[Value]) -> Result<Vec<GateResult>, GateError> {
    rules
        .iter()
        .map(|rule| {
            let designs = rule.metrics().into_iter().map(|m| m.design.as_str());
            match repeats.first().and_then(|doc| absent_designs(designs, doc)) {
                Some(reason) => Ok(GateResult::skipped(rule.text.clone(), rule.kind(), reason)),
                None => match rule.evaluate(repeats) {
                    Err(GateError::EmptyClass { class, .. }) => Ok(GateResult::skipped(
                        rule.text.clone(),
                        rule.kind(),
                        format!(
                            "no request fell into latency class `{class}`, so it has no percentiles"
                        ),
                    )),
                    other => other,
                },
            }
        })
        .collect()
}

/// Evaluates regression gates: candidate repeats against baseline repeats.
pub fn evaluate_regressions(
    regressions: &[(RegressionSpec, Metric)],
    candidate: &[Value],
    baseline: &[Value],
) -> Result<Vec<GateResult>, GateError> {
    let mut out = Vec::new();
    for (spec, metric) in regressions {
        let design = [metric.design.as_str()];
        let absent = candidate
            .first()
            .and_then(|doc| absent_designs(design, doc))
            .or_else(|| {
                baseline
                    .first()
                    .and_then(|doc| absent_designs(design, doc))
                    .map(|r| format!("baseline: {r}"))
            });
        if let Some(reason) = absent {
            out.push(GateResult::skipped(
                regression_name(spec),
                Kind::Regression,
                reason,
            ));
            continue;
        }
        let values = |docs: &[Value]| -> Result<Vec<f64>, GateError> {
            docs.iter().map(|d| metric.value(d, &spec.metric)).collect()
        };
        let (c, b) = match (values(candidate), values(baseline)) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(GateError::EmptyClass { class, .. }), _)
            | (_, Err(GateError::EmptyClass { class, .. })) => {
                out.push(GateResult::skipped(
                    regression_name(spec),
                    Kind::Regression,
                    format!("no request fell into latency class `{class}` in one of the runs"),
                ));
                continue;
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let (cm, bm) = (median(&c), median(&b));
        let tol = spec.tolerance.0;
        // Express "worse" as a positive number whichever direction is bad.
        let sign = match spec.worse {
            Worse::Higher => 1.0,
            Worse::Lower => -1.0,
        };
        let limit = bm * (1.0 + sign * tol);
        let change = if bm != 0.0 {
            (cm - bm) / bm.abs()
        } else if cm == bm {
            0.0
        } else {
            f64::INFINITY * (cm - bm).signum()
        };
        let worse_by = sign * change;
        let c_best = c
            .iter()
            .copied()
            .map(|v| sign * v)
            .fold(f64::INFINITY, f64::min);
        let b_worst = b
            .iter()
            .copied()
            .map(|v| sign * v)
            .fold(f64::NEG_INFINITY, f64::max);
        let separated = c_best > b_worst;
        let relatively_worse = worse_by > tol || (worse_by.is_nan() && cm.is_nan() != bm.is_nan());
        let too_small = (cm - bm).abs() < spec.min_change;
        let beyond_tolerance = relatively_worse && !too_small;
        let passed = !(beyond_tolerance && separated);
        let detail = format!(
            "median {} → {} ({:+.1} %), tolerance {:.1} %, {} repeat(s) against {}; {}",
            num(bm),
            num(cm),
            change * 100.0,
            tol * 100.0,
            c.len(),
            b.len(),
            match (beyond_tolerance, separated) {
                (true, true) =>
                    "worse beyond the tolerance, and every repeat worse than every baseline repeat",
                (true, false) =>
                    "beyond the tolerance, but the repeats overlap the baseline's: noise",
                (false, _) if relatively_worse =>
                    "beyond the tolerance, but by less than its minimum change",
                (false, _) => "within the tolerance",
            }
        );
        out.push(GateResult {
            name: regression_name(spec),
            kind: Kind::Regression,
            value: cm,
            limit,
            margin: sign * (limit - cm),
            passed,
            detail,
            skipped: None,
        });
    }
    Ok(out)
}

fn regression_name(spec: &RegressionSpec) -> String {
    format!(
        "{} may not get worse than {:.0} % ({} is worse)",
        spec.metric,
        spec.tolerance.0 * 100.0,
        match spec.worse {
            Worse::Higher => "higher",
            Worse::Lower => "lower",
        }
    )
}

/// The default tolerances of [`default_regressions`]; docs/PERFORMANCE.md records the A/A runs
/// they were checked against.
pub const DEFAULT_TOLERANCES: DefaultTolerances = DefaultTolerances {
    accepted_p99: 0.50,
    share_503: 0.20,
    share_503_min_change: 0.005,
    throughput: 0.05,
    delivery_p99: 0.50,
};

/// See [`DEFAULT_TOLERANCES`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultTolerances {
    /// Accepted-sign-up latency p99, relative.
    pub accepted_p99: f64,
    /// 503 share, relative…
    pub share_503: f64,
    /// …and only when it moved by at least this much (half a percentage point), since its
    /// baseline is often 0.
    pub share_503_min_change: f64,
    /// Throughput, relative, lower is worse.
    pub throughput: f64,
    /// Each channel's delivery p99, relative.
    pub delivery_p99: f64,
}

/// The regressions compared against a baseline when a scenario declares none, so that
/// `--baseline` never compares nothing: for each design in both runs, its accepted-sign-up latency
/// p99, its 503 share, its throughput, its lost and still-queued notifications (any rise from the
/// baseline's is a regression), and the delivery p99 of each channel that delivered in both —
/// each only where both runs measured it.
pub fn default_regressions(candidate: &Value, baseline: &Value) -> Vec<RegressionSpec> {
    let t = DEFAULT_TOLERANCES;
    let number = |doc: &Value, pointer: &str| doc.pointer(pointer).and_then(Value::as_f64);
    let mut out = Vec::new();
    let Some(designs) = candidate["designs"].as_object() else {
        return out;
    };
    for (name, design) in designs {
        if baseline["designs"].get(name).is_none() {
            continue;
        }
        let mut add = |path: &str, tolerance: f64, worse: Worse, min_change: f64| {
            let pointer = format!("/designs/{name}/{}", path.replace('.', "/"));
            if number(candidate, &pointer).is_some() && number(baseline, &pointer).is_some() {
                out.push(RegressionSpec {
                    metric: format!("{name}.{path}"),
                    tolerance: Tolerance(tolerance),
                    worse,
                    min_change,
                });
            }
        };
        add(
            "latency_ms_by_class.2xx.p99",
            t.accepted_p99,
            Worse::Higher,
            0.0,
        );
        add(
            "requests.share.503",
            t.share_503,
            Worse::Higher,
            t.share_503_min_change,
        );
        add("throughput_rps", t.throughput, Worse::Lower, 0.0);
        add("reconciliation.lost", 0.0, Worse::Higher, 0.0);
        add("reconciliation.undelivered", 0.0, Worse::Higher, 0.0);
        let channels: Vec<String> = design["delivery"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for channel in channels {
            // A channel that delivered nothing has a p99 of 0, which would read as "faster".
            let delivered = |doc: &Value| {
                number(
                    doc,
                    &format!("/designs/{name}/delivery/{channel}/delivered"),
                )
                .is_some_and(|n| n > 0.0)
            };
            if delivered(candidate) && delivered(baseline) {
                add(
                    &format!("delivery.{channel}.p99_ms"),
                    t.delivery_p99,
                    Worse::Higher,
                    0.0,
                );
            }
        }
    }
    out
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// 0 when no gate failed (skipped ones do not count), 1 when any failed.
pub fn exit_code(results: &[GateResult]) -> i32 {
    if !results.iter().any(GateResult::failed) {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(designs: Value) -> Value {
        json!({ "designs": designs })
    }

    fn design(accepted_p99: f64, share_503: f64, channels: &[&str]) -> Value {
        let mut delivery: serde_json::Map<String, Value> = channels
            .iter()
            .map(|c| (c.to_string(), json!({ "delivered": 10, "p99_ms": 50.0 })))
            .collect();
        // A channel that delivered nothing, as the results always list every channel.
        delivery.insert("idle".into(), json!({ "delivered": 0, "p99_ms": 0.0 }));
        json!({
            "latency_ms": { "p99": accepted_p99 },
            "latency_ms_by_class": { "2xx": { "p99": accepted_p99 } },
            "requests": { "share": { "503": share_503 } },
            "throughput_rps": 100.0,
            "delivery": delivery,
            "reconciliation": { "lost": 0, "undelivered": 0 },
            "valid": true,
        })
    }

    #[test]
    fn a_gate_naming_a_design_not_run_is_skipped_not_an_error() {
        let doc = run(json!({ "async": design(4.0, 0.0, &[]) }));
        let rules: Vec<Rule> = [
            "async.latency_ms.p99 < 10",
            "sync.latency_ms.p99 / async.latency_ms.p99 > 10",
            "async.valid == 1",
        ]
        .iter()
        .map(|r| parse_rule(r).unwrap())
        .collect();
        let results = evaluate_rules(&rules, &[doc]).unwrap();
        assert_eq!(tally(&results), (2, 0, 1));
        let skipped = &results[1];
        assert_eq!(
            skipped.skipped.as_deref(),
            Some("the run has no `sync` design (it ran async)")
        );
        assert!(!skipped.failed() && !skipped.passed);
        assert_eq!(exit_code(&results), 0);
        // It survives a round trip through gates.json; results without it read as evaluated.
        let back: Vec<GateResult> =
            serde_json::from_str(&serde_json::to_string(&results).unwrap()).unwrap();
        assert_eq!(back, results);
    }

    #[test]
    fn a_regression_on_a_design_missing_from_the_baseline_is_skipped() {
        let spec = RegressionSpec {
            metric: "sync.latency_ms.p99".into(),
            tolerance: Tolerance(0.1),
            worse: Worse::Higher,
            min_change: 0.0,
        };
        let metric = Metric::parse(&spec.metric).unwrap();
        let candidate = run(json!({ "sync": design(5000.0, 0.5, &[]) }));
        let baseline = run(json!({ "async": design(4.0, 0.0, &[]) }));
        let results = evaluate_regressions(&[(spec, metric)], &[candidate], &[baseline]).unwrap();
        assert!(
            results[0]
                .skipped
                .as_deref()
                .is_some_and(|r| r.starts_with("baseline: the run has no `sync` design")),
            "{results:?}"
        );
    }

    #[test]
    fn the_default_regressions_cover_what_both_runs_measured() {
        let candidate = run(json!({
            "sync": design(5000.0, 0.5, &["email"]),
            "async": design(4.0, 0.0, &["email", "sms"]),
        }));
        let baseline = run(json!({
            "async": design(4.0, 0.0, &["email", "sms", "push"]),
        }));
        let specs = default_regressions(&candidate, &baseline);
        let names: Vec<(&str, f64, Worse)> = specs
            .iter()
            .map(|s| (s.metric.as_str(), s.tolerance.0, s.worse))
            .collect();
        assert_eq!(
            names,
            vec![
                ("async.latency_ms_by_class.2xx.p99", 0.5, Worse::Higher),
                ("async.requests.share.503", 0.2, Worse::Higher),
                ("async.throughput_rps", 0.05, Worse::Lower),
                ("async.reconciliation.lost", 0.0, Worse::Higher),
                ("async.reconciliation.undelivered", 0.0, Worse::Higher),
                ("async.delivery.email.p99_ms", 0.5, Worse::Higher),
                ("async.delivery.sms.p99_ms", 0.5, Worse::Higher),
            ],
            "sync is not in the baseline; push is not in the candidate; idle delivered nothing"
        );
        // Every default names a metric the results schema knows.
        let spec = GateSpecs {
            rules: vec![],
            regressions: specs,
        };
        assert!(spec.check().is_ok());
    }

    /// The committed smoke run with a third design, `broker`, made from its async design with a
    /// lower accepted p99 and one lost notification, and a fourth under a name fanbench does not
    /// know.
    fn three_designs() -> Value {
        let mut doc: Value =
            serde_json::from_str(include_str!("../../results/fixtures/smoke/results.json"))
                .unwrap();
        let mut broker = doc["designs"][results::ASYNC].clone();
        let async_p99 = broker["latency_ms"]["p99"].as_f64().unwrap();
        broker["latency_ms"]["p99"] = (async_p99 / 4.0).into();
        broker["reconciliation"]["lost"] = 1.into();
        doc["designs"][results::BROKER] = broker;
        doc["designs"]["kafka"] = doc["designs"][results::ASYNC].clone();
        results::validate(&doc).unwrap();
        doc
    }

    /// Gates over three designs (and one of any name): data in, verdicts out.
    #[test]
    fn gates_name_any_design_the_run_holds() {
        let doc = three_designs();
        let present: Vec<&str> = doc["designs"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let cases: &[(&str, bool, Kind)] = &[
            ("broker.reconciliation.lost == 0", false, Kind::Threshold),
            ("async.reconciliation.lost == 0", true, Kind::Threshold),
            (
                "async.latency_ms.p99 / broker.latency_ms.p99 < 2",
                false,
                Kind::Invariant,
            ),
            (
                "async.latency_ms.p99 / broker.latency_ms.p99 > 3.9",
                true,
                Kind::Invariant,
            ),
            (
                "sync.latency_ms.p99 / broker.latency_ms.p99 > 1",
                true,
                Kind::Invariant,
            ),
            (
                "kafka.latency_ms.p99 == async.latency_ms.p99",
                true,
                Kind::Invariant,
            ),
            ("broker.valid == 1", true, Kind::Threshold),
        ];
        let specs = GateSpecs {
            rules: cases.iter().map(|(r, _, _)| r.to_string()).collect(),
            regressions: vec![],
        };
        let (rules, _) = specs.check_in(&present).unwrap();
        let results = evaluate_rules(&rules, std::slice::from_ref(&doc)).unwrap();
        for ((rule, passed, kind), result) in cases.iter().zip(&results) {
            assert_eq!(result.skipped, None, "{rule}");
            assert_eq!(
                (result.passed, result.kind),
                (*passed, *kind),
                "{rule}: {result:?}"
            );
        }
    }

    #[test]
    fn broker_is_a_known_design_and_an_unknown_name_is_a_clear_error() {
        // A scenario may gate the broker design before any run exists.
        let broker = GateSpecs {
            rules: vec!["broker.reconciliation.lost == 0".into()],
            regressions: vec![],
        };
        assert!(broker.check().is_ok());
        // A name the run does not hold, nor fanbench know, fails naming what the run has.
        let typo = GateSpecs {
            rules: vec!["brokr.latency_ms.p99 < 10".into()],
            regressions: vec![],
        };
        let (_, err) = typo
            .check_in(&["kafka", "broker", "sync", "async"])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no design `brokr`: this run has sync, async, broker, kafka"),
            "{err}"
        );
        let (_, err) = typo.check().unwrap_err();
        assert!(
            err.to_string().contains(
                "no design `brokr`: a metric starts with one of sync, async, broker, target"
            ),
            "{err}"
        );
        // A design of any name is gated only on a run that holds it.
        let kafka = GateSpecs {
            rules: vec!["kafka.latency_ms.p99 < 10".into()],
            regressions: vec![],
        };
        assert!(kafka.check().is_err());
        assert!(kafka.check_in(&["kafka"]).is_ok());
        // A known design the run did not run is skipped, naming the designs it ran in order.
        let mut doc = three_designs();
        doc["designs"].as_object_mut().unwrap().remove("sync");
        let (rules, _) = GateSpecs {
            rules: vec!["sync.latency_ms.p99 < 10".into()],
            regressions: vec![],
        }
        .check()
        .unwrap();
        let results = evaluate_rules(&rules, &[doc]).unwrap();
        assert_eq!(
            results[0].skipped.as_deref(),
            Some("the run has no `sync` design (it ran async, broker, kafka)")
        );
    }

    #[test]
    fn the_default_regressions_cover_every_design_in_both_runs() {
        let doc = three_designs();
        let specs = default_regressions(&doc, &doc);
        for design in [results::SYNC, results::ASYNC, results::BROKER, "kafka"] {
            assert!(
                specs
                    .iter()
                    .any(|s| s.metric == format!("{design}.reconciliation.lost")),
                "{design}: {specs:?}"
            );
        }
    }

    #[test]
    fn a_baseline_three_times_faster_fails_the_default_regressions() {
        let candidate = run(json!({ "async": design(12.0, 0.0, &["email"]) }));
        let baseline = run(json!({ "async": design(4.0, 0.0, &["email"]) }));
        let specs = default_regressions(&candidate, &baseline);
        let checked = GateSpecs {
            rules: vec![],
            regressions: specs,
        }
        .check()
        .unwrap()
        .1;
        let results = evaluate_regressions(&checked, &[candidate], &[baseline]).unwrap();
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| r.failed())
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(failed.len(), 1, "{results:#?}");
        assert!(failed[0].starts_with("async.latency_ms_by_class.2xx.p99"));
    }

    fn default_gates(candidate: &Value, baseline: &Value) -> Vec<GateResult> {
        let checked = GateSpecs {
            rules: vec![],
            regressions: default_regressions(candidate, baseline),
        }
        .check()
        .unwrap()
        .1;
        evaluate_regressions(
            &checked,
            std::slice::from_ref(candidate),
            std::slice::from_ref(baseline),
        )
        .unwrap()
    }

    fn failed_names(results: &[GateResult]) -> Vec<&str> {
        results
            .iter()
            .filter(|r| r.failed())
            .map(|r| r.name.split(' ').next().unwrap_or_default())
            .collect()
    }

    #[test]
    fn the_503_share_needs_a_real_rise_and_any_loss_or_backlog_is_a_regression() {
        let baseline = run(json!({ "async": design(4.0, 0.0, &["email"]) }));
        // One 503 in a thousand, against none: under the half-point floor.
        let candidate = run(json!({ "async": design(4.0, 0.001, &["email"]) }));
        assert!(failed_names(&default_gates(&candidate, &baseline)).is_empty());
        let candidate = run(json!({ "async": design(4.0, 0.02, &["email"]) }));
        assert_eq!(
            failed_names(&default_gates(&candidate, &baseline)),
            vec!["async.requests.share.503"]
        );
        let mut candidate = run(json!({ "async": design(4.0, 0.0, &["email"]) }));
        candidate["designs"]["async"]["reconciliation"]["lost"] = 1.into();
        candidate["designs"]["async"]["reconciliation"]["undelivered"] = 300.into();
        assert_eq!(
            failed_names(&default_gates(&candidate, &baseline)),
            vec![
                "async.reconciliation.lost",
                "async.reconciliation.undelivered"
            ]
        );
    }

    #[test]
    fn a_gate_on_an_empty_latency_class_reads_its_count_as_zero_and_skips_its_percentiles() {
        let doc = run(json!({ "async": design(4.0, 0.0, &[]) }));
        let rules: Vec<Rule> = [
            "async.latency_ms_by_class.503.count == 0",
            "async.latency_ms_by_class.503.p99 < 100",
        ]
        .iter()
        .map(|r| parse_rule(r).unwrap())
        .collect();
        let results = evaluate_rules(&rules, &[doc]).unwrap();
        assert!(results[0].passed, "{results:#?}");
        assert!(
            results[1]
                .skipped
                .as_deref()
                .is_some_and(|r| r.contains("no request fell into latency class `503`")),
            "{results:#?}"
        );
    }

    #[test]
    fn a_misspelt_design_is_an_error_when_the_gates_load() {
        let specs = GateSpecs {
            rules: vec!["asnyc.reconciliation.lost == 0".into()],
            regressions: vec![],
        };
        let (_, err) = specs.check().unwrap_err();
        assert!(err.to_string().contains("no design `asnyc`"), "{err}");
    }
}

/// The noise-aware regression rule, case by case, with three repeats a side: a regression fails
/// only when the median is worse by more than the tolerance *and* the repeat ranges do not overlap.
/// The numbers are chosen so that every relative change is exact in binary, which makes "exactly
/// at the tolerance" mean exactly.
#[cfg(test)]
mod regression_tests {
    use super::*;
    use serde_json::json;

    /// The four reasons `detail` can give; each verdict names exactly one.
    const NOISE: &str = "noise";
    const WITHIN: &str = "within the tolerance";
    const SEPARATED: &str = "every repeat worse than every baseline repeat";
    const TOO_SMALL: &str = "by less than its minimum change";

    /// A one-design results document carrying `v` as both the accepted-sign-up p99 (higher is
    /// worse) and the throughput (lower is worse).
    fn doc(v: f64) -> Value {
        json!({ "designs": { "async": {
            "latency_ms_by_class": { "2xx": { "count": 100, "p99": v } },
            "throughput_rps": v,
        } } })
    }

    fn regression(
        worse: Worse,
        tolerance: f64,
        min_change: f64,
        candidate: &[f64],
        baseline: &[f64],
    ) -> GateResult {
        let metric = match worse {
            Worse::Higher => "async.latency_ms_by_class.2xx.p99",
            Worse::Lower => "async.throughput_rps",
        };
        let spec = RegressionSpec {
            metric: metric.into(),
            tolerance: Tolerance(tolerance),
            worse,
            min_change,
        };
        let parsed = Metric::parse(metric).unwrap();
        let candidate: Vec<Value> = candidate.iter().copied().map(doc).collect();
        let baseline: Vec<Value> = baseline.iter().copied().map(doc).collect();
        let mut results = evaluate_regressions(&[(spec, parsed)], &candidate, &baseline).unwrap();
        assert_eq!(results.len(), 1);
        results.remove(0)
    }

    /// (what the case is, direction, tolerance, min_change, candidate repeats, baseline repeats,
    /// passes, the reason `detail` must give)
    type Case = (
        &'static str,
        Worse,
        f64,
        f64,
        [f64; 3],
        [f64; 3],
        bool,
        &'static str,
    );

    const CASES: &[Case] = &[
        // Higher is worse (latency).
        (
            "a: median +27 %, but a candidate repeat (125) beats a baseline repeat (130)",
            Worse::Higher,
            0.10,
            0.0,
            [125.0, 140.0, 150.0],
            [100.0, 110.0, 130.0],
            true,
            NOISE,
        ),
        (
            "b: median +43 %, every candidate repeat above every baseline repeat",
            Worse::Higher,
            0.10,
            0.0,
            [140.0, 150.0, 160.0],
            [100.0, 105.0, 110.0],
            false,
            SEPARATED,
        ),
        (
            "c: separated, but the median moved only 101 → 106 (+5 %)",
            Worse::Higher,
            0.10,
            0.0,
            [105.0, 106.0, 107.0],
            [100.0, 101.0, 102.0],
            true,
            WITHIN,
        ),
        (
            "d: separated, median exactly +50 % against a 50 % tolerance (the rule is `>`)",
            Worse::Higher,
            0.50,
            0.0,
            [149.0, 150.0, 151.0],
            [99.0, 100.0, 101.0],
            true,
            WITHIN,
        ),
        (
            "d: separated, median +51 %, just beyond a 50 % tolerance",
            Worse::Higher,
            0.50,
            0.0,
            [150.0, 151.0, 152.0],
            [99.0, 100.0, 101.0],
            false,
            SEPARATED,
        ),
        (
            "d: 0 against a baseline of 0 is no change",
            Worse::Higher,
            0.10,
            0.0,
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            true,
            WITHIN,
        ),
        (
            "d: 1 against a baseline of 0 is an infinite rise",
            Worse::Higher,
            0.10,
            0.0,
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
            false,
            SEPARATED,
        ),
        (
            "d: 1 against a baseline of 0 is still a regression when min_change is 0.5",
            Worse::Higher,
            0.10,
            0.5,
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
            false,
            SEPARATED,
        ),
        (
            "d: a rise of exactly min_change counts (the rule is `>=`)",
            Worse::Higher,
            0.10,
            0.5,
            [0.5, 0.5, 0.5],
            [0.0, 0.0, 0.0],
            false,
            SEPARATED,
        ),
        (
            "d: 1 against a baseline of 0 passes when min_change (2) covers it, saying so",
            Worse::Higher,
            0.10,
            2.0,
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
            true,
            TOO_SMALL,
        ),
        (
            "a lower latency is never a regression",
            Worse::Higher,
            0.10,
            0.0,
            [10.0, 11.0, 12.0],
            [100.0, 101.0, 102.0],
            true,
            WITHIN,
        ),
        // Lower is worse (throughput): the same cases mirrored.
        (
            "e/a: median −22 %, but a candidate repeat (85) beats a baseline repeat (80)",
            Worse::Lower,
            0.10,
            0.0,
            [60.0, 70.0, 85.0],
            [80.0, 90.0, 100.0],
            true,
            NOISE,
        ),
        (
            "e/b: median −29 %, every candidate repeat below every baseline repeat",
            Worse::Lower,
            0.10,
            0.0,
            [60.0, 70.0, 80.0],
            [96.0, 98.0, 100.0],
            false,
            SEPARATED,
        ),
        (
            "e/c: separated, but the median moved only 99 → 94 (−5 %)",
            Worse::Lower,
            0.10,
            0.0,
            [93.0, 94.0, 95.0],
            [98.0, 99.0, 100.0],
            true,
            WITHIN,
        ),
        (
            "e/d: separated, median exactly −50 % against a 50 % tolerance",
            Worse::Lower,
            0.50,
            0.0,
            [49.0, 50.0, 51.0],
            [99.0, 100.0, 101.0],
            true,
            WITHIN,
        ),
        (
            "e/d: separated, median −51 %, just beyond a 50 % tolerance",
            Worse::Lower,
            0.50,
            0.0,
            [48.0, 49.0, 50.0],
            [99.0, 100.0, 101.0],
            false,
            SEPARATED,
        ),
        (
            "e/d: a throughput of 0 against 100 is a regression",
            Worse::Lower,
            0.10,
            0.0,
            [0.0, 0.0, 0.0],
            [99.0, 100.0, 101.0],
            false,
            SEPARATED,
        ),
        (
            "e/d: a throughput above a baseline of 0 is an infinite gain, not a regression",
            Worse::Lower,
            0.10,
            0.0,
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
            true,
            WITHIN,
        ),
        (
            "e: a higher throughput is never a regression",
            Worse::Lower,
            0.10,
            0.0,
            [200.0, 210.0, 220.0],
            [99.0, 100.0, 101.0],
            true,
            WITHIN,
        ),
    ];

    #[test]
    fn a_regression_fails_only_beyond_the_tolerance_with_separated_repeats() {
        for &(case, worse, tolerance, min_change, candidate, baseline, passes, why) in CASES {
            let r = regression(worse, tolerance, min_change, &candidate, &baseline);
            assert_eq!(r.passed, passes, "{case}: {r:#?}");
            assert_eq!(r.failed(), !passes, "{case}: {r:#?}");
            assert!(r.skipped.is_none(), "{case}: {r:#?}");
            let reasons: Vec<&str> = [NOISE, WITHIN, SEPARATED, TOO_SMALL]
                .into_iter()
                .filter(|reason| r.detail.contains(reason))
                .collect();
            assert_eq!(reasons, vec![why], "{case}: {}", r.detail);
            // The value held against the limit is the candidate median.
            assert_eq!(r.value, candidate[1], "{case}: {r:#?}");
            assert!(
                r.detail.contains("3 repeat(s) against 3"),
                "{case}: {}",
                r.detail
            );
        }
    }

    #[test]
    fn the_limit_is_the_baseline_median_moved_by_the_tolerance() {
        let r = regression(
            Worse::Higher,
            0.5,
            0.0,
            &[149.0, 150.0, 151.0],
            &[99.0, 100.0, 101.0],
        );
        assert_eq!((r.value, r.limit, r.margin), (150.0, 150.0, 0.0));
        let r = regression(
            Worse::Lower,
            0.5,
            0.0,
            &[48.0, 49.0, 50.0],
            &[99.0, 100.0, 101.0],
        );
        // Lower is worse: the limit is 50 and the margin is negative by how far below it.
        assert_eq!((r.value, r.limit, r.margin), (49.0, 50.0, -1.0));
        assert!(r.failed());
    }

    #[test]
    fn the_median_decides_not_one_bad_repeat() {
        // One wild candidate repeat (1000) with the other two at the baseline: the median has
        // not moved, and the ranges overlap.
        let r = regression(
            Worse::Higher,
            0.10,
            0.0,
            &[100.0, 101.0, 1000.0],
            &[99.0, 100.0, 101.0],
        );
        assert!(r.passed, "{r:#?}");
        assert!(r.detail.contains(WITHIN), "{}", r.detail);
    }
}
