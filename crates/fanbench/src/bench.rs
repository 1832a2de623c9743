//! `fanbench bench …`: measurements against references, each in one run, so a figure and its
//! reference share a machine and a minute. Benchmarks measure; the tests check behaviour and never
//! time anything.
//!
//! - `driver`: the driver against a trivial endpoint, beside wrk against the same endpoint.
//! - `ingest`: pgbench running the async design's own sign-up statement, then the API alone.
//! - `e2e`: the async design end to end at rising rates, until a channel falls behind.
//!
//! Every step is a child process (`fanbench run`, `wrk`, `pgbench`) so its CPU time can be read
//! from the kernel's accounting of reaped children, the same way for fanbench and its references.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use results::DesignResults;
use serde::Serialize;

use crate::cli::RunDatabaseArgs;
use crate::cli::{BenchCommand, BenchDriverArgs, BenchE2eArgs, BenchIngestArgs, BenchOutArgs};
use crate::environment::DatabaseServer;
use crate::launch::ChildServer;
use crate::steps::{
    E2eStep, backlog_slope, cores_text, e2e_step, fanbench, read_design, signup_scenario, timed,
    write_json,
};
use crate::usage::process_cpu;

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Driver(args) => driver(args).await,
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::E2e(args) => e2e(args).await,
    }
}

// ---------------------------------------------------------------------------------------------
// bench driver

/// One rate's figures for the driver.
#[derive(Debug, Serialize)]
struct DriverStep {
    offered_rps: u32,
    intended: u64,
    sent: u64,
    /// Answers per second over the step's scheduled length.
    achieved_rps: f64,
    /// The driver process's user + system CPU, whole process (start-up included), per request sent.
    cpu_us_per_request: f64,
    cpu_seconds: f64,
    send_lag_p99_ms: f64,
    send_lag_max_ms: f64,
    latency_p99_ms: f64,
    trustworthy: bool,
    /// Load threads the driver split the schedule between.
    threads: Option<u32>,
    /// Slots that fell due while every user was busy (see `results::DriverRun`).
    slots_waited_for_user: Option<u64>,
    /// The endpoint's CPU over the step, per request (what the server side cost).
    endpoint_cpu_us_per_request: Option<f64>,
}

/// wrk against the same endpoint: closed loop, as fast as it goes.
#[derive(Debug, Serialize)]
struct WrkStep {
    connections: u32,
    requests: u64,
    requests_per_s: f64,
    cpu_seconds: f64,
    cpu_us_per_request: f64,
}

/// oha at the same rate: an open-model peer (`-q`, with `--latency-correction`).
#[derive(Debug, Serialize)]
struct OhaStep {
    offered_rps: u32,
    connections: u32,
    requests: u64,
    cpu_seconds: f64,
    cpu_us_per_request: f64,
    latency_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct DriverReport {
    cpus: usize,
    duration_s: f64,
    steps: Vec<DriverStep>,
    wrk: Option<WrkStep>,
    /// Why wrk did not run, when it did not.
    wrk_missing: Option<String>,
    /// oha at each rate, when installed.
    oha: Vec<OhaStep>,
    oha_missing: Option<String>,
}

async fn driver(args: BenchDriverArgs) -> Result<()> {
    let out = out_dir(&args.out, "driver")?;
    let duration: Duration = args.duration.into();
    let endpoint = spawn_child(
        "null endpoint",
        &["serve", "null"],
        &out.join("endpoint.log"),
    )?;
    eprintln!(
        "bench driver: endpoint {} ; results in {}",
        endpoint.url,
        out.display()
    );

    let mut steps = Vec::new();
    for &rate in &args.rates {
        let scenario = out.join(format!("driver-{rate}.toml"));
        std::fs::write(&scenario, driver_scenario(rate, duration, args.threads))?;
        let dir = out.join(format!("driver-{rate}"));
        let endpoint_before = process_cpu(endpoint.pid());
        let mut cmd = fanbench()?;
        cmd.args(["run", "--quiet", "--target", &endpoint.url, "--scenario"])
            .arg(&scenario)
            .arg("--out")
            .arg(&dir);
        eprintln!(
            "bench driver: {rate}/s for {}",
            humantime::format_duration(duration)
        );
        let (status, cpu) = timed(cmd).await?;
        let endpoint_cpu = match (endpoint_before, process_cpu(endpoint.pid())) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let d = read_design(&dir, results::TARGET)
            .with_context(|| format!("the {rate}/s step ({status}) left no results"))?;
        let sent = d.requests.sent.max(1) as f64;
        steps.push(DriverStep {
            offered_rps: rate,
            intended: d.requests.intended,
            sent: d.requests.sent,
            achieved_rps: d.requests.completed as f64 / duration.as_secs_f64(),
            cpu_us_per_request: cpu.as_secs_f64() * 1e6 / sent,
            cpu_seconds: cpu.as_secs_f64(),
            send_lag_p99_ms: d.send_lag_ms.p99,
            send_lag_max_ms: d.send_lag_ms.max,
            latency_p99_ms: d.latency_ms.p99,
            trustworthy: d.trustworthy,
            threads: d.driver.map(|r| r.threads),
            slots_waited_for_user: d.driver.map(|r| r.slots_waited_for_user),
            endpoint_cpu_us_per_request: endpoint_cpu.map(|c| c.as_secs_f64() * 1e6 / sent),
        });
    }

    let (wrk, wrk_missing) = if args.no_wrk {
        (None, Some("--no-wrk".to_string()))
    } else if !on_path("wrk") {
        (
            None,
            Some("wrk is not installed (sudo apt-get install -y wrk)".to_string()),
        )
    } else {
        eprintln!(
            "bench driver: wrk, {} connections, for {}",
            args.wrk_connections,
            humantime::format_duration(duration)
        );
        (
            Some(run_wrk(&endpoint.url, args.wrk_connections, duration, &out).await?),
            None,
        )
    };
    let mut oha = Vec::new();
    let oha_missing = if args.no_wrk {
        Some("--no-wrk".to_string())
    } else if !on_path("oha") {
        Some("oha is not installed (cargo install oha)".to_string())
    } else {
        for &rate in &args.rates {
            eprintln!(
                "bench driver: oha at {rate}/s for {}",
                humantime::format_duration(duration)
            );
            oha.push(run_oha(&endpoint.url, rate, args.wrk_connections, duration, &out).await?);
        }
        None
    };
    endpoint.stop(Duration::from_secs(5))?;

    let report = DriverReport {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        duration_s: duration.as_secs_f64(),
        steps,
        wrk,
        wrk_missing,
        oha,
        oha_missing,
    };
    print!("{}", driver_table(&report));
    write_json(&out.join("bench-driver.json"), &report)
}

fn driver_scenario(rate: u32, duration: Duration, threads: Option<u32>) -> String {
    let threads = threads.map_or(String::new(), |t| format!("threads = {t}\n"));
    format!(
        "name = \"bench-driver-{rate}\"\n\
         description = \"fanbench bench driver: {rate}/s, evenly spaced, at a trivial endpoint\"\n\
         [arrivals]\nprocess = \"uniform\"\n\
         phases = [{{ kind = \"constant\", duration = \"{}\", rate = {rate} }}]\n\
         [driver]\n\
         # The endpoint answers in well under a millisecond: users for 20 ms of latency suffice,\n\
         # and fewer users means fewer connections opened in the first second.\n\
         max_latency = \"20ms\"\n\
         {threads}",
        humantime::format_duration(duration)
    )
}

fn driver_table(r: &DriverReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "\nfanbench's driver at a trivial endpoint ({} cores, {:.0} s a step)\n",
        r.cpus, r.duration_s
    ));
    s.push_str(&format!(
        "{:>10} {:>16} {:>8} {:>12} {:>10} {:>12} {:>12} {:>12} {:>12} {:>8}  {}\n",
        "offered/s",
        "sent",
        "threads",
        "answered/s",
        "CPU µs/req",
        "lag p99 ms",
        "lag max ms",
        "lat p99 ms",
        "server µs/req",
        "waited",
        "on schedule"
    ));
    for st in &r.steps {
        s.push_str(&format!(
            "{:>10} {:>16} {:>8} {:>12.0} {:>10.1} {:>12.3} {:>12.2} {:>12.2} {:>12} {:>8}  {}\n",
            st.offered_rps,
            format!("{} of {}", st.sent, st.intended),
            st.threads.map_or("-".into(), |t| t.to_string()),
            st.achieved_rps,
            st.cpu_us_per_request,
            st.send_lag_p99_ms,
            st.send_lag_max_ms,
            st.latency_p99_ms,
            st.endpoint_cpu_us_per_request
                .map_or("-".into(), |v| format!("{v:.1}")),
            st.slots_waited_for_user
                .map_or("-".into(), |n| n.to_string()),
            on_schedule(st),
        ));
    }
    match (&r.wrk, &r.wrk_missing) {
        (Some(w), _) => {
            s.push_str(&format!(
                "{:>10} {:>16} {:>8} {:>12.0} {:>10.1}   (wrk, {} connections, closed loop)\n",
                "wrk", w.requests, 1, w.requests_per_s, w.cpu_us_per_request, w.connections
            ));
            if let Some(st) = r.steps.iter().find(|s| s.offered_rps == 5000) {
                s.push_str(&format!(
                    "CPU per request at 5,000/s: {:.1} µs = {:.1}× wrk's {:.1} µs\n",
                    st.cpu_us_per_request,
                    st.cpu_us_per_request / w.cpu_us_per_request,
                    w.cpu_us_per_request
                ));
            }
        }
        (None, Some(why)) => s.push_str(&format!("wrk: not run ({why})\n")),
        (None, None) => {}
    }
    for o in &r.oha {
        let ours = r.steps.iter().find(|st| st.offered_rps == o.offered_rps);
        s.push_str(&format!(
            "oha at {:>6}/s: {:>8} requests, {:>6.1} CPU µs/req, latency p99 {} ms{}\n",
            o.offered_rps,
            o.requests,
            o.cpu_us_per_request,
            o.latency_p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
            ours.map_or(String::new(), |st| format!(
                "  (fanbench: {:.1} µs/req, {:.1}× oha's)",
                st.cpu_us_per_request,
                st.cpu_us_per_request / o.cpu_us_per_request.max(f64::EPSILON)
            ))
        ));
    }
    if let Some(why) = &r.oha_missing {
        s.push_str(&format!("oha: not run ({why})\n"));
    }
    s
}

/// oha at `rate` with latency correction: an open-model load generator at the same rate, so its
/// CPU per request is the like-for-like reference (wrk's closed loop at full speed pays no
/// wake-ups at all).
async fn run_oha(
    url: &str,
    rate: u32,
    connections: u32,
    duration: Duration,
    out: &Path,
) -> Result<OhaStep> {
    let log = out.join(format!("oha-{rate}.json"));
    let mut cmd = Command::new("oha");
    cmd.args([
        "--no-tui",
        "--latency-correction",
        "--output-format",
        "json",
    ])
    .args(["-q", &rate.to_string(), "-c", &connections.to_string()])
    .args(["-z", &format!("{}s", duration.as_secs().max(1))])
    .args(["-m", "POST", "-H", "content-type: application/json"])
    .args([
        "-d",
        r#"{"email":"s1-t0.oha@load.fanbench.test","name":"Load user 1"}"#,
    ])
    .arg(format!("{url}/register"))
    .stdout(std::fs::File::create(&log)?)
    .stderr(std::process::Stdio::null());
    let (status, cpu) = timed(cmd).await?;
    let text = std::fs::read_to_string(&log)?;
    let (requests, p99) = parse_oha(&text)
        .with_context(|| format!("oha ({status}) wrote no report to {}", log.display()))?;
    Ok(OhaStep {
        offered_rps: rate,
        connections,
        requests,
        cpu_seconds: cpu.as_secs_f64(),
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        latency_p99_ms: p99,
    })
}

/// Answered requests (every status) and latency p99 in milliseconds from oha's JSON report.
fn parse_oha(text: &str) -> Option<(u64, Option<f64>)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let requests = v
        .get("statusCodeDistribution")?
        .as_object()?
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    let p99 = v
        .pointer("/latencyPercentiles/p99")
        .and_then(serde_json::Value::as_f64)
        .map(|s| s * 1000.0);
    Some((requests, p99))
}

/// "yes" when everything was sent with send lag p99 under a millisecond.
fn on_schedule(st: &DriverStep) -> &'static str {
    if st.sent == st.intended && st.send_lag_p99_ms < 1.0 {
        "yes"
    } else if st.trustworthy {
        "late (lag p99 ≥ 1 ms, under the run's 10 ms threshold)"
    } else {
        "NO: the driver was the bottleneck"
    }
}

async fn run_wrk(url: &str, connections: u32, duration: Duration, out: &Path) -> Result<WrkStep> {
    let script = out.join("wrk-post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.body = '{\"email\":\"s1-t0.wrk@load.fanbench.test\",\"name\":\"Load user 1\"}'\n",
    )?;
    let log = out.join("wrk.txt");
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c"])
        .arg(connections.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(format!("{url}/register"))
        .stdout(std::fs::File::create(&log)?);
    let (status, cpu) = timed(cmd).await?;
    let text = std::fs::read_to_string(&log)?;
    if !status.success() {
        bail!("wrk failed ({status}): {text}");
    }
    let (requests, rps) =
        parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))?;
    Ok(WrkStep {
        connections,
        requests,
        requests_per_s: rps,
        cpu_seconds: cpu.as_secs_f64(),
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
    })
}

/// Total requests ("N requests in 10.00s") and "Requests/sec:" from wrk's report.
fn parse_wrk(text: &str) -> Option<(u64, f64)> {
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    Some((requests, rps))
}

// ---------------------------------------------------------------------------------------------
// bench ingest

#[derive(Debug, Serialize)]
struct PgbenchStep {
    clients: u32,
    transactions: u64,
    tps: f64,
}

#[derive(Debug, Serialize)]
struct IngestStep {
    offered_rps: u32,
    sent: u64,
    accepted: u64,
    status_503: u64,
    accepted_p99_ms: f64,
    send_lag_p99_ms: f64,
    trustworthy: bool,
    valid: bool,
    passed: bool,
    why: Vec<String>,
}

#[derive(Debug, Serialize)]
struct IngestReport {
    cpus: usize,
    duration_s: f64,
    statement: String,
    pgbench: Vec<PgbenchStep>,
    /// The pgbench figure the API is measured against: at the API's pool size, else the best.
    reference_tps: f64,
    reference_clients: u32,
    api: Vec<IngestStep>,
    /// The highest offered rate the API held.
    held_rps: Option<u32>,
    /// `held_rps / reference_tps`.
    share_of_pgbench: Option<f64>,
}

async fn ingest(args: BenchIngestArgs) -> Result<()> {
    let out = out_dir(&args.out, "ingest")?;
    let duration: Duration = args.duration.into();
    let server = DatabaseServer::start(&RunDatabaseArgs {
        database_url: None,
        keep_databases: false,
    })
    .await?;

    // pgbench on a database of its own, migrated like the async design's.
    let pgbench_url = fresh_async_database(&server.url, "bench_pgbench").await?;
    let script = out.join("signup.pgbench.sql");
    let statement = pgbench_script(async_server::signup::SIGNUP_SQL)?;
    std::fs::write(&script, &statement)?;
    let pgbench = find_pgbench()?;
    let mut pg_steps = Vec::new();
    for &clients in &args.clients {
        eprintln!(
            "bench ingest: pgbench, {clients} client(s), {}",
            humantime::format_duration(duration)
        );
        let log = out.join(format!("pgbench-{clients}.txt"));
        let mut cmd = Command::new(&pgbench);
        cmd.args(["-n", "-M", "prepared", "-c"])
            .arg(clients.to_string())
            .arg("-j")
            .arg(clients.min(2).to_string())
            .arg("-T")
            .arg(duration.as_secs().max(1).to_string())
            .arg("-f")
            .arg(&script)
            .arg(&pgbench_url)
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::process::Stdio::null());
        let (status, _) = timed(cmd).await?;
        let text = std::fs::read_to_string(&log)?;
        let (transactions, tps) = parse_pgbench(&text)
            .with_context(|| format!("pgbench ({status}) printed no figures:\n{text}"))?;
        pg_steps.push(PgbenchStep {
            clients,
            transactions,
            tps,
        });
    }
    let pool = async_server::Settings::default().pool_size;
    let reference = pg_steps
        .iter()
        .find(|s| s.clients == pool)
        .or_else(|| pg_steps.iter().max_by(|a, b| a.tps.total_cmp(&b.tps)))
        .map(|s| (s.tps, s.clients))
        .unwrap_or((0.0, 0));

    // The API alone on a fresh database: no workers, so only ingest is measured.
    let api_url = fresh_async_database(&server.url, "bench_api").await?;
    let api = spawn_child(
        "async API",
        &[
            "serve",
            "async",
            "--role",
            "api",
            "--database-url",
            &api_url,
            // The API role never calls a provider.
            "--providers-url",
            "http://127.0.0.1:9",
        ],
        &out.join("api.log"),
    )?;
    let mut steps = Vec::new();
    for &rate in &args.rates {
        let scenario = out.join(format!("ingest-{rate}.toml"));
        std::fs::write(
            &scenario,
            signup_scenario("bench-ingest", rate, duration, None),
        )?;
        let dir = out.join(format!("ingest-{rate}"));
        let mut cmd = fanbench()?;
        cmd.args(["run", "--quiet", "--target", &api.url, "--scenario"])
            .arg(&scenario)
            .arg("--out")
            .arg(&dir);
        eprintln!("bench ingest: the API alone at {rate}/s");
        let _ = timed(cmd).await?;
        let d = read_design(&dir, results::TARGET)?;
        let step = ingest_step(rate, &d, args.p99);
        let passed = step.passed;
        eprintln!(
            "bench ingest: {rate}/s: accepted p99 {:.1} ms, 503 {}, {}",
            step.accepted_p99_ms,
            step.status_503,
            if passed {
                "held".to_string()
            } else {
                step.why.join("; ")
            }
        );
        steps.push(step);
        if !passed {
            break;
        }
    }
    api.stop(Duration::from_secs(10))?;
    let held = steps
        .iter()
        .filter(|s| s.passed)
        .map(|s| s.offered_rps)
        .max();
    let report = IngestReport {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        duration_s: duration.as_secs_f64(),
        statement,
        pgbench: pg_steps,
        reference_tps: reference.0,
        reference_clients: reference.1,
        api: steps,
        held_rps: held,
        share_of_pgbench: held
            .filter(|_| reference.0 > 0.0)
            .map(|h| f64::from(h) / reference.0),
    };
    print!("{}", ingest_table(&report, args.p99));
    write_json(&out.join("bench-ingest.json"), &report)
}

fn ingest_step(rate: u32, d: &DesignResults, p99_bound: f64) -> IngestStep {
    let status = |k: &str| d.requests.status.get(k).copied().unwrap_or(0);
    let accepted_p99 = d
        .latency_ms_by_class
        .get("2xx")
        .map_or(f64::INFINITY, |c| c.latency.p99);
    let mut why = Vec::new();
    if !d.valid {
        why.push(format!("invalid: {}", d.invalid_reasons.join(", ")));
    }
    if !d.trustworthy {
        why.push("the driver could not keep to the schedule".into());
    }
    if status("503") > 0 {
        why.push(format!("{} refused (503)", status("503")));
    }
    let failed = d.requests.sent - status("2xx");
    if failed > 0 {
        why.push(format!("{failed} not accepted"));
    }
    if accepted_p99 >= p99_bound {
        why.push(format!(
            "accepted p99 {accepted_p99:.1} ms ≥ {p99_bound} ms"
        ));
    }
    IngestStep {
        offered_rps: rate,
        sent: d.requests.sent,
        accepted: status("2xx"),
        status_503: status("503"),
        accepted_p99_ms: accepted_p99,
        send_lag_p99_ms: d.send_lag_ms.p99,
        trustworthy: d.trustworthy,
        valid: d.valid,
        passed: why.is_empty(),
        why,
    }
}

fn ingest_table(r: &IngestReport, p99: f64) -> String {
    let mut s = format!(
        "\nPostgreSQL's own rate for the async sign-up statement (pgbench, {} cores, {:.0} s each)\n",
        r.cpus, r.duration_s
    );
    for p in &r.pgbench {
        s.push_str(&format!(
            "  {:>3} client(s): {:>8.0} sign-ups/s\n",
            p.clients, p.tps
        ));
    }
    s.push_str(&format!(
        "\nThe async API alone (--role api, pool {}), p99 < {p99} ms and no 503 to hold\n",
        async_server::Settings::default().pool_size
    ));
    for st in &r.api {
        s.push_str(&format!(
            "  {:>6}/s: accepted {:>8} of {:>8}, p99 {:>7.1} ms, lag p99 {:>5.2} ms  {}\n",
            st.offered_rps,
            st.accepted,
            st.sent,
            st.accepted_p99_ms,
            st.send_lag_p99_ms,
            if st.passed {
                "held".to_string()
            } else {
                format!("FAILED: {}", st.why.join("; "))
            }
        ));
    }
    match (r.held_rps, r.share_of_pgbench) {
        (Some(h), Some(share)) => s.push_str(&format!(
            "\nhighest rate held: {h}/s = {share:.2} × pgbench's {:.0}/s ({} clients)\n",
            r.reference_tps, r.reference_clients
        )),
        _ => s.push_str("\nno rate was held\n"),
    }
    s
}

/// The server's sign-up statement as a pgbench script: each parameter becomes the SQL that makes
/// a value of the same shape (a time-ordered id, a unique email, all three channels), so
/// PostgreSQL does the work the API asks of it, and nothing else.
fn pgbench_script(sql: &str) -> Result<String> {
    // Time-ordered like the server's UUIDv7: 48 bits of milliseconds, then random bits.
    let uuid = "(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') \
                || substr(md5(random()::text), 1, 20))::uuid";
    let email = "('pgb-' || CAST(:r AS text) || '@bench.fanbench.test')";
    let phone = "'+15550000000'";
    let device = "('device-' || CAST(:r AS text))";
    let params = [
        ("$8", format!("ARRAY[{email}, {phone}, {device}]")),
        ("$7", "ARRAY['email', 'sms', 'push']".to_string()),
        ("$6", uuid.to_string()),
        ("$5", device.to_string()),
        ("$4", phone.to_string()),
        ("$3", "('Load user ' || CAST(:r AS text))".to_string()),
        ("$2", email.to_string()),
        ("$1", uuid.to_string()),
    ];
    let mut body = sql.to_string();
    for (p, v) in params {
        if !body.contains(p) {
            bail!("the sign-up statement has no {p}: update the pgbench script with it");
        }
        body = body.replace(p, &v);
    }
    if body.contains('$') {
        bail!("the sign-up statement has parameters the pgbench script does not fill");
    }
    // pgbench reads one statement per line unless it ends with a semicolon: flatten it.
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(format!("\\set r random(1, 9000000000000000000)\n{flat};\n"))
}

/// Transactions processed and tps from pgbench's report.
fn parse_pgbench(text: &str) -> Option<(u64, f64)> {
    let transactions = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((transactions, tps))
}

/// pgbench ships beside the server binaries (Debian's `postgresql-NN` package), which may be
/// reached through symlinks (e.g. /usr/local/bin/postgres) that do not include it.
fn find_pgbench() -> Result<PathBuf> {
    let dir = fanbench_db::find_pg_bin().context("pgbench comes with the PostgreSQL server")?;
    let beside_real = std::fs::canonicalize(dir.join("postgres"))
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("pgbench")));
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pgbench"))
            .find(|p| p.is_file())
    });
    [Some(dir.join("pgbench")), beside_real, on_path]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .context(
            "pgbench was not found beside the PostgreSQL server binaries or on PATH; it ships \
             with the server: sudo apt-get install -y postgresql",
        )
}

async fn fresh_async_database(server_url: &str, name: &str) -> Result<String> {
    let url = fanbench_db::database_url_with_name(server_url, name)?;
    fanbench_db::ensure_database(&url).await?;
    let pool = fanbench_db::connect_pool(&url, 2, Duration::from_secs(5)).await?;
    async_server::migrate(&pool).await?;
    pool.close().await;
    Ok(url)
}

// ---------------------------------------------------------------------------------------------
// bench e2e

#[derive(Debug, Serialize)]
struct E2eReport {
    cpus: usize,
    duration_s: f64,
    steps: Vec<E2eStep>,
    held_rps: Option<u32>,
}

async fn e2e(args: BenchE2eArgs) -> Result<()> {
    let out = out_dir(&args.out, "e2e")?;
    let duration: Duration = args.duration.into();
    // Each step starts its own throwaway cluster (a few seconds), so PostgreSQL's CPU and memory
    // are fanbench's to measure and appear in the step's results.
    let mut steps = Vec::new();
    for &rate in &args.rates {
        let scenario = out.join(format!("e2e-{rate}.toml"));
        // A short drain: a design that kept up has almost nothing queued when the load stops.
        std::fs::write(
            &scenario,
            signup_scenario("bench-e2e", rate, duration, Some("10s")),
        )?;
        let dir = out.join(format!("e2e-{rate}"));
        let mut cmd = fanbench()?;
        cmd.args(["run", "--quiet", "--design", "async", "--scenario"])
            .arg(&scenario)
            .arg("--out")
            .arg(&dir);
        eprintln!(
            "bench e2e: the async design at {rate}/s for {}",
            humantime::format_duration(duration)
        );
        let _ = timed(cmd).await?;
        let d = read_design(&dir, results::ASYNC)?;
        let slope = backlog_slope(&dir, results::ASYNC, duration);
        let step = e2e_step(rate, &d, slope, args.p99, args.delivery_p99);
        eprintln!(
            "bench e2e: {rate}/s: {}",
            if step.passed {
                "kept up".to_string()
            } else {
                step.why.join("; ")
            }
        );
        let passed = step.passed;
        steps.push(step);
        if !passed {
            break;
        }
    }
    let report = E2eReport {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        duration_s: duration.as_secs_f64(),
        held_rps: steps
            .iter()
            .filter(|s| s.passed)
            .map(|s| s.offered_rps)
            .max(),
        steps,
    };
    print!("{}", e2e_table(&report, &args));
    write_json(&out.join("bench-e2e.json"), &report)
}

fn e2e_table(r: &E2eReport, args: &BenchE2eArgs) -> String {
    let mut s = format!(
        "\nThe async design end to end ({} cores, {:.0} s a step; accepted p99 < {} ms, delivery p99 < {} ms, the queue not growing, nothing lost or left)\n",
        r.cpus, r.duration_s, args.p99, args.delivery_p99
    );
    for st in &r.steps {
        let delivery = st
            .delivery_p99_ms
            .iter()
            .map(|(c, v)| format!("{c} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "  {:>6}/s: accepted p99 {:>7.1} ms; delivery p99 ms: {delivery}; queue {:+.1} rows/s; delivered {} of {}  {}\n",
            st.offered_rps,
            st.accepted_p99_ms,
            st.backlog_slope_per_s.unwrap_or(f64::NAN),
            st.delivered,
            st.expected,
            if st.passed {
                "kept up".to_string()
            } else {
                format!("FELL BEHIND: {}", st.why.join("; "))
            }
        ));
        let cores = cores_text(&st.cores);
        if !cores.is_empty() {
            s.push_str(&format!("            cores used: {cores}\n"));
        }
    }
    match r.held_rps {
        Some(h) => s.push_str(&format!("\nhighest rate kept up with: {h}/s\n")),
        None => s.push_str("\nno rate was kept up with\n"),
    }
    s
}

// ---------------------------------------------------------------------------------------------
// shared

fn out_dir(args: &BenchOutArgs, what: &str) -> Result<PathBuf> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => PathBuf::from("reports/bench").join(format!(
            "{}-{what}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        )),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

fn spawn_child(name: &str, args: &[&str], log: &Path) -> Result<ChildServer> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ChildServer::spawn(name, &args, log)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oha_reports_parse() {
        let oha = r#"{"summary":{"successRate":1.0},"latencyPercentiles":{"p50":7.6e-5,"p99":0.000258},
                      "statusCodeDistribution":{"202":2990,"503":10},"errorDistribution":{}}"#;
        let (requests, p99) = parse_oha(oha).unwrap();
        assert_eq!(requests, 3000);
        assert!((p99.unwrap() - 0.258).abs() < 1e-9);
        assert_eq!(parse_oha("not json"), None);
    }

    #[test]
    fn wrk_and_pgbench_reports_parse() {
        let wrk = "Running 10s test @ http://127.0.0.1:1/register\n  1 threads and 50 connections\n\
                   925000 requests in 10.00s, 80.00MB read\nRequests/sec:  92500.12\nTransfer/sec: 8MB\n";
        assert_eq!(parse_wrk(wrk), Some((925_000, 92_500.12)));
        assert_eq!(parse_wrk("garbage"), None);
        let pgbench = "transaction type: x.sql\nnumber of transactions actually processed: 48020\n\
                       number of failed transactions: 0 (0.000%)\nlatency average = 0.8 ms\n\
                       initial connection time = 3.1 ms\ntps = 4802.123456 (without initial connection time)\n";
        assert_eq!(parse_pgbench(pgbench), Some((48_020, 4802.123456)));
        assert_eq!(parse_pgbench("error"), None);
    }

    #[test]
    fn the_pgbench_script_fills_every_parameter_of_the_servers_statement() {
        let script = pgbench_script(async_server::signup::SIGNUP_SQL).unwrap();
        assert!(!script.contains('$'), "{script}");
        assert!(script.starts_with("\\set r random("));
        // One statement on one line, ending the script.
        assert_eq!(script.lines().count(), 2, "{script}");
        assert!(script.trim_end().ends_with(';'));
        assert!(
            pgbench_script("SELECT $1").is_err(),
            "a statement of another shape is refused"
        );
    }

    #[test]
    fn scenarios_written_for_a_step_load() {
        for text in [
            driver_scenario(5000, Duration::from_secs(10), None),
            driver_scenario(20000, Duration::from_secs(10), Some(2)),
            signup_scenario("bench-e2e", 1000, Duration::from_secs(30), Some("10s")),
        ] {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &text).unwrap();
            scenario::Scenario::load(file.path()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
}
