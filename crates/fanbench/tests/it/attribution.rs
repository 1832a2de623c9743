//! Attribution proved on injected bottlenecks: each test puts one known bottleneck in place, runs
//! the real design past it (`fanbench capacity`, one short step at a rate well beyond the
//! injected knee, and for a queue design the ingest search's one step more), and checks that the
//! knee is named for that resource, with the figures that show it.
//!
//! Each scenario leaves nothing else near a limit: providers at fixed latencies (so no provider is
//! slow unless made so), every sign-up with a phone and a device.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{fanbench, load_turn};
use serde_json::Value;

/// Providers at fixed latencies, sync and async settings, and a drain short enough that a step
/// whose delivery fell behind does not wait long for it.
fn scenario(providers: &str, servers: &str) -> String {
    format!(
        "name = \"injected\"\n\
         [arrivals]\nphases = [{{ kind = \"constant\", duration = \"8s\", rate = 1 }}]\n\
         [payload]\nphone_share = 1.0\ndevice_share = 1.0\n\
         [driver]\nmax_latency = \"6s\"\nrequest_timeout = \"15s\"\n\
         {providers}\n{servers}\n"
    )
}

fn fixed(email: &str, sms: &str, push: &str) -> String {
    let at = |v: &str| format!("latency = {{ dist = \"fixed\", value = \"{v}\" }}\n");
    format!(
        "[providers.email]\n{}[providers.sms]\n{}[providers.push]\n{}",
        at(email),
        at(sms),
        at(push)
    )
}

/// Runs one capacity search of `design` starting at `rate`, one step per search, 8 s a step (2 s
/// of it warm-up); returns the design's search from capacity.json and the command's output.
fn search(dir: &Path, scenario: &str, design: &str, rate: u32, env: &[(&str, &str)]) -> Value {
    // An injected bottleneck is a what-if by definition: every design setting the scenario
    // changes is named so, as the like-for-like check asks.
    let mut table: toml::Table = toml::from_str(scenario).unwrap();
    let what_if: Vec<toml::Value> = table
        .get("servers")
        .and_then(|s| s.as_table())
        .into_iter()
        .flat_map(|servers| {
            servers.iter().flat_map(|(d, keys)| {
                keys.as_table()
                    .into_iter()
                    .flat_map(move |k| k.keys().map(move |k| toml::Value::from(format!("{d}.{k}"))))
            })
        })
        .collect();
    table.insert("what_if".into(), toml::Value::Array(what_if));
    let file = dir.join("scenario.toml");
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    let out = dir.join("out");
    let mut cmd = fanbench();
    cmd.args(["capacity", "--designs", design, "--scenario"])
        .arg(&file)
        .args([
            "--start-rate",
            &rate.to_string(),
            "--max-steps",
            "1",
            "--repeat",
            "1",
        ])
        .args(["--step-duration", "8s", "--warmup", "2s", "--out"])
        .arg(&out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    doc["designs"][design].clone()
}

/// The knee's attribution, with the step it was read at failing.
fn knee<'a>(search: &'a Value, which: &str, rate: u32) -> &'a Value {
    let b = &search[which];
    // Shown with --nocapture, and with a failure's output.
    eprintln!("{which}: {b:#}");
    assert_eq!(b["offered_rps"], rate, "{search:#}");
    b
}

fn signal(b: &Value, name: &str) -> f64 {
    b["signals"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no signal {name}: {b:#}"))
}

fn evidence(b: &Value) -> String {
    b["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pool of 2: each sign-up holds its connection for three 100 ms provider calls, so 2
/// connections serve at most about 6.5 sign-ups a second (Little's law); 16/s is well past it.
/// No provider holds the connection for more than a third of the hold.
#[test]
fn a_pool_of_two_is_named_the_connection_pool() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        &fixed("100ms", "100ms", "100ms"),
        "[servers.sync]\npool_size = 2\nacquire_timeout = \"5s\"\n",
    );
    let found = search(dir.path(), &s, "sync", 16, &[]);
    let b = knee(&found, "bottleneck", 16);
    assert_eq!(b["resource"], "connection pool", "{b:#}");
    assert_eq!(signal(b, "pool_size"), 2.0);
    assert!(signal(b, "pool_saturated_share") > 0.5, "{b:#}");
    let e = evidence(b);
    assert!(
        e.contains("of 2 connections in use with requests waiting"),
        "{e}"
    );
    assert!(e.contains("each sign-up held its connection"), "{e}");
}

/// A provider at 500 ms in the sync design, whose request holds its pooled connection across
/// every provider call: the SMS call is most of the hold (500 of about 600 ms), so the pool of 10
/// tops out near 16/s and what holds it is the SMS provider's latency.
#[test]
fn a_provider_at_500_ms_is_named_that_providers_latency() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        &fixed("50ms", "500ms", "50ms"),
        "[servers.sync]\npool_size = 10\nacquire_timeout = \"5s\"\n",
    );
    let found = search(dir.path(), &s, "sync", 40, &[]);
    let b = knee(&found, "bottleneck", 40);
    assert_eq!(b["resource"], "provider latency (sms)", "{b:#}");
    // The simulator's own figure: every SMS took its fixed 500 ms.
    assert!(signal(b, "provider_sms_latency_mean_ms") >= 500.0, "{b:#}");
    assert!(
        signal(b, "hold_provider_sms_ms") > signal(b, "hold_ms") / 2.0,
        "{b:#}"
    );
    assert!(signal(b, "pool_saturated_share") > 0.5, "{b:#}");
    let e = evidence(b);
    assert!(
        e.contains("the sms provider's calls held each sign-up's connection"),
        "{e}"
    );
}

/// A send limit of 4 on SMS. The async design's send slots are set per design, not per channel
/// (`concurrency`, `max_concurrency`: floor and cap of every channel's adaptive limit), so a
/// limit of 4 is put on every channel, and SMS, the one slow provider (100 ms against 10 ms), is
/// the one it holds back: 4 ÷ 100 ms = 40 SMS a second, where email and push could send 400.
/// At 80 sign-ups a second the SMS backlog grows: the end-to-end knee.
#[test]
fn a_send_limit_of_four_on_sms_is_named_that_channels_concurrency() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        &fixed("10ms", "100ms", "10ms"),
        "[servers.async]\nconcurrency = 4\nmax_concurrency = 4\ndrain_timeout = \"1s\"\n",
    );
    let found = search(dir.path(), &s, "async", 80, &[]);
    let b = knee(&found, "delivery_bottleneck", 80);
    assert_eq!(b["resource"], "channel concurrency (sms)", "{b:#}");
    assert_eq!(signal(b, "channel_sms_limit_last"), 4.0);
    assert!(signal(b, "channel_sms_saturated_share") > 0.5, "{b:#}");
    assert!(signal(b, "channel_email_saturated_share") <= 0.5, "{b:#}");
    let e = evidence(b);
    assert!(e.contains("sms: send slots saturated in"), "{e}");
}

/// An SMS provider that accepts 20 sends a second and answers 429 above it, behind the async
/// design at 60 sign-ups a second (60 SMS a second): the end-to-end knee is its rate limit.
#[test]
fn a_provider_answering_429_above_a_rate_is_named_its_rate_limit() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    // `fixed` writes email, sms, push in that order: the limit goes in the sms table.
    let providers = fixed("10ms", "10ms", "10ms")
        .replace("[providers.push]", "rate_limit = 20.0\n[providers.push]");
    assert!(providers.contains("rate_limit = 20.0"), "{providers}");
    let s = scenario(&providers, "[servers.async]\ndrain_timeout = \"1s\"\n");
    let found = search(dir.path(), &s, "async", 60, &[]);
    let b = knee(&found, "delivery_bottleneck", 60);
    assert_eq!(b["resource"], "provider rate limit (sms)", "{b:#}");
    assert!(signal(b, "provider_sms_429") > 0.0, "{b:#}");
    assert!(signal(b, "provider_sms_refusing_share") > 0.5, "{b:#}");
    assert!(
        evidence(b).contains("the sms provider answered 429 in"),
        "{b:#}"
    );
}

/// Busy-looping processes, four per core, for as long as it lives; killed on drop.
struct Hog(Vec<Child>);

impl Hog {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Hog((0..4 * cores)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect())
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CPU hog: four busy processes per core for the whole search, against the async design at a
/// rate it serves on idle cores. Whatever gives way first (the driver's schedule, the API's p99,
/// its pool), the knee is named for the cores the hog took.
#[test]
fn a_cpu_hog_is_named_the_cpu() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        &fixed("10ms", "10ms", "10ms"),
        "[servers.async]\ndrain_timeout = \"1s\"\n",
    );
    let hog = Hog::start();
    let found = search(dir.path(), &s, "async", 400, &[]);
    drop(hog);
    // The first limit that failed: the end-to-end one is searched first.
    let which = if found["delivery_bottleneck"].is_object() {
        "delivery_bottleneck"
    } else {
        "bottleneck"
    };
    let b = knee(&found, which, 400);
    assert_eq!(b["resource"], "CPU", "{found:#}");
    assert!(signal(b, "cpu_stall_share") > 0.5, "{b:#}");
    assert!(signal(b, "machine_cores_busy") > 0.0, "{b:#}");
}

/// A database lock held: a separate connection holds today's sign-up counter row (which every
/// sync sign-up updates before it commits) locked for the step, so every sign-up waits on it
/// with its pooled connection. The pool fills too; the lock is named, as what holds it. The
/// acquire timeout is 1 s, so the sign-ups queued behind the ten stuck ones are refused soon and
/// do not tie up the driver's users (200 requests over the window, so that one late send is not
/// the whole send lag p99).
#[test]
fn a_database_lock_held_is_named_database_locks() {
    let _turn = load_turn();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The steps create their databases on this server (fanbench_sync_<time>).
    let any = runtime
        .block_on(fanbench_db::testing::fresh_database())
        .unwrap();
    let (server, _) = any.rsplit_once('/').unwrap();
    let server = format!("{server}/postgres");
    let locker = runtime.spawn(hold_counter_row(server.clone()));
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(
        &fixed("10ms", "10ms", "10ms"),
        "[servers.sync]\npool_size = 10\nacquire_timeout = \"1s\"\n",
    );
    let found = search(dir.path(), &s, "sync", 20, &[("DATABASE_URL", &server)]);
    let locked = runtime.block_on(locker).unwrap();
    assert!(locked, "the step's database never appeared");
    let b = knee(&found, "bottleneck", 20);
    assert!(
        b["resource"]
            .as_str()
            .unwrap()
            .starts_with("database locks ("),
        "{b:#}"
    );
    assert!(signal(b, "pg_lock_bound_share") > 0.5, "{b:#}");
    assert!(signal(b, "pg_lock_waits_mean") >= 1.0, "{b:#}");
    assert!(evidence(b).contains("waited on a lock in"), "{b:#}");
}

/// Waits for the step's database and its counter table, locks today's row for 10 s (the step and
/// its start-up), then lets go; whether it got to lock it.
async fn hold_counter_row(server: String) -> bool {
    let admin = sqlx::PgPool::connect(&server).await.unwrap();
    let mut db: Option<sqlx::PgPool> = None;
    for _ in 0..600 {
        if db.is_none() {
            let name: Option<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datname LIKE 'fanbench_sync_%' \
                  AND datname NOT LIKE '%_logs' LIMIT 1",
            )
            .fetch_optional(&admin)
            .await
            .unwrap();
            if let Some(name) = name {
                let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
                db = sqlx::PgPool::connect(&url).await.ok();
            }
        }
        // Ready once the run has migrated it.
        if let Some(pool) = &db
            && sqlx::query(
                "INSERT INTO signup_counter (day, count) VALUES (current_date, 0) \
                 ON CONFLICT (day) DO NOTHING",
            )
            .execute(pool)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.close().await;
    let Some(pool) = db else { return false };
    let Ok(mut tx) = pool.begin().await else {
        return false;
    };
    let locked = sqlx::query("SELECT 1 FROM signup_counter WHERE day = current_date FOR UPDATE")
        .execute(&mut *tx)
        .await
        .is_ok();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The run may have dropped the database (and this connection) already.
    let _ = tx.rollback().await;
    pool.close().await;
    locked
}
