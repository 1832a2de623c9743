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
    let specs = specs(&candidate[0])?;
    if specs.is_empty() {
        return Ok(None);
    }
    let (rules, regressions) = specs.check().map_err(|(_, e)| anyhow::anyhow!(e))?;
    let mut results = gates::evaluate_rules(&rules, &candidate)?;
    if !regressions.is_empty() {
        match baseline {
            Some(base) => {
                let baseline = load_repeats(base)
                    .with_context(|| format!("reading the baseline {}", base.display()))?;
                results.extend(gates::evaluate_regressions(
                    &regressions,
                    &candidate,
                    &baseline,
                )?);
            }
            None => eprintln!(
                "fanbench: {} regression gate(s) skipped: no baseline (give --baseline DIR, or promote a run with \
                 `fanbench baseline update`)",
                regressions.len()
            ),
        }
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

/// Turns gate results into the command's outcome: an error of type [`GatesFailed`] when any failed.
pub fn outcome(results: Option<&[GateResult]>) -> Result<()> {
    let Some(results) = results else {
        return Ok(());
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        return Err(GatesFailed {
            failed,
            total: results.len(),
        }
        .into());
    }
    Ok(())
}

/// `fanbench gate RUN_DIR`
pub fn gate(dir: &Path, baseline: Option<&Path>, outputs: &Outputs) -> Result<()> {
    let results = evaluate(dir, baseline, outputs)?;
    if results.is_none() {
        bail!(
            "the scenario of {} declares no gates ([gates] rules or regressions)",
            dir.display()
        );
    }
    // Refresh the report so it shows the verdicts.
    if dir.join("results.json").is_file() {
        if let Ok(run) = report::Run::load(dir) {
            report::write(&[run])?;
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
