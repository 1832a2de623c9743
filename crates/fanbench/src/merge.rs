//! Load from many machines: `fanbench run --shard i/n` drives one interleaved slice of a
//! scenario's schedule (the driver's [`Shard`]), and `fanbench merge` adds the shard runs back up
//! into one run folder that `report` and `gate` read like any other.
//!
//! The merge is exact because every shard saves its whole recording (`<design>.histograms.json`:
//! counters and HdrHistogram V2 encodings) and histograms add: the merged percentiles are those of
//! one histogram holding every shard's values. What does not add is said so: the send lag is the
//! worst shard's (a driver that fell behind on one machine must not be averaged away by the
//! others), and a merged run is invalid when any shard is, or when a shard is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use driver::{Recorder, Shard};
use results::{DesignResults, Lag, Merged, MergedShard, RunResults, ShardOf};

use crate::cli::MergeArgs;
use crate::output::{recording_file, save_results, write_recording};
use crate::plan::Plan;

/// Shards of one schedule that started further apart than this get a warning: the merged
/// timeline adds up each shard's seconds as if they had been simultaneous.
const START_SKEW_WARNING_S: f64 = 1.0;

/// What a shard run records about itself.
pub fn shard_of(shard: Shard) -> ShardOf {
    ShardOf {
        index: shard.index(),
        count: shard.count(),
    }
}

/// The users one shard needs: its share of the whole schedule's, at least 16 (or the whole
/// schedule's, if that is fewer). Each shard offers `1/n` of the rate, so Little's law asks
/// `1/n` of the users.
pub fn shard_users(users: usize, shard: Shard) -> usize {
    users.div_ceil(shard.count() as usize).max(users.min(16))
}

/// The plan of a shard run: without `--out`, its folder and run id say which shard it is, so
/// shards started on one machine in the same second do not share a folder.
pub fn shard_plan(mut plan: Plan, shard: Shard, out_given: bool) -> Result<Plan> {
    let suffix = format!("-shard{}of{}", shard.index(), shard.count());
    plan.run_id.push_str(&suffix);
    if !out_given {
        // Plan::new made the folder; it is still empty, so remove_dir (never recursive) is safe.
        let _ = std::fs::remove_dir(&plan.out);
        plan.out = PathBuf::from("reports/runs").join(&plan.run_id);
        std::fs::create_dir_all(&plan.out)
            .with_context(|| format!("could not create the run folder {}", plan.out.display()))?;
    }
    Ok(plan)
}

/// A shard run as read from its folder: its results and each design's whole recording.
#[derive(Debug)]
pub struct ShardRun {
    pub path: PathBuf,
    pub results: RunResults,
    pub recordings: BTreeMap<String, Recorder>,
}

/// Why shard runs cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give the run folders of `fanbench run --shard i/n`")]
    Nothing,
    #[error(
        "{path} is not a shard run (its results.json has no `shard`): only runs of \
         `fanbench run --shard i/n` merge"
    )]
    NotAShard { path: String },
    #[error(
        "{path} is shard {index}/{count} but {first} is shard {first_index}/{first_count}: \
         shards of one schedule are all split the same number of ways"
    )]
    Count {
        path: String,
        index: u32,
        count: u32,
        first: String,
        first_index: u32,
        first_count: u32,
    },
    #[error("{path} and {other} are both shard {index}/{count}: each shard may be merged once")]
    Duplicate {
        path: String,
        other: String,
        index: u32,
        count: u32,
    },
    #[error(
        "{path} ran scenario {name:?} but {first} ran {first_name:?}: only shards of one \
         scenario merge"
    )]
    Scenario {
        path: String,
        name: String,
        first: String,
        first_name: String,
    },
    #[error(
        "{path} and {first} ran scenario {name:?} with different definitions (arrivals, seed, \
         payload or settings): their schedules are not slices of one schedule"
    )]
    Definition {
        path: String,
        first: String,
        name: String,
    },
    #[error(
        "{path} measured {designs} but {first} measured {first_designs}: only shards of the same \
         designs merge"
    )]
    Designs {
        path: String,
        designs: String,
        first: String,
        first_designs: String,
    },
}

/// Reads a shard run folder: `results.json` (checked against the schema) and each design's
/// recording.
pub fn read_shard(dir: &Path) -> Result<ShardRun> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    results::validate(&doc)
        .map_err(|e| anyhow::anyhow!("{} is not a fanbench results file: {e}", path.display()))?;
    let results: RunResults = serde_json::from_value(doc)
        .with_context(|| format!("{} is not a fanbench results file", path.display()))?;
    let mut recordings = BTreeMap::new();
    for name in results.designs.keys() {
        let file = dir.join(recording_file(name));
        let reader = std::fs::File::open(&file).with_context(|| {
            format!(
                "could not read {}: a shard run keeps its whole recording there (fanbench run \
                 --shard writes it); without it the shard cannot be merged exactly",
                file.display()
            )
        })?;
        let recorder = Recorder::read_recording(std::io::BufReader::new(reader))
            .with_context(|| format!("could not read {}", file.display()))?;
        recordings.insert(name.clone(), recorder);
    }
    Ok(ShardRun {
        path: dir.to_path_buf(),
        results,
        recordings,
    })
}

fn designs_of(run: &RunResults) -> String {
    run.designs.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn started(run: &RunResults) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(&run.started_at)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Adds up shard runs of one schedule: the merged results and each design's merged recording.
/// Refuses shards that are not slices of one schedule; merges an incomplete set, but marks it
/// invalid and names the missing shards.
pub fn merge_shards(
    mut shards: Vec<ShardRun>,
) -> Result<(RunResults, BTreeMap<String, Recorder>), MergeError> {
    for s in &shards {
        let path = s.path.display().to_string();
        s.results.shard.ok_or(MergeError::NotAShard { path })?;
    }
    // In shard order from here on: the lowest index is the one the others are checked against.
    shards.sort_by_key(|s| s.results.shard.map(|x| x.index));
    let indices: Vec<ShardOf> = shards.iter().filter_map(|s| s.results.shard).collect();
    let (Some(first), Some(&first_shard)) = (shards.first(), indices.first()) else {
        return Err(MergeError::Nothing);
    };
    let first_path = first.path.display().to_string();
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    for (s, shard) in shards.iter().zip(&indices) {
        let path = s.path.display().to_string();
        if shard.count != first_shard.count {
            return Err(MergeError::Count {
                path,
                index: shard.index,
                count: shard.count,
                first: first_path,
                first_index: first_shard.index,
                first_count: first_shard.count,
            });
        }
        if let Some(other) = seen.insert(shard.index, path.clone()) {
            return Err(MergeError::Duplicate {
                path,
                other,
                index: shard.index,
                count: shard.count,
            });
        }
        let (scenario, first_scenario) = (&s.results.scenario, &first.results.scenario);
        if scenario.name != first_scenario.name {
            return Err(MergeError::Scenario {
                path,
                name: scenario.name.clone(),
                first: first_path,
                first_name: first_scenario.name.clone(),
            });
        }
        if scenario.definition != first_scenario.definition {
            return Err(MergeError::Definition {
                path,
                first: first_path,
                name: scenario.name.clone(),
            });
        }
        if s.results.designs.keys().ne(first.results.designs.keys()) {
            return Err(MergeError::Designs {
                path,
                designs: designs_of(&s.results),
                first: first_path,
                first_designs: designs_of(&first.results),
            });
        }
    }
    let count = first_shard.count;
    let missing: Vec<u32> = (1..=count).filter(|i| !seen.contains_key(i)).collect();

    let list: Vec<MergedShard> = shards
        .iter()
        .map(|s| MergedShard {
            index: s.results.shard.map_or(0, |x| x.index),
            run_id: s.results.run_id.clone(),
            path: s.path.display().to_string(),
            started_at: s.results.started_at.clone(),
            intended: s
                .results
                .designs
                .values()
                .map(|d| d.requests.intended)
                .sum(),
            valid: s.results.designs.values().all(|d| d.valid),
            trustworthy: s.results.designs.values().all(|d| d.trustworthy),
        })
        .collect();
    let names: Vec<String> = list
        .iter()
        .map(|s| format!("{}/{count}", s.index))
        .collect();

    // The shards' schedules are added up second by second as if they had started together.
    let starts: Vec<_> = shards.iter().filter_map(|s| started(&s.results)).collect();
    let earliest = starts.iter().min().copied();
    let skew = match (starts.iter().min(), starts.iter().max()) {
        (Some(a), Some(b)) => (*b - *a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };

    let mut designs = BTreeMap::new();
    let mut recordings = BTreeMap::new();
    for name in first.results.designs.keys() {
        let mut recorder = Recorder::new();
        for s in &shards {
            if let Some(r) = s.recordings.get(name) {
                recorder.merge(r);
            }
        }
        let parts: Vec<(u32, &DesignResults)> = shards
            .iter()
            .filter_map(|s| Some((s.results.shard?.index, s.results.designs.get(name)?)))
            .collect();
        let design = merge_design(&recorder, &parts, count, &names, &missing, skew);
        designs.insert(name.clone(), design);
        recordings.insert(name.clone(), recorder);
    }

    let stamp = earliest.map_or_else(String::new, |t| t.format("%Y%m%dT%H%M%SZ").to_string());
    let results = RunResults {
        schema_version: results::SCHEMA_VERSION,
        run_id: format!("{stamp}-{}-merged", first.results.scenario.name),
        started_at: earliest.map_or_else(|| first.results.started_at.clone(), |t| t.to_rfc3339()),
        scenario: first.results.scenario.clone(),
        environment: first.results.environment.clone(),
        designs,
        shard: None,
        merged: Some(Merged {
            count,
            shards: list,
            missing,
        }),
    };
    Ok((results, recordings))
}

/// One design's results from its shards: counts, latency and the timeline from the merged
/// recording; send lag the worst shard's; valid and trustworthy only if every shard was.
fn merge_design(
    recorder: &Recorder,
    parts: &[(u32, &DesignResults)],
    count: u32,
    names: &[String],
    missing: &[u32],
    skew_s: f64,
) -> DesignResults {
    let duration_s = parts
        .iter()
        .map(|(_, d)| d.duration_s)
        .fold(0.0, f64::max)
        .max(1e-9);
    let worst = |f: fn(&Lag) -> f64| {
        parts
            .iter()
            .map(|(_, d)| f(&d.send_lag_ms))
            .fold(0.0, f64::max)
    };
    let send_lag_ms = Lag {
        p50: worst(|l| l.p50),
        p99: worst(|l| l.p99),
        max: worst(|l| l.max),
    };
    let mut targets: Vec<&str> = parts.iter().map(|(_, d)| d.target.as_str()).collect();
    targets.sort_unstable();
    targets.dedup();

    let mut warnings = vec![format!(
        "merged from {} of {count} shards ({}); send lag is the worst shard's",
        parts.len(),
        names.join(", ")
    )];
    if skew_s > START_SKEW_WARNING_S {
        warnings.push(format!(
            "the shards started {skew_s:.1} s apart: the timeline adds up their seconds as if \
             they had been simultaneous, so the offered rate over time is smeared by that much"
        ));
    }
    let mut invalid_reasons = Vec::new();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        invalid_reasons.push(format!(
            "INCOMPLETE: shard(s) {} of {count} are missing, so the run holds only part of the \
             schedule; merge every shard's run folder",
            list.join(", ")
        ));
    }
    for (index, d) in parts {
        let prefix = format!("shard {index}/{count}: ");
        warnings.extend(d.warnings.iter().map(|w| prefix.clone() + w));
        invalid_reasons.extend(d.invalid_reasons.iter().map(|w| prefix.clone() + w));
        if !d.valid && d.invalid_reasons.is_empty() {
            invalid_reasons.push(prefix + "invalid");
        }
    }
    if parts
        .iter()
        .any(|(_, d)| d.reconciliation.is_some() || !d.delivery.is_empty())
    {
        warnings.push(
            "the shards' delivery and reconciliation figures are not merged: each counted only \
             its own slice"
                .into(),
        );
    }
    if parts.iter().any(|(_, d)| d.window.is_some()) {
        warnings.push(
            "the shards' measurement windows (after [driver] warmup) are not merged: the merged \
             run covers each shard's whole schedule"
                .into(),
        );
    }
    // Delivery and reconciliation stay empty (each shard counted its own slice), and so does who
    // used the machine: each shard measured its own; added up they would describe none. A read-back
    // recording keeps no measurement window.
    // How the driver ran: every shard's threads and users together, and the merged recording's
    // count of slots that waited for a user (a shard from before it was recorded has none).
    let driver = (!parts.is_empty() && parts.iter().all(|(_, d)| d.driver.is_some())).then(|| {
        results::DriverRun {
            threads: parts
                .iter()
                .filter_map(|(_, d)| d.driver.map(|r| r.threads))
                .sum(),
            users: parts
                .iter()
                .filter_map(|(_, d)| d.driver.map(|r| r.users))
                .sum(),
            slots_waited_for_user: recorder.slots_waited_for_user(),
        }
    });
    DesignResults {
        target: targets.join(", "),
        driver,
        settings: parts
            .first()
            .map_or(serde_json::Value::Null, |(_, d)| d.settings.clone()),
        send_lag_ms,
        trustworthy: parts.iter().all(|(_, d)| d.trustworthy),
        valid: invalid_reasons.is_empty() && parts.iter().all(|(_, d)| d.valid),
        invalid_reasons,
        warnings,
        ..crate::output::recorded(recorder, duration_s)
    }
}

/// `fanbench merge RUN_DIR… --out DIR`.
pub fn merge(args: &MergeArgs) -> Result<()> {
    let mut unique = BTreeSet::new();
    for dir in &args.runs {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if !unique.insert(canonical) {
            bail!("{} is given twice", dir.display());
        }
    }
    let shards = args
        .runs
        .iter()
        .map(|d| read_shard(d))
        .collect::<Result<Vec<_>>>()?;
    let (merged, recordings) = merge_shards(shards)?;
    let out = &args.out;
    if out.join("results.json").exists() {
        bail!(
            "{} already holds a results.json: merge into a new folder",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    let start = started(&merged).map_or(SystemTime::UNIX_EPOCH, SystemTime::from);
    for (name, recorder) in &recordings {
        write_recording(out, name, recorder)?;
        let hlog = out.join(format!("{name}.hlog"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&hlog)?);
        recorder
            .write_hlog(&mut file, start, name)
            .with_context(|| format!("writing {}", hlog.display()))?;
        let hgrm = out.join(format!("{name}.hgrm"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&hgrm)?);
        recorder
            .write_hgrm(&mut file)
            .with_context(|| format!("writing {}", hgrm.display()))?;
    }
    save_results(out, &merged)?;
    let run = report::Run::load(out)?;
    let (html, _) = report::write(&[run])?;
    let info = merged.merged.as_ref();
    println!(
        "\nmerged {} of {} shards into {}\nreport: {}",
        info.map_or(0, |m| m.shards.len()),
        info.map_or(0, |m| m.count),
        out.display(),
        html.display()
    );
    let invalid: Vec<&str> = merged
        .designs
        .iter()
        .filter(|(_, d)| !d.valid)
        .map(|(n, _)| n.as_str())
        .collect();
    if !invalid.is_empty() {
        bail!(
            "the merged run is invalid for {} (why: above, and in {}); no verdict stands on it",
            invalid.join(", "),
            out.join("results.json").display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use driver::Outcome;
    use results::{Environment, Percentiles, ScenarioInfo};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A deterministic spread of latencies, outcomes and send lags for request `seq`: several
    /// decades of latency, so the percentiles fall in different histogram buckets.
    fn request(seq: u64) -> (Duration, Duration, Duration, Outcome) {
        let x = seq.wrapping_mul(6_364_136_223_846_793_005).rotate_left(17);
        let at = ms(seq * 3);
        let lag = Duration::from_micros(x % 2_000);
        let latency = Duration::from_micros(200 + x % 10_000 + (x % 97) * (x % 97) * 300);
        let outcome = match x % 10 {
            0 => Outcome::Status(503),
            1 => Outcome::Status(409),
            2 => Outcome::Timeout,
            _ => Outcome::Status(202),
        };
        (at, lag, latency, outcome)
    }

    fn record(r: &mut Recorder, seq: u64) {
        let (at, lag, latency, outcome) = request(seq);
        r.offered(at);
        r.sent(at, at + lag);
        r.completed(seq, at, at + lag, at + latency, outcome);
    }

    /// What a `run --target` design result holds, from its recording.
    fn design(r: &Recorder) -> DesignResults {
        let requests = r.requests();
        let rules = results::ValidityRules {
            max_unanswered_share: 0.5,
        };
        let invalid_reasons = results::invalid_reasons(&requests, rules);
        DesignResults {
            target: "http://127.0.0.1:7009".into(),
            settings: serde_json::Value::Null,
            requests,
            latency_ms: r.latency_ms(),
            latency_ms_by_class: r.latency_ms_by_class(),
            service_time_ms: r.service_time_ms(),
            latency_spectrum: results::spectrum(r.latency()),
            send_lag_ms: r.send_lag_ms(),
            throughput_rps: r.ok() as f64 / 10.0,
            offered_rps: r.intended() as f64 / 10.0,
            duration_s: 10.0,
            timeline: r.timeline(),
            delivery: BTreeMap::new(),
            reconciliation: None,
            drain: None,
            processes: None,
            driver: None,
            window: None,
            trustworthy: true,
            valid: invalid_reasons.is_empty(),
            invalid_reasons,
            warnings: Vec::new(),
        }
    }

    /// Shard `index` of `count` of a 4,000-request schedule, as `run --shard` leaves it.
    fn shard(index: u32, count: u32, seed: u64) -> ShardRun {
        let mut r = Recorder::new();
        let s = Shard::new(index, count).unwrap();
        for seq in (0..4_000).filter(|q| s.owns(*q)) {
            record(&mut r, seq);
        }
        let results = RunResults {
            schema_version: results::SCHEMA_VERSION,
            run_id: format!("20260101T000000Z-t-shard{index}of{count}"),
            started_at: "2026-01-01T00:00:00+00:00".into(),
            scenario: ScenarioInfo {
                name: "t".into(),
                description: String::new(),
                path: "t.toml".into(),
                duration_s: 12.0,
                peak_rps: 333.0,
                definition: serde_json::json!({ "name": "t", "arrivals": { "seed": seed } }),
            },
            environment: Environment {
                fanbench_version: "0".into(),
                git_sha: None,
                os: "linux".into(),
                arch: "x86_64".into(),
                cpus: 2,
                memory_bytes: None,
                postgres_version: None,
                database: "none".into(),
            },
            designs: [("target".to_string(), design(&r))].into_iter().collect(),
            shard: Some(shard_of(s)),
            merged: None,
        };
        ShardRun {
            path: PathBuf::from(format!("shard{index}")),
            results,
            recordings: [("target".to_string(), r)].into_iter().collect(),
        }
    }

    /// Writes a shard run into a folder, as `run --shard` does.
    fn write_shard(dir: &Path, run: &ShardRun) {
        std::fs::create_dir_all(dir).unwrap();
        save_results(dir, &run.results).unwrap();
        for (name, r) in &run.recordings {
            write_recording(dir, name, r).unwrap();
        }
    }

    #[test]
    fn merged_percentiles_are_those_of_one_histogram_of_every_value() {
        // One histogram, and one recorder, of all 4,000 values.
        let mut single = results::new_histogram();
        let mut lag = results::new_histogram();
        let mut one = Recorder::new();
        for seq in 0..4_000 {
            let (_, l, latency, _) = request(seq);
            single.record(latency.as_micros() as u64).unwrap();
            lag.record((l.as_micros() as u64).max(1)).unwrap();
            record(&mut one, seq);
        }
        // Three shards, through their folders: what is merged is what was saved.
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<PathBuf> = (1..=3)
            .map(|i| {
                let path = dir.path().join(format!("shard{i}"));
                write_shard(&path, &shard(i, 3, 7));
                path
            })
            .collect();
        let shards: Vec<ShardRun> = runs.iter().map(|d| read_shard(d).unwrap()).collect();
        let worst_lag_p99 = shards
            .iter()
            .map(|s| s.results.designs["target"].send_lag_ms.p99)
            .fold(0.0, f64::max);
        let (merged, recordings) = merge_shards(shards).unwrap();
        let d = &merged.designs["target"];

        assert_eq!(d.latency_ms, Percentiles::from_histogram(&single));
        assert_eq!(d.latency_spectrum, results::spectrum(&single));
        assert_eq!(d.requests, one.requests());
        assert_eq!(d.requests.intended, 4_000);
        assert_eq!(d.latency_ms_by_class, one.latency_ms_by_class());
        assert_eq!(d.service_time_ms, one.service_time_ms());
        assert_eq!(d.timeline, one.timeline());
        // Send lag: the worst shard's figures; the merged histogram is still kept whole.
        assert_eq!(d.send_lag_ms.p99, worst_lag_p99);
        assert_eq!(d.send_lag_ms.max, Lag::from_histogram(&lag).max);
        assert_eq!(recordings["target"].lag(), &lag);
        assert!(d.valid && d.trustworthy, "{:?}", d.invalid_reasons);
        let info = merged.merged.as_ref().unwrap();
        assert_eq!(
            (info.count, info.missing.len(), info.shards.len()),
            (3, 0, 3)
        );
        assert_eq!(
            info.shards.iter().map(|s| s.intended).sum::<u64>(),
            4_000,
            "{info:?}"
        );
        assert!(d.warnings[0].contains("merged from 3 of 3 shards (1/3, 2/3, 3/3)"));

        // The merged folder is a run folder: schema-valid, with the files a run has, and it
        // merges no further (it is not a shard).
        let out = dir.path().join("merged");
        merge(&MergeArgs {
            runs: runs.clone(),
            out: out.clone(),
        })
        .unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        results::validate(&doc).unwrap();
        assert_eq!(doc["merged"]["count"], 3);
        for file in [
            "target.hlog",
            "target.hgrm",
            "target.histograms.json",
            "index.html",
        ] {
            assert!(out.join(file).is_file(), "{file}");
        }
        let e = merge(&MergeArgs {
            runs: vec![out.clone()],
            out: dir.path().join("again"),
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("not a shard run"), "{e:#}");
        let e = merge(&MergeArgs { runs, out }).unwrap_err();
        assert!(format!("{e:#}").contains("already holds"), "{e:#}");
    }

    #[test]
    fn a_missing_shard_is_merged_but_invalid_and_named() {
        let (merged, _) = merge_shards(vec![shard(3, 3, 7), shard(1, 3, 7)]).unwrap();
        let d = &merged.designs["target"];
        assert!(!d.valid);
        assert!(
            d.invalid_reasons[0].contains("shard(s) 2 of 3 are missing"),
            "{:?}",
            d.invalid_reasons
        );
        let info = merged.merged.unwrap();
        assert_eq!(info.missing, vec![2]);
        assert_eq!(
            info.shards.iter().map(|s| s.index).collect::<Vec<_>>(),
            [1, 3]
        );
    }

    #[test]
    fn an_invalid_shard_makes_the_merged_run_invalid() {
        let mut bad = shard(2, 2, 7);
        let d = bad.results.designs.get_mut("target").unwrap();
        d.valid = false;
        d.invalid_reasons = vec!["the server went away".into()];
        d.trustworthy = false;
        let (merged, _) = merge_shards(vec![shard(1, 2, 7), bad]).unwrap();
        let d = &merged.designs["target"];
        assert!(!d.valid && !d.trustworthy);
        assert_eq!(d.invalid_reasons, ["shard 2/2: the server went away"]);
    }

    #[test]
    fn shards_that_are_not_one_schedule_are_refused_by_name() {
        let refuse = |shards: Vec<ShardRun>| merge_shards(shards).unwrap_err().to_string();

        let e = refuse(vec![shard(1, 2, 7), shard(2, 3, 7)]);
        assert!(
            e.contains("shard2 is shard 2/3 but shard1 is shard 1/2"),
            "{e}"
        );
        let e = refuse(vec![shard(1, 2, 7), shard(1, 2, 7)]);
        assert!(e.contains("both shard 1/2"), "{e}");
        let e = refuse(vec![shard(1, 2, 7), shard(2, 2, 8)]);
        assert!(e.contains("different definitions"), "{e}");
        let mut other = shard(2, 2, 7);
        other.results.scenario.name = "smoke".into();
        let e = refuse(vec![shard(1, 2, 7), other]);
        assert!(
            e.contains("ran scenario \"smoke\" but shard1 ran \"t\""),
            "{e}"
        );
        let mut other = shard(2, 2, 7);
        let d = other.results.designs.remove("target").unwrap();
        other.results.designs.insert("async".into(), d);
        let e = refuse(vec![shard(1, 2, 7), other]);
        assert!(
            e.contains("measured async but shard1 measured target"),
            "{e}"
        );
        let mut whole = shard(1, 1, 7);
        whole.results.shard = None;
        let e = refuse(vec![whole]);
        assert!(e.contains("not a shard run"), "{e}");
        assert!(refuse(Vec::new()).contains("nothing to merge"));
    }

    #[test]
    fn a_shard_needs_its_share_of_the_users() {
        let of = |users, i, n| shard_users(users, Shard::new(i, n).unwrap());
        assert_eq!(of(900, 1, 4), 225);
        assert_eq!(of(900, 2, 7), 129);
        assert_eq!(of(100, 1, 10), 16, "at least 16");
        assert_eq!(of(10, 1, 2), 10, "never more than the whole schedule's");
    }
}
