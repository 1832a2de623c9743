//! The `fanbench` binary as a user runs it: separate processes talking real HTTP, a throwaway
//! cluster started and removed by the command itself, clean stops on signals, readable errors.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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
fn lines_of(stderr: ChildStderr) -> mpsc::Receiver<String> {
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
