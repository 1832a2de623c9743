//! What a run leaves behind: the results model of each design, `results.json`, the histograms,
//! the table, and the `report` command.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use driver::Measurement;
use results::{DesignResults, Environment, RunResults, ScenarioInfo};

use crate::plan::Plan;

pub fn design_results(
    plan: &Plan,
    m: &Measurement,
    target: String,
    settings: serde_json::Value,
) -> DesignResults {
    let r = &m.recorder;
    // A run stopped early offered load only for as long as it ran.
    let planned = plan.shape.duration.as_secs_f64();
    let duration_s = if m.cancelled {
        m.elapsed.as_secs_f64().min(planned)
    } else {
        planned
    }
    .max(1e-9);
    let mut warnings = m.warnings.clone();
    if !m.trustworthy {
        warnings.insert(
            0,
            "UNTRUSTWORTHY: the driver did not keep to its schedule (see below)".into(),
        );
    }
    let requests = r.requests();
    let rules = results::ValidityRules {
        max_unanswered_share: plan.scenario.driver.max_unanswered_share,
    };
    let mut invalid_reasons = results::invalid_reasons(&requests, rules);
    if m.cancelled {
        // A stopped run measured part of its schedule: say that, not what follows from it.
        invalid_reasons = vec![
            "stopped early (Ctrl-C): only part of the schedule ran, so no verdict stands on it"
                .into(),
        ];
    }
    DesignResults {
        target,
        settings,
        requests,
        trustworthy: m.trustworthy,
        valid: invalid_reasons.is_empty(),
        invalid_reasons,
        warnings,
        driver: Some(results::DriverRun {
            threads: u32::try_from(m.threads).unwrap_or(u32::MAX),
            users: m.users as u64,
            slots_waited_for_user: r.slots_waited_for_user(),
        }),
        ..recorded(r, duration_s)
    }
}

/// What a recording measured over `duration_s` seconds of schedule, as a design's results: the
/// driver's figures (and its measurement window, when it kept one); the rest empty for the caller
/// to fill in (target, settings, delivery, processes, validity).
pub fn recorded(r: &driver::Recorder, duration_s: f64) -> DesignResults {
    DesignResults {
        target: String::new(),
        settings: serde_json::Value::Null,
        requests: r.requests(),
        latency_ms: r.latency_ms(),
        latency_ms_by_class: r.latency_ms_by_class(),
        service_time_ms: r.service_time_ms(),
        latency_spectrum: results::spectrum(r.latency()),
        send_lag_ms: r.send_lag_ms(),
        throughput_rps: r.ok() as f64 / duration_s,
        offered_rps: r.intended() as f64 / duration_s,
        duration_s,
        timeline: r.timeline(),
        delivery: BTreeMap::new(),
        reconciliation: None,
        drain: None,
        processes: None,
        driver: None,
        window: r.window().map(|(from, w)| {
            let from_s = from.as_secs_f64();
            let length = (duration_s - from_s).max(1e-9);
            results::Window {
                from_s,
                duration_s: length,
                requests: w.requests(),
                latency_ms: w.latency_ms(),
                latency_ms_by_class: w.latency_ms_by_class(),
                send_lag_ms: w.send_lag_ms(),
                throughput_rps: w.ok() as f64 / length,
            }
        }),
        trustworthy: true,
        valid: true,
        invalid_reasons: Vec::new(),
        warnings: Vec::new(),
    }
}

pub fn write_histograms(plan: &Plan, name: &str, m: &Measurement) -> Result<()> {
    let hlog = plan.out.join(format!("{name}.hlog"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&hlog)?);
    m.recorder
        .write_hlog(&mut file, m.started_at, name)
        .with_context(|| format!("writing {}", hlog.display()))?;
    let hgrm = plan.out.join(format!("{name}.hgrm"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&hgrm)?);
    m.recorder
        .write_hgrm(&mut file)
        .with_context(|| format!("writing {}", hgrm.display()))?;
    write_recording(&plan.out, name, &m.recorder)
}

/// The name of a design's whole recording in a run folder: what `fanbench merge` adds up.
pub fn recording_file(design: &str) -> String {
    format!("{design}.histograms.json")
}

/// Writes `<design>.histograms.json`: the recording exactly (every histogram as an HdrHistogram
/// V2 encoding), so shard runs can be merged without losing a count.
pub fn write_recording(dir: &std::path::Path, name: &str, r: &driver::Recorder) -> Result<()> {
    let path = dir.join(recording_file(name));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    r.write_recording(&mut file)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::flush(&mut file).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `results.json` into the plan's folder and prints the table.
pub fn write_results(
    plan: &Plan,
    designs: BTreeMap<String, DesignResults>,
    environment: Environment,
) -> Result<()> {
    write_shard_results(plan, designs, environment, None)
}

/// [`write_results`] of a run that drove one shard of its schedule (`run --shard`).
pub fn write_shard_results(
    plan: &Plan,
    designs: BTreeMap<String, DesignResults>,
    environment: Environment,
    shard: Option<results::ShardOf>,
) -> Result<()> {
    let results = RunResults {
        schema_version: results::SCHEMA_VERSION,
        run_id: plan.run_id.clone(),
        started_at: plan.started_at.to_rfc3339(),
        scenario: ScenarioInfo {
            name: plan.scenario.name.clone(),
            description: plan.scenario.description.clone(),
            path: plan.scenario.source.display().to_string(),
            duration_s: plan.shape.duration.as_secs_f64(),
            peak_rps: plan.shape.peak_rps,
            definition: serde_json::to_value(&plan.scenario)?,
        },
        environment,
        designs,
        shard,
        merged: None,
    };
    save_results(&plan.out, &results)
}

/// Writes `dir/results.json` and prints the table.
pub fn save_results(dir: &std::path::Path, results: &RunResults) -> Result<()> {
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print!("{}", report::text::table(results));
    Ok(())
}

/// `fanbench report RUN_DIR…`: the run page of one or more run folders, or the capacity page of
/// a `fanbench capacity` folder (one holding `capacity.json` and no `results.json`).
pub fn report(dirs: &[PathBuf]) -> Result<()> {
    let is_capacity =
        |d: &PathBuf| d.join(report::capacity::FILE).is_file() && !d.join("results.json").exists();
    if let Some(dir) = dirs.iter().find(|d| is_capacity(d)) {
        if dirs.len() > 1 {
            bail!(
                "{} is a capacity folder: report it alone (`fanbench report {}`)",
                dir.display(),
                dir.display()
            );
        }
        let doc = report::capacity::load(dir)?;
        let html = report::capacity::write(dir, &doc)?;
        for (name, d) in report::capacity::ordered(&doc) {
            println!(
                "{}",
                report::capacity::verdict_line(name, d, doc.resolution)
            );
        }
        println!("\nreport: {}", html.display());
        return Ok(());
    }
    let runs = dirs
        .iter()
        .map(|d| report::Run::load(d))
        .collect::<Result<Vec<_>, _>>()?;
    for run in &runs {
        print!("{}", report::text::table(&run.results));
    }
    let (html, md) = report::write(&runs)?;
    println!("\nreport: {}\nsummary: {}", html.display(), md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn capacity_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../results/fixtures/capacity/capacity.json"),
            dir.path().join("capacity.json"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn report_renders_a_capacity_folder() {
        let dir = capacity_folder();
        report(&[dir.path().to_path_buf()]).unwrap();
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(html.contains("fanbench capacity") && html.contains("knee at 32/s"));
        // Reported alone: beside a run folder it is an error, not half a page.
        let other = tempfile::tempdir().unwrap();
        let e = report(&[other.path().to_path_buf(), dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("report it alone"), "{e}");
        // A broken document names its file.
        std::fs::write(dir.path().join("capacity.json"), "{\"schema_version\": 1}").unwrap();
        let e = format!("{:#}", report(&[dir.path().to_path_buf()]).unwrap_err());
        assert!(e.contains("capacity.json"), "{e}");
    }
}
