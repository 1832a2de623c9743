//! The broker design as processes: `serve broker` with its API and its workers apart, so the
//! worker process can be killed alone; the throwaway nats-server it starts and removes; its dead
//! letters through `fanbench dlq --design broker`; and `compare` draining and reconciling it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{fanbench, load_turn, slow_providers, spawn, tiny_scenario, wait_exit};

/// Args of `serve broker` for one role on shared database, log store and NATS.
fn broker_args(
    role: &str,
    providers: &str,
    database_url: &str,
    log_database_url: &str,
    nats_url: &str,
) -> Vec<String> {
    [
        "serve",
        "broker",
        "--listen",
        "127.0.0.1:0",
        "--role",
        role,
        "--providers-url",
        providers,
        "--database-url",
        database_url,
        "--log-database-url",
        log_database_url,
        "--nats-url",
        nats_url,
        // A short ack wait, so the killed worker's messages come back soon.
        "--lease",
        "2s",
        "--provider-timeout",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// kill -9 of the broker design's worker process while sends are in flight: its unacked messages
/// come back after the ack wait, and a restarted worker delivers every accepted sign-up on each of
/// its channels. The API, in a process of its own, answers 202 throughout.
#[tokio::test]
async fn a_worker_killed_mid_send_is_finished_by_a_restarted_worker() {
    // Sends take 300 ms, so the kill lands with sends under way.
    let dir = tempfile::tempdir().unwrap();
    let providers = slow_providers(dir.path(), "300ms");
    let nats = tokio::task::spawn_blocking(broker_server::nats::NatsServer::start)
        .await
        .unwrap()
        .unwrap();
    let database_url = fanbench_db::testing::fresh_database().await.unwrap();
    let log_database_url = fanbench_db::testing::fresh_empty_database().await.unwrap();
    let args = |role: &str| {
        broker_args(
            role,
            &providers.url,
            &database_url,
            &log_database_url,
            &nats.url(),
        )
    };
    let api = spawn(&as_strs(&args("api")));
    let workers_args = args("workers");
    let workers = spawn(&as_strs(&workers_args));

    let http = reqwest::Client::new();
    let sign_up = |i: u32| {
        let http = http.clone();
        let url = format!("{}/register", api.url);
        async move {
            let body = json!({ "email": format!("w{i}@example.com"), "name": "W", "phone": "+441234567890", "device_token": "d" });
            let r = http.post(&url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202, "sign-up {i}: never a 500, never refused");
            r.json::<Value>().await.unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let mut events: Vec<String> = futures::future::join_all((0..60).map(sign_up)).await;

    // Kill the workers while sends are in flight (their gauge says so).
    let started = Instant::now();
    loop {
        let metrics = http
            .get(format!("{}/metrics", workers.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let in_flight: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("fanbench_deliveries_in_flight{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum();
        if in_flight > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no send ever in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Command::new("kill")
        .args(["-KILL", &workers.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(workers);

    // Sign-ups go on while no worker runs: the API and the relay do not need one.
    events.extend(futures::future::join_all((60..80).map(sign_up)).await);
    let mut workers = spawn(&as_strs(&workers_args));

    let expected: BTreeSet<String> = events
        .iter()
        .flat_map(|e| ["email", "sms", "push"].map(|c| format!("{e}:{c}")))
        .collect();
    let started = Instant::now();
    loop {
        let delivered: BTreeSet<String> = provider_sim::testing::ledger(&http, &providers.url)
            .await
            .into_iter()
            .map(|d| d.key)
            .collect();
        if delivered == expected {
            break;
        }
        let unexpected: Vec<_> = delivered.difference(&expected).take(3).collect();
        assert!(unexpected.is_empty(), "never accepted: {unexpected:?}");
        let lost: Vec<_> = expected.difference(&delivered).take(3).collect();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not delivered: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = provider_sim::testing::summary(&http, &providers.url).await;
    for counts in [summary.email, summary.sms, summary.push] {
        assert_eq!(counts.delivered as usize, events.len(), "{summary:?}");
    }
    eprintln!(
        "worker kill -9: {} notifications delivered, {} duplicate sends absorbed",
        expected.len(),
        summary.email.duplicates + summary.sms.duplicates + summary.push.duplicates
    );

    crate::signal(&workers, "-TERM");
    assert!(wait_exit(&mut workers, Duration::from_secs(20)).success());
    tokio::task::spawn_blocking(move || nats.stop())
        .await
        .unwrap();
}

/// Without --nats-url, `serve broker` starts a throwaway nats-server (and PostgreSQL), serves a
/// sign-up end to end, and removes both on SIGTERM.
#[tokio::test]
async fn serve_broker_starts_and_removes_its_own_nats_server() {
    let providers = spawn(&["serve", "providers", "--listen", "127.0.0.1:0"]);
    let mut server = spawn(&[
        "serve",
        "broker",
        "--listen",
        "127.0.0.1:0",
        "--providers-url",
        &providers.url,
    ]);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/register", server.url))
        .json(&json!({ "email": "n@example.com", "name": "N" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started = Instant::now();
    while provider_sim::testing::ledger(&http, &providers.url)
        .await
        .is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(60), "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::signal(&server, "-TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
    let log: Vec<String> = server.stderr.try_iter().collect();
    let nats_dir = log
        .iter()
        .find(|l| l.contains("throwaway nats-server started"))
        .and_then(|l| l.split("dir=").nth(1))
        .map(|d| std::path::PathBuf::from(d.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no nats dir in the log: {log:?}"));
    assert!(!nats_dir.exists(), "its store is removed: {nats_dir:?}");
    // (`postgres_running_in` looks for any process naming the directory: nats-server names its
    // store there.)
    assert!(
        !crate::postgres_running_in(&nats_dir),
        "no nats-server is left on {nats_dir:?}"
    );
}

#[test]
fn a_missing_nats_server_names_the_install_command() {
    let out = fanbench()
        .args([
            "serve",
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--providers-url",
            "http://127.0.0.1:9",
        ])
        .env("FANBENCH_NATS_SERVER", "/nonexistent/nats-server")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install nats-server"), "{stderr}");
}

#[tokio::test]
async fn dlq_lists_and_replays_the_broker_designs_dead_letters() {
    let url = fanbench_db::testing::fresh_database().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    broker_server::migrate(&pool).await.unwrap();
    let user = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, name, phone) VALUES ($1, 'b@example.com', 'B', '+441234567890')")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let event = uuid::Uuid::now_v7();
    broker_server::dlq::record(
        &pool,
        &broker_server::dlq::NewDeadLetter {
            event_id: event,
            user_id: user,
            channel: signup_core::Channel::Sms,
            address: "+441234567890",
            attempt: 8,
            last_error: "sms provider answered 503",
        },
    )
    .await
    .unwrap();
    let run = |args: &[&str]| {
        fanbench()
            .arg("dlq")
            .args(args)
            .args(["--design", "broker", "--database-url", &url])
            .output()
            .unwrap()
    };
    let list = run(&["list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["channel"], "sms");
    assert_eq!(lines[0]["event_id"], event.to_string());
    assert!(run(&["list", "--channel", "email"]).stdout.is_empty());

    let replay = run(&["replay"]);
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 1 dead letter(s)"));
    assert!(run(&["list"]).stdout.is_empty());
    // Back in the outbox for the relay, for its one channel, under a message id of its own.
    let (msg_id, channels): (String, Vec<String>) =
        sqlx::query_as("SELECT msg_id, channels FROM broker_outbox WHERE published_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        msg_id.starts_with(&format!("{event}:sms:replay:")),
        "{msg_id}"
    );
    assert_eq!(channels, vec!["sms".to_string()]);
}

/// `compare --designs broker` drains the outbox and the consumers and reconciles the broker
/// design against the ledger: nothing lost, nothing left.
#[test]
fn compare_runs_the_broker_design_and_loses_nothing() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(dir.path());
    let out = dir.path().join("run");
    let run = fanbench()
        .args(["compare", "--quiet", "--designs", "broker", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "compare failed:\n{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    results::validate(&doc).unwrap();
    let d = &doc["designs"]["broker"];
    assert_eq!(d["valid"], true, "{d}");
    assert_eq!(d["drain"]["drained"], true, "{d}");
    let r = &d["reconciliation"];
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["undelivered"], 0, "{r}");
    assert_eq!(r["delivered"], r["expected"], "{r}");
    assert!(r["delivered"].as_u64().unwrap() >= 40, "{r}");
    assert!(Path::new(&out).join("broker.server.log").is_file());
    // The design's cost includes its broker: the nats-server is a process of its own in the record.
    let broker = &d["processes"]["broker"];
    assert!(
        broker["cpu_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{broker}"
    );
    assert!(
        broker["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "{broker}"
    );
}
