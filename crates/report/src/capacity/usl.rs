//! The capacity page's reading of the USL fit (`capacity.json`'s `usl`): the predicted knee
//! beside what the step run there measured, in the verdict, on the throughput chart and under the
//! bottleneck table.

use plotters::style::RGBColor;
use results::capacity::{ConfirmationVerdict, DesignCapacity, Usl};

use super::marker;
use crate::charts::{Look, Series};
use crate::escape;

const USL: Look = Look {
    color: RGBColor(120, 60, 170),
    dashed: true,
    width: 1,
};

fn verdict_word(v: ConfirmationVerdict) -> &'static str {
    match v {
        ConfirmationVerdict::Confirmed => "confirmed",
        ConfirmationVerdict::BelowPrediction => "below the prediction",
        ConfirmationVerdict::Inconclusive => "inconclusive",
    }
}

/// "; USL knee 36/s predicted, 34/s measured there (confirmed)", or nothing without a knee.
pub(super) fn verdict_suffix(d: &DesignCapacity) -> String {
    let Some(usl) = &d.usl else {
        return String::new();
    };
    let Some(predicted) = usl.predicted_knee_rps else {
        return String::new();
    };
    match &usl.confirmation {
        Some(c) => format!(
            "; USL knee {predicted:.0}/s predicted, {:.0}/s measured there ({})",
            c.throughput_rps,
            verdict_word(c.verdict)
        ),
        None => format!("; USL knee {predicted:.0}/s predicted"),
    }
}

/// The predicted knee on the throughput chart.
pub(super) fn knee_marker(d: &DesignCapacity, lo: f64, hi: f64) -> Option<Series> {
    let predicted = d.usl.as_ref()?.predicted_knee_rps?;
    let x = predicted.round().max(1.0) as u32;
    Some(marker(format!("USL predicted peak {x}/s"), USL, x, lo, hi))
}

/// One paragraph: the fit, its knee, and what the confirmation step measured.
pub(super) fn paragraph(name: &str, usl: &Usl) -> String {
    let fit = match (usl.sigma, usl.kappa, usl.lambda) {
        (Some(s), Some(k), Some(l)) => format!(
            "σ = {s:.3}, κ = {k:.2e}, λ = {l:.1}/s over {} steps (R² {:.3}); ",
            usl.points,
            usl.r_squared.unwrap_or(f64::NAN)
        ),
        _ => String::new(),
    };
    let confirmed = usl.confirmation.as_ref().map_or(String::new(), |c| {
        format!(
            " One step at {}/s served {:.1}/s, {:.2}× the prediction: {}; the objective was {} there.",
            c.rate,
            c.throughput_rps,
            c.ratio,
            verdict_word(c.verdict),
            if c.passed { "met" } else { "missed" }
        )
    });
    format!(
        "<p class=\"explain\"><strong>{}, Universal Scalability Law.</strong> X(N) = λN ÷ \
         (1 + σ(N−1) + κN(N−1)), N the accepted sign-ups in the system (throughput × mean \
         latency): {}{}.{}</p>\n",
        escape(name),
        escape(&fit),
        escape(&usl.note),
        escape(&confirmed)
    )
}
