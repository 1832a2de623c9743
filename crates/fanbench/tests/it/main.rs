//! The `fanbench` binary as a user runs it: separate processes talking real HTTP, a throwaway
//! cluster started and removed by the command itself, clean stops on signals, readable errors.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod attribution;
mod bench;
mod broker;
mod capacity;
mod plan;
mod shard;

/// Tests that drive load take turns: on a 2-core machine two runs at once make the driver, not the
/// design, the bottleneck, and the runs' own trust gates would fail for the test suite's sake.
fn load_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fanbench() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanbench"));
    cmd.env_remove("DATABASE_URL")
        .env("FANBENCH_LOG", "info,sqlx=warn");
    cmd
}

/// A server process; killed if the test fails before stopping it.
struct Server {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a child's stderr lines on a thread, so the pipe never fills.
fn lines_of(stderr: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A provider simulator whose every send takes `latency` (`"200ms"`), its config written under
/// `dir`: a kill then lands with sends in flight.
fn slow_providers(dir: &Path, latency: &str) -> Server {
    let config = dir.join("providers.toml");
    let slow = format!("latency = {{ dist = \"fixed\", value = \"{latency}\" }}\n");
    std::fs::write(
        &config,
        format!("[email]\n{slow}[sms]\n{slow}[push]\n{slow}"),
    )
    .unwrap();
    spawn(&[
        "serve",
        "providers",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ])
}

fn spawn(args: &[&str]) -> Server {
    let mut child = fanbench()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fanbench");
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected first line {line:?}; stderr: {:?}",
        stderr.try_iter().collect::<Vec<_>>()
    );
    Server { child, url, stderr }
}

fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(server: &mut Server, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "the process did not stop within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster_dir(stderr: &[String]) -> PathBuf {
    stderr
        .iter()
        .find_map(|l| l.split("dir=").nth(1))
        .map(|d| PathBuf::from(d.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no cluster dir in the log: {stderr:?}"))
}

fn postgres_running_in(dir: &Path) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    !out.stdout.is_empty()
}

fn http_json(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    // curl is what the README shows; using it here checks the documented path.
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
        ]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn serve_providers_and_sync_then_a_registration_reaches_all_three_channels() {
    let mut providers = spawn(&["serve", "providers", "--listen", "127.0.0.1:0"]);
    let mut sync = spawn(&[
        "serve",
        "sync",
        "--listen",
        "127.0.0.1:0",
        "--providers-url",
        &providers.url,
    ]);

    let registration = json!({ "email": "ada@example.com", "name": "Ada", "phone": "+441234567890", "device_token": "d1" });
    let (code, body) = http_json(
        "POST",
        &format!("{}/register", sync.url),
        Some(&registration),
    );
    assert_eq!(code, 201, "{body}");
    let (_, summary) = http_json("GET", &format!("{}/ledger/summary", providers.url), None);
    for channel in ["email", "sms", "push"] {
        assert_eq!(summary[channel]["delivered"], 1, "{summary}");
    }

    // Ctrl-C stops the sync server cleanly, and its throwaway cluster goes with it.
    signal(&sync, "-INT");
    assert!(wait_exit(&mut sync, Duration::from_secs(20)).success());
    let log: Vec<String> = sync.stderr.try_iter().collect();
    let dir = cluster_dir(&log);
    assert!(!dir.exists(), "{dir:?} left behind");
    assert!(
        !postgres_running_in(&dir),
        "postgres still running for {dir:?}"
    );

    signal(&providers, "-TERM");
    assert!(wait_exit(&mut providers, Duration::from_secs(10)).success());
}

#[test]
fn help_teaches_the_commands() {
    let out = fanbench().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["serve", "demo", "DATABASE_URL"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let out = fanbench()
        .args(["serve", "sync", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--providers-url",
        "--pool-size",
        "--acquire-timeout",
        "--database-url",
    ] {
        assert!(
            help.contains(flag),
            "serve sync --help lacks {flag}:\n{help}"
        );
    }
}

#[test]
fn a_bad_provider_config_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("providers.toml");
    std::fs::write(
        &path,
        "[sms]\nlatency = { dist = \"fixed\", value = \"5ms\" }\neror_rate = 0.5\n",
    )
    .unwrap();
    let out = fanbench()
        .args(["serve", "providers", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("providers.toml"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("eror_rate"), "{err}");
}

#[test]
fn a_missing_postgres_names_the_install_command() {
    let out = fanbench()
        .args([
            "serve",
            "sync",
            "--listen",
            "127.0.0.1:0",
            "--providers-url",
            "http://127.0.0.1:1",
        ])
        .env("FANBENCH_PG_BIN", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("apt-get install -y postgresql"), "{err}");
}

/// Jepsen's check, on a small scale: unique sign-ups, SIGKILL of the async server mid-burst, a
/// restart, then set arithmetic over the provider ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_nothing() {
    use std::collections::BTreeSet;

    // Sends take 200 ms, so the kill lands with deliveries claimed and in flight.
    let dir = tempfile::tempdir().unwrap();
    let providers = slow_providers(dir.path(), "200ms");
    let database_url = fanbench_db::testing::fresh_database().await.unwrap();
    let log_database_url = fanbench_db::testing::fresh_empty_database().await.unwrap();
    let async_args = |listen: &str| -> Vec<String> {
        [
            "serve",
            "async",
            "--listen",
            listen,
            "--providers-url",
            &providers.url,
            "--lease",
            "2s",
            "--provider-timeout",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--database-url".into(),
            database_url.clone(),
            "--log-database-url".into(),
            log_database_url.clone(),
        ])
        .collect()
    };
    let args: Vec<String> = async_args("127.0.0.1:0");
    let server = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // 120 sign-ups over about 1.2 s; the kill comes at about 0.6 s.
    let http = reqwest::Client::new();
    let url = format!("{}/register", server.url);
    let burst = (0..120).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            let body = json!({ "email": format!("k{i}@example.com"), "name": "K", "phone": "+441234567890", "device_token": "d" });
            match http.post(&url).json(&body).timeout(Duration::from_secs(5)).send().await {
                Ok(r) if r.status() == 202 => Some(r.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_string()),
                _ => None, // refused or cut off: unknown, and allowed to be delivered or not
            }
        }
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let status = Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let (accepted, ()) = futures::join!(futures::future::join_all(burst), killer);
    let accepted: Vec<String> = accepted.into_iter().flatten().collect();
    assert!(
        accepted.len() >= 20 && accepted.len() < 120,
        "the kill should land mid-burst: {} accepted",
        accepted.len()
    );
    drop(server);

    // Restart on the same database; its claims wait out the dead process's 2 s leases.
    let mut server = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let expected: BTreeSet<String> = accepted
        .iter()
        .flat_map(|e| ["email", "sms", "push"].map(|c| format!("{e}:{c}")))
        .collect();
    let started = Instant::now();
    let (delivered, summary) = loop {
        let delivered: BTreeSet<String> = provider_sim::testing::ledger(&http, &providers.url)
            .await
            .into_iter()
            .map(|d| d.key)
            .collect();
        if expected.is_subset(&delivered) {
            let summary = provider_sim::testing::summary(&http, &providers.url).await;
            break (delivered, summary);
        }
        let lost: Vec<_> = expected.difference(&delivered).take(3).collect();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lost after 30 s: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Lost = accepted × channels − delivered: empty, checked above. Deliveries beyond those are
    // sign-ups whose 202 the kill cut off (committed, answer lost): recovered, which is allowed.
    let recovered = delivered.len() - expected.len();
    assert!(
        recovered % 3 == 0,
        "recovered sign-ups are delivered on every channel: {recovered}"
    );
    // Each key counts once in the ledger however often the restart re-sent it.
    for counts in [summary.email, summary.sms, summary.push] {
        assert_eq!(
            counts.delivered as usize,
            delivered.len() / 3,
            "{summary:?}"
        );
    }

    signal(&server, "-TERM");
    assert!(wait_exit(&mut server, Duration::from_secs(20)).success());
}

fn tiny_scenario(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        "name = 'tiny'\n[arrivals]\nprocess = 'uniform'\nphases = [{ kind = 'constant', duration = '2s', rate = 20 }]\n\
         [providers.email]\nlatency = { dist = 'fixed', value = '5ms' }\n",
    )
    .unwrap();
    path
}

#[test]
fn compare_on_the_smoke_scenario_runs_end_to_end_and_its_results_validate() {
    let _turn = load_turn();
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/smoke.toml");
    let run = fanbench()
        .args(["compare", "--quiet", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "compare failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("latency p99") && stdout.contains("sync") && stdout.contains("async"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    results::validate(&doc).unwrap();
    for design in ["sync", "async"] {
        let d = &doc["designs"][design];
        let requests = &d["requests"];
        assert_eq!(
            requests["sent"], requests["intended"],
            "{design}: every scheduled request went out"
        );
        assert!(requests["intended"].as_u64().unwrap() > 100, "{design}");
        let r = &d["reconciliation"];
        assert_eq!(r["lost"], 0, "{design}: {r}");
        assert_eq!(r["delivered"], r["expected"], "{design}: {r}");
        for file in [
            format!("{design}.hlog"),
            format!("{design}.hgrm"),
            format!("{design}.server.log"),
        ] {
            assert!(out.path().join(&file).is_file(), "{file} missing");
        }
    }
    let sync = &doc["designs"]["sync"];
    let asynchronous = &doc["designs"]["async"];
    // The designs part ways even in twelve seconds: the sync design queues for its pool.
    assert!(
        sync["latency_ms"]["p99"].as_f64().unwrap()
            > 5.0 * asynchronous["latency_ms"]["p99"].as_f64().unwrap()
    );
    assert_eq!(asynchronous["requests"]["status"]["503"], 0);
    assert_eq!(asynchronous["drain"]["drained"], true);
    // Who used the machine: every process fanbench started, measured over each design's window.
    for design in ["sync", "async"] {
        let p = &doc["designs"][design]["processes"];
        let window = p["window_s"].as_f64().unwrap();
        assert!(window >= 12.0, "{design}: the window holds the load: {p}");
        for role in ["driver", "server", "simulator", "postgres"] {
            let u = &p[role];
            assert_eq!(u["missing"], serde_json::json!([]), "{design} {role}: {u}");
            assert!(
                u["peak_rss_bytes"].as_u64().unwrap() > 1 << 20,
                "{design} {role}: {u}"
            );
            let cpu = u["cpu_seconds"].as_f64().unwrap();
            assert!(
                cpu < window * 4.0,
                "{design} {role}: more cores than a machine: {u}"
            );
            if role != "simulator" {
                assert!(cpu > 0.0, "{design} {role}: {u}");
            }
        }
        assert_eq!(p["postgres"]["memory"], "pss_sum_sampled");
    }
    let log: Vec<String> = stderr.lines().map(String::from).collect();
    let dir = cluster_dir(&log);
    assert!(
        !dir.exists() && !postgres_running_in(&dir),
        "compare left its cluster behind: {dir:?}"
    );
}

#[test]
fn run_target_drives_a_running_server_and_refuses_remote_targets() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(dir.path());
    let providers = spawn(&["serve", "providers", "--listen", "127.0.0.1:0"]);
    let mut sync = spawn(&[
        "serve",
        "sync",
        "--listen",
        "127.0.0.1:0",
        "--providers-url",
        &providers.url,
    ]);

    let out = dir.path().join("run");
    let run = fanbench()
        .args(["run", "--quiet", "--target", &sync.url, "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    results::validate(&doc).unwrap();
    let target = &doc["designs"]["target"];
    assert_eq!(target["requests"]["status"]["2xx"], 40);
    assert!(
        target["reconciliation"].is_null(),
        "no reconciliation against a server fanbench did not start"
    );
    // Only the driver is fanbench's to measure; the rest is absent with the reason, not 0.
    let p = &target["processes"];
    assert!(p["driver"]["cpu_seconds"].as_f64().unwrap() > 0.0, "{p}");
    for role in ["server", "simulator", "postgres"] {
        assert!(p[role]["cpu_seconds"].is_null(), "{role}: {p}");
        assert!(p[role]["peak_rss_bytes"].is_null(), "{role}: {p}");
        assert!(
            p[role]["missing"][0]
                .as_str()
                .unwrap()
                .contains("run --target"),
            "{role}: {p}"
        );
    }

    let refused = fanbench()
        .args([
            "run",
            "--quiet",
            "--target",
            "http://192.0.2.10:80",
            "--scenario",
        ])
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-remote"));

    signal(&sync, "-TERM");
    assert!(wait_exit(&mut sync, Duration::from_secs(20)).success());
}

#[test]
fn a_bad_scenario_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = 'x'\n[arrivals]\nphases = [{ kind = 'constant', duration = '2s', rat = 5 }]\n",
    )
    .unwrap();
    let out = fanbench()
        .args(["compare", "--scenario"])
        .arg(&path)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml: line 3, column"), "{err}");
    assert!(err.contains("rat"), "{err}");
}

fn gated_scenario(dir: &Path, name: &str, email_latency: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = 'gated'\n[arrivals]\nprocess = 'uniform'\nphases = [{{ kind = 'constant', duration = '4s', rate = 20 }}]\n\
             [providers.email]\nlatency = {{ dist = 'fixed', value = '{email_latency}' }}\n\
             [gates]\nrules = [\n  'sync.reconciliation.lost == 0',\n  'sync.requests.status.503 == 0',\n]\n\
             regressions = [{{ metric = 'sync.latency_ms.p50', tolerance = '100%' }}]\n"
        ),
    )
    .unwrap();
    path
}

/// The sync design answers only after every provider did, so a slower provider shows in its
/// latency at once: the natural place to inject a regression.
fn compare_sync(scenario: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    fanbench()
        .args(["compare", "--quiet", "--designs", "sync", "--scenario"])
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn an_injected_regression_fails_the_gates_and_the_same_build_against_itself_passes() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let normal = gated_scenario(dir.path(), "normal", "5ms");
    let slowed = gated_scenario(dir.path(), "slowed", "300ms");
    let (base, again, slow) = (
        dir.path().join("base"),
        dir.path().join("again"),
        dir.path().join("slow"),
    );

    let run = compare_sync(&normal, &base, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("regression gate(s) skipped: no baseline")
    );

    // A/A: the same build and scenario against itself passes.
    let junit = dir.path().join("aa.xml");
    let run = compare_sync(
        &normal,
        &again,
        &[
            "--baseline",
            base.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "A/A failed:\n{stdout}");
    assert!(stdout.contains("gates: 3 passed, 0 failed"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(
        xml.matches("<testcase ").count(),
        3,
        "one JUnit case per gate:\n{xml}"
    );

    // The email provider 300 ms slower: the regression gate fails and compare exits 1.
    let run = compare_sync(&slowed, &slow, &["--baseline", base.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "the regression was not caught:\n{stdout}"
    );
    assert!(
        stdout.contains("FAIL sync.latency_ms.p50 may not get worse than 100 %"),
        "{stdout}"
    );
    let gates: Value =
        serde_json::from_str(&std::fs::read_to_string(slow.join("gates.json")).unwrap()).unwrap();
    assert_eq!(
        gates
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["passed"] == false)
            .count(),
        1
    );
    let page = std::fs::read_to_string(slow.join("index.html")).unwrap();
    assert!(
        page.contains("Gates: 1 of 3 failed"),
        "the report shows the verdicts"
    );

    // `fanbench gate` decides the same way on the stored runs, and errors are exit 2.
    let gate = |args: &[&str]| fanbench().arg("gate").args(args).output().unwrap();
    assert_eq!(
        gate(&[slow.to_str().unwrap(), "--baseline", base.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        gate(&[
            again.to_str().unwrap(),
            "--baseline",
            base.to_str().unwrap()
        ])
        .status
        .code(),
        Some(0)
    );
    let missing = gate(&[
        again.to_str().unwrap(),
        "--baseline",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));

    // The baseline is promoted without its HTML or logs.
    let root = dir.path().join("baseline");
    let out = fanbench()
        .args(["baseline", "update"])
        .arg(&base)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promoted = root.join("gated");
    assert!(promoted.join("results.json").is_file() && promoted.join("sync.hlog").is_file());
    assert!(!promoted.join("index.html").exists() && !promoted.join("sync.server.log").exists());
}

#[test]
fn ctrl_c_stops_compare_and_keeps_what_was_measured() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("long.toml");
    std::fs::write(
        &scenario,
        "name = 'long'\n[arrivals]\nprocess = 'uniform'\nphases = [{ kind = 'constant', duration = '60s', rate = 10 }]\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let mut child = spawn_compare(&[], &scenario, &out);
    let stderr = lines_of(child.stderr.take().unwrap());
    // Wait until the sync design's load is under way, then press Ctrl-C.
    let started = Instant::now();
    while !out.join("sync.server.log").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped = Instant::now();
    let mut server = Server {
        child,
        url: String::new(),
        stderr,
    };
    let status = wait_exit(&mut server, Duration::from_secs(45));
    assert_eq!(status.code(), Some(2), "stopping early is not a success");
    assert!(
        stopped.elapsed() < Duration::from_secs(40),
        "Ctrl-C took {:?}",
        stopped.elapsed()
    );

    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    results::validate(&doc).unwrap();
    let sync = &doc["designs"]["sync"];
    let sent = sync["requests"]["sent"].as_u64().unwrap();
    assert!(sent > 10 && sent < 600, "part of the schedule ran: {sent}");
    assert!(
        doc["designs"].get("async").is_none(),
        "the next design never started"
    );
    assert!(sync["warnings"].to_string().contains("stopped early"));
    assert!(
        out.join("index.html").is_file(),
        "the report of what was measured is written"
    );
    let log: Vec<String> = server.stderr.try_iter().collect();
    let cluster = cluster_dir(&log);
    assert!(
        !cluster.exists() && !postgres_running_in(&cluster),
        "the cluster went with it"
    );
}

#[tokio::test]
async fn dlq_lists_and_replays_dead_letters() {
    let url = fanbench_db::testing::fresh_database().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // The database the async design's server would have made: its queue tables included.
    async_server::migrate(&pool).await.unwrap();
    let user = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, name, phone) VALUES ($1, 'd@example.com', 'D', '+441234567890')")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let mut sms_event = None;
    for (channel, state) in [
        (signup_core::Channel::Sms, "dead"),
        (signup_core::Channel::Email, "done"),
    ] {
        let event = async_server::testing::seed(
            &pool,
            user,
            channel,
            state,
            8,
            Some("sms provider answered 503"),
        )
        .await
        .unwrap();
        if channel == signup_core::Channel::Sms {
            sms_event = Some(event);
        }
    }
    let run = |args: &[&str]| {
        fanbench()
            .arg("dlq")
            .args(args)
            .args(["--database-url", &url])
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
    assert_eq!(lines.len(), 1, "only the dead one: {lines:?}");
    assert_eq!(lines[0]["channel"], "sms");
    assert_eq!(lines[0]["last_error"], "sms provider answered 503");
    assert!(run(&["list", "--channel", "email"]).stdout.is_empty());

    let replay = run(&["replay", "--channel", "sms"]);
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 1 dead letter(s)"));
    let (state, attempt, base) =
        async_server::testing::row(&pool, sms_event.unwrap(), signup_core::Channel::Sms)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), attempt, base),
        ("pending", 8, 8),
        "back in the queue with a fresh budget counted from attempt 8: attempt numbers never repeat"
    );
    assert!(run(&["list"]).stdout.is_empty());
}

/// `fanbench compare --quiet [extra…] --scenario SCENARIO --out OUT`, running, its output piped.
fn spawn_compare(extra: &[&str], scenario: &Path, out: &Path) -> Child {
    fanbench()
        .args(["compare", "--quiet"])
        .args(extra)
        .arg("--scenario")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `fanbench gate RUN --baseline BASELINE`.
fn gate_against(run: &Path, baseline: &Path) -> std::process::Output {
    fanbench()
        .arg("gate")
        .arg(run)
        .arg("--baseline")
        .arg(baseline)
        .output()
        .unwrap()
}

fn read_results(dir: &Path) -> Value {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    results::validate(&doc).unwrap();
    doc
}

#[test]
fn a_run_against_a_closed_port_is_invalid_exits_2_and_summarises_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(dir.path());
    let out = dir.path().join("run");
    let target = format!("http://127.0.0.1:{}", closed_port());
    // The user's default logging: no FANBENCH_LOG override.
    let run = fanbench()
        .env_remove("FANBENCH_LOG")
        .args(["run", "--quiet", "--target", &target, "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("!!! INVALID RUN [target]: 40 of 40 requests sent (100.0 %) got no answer (connection refused ×40)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("!!! INVALID RUN [target]: no request was answered 2xx"),
        "{stdout}"
    );
    assert!(stderr.contains("is invalid"), "{stderr}");
    // One line per kind of error, not one per request (40 were sent).
    let mentions = format!("{stdout}{stderr}")
        .lines()
        .filter(|l| l.contains("refused"))
        .count();
    assert!(
        (1..=4).contains(&mentions),
        "{mentions} lines mention the refused connections:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("40 request(s) got no answer: connection refused"),
        "{stdout}"
    );

    let doc = read_results(&out);
    let d = &doc["designs"]["target"];
    assert_eq!(d["valid"], false);
    assert_eq!(d["requests"]["status"]["connection_error"], 40);
    assert_eq!(d["requests"]["transport_errors"]["connection refused"], 40);
    assert_eq!(d["requests"]["share"]["connection_error"], 1.0);
    assert!(d["latency_ms_by_class"].get("2xx").is_none());
    assert_eq!(d["latency_ms_by_class"]["error"]["count"], 40);
    assert!(
        out.join("index.html").is_file(),
        "an invalid run still gets its report"
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("INVALID"), "the report says so too");

    // A gate verdict on it is refused as well.
    let gate = gate_against(&out, &out);
    assert_eq!(gate.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&gate.stderr).contains("is invalid"),
        "{}",
        String::from_utf8_lossy(&gate.stderr)
    );
    // And without a baseline, by the gate of its own that JUnit and the summary show failed.
    let scenario_with_gate = dir.path().join("gated.toml");
    std::fs::write(
        &scenario_with_gate,
        std::fs::read_to_string(&scenario).unwrap()
            + "[gates]\nrules = ['target.requests.sent > 0']\n",
    )
    .unwrap();
    let gated = dir.path().join("gated");
    let junit = dir.path().join("junit.xml");
    let run = fanbench()
        .args(["run", "--quiet", "--target", &target, "--scenario"])
        .arg(&scenario_with_gate)
        .arg("--out")
        .arg(&gated)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let gate = fanbench()
        .arg("gate")
        .arg(&gated)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(gate.status.code(), Some(2));
    let junit = std::fs::read_to_string(&junit).unwrap();
    assert!(
        junit.contains("name=\"the target run is valid\"") && junit.contains("failures=\"1\""),
        "{junit}"
    );
}

/// The pids of `parent`'s children whose command line contains `needle`.
fn children_matching(parent: u32, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent pid is the second field after the command name in parentheses.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ppid == Some(parent) && cmdline.contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_compare_whose_async_server_is_killed_mid_run_exits_2() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("killed.toml");
    std::fs::write(
        &scenario,
        "name = 'killed'\n[arrivals]\nprocess = 'uniform'\nphases = [{ kind = 'constant', duration = '8s', rate = 20 }]\n\
         [servers.async]\ndrain_timeout = '5s'\n[servers.broker]\ndrain_timeout = '5s'\n[gates]\nrules = ['async.reconciliation.lost == 0']\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let mut child = spawn_compare(&["--designs", "async"], &scenario, &out);
    let stderr = lines_of(child.stderr.take().unwrap());
    let stdout = lines_of(child.stdout.take().unwrap());
    let started = Instant::now();
    let server = loop {
        if let Some(pid) = children_matching(child.id(), "serve async").first() {
            break *pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the async server never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Into the load, then SIGKILL the server.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        Command::new("kill")
            .args(["-KILL", &server.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut compare = Server {
        child,
        url: String::new(),
        stderr,
    };
    let status = wait_exit(&mut compare, Duration::from_secs(90));
    let err: Vec<String> = compare.stderr.try_iter().collect();
    let printed: Vec<String> = stdout.try_iter().collect();
    assert_eq!(status.code(), Some(2), "{err:#?}\n{printed:#?}");
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("!!! INVALID RUN [async]: the async server exited")),
        "{printed:#?}"
    );

    let doc = read_results(&out);
    let d = &doc["designs"]["async"];
    assert_eq!(d["valid"], false);
    let reasons = d["invalid_reasons"].to_string();
    assert!(reasons.contains("exited during the run"), "{reasons}");
    // What the dead server had accepted is still accounted for, each notification exactly once.
    let r = &d["reconciliation"];
    assert_eq!(
        r["lost"], 0,
        "a dead server loses nothing it committed: {r}"
    );
    assert!(
        r["committed"].as_u64().unwrap() >= r["accepted"].as_u64().unwrap(),
        "every 202 is in the database: {r}"
    );
    assert!(
        r["accepted"].as_u64().unwrap() > 0,
        "it accepted sign-ups before it died: {r}"
    );
}

#[test]
fn run_of_one_design_skips_the_other_designs_gates_and_a_baseline_never_compares_nothing() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/smoke.toml");
    let out = dir.path().join("async");
    let run = fanbench()
        .args(["run", "--quiet", "--design", "async", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("index.html").is_file());
    assert!(
        stdout.contains("SKIP sync.reconciliation.lost == 0: the run has no `sync` design"),
        "{stdout}"
    );
    let gates: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gates.json")).unwrap()).unwrap();
    let skipped: Vec<&Value> = gates
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["skipped"].is_string())
        .collect();
    // Only the gates of designs that did not run are skipped (smoke.toml gates the broker design
    // too).
    assert!(
        skipped.len() >= 2
            && skipped.iter().all(|g| {
                let name = g["name"].as_str().unwrap();
                name.contains("sync") || name.starts_with("broker.")
            }),
        "{gates:#}"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("skipped"), "{md}");

    let doc = read_results(&out);
    let d = &doc["designs"]["async"];
    assert_eq!(d["valid"], true);
    assert_eq!(
        d["latency_ms_by_class"]["2xx"]["count"],
        d["requests"]["status"]["2xx"]
    );

    // smoke.toml declares no regressions: against a baseline, the default set is compared.
    let same = gate_against(&out, &out);
    let said = String::from_utf8_lossy(&same.stderr);
    let listed = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{said}\n{listed}");
    assert!(said.contains("comparing the default set"), "{said}");
    for metric in [
        "async.latency_ms_by_class.2xx.p99",
        "async.requests.share.503",
        "async.throughput_rps",
        "async.delivery.email.p99_ms",
    ] {
        assert!(
            listed.contains(&format!("PASS {metric} may not get worse")),
            "{listed}"
        );
    }

    // A baseline three times faster than this run is a regression, even with no declared gates.
    let faster = dir.path().join("faster");
    std::fs::create_dir_all(&faster).unwrap();
    let mut base = doc.clone();
    let p99 = &mut base["designs"]["async"]["latency_ms_by_class"]["2xx"]["p99"];
    *p99 = json!(p99.as_f64().unwrap() / 3.0);
    std::fs::write(faster.join("results.json"), base.to_string()).unwrap();
    // A baseline of another scenario is no baseline at all.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut renamed = base.clone();
    renamed["scenario"]["name"] = json!("peak-registration");
    std::fs::write(other.join("results.json"), renamed.to_string()).unwrap();
    let mismatch = gate_against(&out, &other);
    assert_eq!(mismatch.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&mismatch.stderr).contains("ran scenario `peak-registration`"),
        "{}",
        String::from_utf8_lossy(&mismatch.stderr)
    );
    let slower = gate_against(&out, &faster);
    let listed = String::from_utf8_lossy(&slower.stdout);
    assert_eq!(slower.status.code(), Some(1), "{listed}");
    assert!(
        listed.contains("FAIL async.latency_ms_by_class.2xx.p99 may not get worse"),
        "{listed}"
    );
}

async fn databases_like(server_url: &str, pattern: &str) -> Vec<String> {
    let admin = fanbench_db::database_url_with_name(server_url, "postgres").unwrap();
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let names = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
        .bind(pattern)
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    names
}

#[test]
fn runs_against_database_url_drop_their_databases_unless_kept() {
    let _turn = load_turn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A database on the shared test server stands for the user's own PostgreSQL.
    let server = rt.block_on(fanbench_db::testing::fresh_database()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(dir.path());
    let run = |out: &str, extra: &[&str]| {
        fanbench()
            .args(["run", "--quiet", "--design", "async", "--scenario"])
            .arg(&scenario)
            .arg("--out")
            .arg(dir.path().join(out))
            .args(["--database-url", &server])
            .args(extra)
            .output()
            .unwrap()
    };
    let before = rt.block_on(databases_like(&server, "fanbench_async_%"));

    let dropped = run("dropped", &[]);
    assert!(
        dropped.status.success(),
        "{}",
        String::from_utf8_lossy(&dropped.stderr)
    );
    assert_eq!(
        rt.block_on(databases_like(&server, "fanbench_async_%")),
        before,
        "the run's database and its _logs store are gone"
    );

    let kept = run("kept", &["--keep-databases"]);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    let after = rt.block_on(databases_like(&server, "fanbench_async_%"));
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(new.len(), 2, "the database and its log store stay: {new:?}");
    assert!(new.iter().any(|n| n.ends_with("_logs")), "{new:?}");
    for name in new {
        rt.block_on(fanbench_db::drop_database(&server, name))
            .unwrap();
    }
}
