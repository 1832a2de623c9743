//! `fanbench plan`: a capacity folder asked the planning question, and the answer for a queue
//! design checked by replaying the spike.

use std::path::Path;

use serde_json::{Value, json};

use super::{fanbench, load_turn};

/// One design's search as capacity.json holds it.
fn design(
    ingest: (Option<u32>, Option<u32>),
    e2e: Option<(Option<u32>, Option<u32>)>,
    steps: Vec<Value>,
) -> Value {
    json!({
        "slo": [],
        "capacity_rps": ingest.0,
        "first_fail_rps": ingest.1,
        "stop": if ingest.1.is_some() { "converged" } else { "budget" },
        "delivery_capacity_rps": e2e.and_then(|e| e.0),
        "delivery_first_fail_rps": e2e.and_then(|e| e.1),
        "delivery_stop": e2e.map(|_| "converged"),
        "steps": steps,
        "bottleneck": null,
        "delivery_bottleneck": null,
        "prediction": null,
    })
}

fn write_capacity(dir: &Path, scenario: &Path, designs: Value) {
    let doc = json!({
        "schema_version": 1,
        "scenario": scenario.display().to_string(),
        "cpus": 2,
        "step_duration_s": 5.0,
        "factor": 2.0,
        "resolution": 0.1,
        "max_steps": 10,
        "designs": designs,
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("capacity.json"), doc.to_string()).unwrap();
}

/// From a capacity folder alone: the sync design's limit of 32/s carries 20/s with 30 %
/// headroom, and 800/s is carried by nothing end to end while the async design, taking up to
/// 1200/s and delivering 500/s, queues it and catches up. No load is run.
#[test]
fn plan_answers_for_a_peak_from_a_capacity_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap");
    write_capacity(
        &cap,
        Path::new("scenarios/capacity.toml"),
        json!({
            "sync": design((Some(32), Some(34)), None, vec![]),
            "async": design((Some(1200), Some(1300)), Some((Some(500), Some(550))), vec![]),
        }),
    );
    let plan = |peak: &str, out: &Path| {
        fanbench()
            .arg("plan")
            .arg(&cap)
            .args(["--peak", peak, "--spike-duration", "1m", "--quiet"])
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("low");
    let output = plan("20", &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("async, sync carry 20 sign-ups/s with 30 % headroom"),
        "{stdout}"
    );

    let out = dir.path().join("high");
    let output = plan("800", &out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("does not carry the peak"), "{stdout}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let async_ = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "async")
        .unwrap();
    assert_eq!(async_["verdict"], "queues");
    // No step telemetry to measure the drain rate from: the bracket's midpoint, 525/s.
    // (800 − 525) × 60 = 16 500 sign-ups, drained in 16 500 ÷ 525 = 31.4 s.
    assert_eq!(async_["backlog_peak"], 16_500.0);
    let drain = async_["drain_s"].as_f64().unwrap();
    assert!((drain - 16_500.0 / 525.0).abs() < 1e-6, "{drain}");
    assert!(out.join("plan.md").exists());
}

/// The async design pinned at 2 sends in flight per channel against providers taking 100 ms
/// delivers at most 2 ÷ 0.1 s = 20 sign-ups a second (Little's law). The capacity folder's one
/// overloaded step is a real run at 40/s, so the plan measures the drain rate from its telemetry;
/// the replay of 40/s for 8 s must then land within 25 % of the predicted drain time.
#[test]
fn plan_verify_replays_a_spike_and_lands_within_a_quarter_of_the_predicted_drain() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("pinned.toml");
    std::fs::write(
        &scenario,
        "name = 'pinned'\n\
         [arrivals]\nprocess = 'poisson'\nseed = 1\n\
         phases = [{ kind = 'constant', duration = '4s', rate = 40 }]\n\
         [payload]\nphone_share = 1.0\ndevice_share = 1.0\n\
         [driver]\nmax_latency = '1s'\n\
         [providers.email]\nlatency = { dist = 'fixed', value = '100ms' }\n\
         [providers.sms]\nlatency = { dist = 'fixed', value = '100ms' }\n\
         [providers.push]\nlatency = { dist = 'fixed', value = '100ms' }\n\
         [servers.async]\nconcurrency = 2\nmax_concurrency = 2\ndrain_timeout = '30s'\n\
         [servers.broker]\nconcurrency = 2\nmax_concurrency = 2\ndrain_timeout = '30s'\n",
    )
    .unwrap();
    // The overloaded step, as a capacity search would have run it.
    let cap = dir.path().join("cap");
    let step = cap.join("async/step-40");
    let run = fanbench()
        .args(["run", "--quiet", "--design", "async", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&step)
        .output()
        .unwrap();
    assert!(
        step.join("telemetry.json").exists(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let overloaded = json!({
        "offered_rps": 40, "throughput_rps": 40.0, "sent": 160, "accepted": 160,
        "status_503": 0, "share_503": 0.0, "accepted_p99_ms": 50.0, "latency_p99_ms": 50.0,
        "send_lag_p99_ms": 1.0, "backlog_slope_per_s": 20.0, "pool_waiting_slope_per_s": 0.0,
        "delivery_p99_ms": {}, "cores": {}, "valid": true, "trustworthy": true, "passed": true,
        "delivery_keeps_up": false, "why": ["delivery: the queue grew"],
        "dir": step.display().to_string(),
    });
    write_capacity(
        &cap,
        &scenario,
        json!({
            "async": design((Some(320), None), Some((Some(10), Some(20))), vec![overloaded]),
        }),
    );
    let out = dir.path().join("plan");
    let output = fanbench()
        .arg("plan")
        .arg(&cap)
        .args([
            "--peak",
            "40",
            "--spike-duration",
            "8s",
            "--verify",
            "--quiet",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let entry = &doc["entries"][0];
    assert_eq!(entry["verdict"], "queues", "{stdout}");
    assert_eq!(entry["drain_rate_measured"], true, "{stdout}");
    let v = &doc["verifications"][0];
    let predicted = v["predicted_drain_s"].as_f64().unwrap();
    let measured = v["measured_drain_s"].as_f64().unwrap();
    assert!(
        (measured - predicted).abs() <= 0.25 * predicted,
        "drain {measured} s measured against {predicted} s predicted\n{stdout}"
    );
    assert_eq!(v["within_tolerance"], true);
    assert!(v["measured_backlog_peak"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains("within 25 %"), "{stdout}");
}
