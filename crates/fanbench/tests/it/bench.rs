//! `fanbench bench` from end to end, at rates and lengths too small to measure anything: the
//! behaviour under test is that each benchmark runs its steps and its references, judges them and
//! writes its figures. The figures themselves are docs/PERFORMANCE.md's business.

use super::{fanbench, load_turn};
use serde_json::Value;

fn run_bench(args: &[&str], out: &std::path::Path, file: &str) -> Value {
    let output = fanbench()
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(out.join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bench_driver_drives_the_null_endpoint_and_accounts_its_cpu() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let report = run_bench(
        &[
            "driver",
            "--rates",
            "200,400",
            "--duration",
            "1s",
            "--no-wrk",
        ],
        dir.path(),
        "bench-driver.json",
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, rate) in steps.iter().zip([200, 400]) {
        assert_eq!(step["offered_rps"], rate);
        assert_eq!(step["sent"], step["intended"], "{step}");
        assert!(step["sent"].as_u64().unwrap() >= rate / 2, "{step}");
        // CPU came from the kernel's accounting of the child: never zero for real work.
        assert!(step["cpu_us_per_request"].as_f64().unwrap() > 0.0, "{step}");
        assert!(
            step["endpoint_cpu_us_per_request"].as_f64().is_some(),
            "{step}"
        );
    }
    assert_eq!(report["wrk_missing"], "--no-wrk");
    assert!(report["wrk"].is_null());
}

#[test]
fn bench_ingest_runs_pgbench_on_the_servers_statement_then_the_api() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let report = run_bench(
        &[
            "ingest",
            "--clients",
            "1",
            "--rates",
            "50",
            "--duration",
            "1s",
        ],
        dir.path(),
        "bench-ingest.json",
    );
    let pgbench = report["pgbench"].as_array().unwrap();
    assert_eq!(pgbench.len(), 1);
    assert!(pgbench[0]["transactions"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["statement"]
            .as_str()
            .unwrap()
            .contains("INSERT INTO deliveries")
    );
    let api = report["api"].as_array().unwrap();
    assert_eq!(api.len(), 1);
    assert!(api[0]["accepted"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(api[0]["status_503"], 0);
    // The verdict follows from the step: held means every sent sign-up was accepted in time.
    if api[0]["passed"] == true {
        assert_eq!(report["held_rps"], 50);
        assert_eq!(api[0]["accepted"], api[0]["sent"]);
    } else {
        assert!(!api[0]["why"].as_array().unwrap().is_empty(), "{report}");
    }
}

#[test]
fn bench_e2e_runs_the_async_design_and_reconciles_every_step() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let report = run_bench(
        &["e2e", "--rates", "20", "--duration", "2s"],
        dir.path(),
        "bench-e2e.json",
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    assert!(step["expected"].as_u64().unwrap() > 0, "{step}");
    assert_eq!(step["lost"], 0, "{step}");
    assert_eq!(step["delivered"], step["expected"], "{step}");
    for channel in ["email", "sms", "push"] {
        assert!(
            step["delivery_p99_ms"][channel].as_f64().is_some(),
            "{step}"
        );
    }
    // Each step runs on its own cluster, so PostgreSQL's CPU is measured with the rest.
    for role in ["driver", "server", "simulator", "postgres"] {
        assert!(step["cores"][role].as_f64().is_some(), "{role}: {step}");
    }
}
