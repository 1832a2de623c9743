//! `fanbench capacity --target` against a reference server whose capacity is known: at most
//! `SLOTS` requests are served at once, each for `SERVICE`; a request that waits longer than
//! `MAX_WAIT` for a slot is answered 503. No steady rate above SLOTS ÷ SERVICE can be served, and
//! well below it nothing waits long, so the capacity found must lie within a stated tolerance of
//! SLOTS ÷ SERVICE (40/s here): above half of it, and not beyond it by more than the search's
//! resolution plus what a 3-second step's queue can absorb (10 %).

use std::sync::Arc;
use std::time::Duration;

use super::{fanbench, load_turn};
use serde_json::Value;

const SLOTS: usize = 2;
const SERVICE: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_millis(200);

/// Starts the reference server on its own runtime thread; returns its base URL.
fn reference_server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(SLOTS));
            let router = axum::Router::new().route(
                "/register",
                axum::routing::post(move |_body: axum::body::Bytes| {
                    let slots = slots.clone();
                    async move {
                        match tokio::time::timeout(MAX_WAIT, slots.acquire_owned()).await {
                            Ok(Ok(_permit)) => {
                                tokio::time::sleep(SERVICE).await;
                                axum::http::StatusCode::ACCEPTED
                            }
                            _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        }
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn capacity_finds_a_reference_servers_known_limit() {
    let _turn = load_turn();
    let url = reference_server();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("reference.toml");
    std::fs::write(
        &scenario,
        "name = \"reference\"\n\
         [arrivals]\nphases = [{ kind = \"constant\", duration = \"3s\", rate = 10 }]\n\
         [driver]\nmax_latency = \"1s\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = fanbench()
        .args(["capacity", "--target", &url, "--scenario"])
        .arg(&scenario)
        // Steps of at least 100 requests: with fewer, one late send is the whole send lag p99, and
        // a test process busy with other tests can make one late.
        .args([
            "--step-duration",
            "5s",
            "--start-rate",
            "20",
            "--resolution",
            "0.1",
        ])
        .args(["--max-steps", "8", "--slo", "requests.share.503 < 0.01"])
        // The rates that decide the limit run twice more each.
        .args(["--repeat", "3"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    let target = &doc["designs"]["target"];
    let truth = SLOTS as f64 / SERVICE.as_secs_f64();
    let found = target["capacity_rps"]
        .as_f64()
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(target["stop"], "converged", "{stdout}");
    assert!(
        found >= 0.5 * truth && found <= 1.1 * truth,
        "found {found}/s against a true {truth}/s\n{stdout}"
    );
    // The first failing step is above what was found, and each step says how it went.
    let first_fail = target["first_fail_rps"].as_f64().unwrap();
    assert!(first_fail > found);
    // The repeats: the limit's interval brackets the majority's limit, and the rates that
    // decided it ran three times each.
    assert_eq!(target["repeats"], 3);
    let ci = target["capacity_ci"]
        .as_array()
        .unwrap_or_else(|| panic!("{target}"));
    let (low, high) = (ci[0].as_f64(), ci[1].as_f64());
    let low = low.unwrap_or_else(|| panic!("no rate passed every run: {stdout}"));
    assert!(
        low <= found && low >= 0.5 * truth,
        "interval {ci:?}, truth {truth}\n{stdout}"
    );
    if let Some(high) = high {
        // No rate above the truth can be served, and the climb doubles: the lowest rate that
        // failed every run is at most twice the truth.
        assert!(
            high >= first_fail && high <= 2.0 * truth,
            "interval {ci:?}\n{stdout}"
        );
    }
    let runs_of = |rate: f64| {
        target["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["offered_rps"].as_f64() == Some(rate))
            .count()
    };
    assert_eq!(runs_of(low), 3, "{stdout}");
    if let Some(high) = high {
        assert_eq!(runs_of(high), 3, "{stdout}");
    }
    assert!(
        stdout.contains("over 3 runs of each deciding rate"),
        "{stdout}"
    );
    for step in target["steps"].as_array().unwrap() {
        assert_eq!(step["trustworthy"], true, "{step}");
    }
    assert!(out.join("summary.md").exists());
    assert!(out.join("index.html").exists(), "{stdout}");
    assert!(stdout.contains("target capacity:"), "{stdout}");
}

/// `--sweep`: one search of the sync design per pool size, each from its own scenario and folder,
/// drawn on one page. The sync design holds a connection for its whole fan-out, so a pool three
/// times the size serves about three times the rate (Little's law): with the scenario's providers
/// a sign-up holds its connection about 270 ms, so 2 connections serve about 7/s and cannot keep
/// up with 16/s, while 6 serve about 22/s and do; the search must see that order. Steps of 8 s, so
/// that even the slowest holds over 30 requests and one late send is not the whole send lag p99.
#[test]
fn a_sweep_of_the_sync_pool_searches_each_value_and_a_bigger_pool_serves_more() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/capacity.toml");
    let output = fanbench()
        .args(["capacity", "--scenario", scenario])
        .args(["--sweep", "sync.pool_size=2,6"])
        .args([
            "--step-duration",
            "8s",
            "--start-rate",
            "4",
            "--factor",
            "2",
        ])
        .args(["--max-steps", "3", "--repeat", "1"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The scenario's gates name `sync`, which a sweep keys by value: skipped, not failed.
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    assert_eq!(doc["sweep"]["design"], "sync");
    assert_eq!(doc["sweep"]["setting"], "pool_size");
    let keys: Vec<&String> = doc["designs"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["sync[pool_size=2]", "sync[pool_size=6]"], "{stdout}");
    for value in ["2", "6"] {
        let folder = out.join(format!("pool_size={value}"));
        let written = std::fs::read_to_string(folder.join("scenario.toml")).unwrap();
        assert!(
            written.contains(&format!("pool_size = {value}")),
            "{written}"
        );
        let search = &doc["designs"][format!("sync[pool_size={value}]")];
        for step in search["steps"].as_array().unwrap() {
            let step_dir = step["dir"].as_str().unwrap();
            assert!(step_dir.starts_with(folder.to_str().unwrap()), "{step_dir}");
            // Each step ran the value it belongs to.
            let results: Value = serde_json::from_str(
                &std::fs::read_to_string(std::path::Path::new(step_dir).join("results.json"))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                results["designs"]["sync"]["settings"]["pool_size"].as_u64(),
                Some(value.parse().unwrap()),
                "{step_dir}"
            );
        }
    }
    let small = &doc["designs"]["sync[pool_size=2]"];
    let big = &doc["designs"]["sync[pool_size=6]"];
    let limit = |d: &Value| d["capacity_rps"].as_u64().unwrap_or(0);
    assert!(
        limit(small) < 16,
        "a pool of 2 kept up with 16/s, over twice what Little's law allows it\n{stdout}"
    );
    assert!(
        limit(big) > limit(small),
        "pool 6: {}/s, pool 2: {}/s\n{stdout}",
        limit(big),
        limit(small)
    );
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("<section id=\"sweep-capacity\">"));
    assert!(stdout.contains("what sync.pool_size does:"), "{stdout}");
}
