//! The Universal Scalability Law fitted to a capacity search's steps, and the one step run at its
//! predicted knee to check it (`capacity.json`'s `usl`).
//!
//! X(N) = λN ÷ (1 + σ(N−1) + κN(N−1)): λ the throughput of one sign-up in the system, σ the
//! share serialised (contention), κ the cost of keeping the parts coherent (crosstalk; above zero,
//! throughput falls past a peak).
//!
//! **What N is.** A capacity step offers a constant open load, so below the knee the design
//! answers what it is sent and throughput equals the offered rate whatever the design: against
//! offered load every passing step sits on y = x and says nothing about contention. What grows
//! with contention is the work *in the system*: by Little's law, N = X × R, accepted sign-ups a
//! second times their mean latency (both from the step's measurement window). That is the
//! concurrency the law is written in, and it needs no step at N = 1.
//!
//! **The fit.** Dividing by X: N ÷ X(N) = (1 + σ(N−1) + κN(N−1)) ÷ λ, which is linear in
//! a = 1/λ, b = σ/λ and c = κ/λ. Gunther's linearisation divides by a measured X(1) and fits σ and
//! κ through the origin; no step runs at exactly one sign-up in the system (N is a mean, often
//! below 1 for a fast request path), so λ is fitted with them instead: plain least squares of
//! y = N ÷ X (which is the mean latency, R) on 1, N−1 and N(N−1). Six points or more, or a typed
//! reason why not.
//!
//! **The knee.** Throughput peaks at N* = √((1−σ)÷κ), at X(N*). In a steady state what enters
//! leaves, so X(N*) is also the offered rate the model says the design peaks at: the predicted
//! knee. With κ ≤ 0 there is no peak (throughput only flattens, towards λ÷σ), and a peak far
//! beyond the concurrencies measured is an extrapolation: both are "no knee in range", said so.

use results::capacity::{Confirmation, ConfirmationVerdict, StepRecord, Usl};

/// Points a fit needs: three parameters, and as many again to say something about the error.
pub const MIN_POINTS: usize = 6;

/// A knee further out than this many times the largest concurrency (or throughput) measured is
/// not predicted.
const EXTRAPOLATION: f64 = 3.0;

/// The confirmation step's throughput within this share of the prediction confirms it.
const TOLERANCE: f64 = 0.2;

/// The fitted law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UslFit {
    pub sigma: f64,
    pub kappa: f64,
    pub lambda: f64,
    pub points: usize,
    pub r_squared: f64,
    /// The largest concurrency among the points.
    pub max_n: f64,
    /// The largest throughput among the points.
    pub max_x: f64,
}

/// Why nothing was fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotFitted {
    #[error(
        "{usable} usable steps (valid, trustworthy, something accepted, a mean latency known), {needed} needed"
    )]
    TooFewPoints { usable: usize, needed: usize },
    #[error("the steps' concurrencies are too alike to separate contention from coherency")]
    Degenerate,
    #[error("the fit gives a single sign-up in the system no throughput (1/λ = {intercept:.3e} s)")]
    Unphysical { intercept: f64 },
}

/// Where throughput peaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Knee {
    At {
        concurrency: f64,
        throughput_rps: f64,
    },
    /// No peak the data supports.
    NoneInRange(NoKnee),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoKnee {
    /// κ ≤ 0: no retrograde; throughput only flattens (towards λ÷σ when σ > 0).
    NoRetrograde { ceiling_rps: Option<f64> },
    /// σ ≥ 1: adding work never adds throughput.
    NoScaling,
    /// σ < 0: the fit is superlinear (latency fell as load grew), which the law does not
    /// describe; the low-load points are noise more than contention.
    Superlinear,
    /// The peak is beyond [`EXTRAPOLATION`] × the largest concurrency measured, or its throughput
    /// beyond that many times the largest throughput measured: an extrapolation.
    BeyondMeasured { concurrency: f64, max_measured: f64 },
}

impl UslFit {
    /// X(N).
    pub fn throughput(&self, n: f64) -> f64 {
        self.lambda * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }

    pub fn knee(&self) -> Knee {
        if self.sigma >= 1.0 {
            return Knee::NoneInRange(NoKnee::NoScaling);
        }
        // A little below zero is an exact zero blurred by rounding.
        if self.sigma < -0.01 {
            return Knee::NoneInRange(NoKnee::Superlinear);
        }
        if self.kappa <= 0.0 {
            return Knee::NoneInRange(NoKnee::NoRetrograde {
                ceiling_rps: (self.sigma > 0.0).then(|| self.lambda / self.sigma),
            });
        }
        let concurrency = ((1.0 - self.sigma) / self.kappa).sqrt();
        if concurrency > EXTRAPOLATION * self.max_n {
            return Knee::NoneInRange(NoKnee::BeyondMeasured {
                concurrency,
                max_measured: self.max_n,
            });
        }
        let throughput_rps = self.throughput(concurrency);
        if throughput_rps > EXTRAPOLATION * self.max_x {
            return Knee::NoneInRange(NoKnee::BeyondMeasured {
                concurrency,
                max_measured: self.max_n,
            });
        }
        Knee::At {
            concurrency,
            throughput_rps,
        }
    }
}

/// A step's (N, X): accepted sign-ups in the system and accepted sign-ups a second, for the
/// steps that measured the design (valid, the driver on schedule, something accepted).
fn point(s: &StepRecord) -> Option<(f64, f64)> {
    let mean = s.accepted_mean_ms?;
    (s.valid && s.trustworthy && s.accepted > 0 && s.throughput_rps > 0.0 && mean > 0.0)
        .then(|| (s.throughput_rps * mean / 1000.0, s.throughput_rps))
}

/// The law fitted to the steps a search ran.
pub fn usl_for(steps: &[StepRecord]) -> Result<UslFit, NotFitted> {
    let points: Vec<(f64, f64)> = steps.iter().filter_map(point).collect();
    fit(&points)
}

/// Least squares of y = N/X on (1, N−1, N(N−1)).
pub fn fit(points: &[(f64, f64)]) -> Result<UslFit, NotFitted> {
    if points.len() < MIN_POINTS {
        return Err(NotFitted::TooFewPoints {
            usable: points.len(),
            needed: MIN_POINTS,
        });
    }
    let rows: Vec<([f64; 3], f64)> = points
        .iter()
        .map(|&(n, x)| ([1.0, n - 1.0, n * (n - 1.0)], n / x))
        .collect();
    // Normal equations AᵀA·p = Aᵀy.
    let mut ata = [[0.0; 3]; 3];
    let mut aty = [0.0; 3];
    for (r, y) in &rows {
        for i in 0..3 {
            aty[i] += r[i] * y;
            for j in 0..3 {
                ata[i][j] += r[i] * r[j];
            }
        }
    }
    let [a, b, c] = solve(ata, aty).ok_or(NotFitted::Degenerate)?;
    if a <= 0.0 {
        return Err(NotFitted::Unphysical { intercept: a });
    }
    let mean_y = rows.iter().map(|(_, y)| y).sum::<f64>() / rows.len() as f64;
    let (ss_res, ss_tot) = rows.iter().fold((0.0, 0.0), |(res, tot), (r, y)| {
        let fitted = a * r[0] + b * r[1] + c * r[2];
        (res + (y - fitted).powi(2), tot + (y - mean_y).powi(2))
    });
    Ok(UslFit {
        sigma: b / a,
        kappa: c / a,
        lambda: 1.0 / a,
        points: points.len(),
        r_squared: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        },
        max_n: points.iter().map(|p| p.0).fold(0.0, f64::max),
        max_x: points.iter().map(|p| p.1).fold(0.0, f64::max),
    })
}

/// Gaussian elimination with partial pivoting; `None` when the system is (nearly) singular.
fn solve(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    let scale = m
        .iter()
        .flatten()
        .fold(0.0_f64, |acc, x| acc.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() <= scale * 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for row in col + 1..3 {
            let f = m[row][col] / m[col][col];
            let pivot_row = m[col];
            for (x, p) in m[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            v[row] -= f * v[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let tail: f64 = (row + 1..3).map(|k| m[row][k] * x[k]).sum();
        x[row] = (v[row] - tail) / m[row][row];
    }
    x.iter().all(|p| p.is_finite()).then_some(x)
}

/// The record of a fit (or of why there is none), without its confirmation.
pub fn record(fitted: &Result<UslFit, NotFitted>) -> Usl {
    let fit = match fitted {
        Ok(f) => f,
        Err(why) => {
            let points = match why {
                NotFitted::TooFewPoints { usable, .. } => *usable,
                _ => 0,
            };
            return Usl {
                points: u32::try_from(points).unwrap_or(u32::MAX),
                sigma: None,
                kappa: None,
                lambda: None,
                r_squared: None,
                knee_concurrency: None,
                predicted_knee_rps: None,
                note: format!("not fitted: {why}"),
                confirmation: None,
            };
        }
    };
    let (knee_concurrency, predicted_knee_rps, note) = match fit.knee() {
        Knee::At {
            concurrency,
            throughput_rps,
        } => (
            Some(concurrency),
            Some(throughput_rps),
            format!(
                "throughput peaks at {throughput_rps:.0} sign-ups/s with {concurrency:.1} in the system; \
                 past that, more load serves less"
            ),
        ),
        Knee::NoneInRange(NoKnee::NoRetrograde { ceiling_rps }) => (
            None,
            None,
            match ceiling_rps {
                Some(c) => format!(
                    "no knee in range: κ ≤ 0, throughput only flattens, towards {c:.0} sign-ups/s"
                ),
                None => "no knee in range: κ ≤ 0 and σ ≤ 0, throughput still grows with load"
                    .to_string(),
            },
        ),
        Knee::NoneInRange(NoKnee::Superlinear) => (
            None,
            None,
            format!(
                "no knee in range: σ = {:.3} < 0, latency fell as load grew; the law does not \
                 fit these steps",
                fit.sigma
            ),
        ),
        Knee::NoneInRange(NoKnee::NoScaling) => (
            None,
            None,
            "no knee in range: σ ≥ 1, more work in the system never served more".to_string(),
        ),
        Knee::NoneInRange(NoKnee::BeyondMeasured {
            concurrency,
            max_measured,
        }) => (
            None,
            None,
            format!(
                "no knee in range: the fit peaks with {concurrency:.1} in the system, beyond \
                 {EXTRAPOLATION}× what was measured (up to {max_measured:.1} in the system)"
            ),
        ),
    };
    Usl {
        points: u32::try_from(fit.points).unwrap_or(u32::MAX),
        sigma: Some(fit.sigma),
        kappa: Some(fit.kappa),
        lambda: Some(fit.lambda),
        r_squared: Some(fit.r_squared),
        knee_concurrency,
        predicted_knee_rps,
        note,
        confirmation: None,
    }
}

/// What the step at the predicted knee says of it.
pub fn confirmation(predicted_rps: f64, step: &StepRecord) -> Confirmation {
    let ratio = step.throughput_rps / predicted_rps.max(f64::MIN_POSITIVE);
    let verdict = if !step.valid || !step.trustworthy {
        ConfirmationVerdict::Inconclusive
    } else if ratio >= 1.0 - TOLERANCE {
        ConfirmationVerdict::Confirmed
    } else {
        ConfirmationVerdict::BelowPrediction
    };
    Confirmation {
        rate: step.offered_rps,
        throughput_rps: step.throughput_rps,
        ratio,
        passed: step.passed,
        verdict,
        dir: step.dir.clone(),
    }
}

/// The hook `capacity` calls after a design's search: fits the law to `steps` and, when it
/// predicts a knee, runs one step there with `run` (reusing a step the search already ran at that
/// rate) and records what it measured.
pub fn fit_and_confirm(
    steps: &[StepRecord],
    mut run: impl FnMut(u32) -> anyhow::Result<StepRecord>,
) -> anyhow::Result<Usl> {
    let fitted = usl_for(steps);
    let mut usl = record(&fitted);
    if let Some(predicted) = usl.predicted_knee_rps {
        let rate = predicted.round().max(1.0) as u32;
        let step = match steps.iter().find(|s| s.offered_rps == rate) {
            Some(s) => s.clone(),
            None => run(rate)?,
        };
        usl.confirmation = Some(confirmation(predicted, &step));
    }
    Ok(usl)
}

/// One line for the verdict: predicted against measured.
pub fn verdict_line(usl: &Usl) -> String {
    let Some(predicted) = usl.predicted_knee_rps else {
        return format!("USL ({} steps): {}", usl.points, usl.note);
    };
    let fit = format!(
        "USL σ={:.3} κ={:.4} λ={:.1}/s over {} steps",
        usl.sigma.unwrap_or(f64::NAN),
        usl.kappa.unwrap_or(f64::NAN),
        usl.lambda.unwrap_or(f64::NAN),
        usl.points
    );
    match &usl.confirmation {
        Some(c) => format!(
            "{fit} predicts the knee at {predicted:.0}/s; measured there {:.0}/s ({:.2}×, {}), objective {}",
            c.throughput_rps,
            c.ratio,
            match c.verdict {
                ConfirmationVerdict::Confirmed => "confirmed",
                ConfirmationVerdict::BelowPrediction => "below the prediction",
                ConfirmationVerdict::Inconclusive => "inconclusive",
            },
            if c.passed { "met" } else { "missed" }
        ),
        None => format!("{fit} predicts the knee at {predicted:.0}/s (not confirmed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on the law itself, at the concurrencies given.
    fn on_the_law(lambda: f64, sigma: f64, kappa: f64, ns: &[f64]) -> Vec<(f64, f64)> {
        let law = UslFit {
            sigma,
            kappa,
            lambda,
            points: 0,
            r_squared: 1.0,
            max_n: 0.0,
            max_x: 0.0,
        };
        ns.iter().map(|&n| (n, law.throughput(n))).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1e-3)
    }

    #[test]
    fn points_on_a_known_law_give_its_parameters_back() {
        for (lambda, sigma, kappa) in [(50.0, 0.05, 0.002), (1000.0, 0.2, 0.0), (8.0, 0.0, 0.01)] {
            let points = on_the_law(lambda, sigma, kappa, &[0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 20.0]);
            let f = fit(&points).unwrap();
            assert!(close(f.lambda, lambda), "{f:?}");
            assert!(close(f.sigma, sigma), "{f:?}");
            assert!((f.kappa - kappa).abs() < 1e-9, "{f:?}");
            assert!(f.r_squared > 0.999_999, "{f:?}");
        }
    }

    #[test]
    fn the_knee_is_where_throughput_peaks() {
        let (lambda, sigma, kappa) = (50.0, 0.05, 0.002);
        let points = on_the_law(
            lambda,
            sigma,
            kappa,
            &[1.0, 3.0, 6.0, 10.0, 15.0, 25.0, 30.0],
        );
        let f = fit(&points).unwrap();
        let Knee::At {
            concurrency,
            throughput_rps,
        } = f.knee()
        else {
            panic!("no knee: {f:?}")
        };
        let expected = ((1.0 - sigma) / kappa).sqrt();
        assert!(close(concurrency, expected), "{concurrency} vs {expected}");
        // The peak: its neighbours on either side serve less.
        assert!(f.throughput(concurrency - 1.0) < throughput_rps);
        assert!(f.throughput(concurrency + 1.0) < throughput_rps);
        let usl = record(&Ok(f));
        assert_eq!(usl.points, 7);
        assert!(close(usl.predicted_knee_rps.unwrap(), throughput_rps));
    }

    /// Steps as capacity records them: throughput and mean latency, N from Little's law.
    fn step(offered: u32, x: f64, n: f64) -> StepRecord {
        StepRecord {
            offered_rps: offered,
            repeat: 0,
            throughput_rps: x,
            sent: 100,
            accepted: 100,
            status_503: 0,
            share_503: 0.0,
            accepted_p99_ms: Some(1.0),
            latency_p99_ms: 1.0,
            accepted_mean_ms: Some(n / x * 1000.0),
            send_lag_p99_ms: 0.0,
            service_p99_ms: None,
            missed_despite_lag: false,
            backlog_slope_per_s: None,
            pool_waiting_slope_per_s: None,
            delivery_p99_ms: Default::default(),
            cores: Default::default(),
            valid: true,
            trustworthy: true,
            passed: true,
            delivery_keeps_up: None,
            why: vec![],
            dir: format!("step-{offered}"),
        }
    }

    #[test]
    fn steps_are_read_through_littles_law_and_unusable_ones_are_left_out() {
        let points = on_the_law(50.0, 0.05, 0.002, &[1.0, 3.0, 6.0, 10.0, 15.0, 25.0]);
        let mut steps: Vec<StepRecord> = points
            .iter()
            .map(|&(n, x)| step(x.round() as u32, x, n))
            .collect();
        let f = usl_for(&steps).unwrap();
        assert!(close(f.sigma, 0.05) && close(f.lambda, 50.0), "{f:?}");
        // A driver-limited step, an invalid one and one from before the mean was recorded do not
        // count: five usable are too few.
        steps[0].trustworthy = false;
        steps.push(StepRecord {
            valid: false,
            ..step(900, 1.0, 1.0)
        });
        steps.push(StepRecord {
            accepted_mean_ms: None,
            ..step(901, 1.0, 1.0)
        });
        assert_eq!(
            usl_for(&steps),
            Err(NotFitted::TooFewPoints {
                usable: 5,
                needed: MIN_POINTS
            })
        );
        let usl = record(&usl_for(&steps));
        assert_eq!(usl.points, 5);
        assert_eq!(usl.sigma, None);
        assert!(usl.note.contains("5 usable steps"), "{}", usl.note);
    }

    #[test]
    fn without_retrograde_there_is_no_knee_and_the_record_says_so() {
        // No coherency cost (κ slightly below zero, as noise leaves an exact zero): throughput
        // flattens towards λ/σ = 250/s and never falls.
        let points = on_the_law(50.0, 0.2, -0.0005, &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]);
        let f = fit(&points).unwrap();
        match f.knee() {
            Knee::NoneInRange(NoKnee::NoRetrograde {
                ceiling_rps: Some(c),
            }) => assert!(close(c, 250.0), "{c}"),
            other => panic!("{other:?}"),
        }
        let usl = record(&Ok(f));
        assert_eq!(usl.predicted_knee_rps, None);
        assert!(usl.note.starts_with("no knee in range"), "{}", usl.note);
        // And so nothing runs to confirm it.
        let steps: Vec<StepRecord> = points
            .iter()
            .map(|&(n, x)| step(x.round() as u32, x, n))
            .collect();
        let usl = fit_and_confirm(&steps, |_| panic!("no step without a knee")).unwrap();
        assert_eq!(usl.confirmation, None);
    }

    #[test]
    fn a_knee_far_beyond_the_measured_concurrency_is_not_predicted() {
        // Peak at √(0.95/1e-6) ≈ 975 in the system; measured up to 10.
        let points = on_the_law(50.0, 0.05, 1e-6, &[1.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert!(matches!(
            fit(&points).unwrap().knee(),
            Knee::NoneInRange(NoKnee::BeyondMeasured { .. })
        ));
    }

    #[test]
    fn a_superlinear_fit_has_no_knee() {
        // Latency falling as load grows (σ < 0), as a fast request path's noise can make it.
        let points = on_the_law(200.0, -0.5, 0.2, &[0.05, 0.1, 0.3, 0.6, 1.0, 1.5]);
        let f = fit(&points).unwrap();
        assert_eq!(f.knee(), Knee::NoneInRange(NoKnee::Superlinear));
        assert!(record(&Ok(f)).note.contains("σ = -0.500 < 0"));
    }

    #[test]
    fn identical_points_cannot_be_fitted() {
        let points = vec![(4.0, 40.0); 8];
        assert_eq!(fit(&points), Err(NotFitted::Degenerate));
    }

    #[test]
    fn the_confirmation_step_runs_at_the_knee_and_is_judged_against_it() {
        let points = on_the_law(50.0, 0.05, 0.002, &[1.0, 3.0, 6.0, 10.0, 15.0, 25.0, 30.0]);
        let steps: Vec<StepRecord> = points
            .iter()
            .map(|&(n, x)| step(x.round() as u32 + 1000, x, n))
            .collect();
        let predicted = record(&usl_for(&steps)).predicted_knee_rps.unwrap();
        let mut ran = Vec::new();
        // Served 90 % of the prediction: within the tolerance.
        let usl = fit_and_confirm(&steps, |rate| {
            ran.push(rate);
            Ok(step(rate, predicted * 0.9, 20.0))
        })
        .unwrap();
        assert_eq!(ran, vec![predicted.round() as u32]);
        let c = usl.confirmation.unwrap();
        assert_eq!(c.verdict, ConfirmationVerdict::Confirmed);
        assert!(close(c.ratio, 0.9));
        // Served 60 %: the model was optimistic.
        let usl = fit_and_confirm(&steps, |rate| Ok(step(rate, predicted * 0.6, 20.0))).unwrap();
        assert_eq!(
            usl.confirmation.unwrap().verdict,
            ConfirmationVerdict::BelowPrediction
        );
        // The driver fell behind: no verdict.
        let usl = fit_and_confirm(&steps, |rate| {
            Ok(StepRecord {
                trustworthy: false,
                ..step(rate, predicted * 0.6, 20.0)
            })
        })
        .unwrap();
        assert_eq!(
            usl.confirmation.unwrap().verdict,
            ConfirmationVerdict::Inconclusive
        );
        assert!(verdict_line(&record(&usl_for(&steps))).contains("predicts the knee"));
    }
}
