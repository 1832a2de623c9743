//! `fanbench compare` and `fanbench run`: the orchestration of a run — start the database server
//! and the simulator, and for each design start its server, drive the load, drain, reconcile and
//! stop it. What runs is `plan`, how a server starts is `launch`, what is written is `output`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use results::{DesignResults, Drain};
use tokio_util::sync::CancellationToken;

use crate::cli::{CompareArgs, Design, RunArgs, RunDatabaseArgs};
use crate::environment::{DatabaseServer, environment, environment_without_database};
use crate::harness::{self, Answered, Keys, Providers};
use crate::launch::{ChildServer, server_args, spawn};
use crate::output::{design_results, write_histograms, write_results, write_shard_results};
use crate::plan::{Gating, Plan, check_loopback};
use crate::usage::{self, Source, Sources};
use crate::{gating, merge, shutdown, telemetry};

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
    if let (Some(shard), Some(design)) = (args.shard, args.design) {
        bail!(
            "--shard {shard} drives a slice of the load at a server every shard shares: give it \
             with --target URL, not --design {} (each shard would start a server of its own)",
            design.name()
        );
    }
    let mut plan = Plan::new(&args.load)?;
    if let Some(shard) = args.shard {
        plan = merge::shard_plan(plan, shard, args.load.out.is_some())?;
    }
    match (args.design, &args.target) {
        (Some(design), _) => {
            let gating = Gating {
                repeat: 1,
                baseline: None,
                junit: None,
            };
            run_designs(&plan, &[design], &args.database, &gating).await
        }
        (None, Some(target)) => run_target(&plan, target, args.allow_remote, args.shard).await,
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
    let sources = Sources {
        driver: Source::this_process(),
        simulator: Source::Process(providers_child.pid()),
        postgres: match (&database.database_url, server.postmaster_pid()) {
            (Some(_), _) => Source::Unavailable(
                "not measured: a PostgreSQL server fanbench did not start (DATABASE_URL), whose \
                 processes may be serving others too"
                    .into(),
            ),
            (None, Some(pid)) => Source::Tree(pid),
            (None, None) => Source::Unavailable(
                "not measured: the throwaway cluster's postmaster.pid could not be read".into(),
            ),
        },
    };

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
            let (results, samples) =
                run_one(&plan, *design, &server, &providers, &sources, &cancel)
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
    sources: &Sources,
    cancel: &CancellationToken,
) -> Result<(DesignResults, results::DesignTelemetry)> {
    let db_name = format!("fanbench_{}_{}", design.name(), plan.tag);
    let database_url = fanbench_db::create_database(&server.url, &db_name, None).await?;
    let measured = measure_one(
        plan,
        design,
        &database_url,
        &db_name,
        providers,
        sources,
        cancel,
    )
    .await;
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
    sources: &Sources,
    cancel: &CancellationToken,
) -> Result<(DesignResults, results::DesignTelemetry)> {
    let name = design.name();
    let pool = fanbench_db::connect_pool(database_url, 2, Duration::from_secs(30)).await?;
    fanbench_db::migrate(&pool).await?;

    // The broker design's NATS is the harness's, like the database server: it reads the
    // consumers to know when the design has drained.
    let nats = match design {
        Design::Broker => Some(crate::serve::start_nats().await?),
        _ => None,
    };
    let (args, settings) = server_args(
        &plan.scenario,
        design,
        database_url,
        db_name,
        &providers.url,
        nats.as_ref().map(|n| n.url()).as_deref(),
    )
    .await?;
    let log = plan.out.join(format!("{name}.server.log"));
    let mut child = spawn(name, args, log.clone()).await?;
    providers.prepare(&plan.scenario.providers).await?;

    let sampler_pool = fanbench_db::connect_pool(database_url, 1, Duration::from_secs(30)).await?;
    let sampler = telemetry::Sampler::start(&child.url, &providers.url, sampler_pool, db_name);
    let options = plan.drive_options(&child.url, name, cancel);
    // Who used the machine is measured over the load and the drain: what the design cost.
    let broker = nats.as_ref().map(|n| match n.pid() {
        Some(pid) => Source::Process(pid),
        None => {
            Source::Unavailable("not measured: the nats-server's pid file could not be read".into())
        }
    });
    let window =
        usage::Window::start_with_broker(Source::Process(child.pid()), sources.clone(), broker);
    let measurement = driver::drive(plan.scenario.schedule()?, &plan.shape, &options).await?;
    // A stopped run's servers may have had the same Ctrl-C; it is invalid as stopped, not as crashed.
    let exited = |child: &mut ChildServer| child.exited().filter(|_| !measurement.cancelled);
    let mut server_exit = exited(&mut child);

    let drain = match design {
        // A dead server drains nothing: waiting would only run out the clock.
        Design::Async | Design::Broker if server_exit.is_some() => Some(Drain {
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
        Design::Broker => {
            let settings = &plan.scenario.servers.broker;
            let url = nats.as_ref().map(|n| n.url()).unwrap_or_default();
            let broker = broker_server::stream::Broker::attach(&url)
                .await
                .context("could not reach the broker design's NATS to drain it")?;
            let (drained, took) =
                harness::wait_for_broker_drain(&pool, &broker, settings.drain_timeout, cancel)
                    .await?;
            Some(Drain {
                drained,
                seconds: took.as_secs_f64(),
            })
        }
        Design::Sync => None,
    };
    // A server that dies while draining leaves a backlog that is not the design's.
    server_exit = server_exit.or_else(|| exited(&mut child));
    let processes = window.finish().await;
    let samples = sampler.finish(measurement.started_at).await;
    // Stop the server before reconciling: a graceful stop lets requests it is still working on
    // (ones the driver already gave up on) finish or roll back, so the database is final.
    let _ = tokio::task::spawn_blocking(move || child.stop(Duration::from_secs(30))).await;
    let keys = match design {
        Design::Sync => Keys::Users,
        Design::Async => Keys::Outbox,
        Design::Broker => Keys::Broker {
            drained: drain.as_ref().is_some_and(|d| d.drained),
        },
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
    if let Some(nats) = nats {
        let _ = tokio::task::spawn_blocking(move || nats.stop()).await;
    }

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
    results.processes = Some(processes);
    results.delivery = delivery;
    results.reconciliation = Some(reconciliation);
    write_histograms(plan, name, &measurement)?;
    Ok((results, results::DesignTelemetry { samples }))
}

async fn run_target(
    plan: &Plan,
    target: &str,
    allow_remote: bool,
    shard: Option<driver::Shard>,
) -> Result<()> {
    check_loopback(target, allow_remote)?;
    let cancel = cancellation();
    let mut options = plan.drive_options(target.trim_end_matches('/'), "target", &cancel);
    let mut schedule = plan.scenario.schedule()?;
    if let Some(shard) = shard {
        options.users = merge::shard_users(options.users, shard);
        options.threads = plan.threads(1.0 / f64::from(shard.count()));
        schedule = schedule.sharded(shard);
    }
    let not_ours = || {
        Source::Unavailable(
            "not measured: `run --target` drives a server fanbench did not start".into(),
        )
    };
    let window = usage::Window::start(
        not_ours(),
        Sources {
            driver: Source::this_process(),
            simulator: not_ours(),
            postgres: not_ours(),
        },
    );
    let measurement = driver::drive(schedule, &plan.shape, &options).await?;
    let processes = window.finish().await;
    let mut results = design_results(
        plan,
        &measurement,
        target.to_string(),
        serde_json::Value::Null,
    );
    results.processes = Some(processes);
    let invalid = !results.valid;
    write_histograms(plan, "target", &measurement)?;
    let mut designs = BTreeMap::new();
    designs.insert("target".to_string(), results);
    write_shard_results(
        plan,
        designs,
        environment_without_database(),
        shard.map(merge::shard_of),
    )?;
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
