//! The page's sections, one module each, in page order; the helpers they share live here. Every
//! chart section always holds exactly one chart: when its data is missing (no telemetry, no design
//! with a queue) the chart says so instead of vanishing. Every section shows every design of a run,
//! in `results::design_order`, whatever their number and names.
//!
//! Design, channel and server metric names come from `results` (`results::SYNC`,
//! `signup_core::Channel`, `results::metric_names`), never from string literals here.

mod delivery;
mod errors_over_time;
mod latency_over_time;
mod latency_percentiles;
mod machine;
mod pool_and_postgres;
mod queue;
mod run_details;
mod summary_table;
mod time_breakdown;
mod verdict;

use results::{DesignResults, DesignTelemetry};

use crate::charts::{self, Look};
use crate::{Run, escape, text};

pub use verdict::verdict_lines;

/// Under the title: what was run, where and when.
pub fn subtitle(runs: &[Run]) -> String {
    let parts: Vec<String> = runs
        .iter()
        .map(|run| {
            let r = &run.results;
            format!(
                "{} — {} ({:.0} s, peak {:.0}/s), {}",
                escape(&r.run_id),
                escape(&r.scenario.description),
                r.scenario.duration_s,
                r.scenario.peak_rps,
                escape(&r.started_at)
            )
        })
        .collect();
    format!("<p class=\"subtitle\">{}</p>", parts.join("<br>"))
}

pub fn render(
    id: &str,
    runs: &[Run],
    gates: Option<&[gates::GateResult]>,
) -> (&'static str, String) {
    match id {
        "verdict" => ("Verdict", verdict::render(runs)),
        "summary-table" => ("Side by side", summary_table::render(runs)),
        "latency-percentiles" => ("Latency by percentile", latency_percentiles::render(runs)),
        "latency-over-time" => ("Latency over time", latency_over_time::render(runs)),
        "errors-over-time" => ("503s and errors over time", errors_over_time::render(runs)),
        "time-breakdown" => ("Where the time goes", time_breakdown::render(runs)),
        "pool-and-postgres" => (
            "Connection pool and PostgreSQL waits",
            pool_and_postgres::render(runs),
        ),
        "queue" => ("The queues", queue::render(runs)),
        "delivery" => ("Delivery latency per channel", delivery::render(runs)),
        "machine" => ("Who used the machine", machine::render(runs)),
        _ => (
            "Scenario, settings, environment and gates",
            run_details::render(runs, gates),
        ),
    }
}

/// A series label: the design, and the run when several are shown.
fn label(runs: &[Run], run: usize, design: &str, what: &str) -> String {
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    if runs.len() > 1 {
        format!("{design}{what} [run {}]", run + 1)
    } else {
        format!("{design}{what}")
    }
}

/// The design's look, thinner for the second and later runs.
fn look(design: &str, run: usize) -> Look {
    let base = charts::design_look(design);
    Look {
        width: if run == 0 { base.width } else { 1 },
        ..base
    }
}

fn each_design(runs: &[Run]) -> impl Iterator<Item = (usize, &Run, &String, &DesignResults)> {
    runs.iter().enumerate().flat_map(|(i, run)| {
        text::ordered(&run.results)
            .into_iter()
            .map(move |(name, d)| (i, run, name, d))
    })
}

fn telemetry<'a>(run: &'a Run, design: &str) -> Option<&'a DesignTelemetry> {
    run.telemetry
        .as_ref()?
        .designs
        .get(design)
        .filter(|t| !t.samples.is_empty())
}

/// A sampled series' key in `telemetry.json`, as the Prometheus text format writes it:
/// `name{label="value"}`.
fn series_key(name: &str, label: &str, value: &str) -> String {
    format!("{name}{{{label}=\"{value}\"}}")
}

fn chart(svg: String, explain: &str) -> String {
    format!("<div class=\"chart\">{svg}</div>\n<p class=\"explain\">{explain}</p>")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The servers name their metrics in their own source (the report must not depend on them),
    /// so this keeps `results::metric_names` in step with them: each name the report reads must
    /// appear quoted, and each prefix after an opening quote, where the servers define their
    /// metrics.
    #[test]
    fn every_metric_name_the_report_reads_is_one_the_servers_define() {
        let sources = [
            include_str!("../../../signup-core/src/telemetry.rs"),
            include_str!("../../../sync-server/src/metrics_def.rs"),
            include_str!("../../../async-server/src/metrics_def.rs"),
        ]
        .concat();
        let names = results::metric_names::ALL
            .iter()
            .map(|name| format!("\"{name}\""));
        let prefixes = results::metric_names::PREFIXES
            .iter()
            .map(|prefix| format!("\"{prefix}"));
        let missing: Vec<String> = names
            .chain(prefixes)
            .filter(|quoted| !sources.contains(quoted.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "the servers' metric definitions (signup-core/src/telemetry.rs, \
             sync-server/src/metrics_def.rs, async-server/src/metrics_def.rs) no longer hold {missing:?}: \
             update results::metric_names to match"
        );
    }

    #[test]
    fn a_series_key_is_written_as_prometheus_writes_it() {
        assert_eq!(series_key("m", "l", "v"), "m{l=\"v\"}");
    }
}
