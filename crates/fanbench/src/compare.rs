//! `fanbench compare` and `fanbench run`: the main job.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use driver::{DriveOptions, Measurement, Scenario, Schedule, Shape};
use results::{DesignResults, Drain, Environment, RunResults, ScenarioInfo};
use tokio_util::sync::CancellationToken;

use crate::cli::{CompareArgs, Design, LoadArgs, RunArgs, RunDatabaseArgs};
use crate::harness::{self, Answered, ChildServer, Keys, Providers};
use crate::{gating, shutdown, telemetry};

/// A loaded scenario and where its run goes.
#[derive(Clone)]
struct Plan {
    scenario: Scenario,
    shape: Shape,
    run_id: String,
    /// A short, unique tag for database names and emails.
    tag: String,
    out: PathBuf,
    started_at: chrono::DateTime<chrono::Utc>,
    quiet: bool,
}

impl Plan {
    fn new(load: &LoadArgs) -> Result<Self> {
        let scenario = Scenario::load(&load.scenario)?;
        let shape = Schedule::shape(&scenario)?;
        let started_at = chrono::Utc::now();
        let stamp = started_at.format("%Y%m%dT%H%M%SZ").to_string();
        let run_id = format!("{stamp}-{}", scenario.name);
        let out = load
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports/runs").join(&run_id));
        std::fs::create_dir_all(&out)
            .with_context(|| format!("could not create the run folder {}", out.display()))?;
        let tag = started_at.format("%H%M%S").to_string()
            + &format!("{:03}", started_at.timestamp_subsec_millis());
        Ok(Self {
            scenario,
            shape,
            run_id,
            tag,
            out,
            started_at,
            quiet: load.quiet,
        })
    }

    /// The plan of repeat `k` of `n`: its own subfolder, databases and emails.
    fn repeat(&self, k: u32, n: u32) -> Self {
        if n == 1 {
            return self.clone();
        }
        Self {
            out: self.out.join(format!("r{k}")),
            tag: format!("{}r{k}", self.tag),
            run_id: format!("{}-r{k}", self.run_id),
            ..self.clone()
        }
    }

    fn users(&self) -> usize {
        let d = &self.scenario.driver;
        d.users
            .unwrap_or_else(|| driver::users_for(self.shape.peak_rps, d.max_latency))
    }

    fn drive_options(&self, target: &str, label: &str, cancel: &CancellationToken) -> DriveOptions {
        let d = &self.scenario.driver;
        DriveOptions {
            target: target.to_string(),
            users: self.users(),
            request_timeout: d.request_timeout,
            lag_threshold: d.lag_threshold,
            run_tag: format!("{}-{label}", self.tag),
            label: label.to_string(),
            progress: !self.quiet,
            cancel: cancel.clone(),
        }
    }
}

/// How many times, and what the gates compare against.
struct Gating {
    repeat: u32,
    baseline: Option<PathBuf>,
    junit: Option<PathBuf>,
}

pub async fn compare(args: CompareArgs) -> Result<()> {
    let plan = Plan::new(&args.load)?;
    let mut designs = args.designs.clone();
    designs.dedup();
    // The baseline is explicit: a committed one was measured on some machine, and comparing
    // another machine's run against it would call the difference a regression.
    let baseline = args.gates.baseline.clone();
    let gating = Gating {
        repeat: args.repeat,
        baseline,
        junit: args.gates.junit.clone(),
    };
    run_designs(&plan, &designs, &args.database, &gating).await
}

pub async fn run(args: RunArgs) -> Result<()> {
    let plan = Plan::new(&args.load)?;
    match (args.design, &args.target) {
        (Some(design), _) => {
            let gating = Gating {
                repeat: 1,
                baseline: None,
                junit: None,
            };
            run_designs(&plan, &[design], &args.database, &gating).await
        }
        (None, Some(target)) => run_target(&plan, target, args.allow_remote).await,
        (None, None) => bail!("give --design or --target"),
    }
}

/// A Ctrl-C or SIGTERM, or goose's own Ctrl-C handler (it takes SIGINT over while it runs).
fn cancellation() -> CancellationToken {
    let cancel = shutdown::on_signal();
    let watch = cancel.clone();
    tokio::spawn(async move {
        loop {
            if driver::stop_requested() {
                watch.cancel();
            }
            tokio::select! {
                _ = watch.cancelled() => {
                    driver::request_stop("fanbench is stopping");
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    cancel
}

async fn run_designs(
    plan: &Plan,
    designs: &[Design],
    database: &RunDatabaseArgs,
    gating: &Gating,
) -> Result<()> {
    let cancel = cancellation();
    let server = DatabaseServer::start(database).await?;
    let names: Vec<&str> = designs.iter().map(|d| d.name()).collect();
    eprintln!(
        "fanbench: {} ({:.0} s, peak {:.0}/s) against {}{}; run folder {}",
        plan.scenario.name,
        plan.shape.duration.as_secs_f64(),
        plan.shape.peak_rps,
        names.join(", "),
        if gating.repeat > 1 {
            format!(", {} times each", gating.repeat)
        } else {
            String::new()
        },
        plan.out.display()
    );
    let providers_child = spawn(
        "providers",
        vec!["serve".into(), "providers".into()],
        plan.out.join("providers.log"),
    )
    .await?;
    let providers = Providers::new(&providers_child.url);

    let mut runs = Vec::new();
    // "<design> (repeat k)" of every invalid run, for the exit.
    let mut invalid = Vec::new();
    for k in 1..=gating.repeat {
        if cancel.is_cancelled() {
            break;
        }
        let plan = plan.repeat(k, gating.repeat);
        std::fs::create_dir_all(&plan.out)?;
        let mut designs_out = BTreeMap::new();
        let mut telemetry = results::Telemetry {
            schema_version: results::SCHEMA_VERSION,
            designs: BTreeMap::new(),
        };
        for design in designs {
            if cancel.is_cancelled() {
                break;
            }
            let (results, samples) = run_one(&plan, *design, &server, &providers, &cancel)
                .await
                .with_context(|| format!("the {} design's run failed", design.name()))?;
            if !results.valid {
                invalid.push(if gating.repeat > 1 {
                    format!("{} (repeat {k})", design.name())
                } else {
                    design.name().to_string()
                });
            }
            designs_out.insert(design.name().to_string(), results);
            telemetry.designs.insert(design.name().to_string(), samples);
        }
        if designs_out.is_empty() {
            break;
        }
        let path = plan.out.join("telemetry.json");
        std::fs::write(&path, serde_json::to_string(&telemetry)?)
            .with_context(|| format!("writing {}", path.display()))?;
        write_results(&plan, designs_out, environment(&server).await)?;
        runs.push(plan.out.clone());
    }
    let _ = tokio::task::spawn_blocking(move || providers_child.stop(Duration::from_secs(5))).await;
    if runs.is_empty() {
        bail!("stopped before anything was measured");
    }

    // Gates first, so the report shows their verdicts.
    let outputs = gating::Outputs {
        junit: gating.junit.clone(),
        markdown: None,
    };
    let verdicts = if cancel.is_cancelled() {
        None
    } else {
        gating::evaluate(&plan.out, gating.baseline.as_deref(), &outputs)?
    };
    let loaded = runs
        .iter()
        .map(|d| report::Run::load(d))
        .collect::<Result<Vec<_>, _>>()?;
    if loaded.len() > 1 {
        for run in &loaded {
            report::write(std::slice::from_ref(run))?;
        }
    }
    let (html, _) = report::write_to(&plan.out, &loaded)?;
    println!("\nreport: {}", html.display());
    if cancel.is_cancelled() {
        bail!(
            "stopped early; what was measured is in {}",
            plan.out.display()
        );
    }
    if !invalid.is_empty() {
        bail!(
            "the run is invalid for {} (why: above, and in results.json); no verdict stands on it",
            invalid.join(", ")
        );
    }
    gating::outcome(verdicts.as_deref())
}

async fn run_one(
    plan: &Plan,
    design: Design,
    server: &DatabaseServer,
    providers: &Providers,
    cancel: &CancellationToken,
) -> Result<(DesignResults, results::DesignTelemetry)> {
    let db_name = format!("fanbench_{}_{}", design.name(), plan.tag);
    let database_url = fanbench_db::create_database(&server.url, &db_name, None).await?;
    let measured = measure_one(plan, design, &database_url, &db_name, providers, cancel).await;
    // Whether the measurement worked or not, the databases are done with.
    server.finished_with(&db_name).await;
    measured
}

/// [`run_one`] on its fresh database.
async fn measure_one(
    plan: &Plan,
    design: Design,
    database_url: &str,
    db_name: &str,
    providers: &Providers,
    cancel: &CancellationToken,
) -> Result<(DesignResults, results::DesignTelemetry)> {
    let name = design.name();
    let pool = fanbench_db::connect_pool(database_url, 2, Duration::from_secs(30)).await?;
    fanbench_db::migrate(&pool).await?;

    let (args, settings) =
        server_args(&plan.scenario, design, database_url, &providers.url).await?;
    let log = plan.out.join(format!("{name}.server.log"));
    let mut child = spawn(name, args, log.clone()).await?;
    providers.prepare(&plan.scenario.providers).await?;

    let sampler_pool = fanbench_db::connect_pool(database_url, 1, Duration::from_secs(30)).await?;
    let sampler = telemetry::Sampler::start(&child.url, &providers.url, sampler_pool, db_name);
    let options = plan.drive_options(&child.url, name, cancel);
    let measurement = driver::drive(Schedule::new(&plan.scenario)?, &plan.shape, &options).await?;
    // A stopped run's servers may have had the same Ctrl-C; it is invalid as stopped, not as crashed.
    let exited = |child: &mut ChildServer| child.exited().filter(|_| !measurement.cancelled);
    let mut server_exit = exited(&mut child);

    let drain = match design {
        // A dead server drains nothing: waiting would only run out the clock.
        Design::Async if server_exit.is_some() => Some(Drain {
            drained: false,
            seconds: 0.0,
        }),
        Design::Async => {
            let timeout = plan.scenario.servers.async_.drain_timeout;
            let (drained, took) = harness::wait_for_drain(&pool, timeout, cancel).await?;
            Some(Drain {
                drained,
                seconds: took.as_secs_f64(),
            })
        }
        Design::Sync => None,
    };
    // A server that dies while draining leaves a backlog that is not the design's.
    server_exit = server_exit.or_else(|| exited(&mut child));
    let samples = sampler.finish(measurement.started_at).await;
    // Stop the server before reconciling: a graceful stop lets requests it is still working on
    // (ones the driver already gave up on) finish or roll back, so the database is final.
    let _ = tokio::task::spawn_blocking(move || child.stop(Duration::from_secs(30))).await;
    let keys = match design {
        Design::Sync => Keys::Users,
        Design::Async => Keys::Outbox,
    };
    let r = &measurement.recorder;
    let status = r.requests().status;
    let refused = ["503", "5xx", "timeout", "connection_error"]
        .iter()
        .map(|k| status[*k])
        .sum();
    let answered = Answered {
        accepted: r.accepted(),
        refused,
    };
    let (reconciliation, delivery) =
        harness::reconcile(&pool, keys, providers, measurement.started_at, answered).await?;
    pool.close().await;

    let mut results = design_results(plan, &measurement, options.target.clone(), settings);
    if let Some(status) = server_exit {
        results.valid = false;
        results.invalid_reasons.insert(
            0,
            format!(
                "the {name} server exited during the run or its drain ({status}); its log: {}",
                log.display()
            ),
        );
    }
    if let Some(d) = &drain {
        if !d.drained {
            results.warnings.push(format!(
                "the queue had not drained {:.0} s after the load ended",
                d.seconds
            ));
        }
    }
    let rec = &reconciliation;
    if rec.lost > 0 {
        results.warnings.push(format!(
            "LOST: {} notifications owed to committed sign-ups are neither delivered nor held anywhere",
            rec.lost
        ));
    }
    if rec.undelivered > 0 {
        results.warnings.push(format!(
            "{} notifications were still queued at the drain deadline: backlog, not loss",
            rec.undelivered
        ));
    }
    if rec.dead > 0 {
        results.warnings.push(format!(
            "{} notifications were dead-lettered (`fanbench dlq list` while the database is kept)",
            rec.dead
        ));
    }
    results.drain = drain;
    results.delivery = delivery;
    results.reconciliation = Some(reconciliation);
    write_histograms(plan, name, &measurement)?;
    Ok((results, results::DesignTelemetry { samples }))
}

async fn run_target(plan: &Plan, target: &str, allow_remote: bool) -> Result<()> {
    check_loopback(target, allow_remote)?;
    let cancel = cancellation();
    let options = plan.drive_options(target.trim_end_matches('/'), "target", &cancel);
    let measurement = driver::drive(Schedule::new(&plan.scenario)?, &plan.shape, &options).await?;
    let results = design_results(
        plan,
        &measurement,
        target.to_string(),
        serde_json::Value::Null,
    );
    let invalid = !results.valid;
    write_histograms(plan, "target", &measurement)?;
    let mut designs = BTreeMap::new();
    designs.insert("target".to_string(), results);
    write_results(plan, designs, environment_without_database())?;
    let run = report::Run::load(&plan.out)?;
    let (html, _) = report::write(&[run])?;
    println!("\nreport: {}", html.display());
    if cancel.is_cancelled() {
        bail!(
            "stopped early; what was measured is in {}",
            plan.out.display()
        );
    }
    if invalid {
        bail!("the run against {target} is invalid (why: above, and in results.json)");
    }
    Ok(())
}

/// Refuses targets outside the loopback range unless allowed: a load test sent somewhere by a typo
/// is an attack on someone.
pub fn check_loopback(target: &str, allow_remote: bool) -> Result<()> {
    let rest = target
        .split_once("://")
        .map(|(_, r)| r)
        .context("the target must be a URL like http://127.0.0.1:7002")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        bail!(
            "refusing to send load to {host}: not a loopback address; pass --allow-remote if you mean it"
        );
    }
    Ok(())
}

async fn spawn(name: &str, args: Vec<String>, log: PathBuf) -> Result<ChildServer> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || ChildServer::spawn(&name, &args, &log))
        .await
        .context("spawning a server")?
}

/// The server command line of a design, and the settings it ran with.
async fn server_args(
    scenario: &Scenario,
    design: Design,
    database_url: &str,
    providers_url: &str,
) -> Result<(Vec<String>, serde_json::Value)> {
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    let mut args: Vec<String> = vec!["serve".into(), design.name().into()];
    args.extend([
        "--providers-url".into(),
        providers_url.into(),
        "--database-url".into(),
        database_url.into(),
    ]);
    let settings = match design {
        Design::Sync => {
            let s = &scenario.servers.sync;
            args.extend([
                "--pool-size".into(),
                s.pool_size.to_string(),
                "--acquire-timeout".into(),
                secs(s.acquire_timeout),
                "--provider-timeout".into(),
                secs(s.provider_timeout),
            ]);
            serde_json::to_value(s)?
        }
        Design::Async => {
            let s = &scenario.servers.async_;
            let log_url = fanbench_db::database_url_with_name(
                database_url,
                &format!(
                    "{}_logs",
                    database_url.rsplit('/').next().unwrap_or("fanbench")
                ),
            )?;
            fanbench_db::ensure_database(&log_url).await?;
            args.extend([
                "--log-database-url".into(),
                log_url,
                "--pool-size".into(),
                s.pool_size.to_string(),
                "--acquire-timeout".into(),
                secs(s.acquire_timeout),
                "--provider-timeout".into(),
                secs(s.provider_timeout),
                "--concurrency".into(),
                s.concurrency.to_string(),
                "--batch".into(),
                s.batch.to_string(),
                "--poll-interval".into(),
                secs(s.poll_interval),
                "--lease".into(),
                secs(s.lease),
                "--max-attempts".into(),
                s.max_attempts.to_string(),
                // Reconciliation reads the outbox after the run: keep finished rows until then.
                "--prune-after".into(),
                secs(scenario_span(scenario) + s.drain_timeout + Duration::from_secs(600)),
            ]);
            serde_json::to_value(s)?
        }
    };
    Ok((args, settings))
}

/// How long a design's run can last: the schedule plus the longest a request may take.
fn scenario_span(scenario: &Scenario) -> Duration {
    let shape = Schedule::shape(scenario)
        .map(|s| s.duration)
        .unwrap_or(Duration::from_secs(3600));
    shape + scenario.driver.request_timeout
}

fn design_results(
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
        trustworthy: m.trustworthy,
        valid: invalid_reasons.is_empty(),
        invalid_reasons,
        warnings,
    }
}

fn write_histograms(plan: &Plan, name: &str, m: &Measurement) -> Result<()> {
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
    Ok(())
}

/// Writes `results.json` into the plan's folder and prints the table.
fn write_results(
    plan: &Plan,
    designs: BTreeMap<String, DesignResults>,
    environment: Environment,
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
    };
    let path = plan.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print!("{}", report::text::table(&results));
    Ok(())
}

/// The PostgreSQL server the designs' databases are created on.
struct DatabaseServer {
    /// A URL on the server (its database part is replaced per design).
    url: String,
    _cluster: Option<fanbench_db::Cluster>,
    /// Drop each design's databases once reconciled (someone else's server, not kept).
    drop_after: bool,
}

impl DatabaseServer {
    async fn start(args: &RunDatabaseArgs) -> Result<Self> {
        match &args.database_url {
            Some(url) => Ok(Self {
                url: url.to_string(),
                _cluster: None,
                drop_after: !args.keep_databases,
            }),
            None => {
                eprintln!(
                    "fanbench: starting a throwaway PostgreSQL (set DATABASE_URL to use your own)"
                );
                let cluster = tokio::task::spawn_blocking(|| {
                    fanbench_db::Cluster::start(&fanbench_db::ClusterOptions::default())
                })
                .await??;
                Ok(Self {
                    url: cluster.url("postgres"),
                    _cluster: Some(cluster),
                    // The cluster goes with everything on it.
                    drop_after: false,
                })
            }
        }
    }

    /// A design's databases are reconciled: drop them (and the log store beside them) unless
    /// they are to be kept. A failure to drop is reported, not fatal: the measurement stands.
    async fn finished_with(&self, db_name: &str) {
        if !self.drop_after {
            if self._cluster.is_none() {
                eprintln!(
                    "fanbench: kept databases {db_name} and {db_name}_logs (--keep-databases)"
                );
            }
            return;
        }
        for name in [db_name.to_string(), format!("{db_name}_logs")] {
            if let Err(e) = fanbench_db::drop_database(&self.url, &name).await {
                eprintln!("fanbench: could not drop database {name}: {e} (drop it by hand)");
            }
        }
    }
}

async fn environment(server: &DatabaseServer) -> Environment {
    let mut env = environment_without_database();
    env.database = if server._cluster.is_some() {
        "throwaway cluster (fsync on)".into()
    } else {
        "DATABASE_URL".into()
    };
    if let Ok(pool) = fanbench_db::connect_pool(&server.url, 1, Duration::from_secs(5)).await {
        env.postgres_version = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await
            .ok();
        pool.close().await;
    }
    env
}

fn environment_without_database() -> Environment {
    let git_sha = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kb: u64 = m
            .lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    });
    Environment {
        fanbench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_sha,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        postgres_version: None,
        database: "none".into(),
    }
}

/// `fanbench report RUN_DIR…`
pub fn report(dirs: &[PathBuf]) -> Result<()> {
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
    use super::*;

    #[test]
    fn only_loopback_targets_without_allow_remote() {
        for ok in [
            "http://127.0.0.1:7002",
            "http://localhost:80/",
            "http://[::1]:7002",
            "http://127.8.9.10",
        ] {
            assert!(check_loopback(ok, false).is_ok(), "{ok}");
        }
        for remote in [
            "http://10.0.0.1:80",
            "http://example.com",
            "https://192.168.1.2:443/x",
        ] {
            let err = check_loopback(remote, false).unwrap_err().to_string();
            assert!(err.contains("--allow-remote"), "{err}");
            assert!(check_loopback(remote, true).is_ok());
        }
        assert!(
            check_loopback("127.0.0.1:7002", false).is_err(),
            "a URL needs a scheme"
        );
    }
}
