//! `fanbench gate` and the gates at the end of `compare`: evaluate a run's gates (from its
//! scenario) against its repeats and, for regressions, a baseline; write gates.json, JUnit XML and
//! Markdown; decide the exit code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gates::{GateResult, GateSpecs};
use serde_json::Value;

/// A gate said no: the binary exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} gates failed")]
pub struct GatesFailed {
    pub failed: usize,
    pub total: usize,
}

/// The `results.json` documents of a run folder: its own, or one per repeat (`r1/`, `r2/`, …).
pub fn load_repeats(dir: &Path) -> Result<Vec<Value>> {
    let read = |path: PathBuf| -> Result<Value> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        results::validate(&doc).map_err(|e| {
            anyhow::anyhow!("{} is not a fanbench results file: {e}", path.display())
        })?;
        Ok(doc)
    };
    let single = dir.join("results.json");
    if single.is_file() {
        return Ok(vec![read(single)?]);
    }
    let mut repeats: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("could not read the run folder {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let k = e.file_name().to_str()?.strip_prefix('r')?.parse().ok()?;
            let path = e.path().join("results.json");
            path.is_file().then_some((k, path))
        })
        .collect();
    repeats.sort();
    if repeats.is_empty() {
        bail!(
            "{} holds no results.json (nor repeats r1/, r2/, …)",
            dir.display()
        );
    }
    repeats.into_iter().map(|(_, p)| read(p)).collect()
}

/// The gates the run's scenario declared.
fn specs(doc: &Value) -> Result<GateSpecs> {
    let raw = doc["scenario"]["definition"]
        .get("gates")
        .cloned()
        .unwrap_or(Value::Null);
    if raw.is_null() {
        return Ok(GateSpecs::default());
    }
    serde_json::from_value(raw).context("the run's scenario has invalid gates")
}

/// Where the gate outputs go.
#[derive(Debug, Default)]
pub struct Outputs {
    pub junit: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
}

/// Evaluates the gates of the run in `dir`. Returns the results (also written to
/// `dir/gates.json`), or `Ok(None)` when the scenario declares no gates.
pub fn evaluate(
    dir: &Path,
    baseline: Option<&Path>,
    outputs: &Outputs,
) -> Result<Option<Vec<GateResult>>> {
    let candidate = load_repeats(dir)?;
    let mut specs = specs(&candidate[0])?;
    if specs.is_empty() && baseline.is_none() {
        return Ok(None);
    }
    let baseline_dir = baseline;
    let baseline = match baseline {
        Some(base) => Some(
            load_repeats(base)
                .with_context(|| format!("reading the baseline {}", base.display()))?,
        ),
        None => None,
    };
    if let (Some(base), Some(path)) = (&baseline, baseline_dir) {
        let scenario = |doc: &Value| doc["scenario"]["name"].as_str().unwrap_or("?").to_string();
        if scenario(&base[0]) != scenario(&candidate[0]) {
            bail!(
                "the baseline {} ran scenario `{}` and this run `{}`: a regression needs the same load on both sides",
                path.display(),
                scenario(&base[0]),
                scenario(&candidate[0])
            );
        }
        let invalid = invalid_designs(base);
        if !invalid.is_empty() {
            bail!(
                "the baseline {} is invalid, so nothing can be compared against it:\n  {}",
                path.display(),
                invalid.join("\n  ")
            );
        }
    }
    if let Some(base) = &baseline {
        if specs.regressions.is_empty() {
            // A baseline given is a question asked: never answer it by comparing nothing.
            specs.regressions = gates::default_regressions(&candidate[0], &base[0]);
            let t = gates::DEFAULT_TOLERANCES;
            eprintln!(
                "fanbench: the scenario declares no regressions; comparing the default set against the baseline \
                 ({} gates: accepted-latency p99 {:.0} %, 503 share {:.0} % (and at least {:.1} points), throughput {:.0} % lower, \
                 any rise in lost or still-queued notifications, delivery p99 {:.0} %; see docs/PERFORMANCE.md)",
                specs.regressions.len(),
                t.accepted_p99 * 100.0,
                t.share_503 * 100.0,
                t.share_503_min_change * 100.0,
                t.throughput * 100.0,
                t.delivery_p99 * 100.0
            );
            if specs.regressions.is_empty() {
                bail!(
                    "the baseline and this run share no design to compare (this run: {}; baseline: {})",
                    design_names(&candidate[0]),
                    design_names(&base[0])
                );
            }
        }
    }
    // The scenario's gates were checked against the designs fanbench knows when it loaded; here
    // they may also name any design this run (or its baseline) holds, whatever its name.
    let present: Vec<&str> = candidate
        .iter()
        .chain(baseline.iter().flatten())
        .filter_map(|doc| doc["designs"].as_object())
        .flat_map(|o| o.keys().map(String::as_str))
        .collect();
    let present = results::ordered_designs(present);
    let (rules, regressions) = specs
        .check_in(&present)
        .map_err(|(_, e)| anyhow::anyhow!(e))?;
    let mut results = gates::evaluate_rules(&rules, &candidate)?;
    if !regressions.is_empty() {
        match &baseline {
            Some(baseline) => {
                let compared = gates::evaluate_regressions(&regressions, &candidate, baseline)?;
                if compared.iter().all(|r| r.skipped.is_some()) {
                    bail!(
                        "no regression could be compared against the baseline (this run: {}; baseline: {}):\n{}",
                        design_names(&candidate[0]),
                        design_names(&baseline[0]),
                        gates::text(&compared)
                    );
                }
                results.extend(compared);
            }
            None => eprintln!(
                "fanbench: {} regression gate(s) skipped: no baseline (give --baseline DIR, or promote a run with \
                 `fanbench baseline update`)",
                regressions.len()
            ),
        }
    }
    // An invalid run fails a gate of its own in every output, so a CI that reads only JUnit or
    // the summary is not shown green for a run the exit code refuses.
    for which in invalid_designs(&candidate) {
        results.push(GateResult {
            name: format!(
                "the {} run is valid",
                which.split(':').next().unwrap_or_default()
            ),
            kind: gates::Kind::Threshold,
            value: 0.0,
            limit: 1.0,
            margin: -1.0,
            passed: false,
            detail: which,
            skipped: None,
        });
    }
    std::fs::write(
        dir.join("gates.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    if let Some(path) = &outputs.junit {
        std::fs::write(path, gates::junit(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let md = outputs
        .markdown
        .clone()
        .unwrap_or_else(|| dir.join("gates.md"));
    std::fs::write(&md, gates::markdown(&results))
        .with_context(|| format!("writing {}", md.display()))?;
    print!("\n{}", gates::text(&results));
    Ok(Some(results))
}

fn design_names(doc: &Value) -> String {
    doc["designs"]
        .as_object()
        .map(|o| results::ordered_designs(o.keys().map(String::as_str)).join(", "))
        .unwrap_or_default()
}

/// Turns gate results into the command's outcome: an error of type [`GatesFailed`] when any failed.
pub fn outcome(results: Option<&[GateResult]>) -> Result<()> {
    let Some(results) = results else {
        return Ok(());
    };
    let (passed, failed, _) = gates::tally(results);
    if failed > 0 {
        return Err(GatesFailed {
            failed,
            total: passed + failed,
        }
        .into());
    }
    Ok(())
}

/// The designs of a run (any repeat) that are invalid, with why: no gate verdict stands on them.
fn invalid_designs(repeats: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, doc) in repeats.iter().enumerate() {
        let Some(designs) = doc["designs"].as_object() else {
            continue;
        };
        for (name, design) in designs {
            if design["valid"] == Value::Bool(false) {
                let reasons: Vec<&str> = design["invalid_reasons"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let which = if repeats.len() > 1 {
                    format!("{name} (repeat {})", k + 1)
                } else {
                    name.clone()
                };
                out.push(format!("{which}: {}", reasons.join("; ")));
            }
        }
    }
    out
}

/// `fanbench gate RUN_DIR`
pub fn gate(dir: &Path, baseline: Option<&Path>, outputs: &Outputs) -> Result<()> {
    let results = evaluate(dir, baseline, outputs)?;
    if results.is_none() {
        bail!(
            "the scenario of {} declares no gates ([gates] rules or regressions); \
             give --baseline DIR to compare the default regression set",
            dir.display()
        );
    }
    // Refresh the report so it shows the verdicts.
    if dir.join("results.json").is_file() {
        if let Ok(run) = report::Run::load(dir) {
            report::write(&[run])?;
        }
    }
    let invalid = invalid_designs(&load_repeats(dir)?);
    if !invalid.is_empty() {
        bail!(
            "the run is invalid, so no gate verdict stands on it:\n  {}",
            invalid.join("\n  ")
        );
    }
    if let Some(results) = &results {
        if gates::tally(results).2 == results.len() {
            bail!(
                "no gate of the scenario applies to {} (every one was skipped): nothing was checked",
                dir.display()
            );
        }
    }
    outcome(results.as_deref())
}

/// `fanbench baseline update RUN_DIR`: copies the run's results and histograms (not its HTML or
/// logs) to `reports/baseline/<scenario>/`, replacing what was there.
pub fn update_baseline(dir: &Path, root: &Path) -> Result<PathBuf> {
    let repeats = load_repeats(dir)?;
    let name = repeats[0]["scenario"]["name"]
        .as_str()
        .unwrap_or("unnamed")
        .to_string();
    let target = root.join(&name);
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("could not clear {}", target.display()))?;
    }
    let copy_folder = |from: &Path, to: &Path| -> Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)?.flatten() {
            let file = entry.file_name();
            let keep = file.to_str().is_some_and(|f| {
                f == "results.json" || f.ends_with(".hlog") || f.ends_with(".hgrm")
            });
            if keep {
                std::fs::copy(entry.path(), to.join(&file))?;
            }
        }
        Ok(())
    };
    if dir.join("results.json").is_file() {
        copy_folder(dir, &target)?;
    } else {
        for k in 1..=repeats.len() {
            copy_folder(&dir.join(format!("r{k}")), &target.join(format!("r{k}")))?;
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder holding the committed smoke run with a broker design and one named `kafka`
    /// (copies of its async design), whose scenario declares `rules`.
    fn run_with_designs(rules: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut doc: Value =
            serde_json::from_str(include_str!("../../results/fixtures/smoke/results.json"))
                .unwrap();
        for name in [results::BROKER, "kafka"] {
            doc["designs"][name] = doc["designs"][results::ASYNC].clone();
        }
        doc["scenario"]["definition"]["gates"] = serde_json::json!({ "rules": rules });
        std::fs::write(dir.path().join("results.json"), doc.to_string()).unwrap();
        dir
    }

    #[test]
    fn a_run_gates_every_design_it_holds_whatever_its_name() {
        let dir = run_with_designs(&[
            "broker.reconciliation.lost == 0",
            "async.latency_ms.p99 / broker.latency_ms.p99 < 2",
            "kafka.reconciliation.lost == 0",
        ]);
        let results = evaluate(dir.path(), None, &Outputs::default())
            .unwrap()
            .unwrap();
        assert_eq!(results.len(), 3);
        assert!(
            results.iter().all(|r| r.passed && r.skipped.is_none()),
            "{results:#?}"
        );
    }

    #[test]
    fn a_design_the_run_lacks_is_an_error_naming_those_it_has() {
        let dir = run_with_designs(&["brokr.reconciliation.lost == 0"]);
        let err = evaluate(dir.path(), None, &Outputs::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no design `brokr`: this run has sync, async, broker, kafka"),
            "{err}"
        );
    }
}
