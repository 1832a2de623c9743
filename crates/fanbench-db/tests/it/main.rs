//! The throwaway cluster against a real PostgreSQL: it starts, serves, migrates, isolates tests, and
//! leaves nothing behind however its owner ends.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fanbench_db::{Cluster, ClusterOptions, testing};
use sqlx::{Connection, PgConnection};

/// Whether a process with this PID exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls until `done` holds, for at most `limit`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn assert_gone(pid: u32, dir: &Path) {
    assert!(
        eventually(Duration::from_secs(15), || !alive(pid) && !dir.exists()),
        "postgres {pid} or {dir:?} survived"
    );
}

#[tokio::test]
async fn a_cluster_serves_and_is_gone_after_stop() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let pid = cluster.server_pid().expect("server pid");
    let dir = cluster.dir().to_path_buf();
    assert!(alive(pid));

    let mut conn = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    let (fsync,): (String,) = sqlx::query_as("SHOW fsync")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(fsync, "on", "durable by default");
    let (addr,): (String,) = sqlx::query_as("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(addr, "127.0.0.1");
    conn.close().await.unwrap();

    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap();
    assert!(!alive(pid), "stop() waits for the server to end");
    assert!(!dir.exists(), "stop() waits for the directory to go");
}

#[tokio::test]
async fn fresh_databases_are_migrated_and_isolated() {
    let a = testing::fresh_database().await.unwrap();
    let b = testing::fresh_database().await.unwrap();
    assert_ne!(a, b);
    let mut ca = PgConnection::connect(&a).await.unwrap();
    let mut cb = PgConnection::connect(&b).await.unwrap();
    for table in ["users", "notification_log", "signup_counter"] {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut ca)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} starts empty");
    }
    sqlx::query("INSERT INTO signup_counter VALUES (current_date, 7)")
        .execute(&mut ca)
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM signup_counter")
        .fetch_one(&mut cb)
        .await
        .unwrap();
    assert_eq!(
        n, 0,
        "a write to one test's database is invisible in another's"
    );
}

/// Run in a child process by `a_killed_owner_leaves_nothing_behind`: starts a cluster, says where it
/// is, and waits to be killed.
#[test]
#[ignore = "a helper process, run by a_killed_owner_leaves_nothing_behind"]
fn child_holds_a_cluster() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    println!(
        "CLUSTER {} {}",
        cluster.server_pid().unwrap(),
        cluster.dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_owner_leaves_nothing_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_cluster",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("CLUSTER ").map(|(_, rest)| rest.to_string()))
        .expect("the child reports its cluster");
    let mut parts = line.split_whitespace();
    let pid: u32 = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    assert!(alive(pid) && dir.exists());

    child.kill().unwrap(); // SIGKILL: no destructor runs in the child
    child.wait().unwrap();
    assert_gone(pid, &dir);
}

#[tokio::test]
async fn real_database_errors_are_classified_by_sqlstate() {
    let url = testing::fresh_database().await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let raise = |code: &str| {
        format!("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{code}'; END $$")
    };
    for (code, transient) in [
        ("08006", true),
        ("57P01", true),
        ("57P03", true),
        ("53300", true),
        ("40001", true),
        ("40P01", true),
        ("23505", false),
        ("22021", false),
        ("57014", false),
    ] {
        let e = sqlx::raw_sql(&raise(code))
            .execute(&mut conn)
            .await
            .unwrap_err();
        let got = e.as_database_error().and_then(|d| d.code()).unwrap();
        assert_eq!(got, code);
        assert_eq!(fanbench_db::is_transient(&e), transient, "{code}: {e}");
    }
    // A NUL in text is refused by the server, and is no reason to retry.
    let e = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(!fanbench_db::is_transient(&e), "{e}");

    // A connection the server ends is transient, whichever way sqlx reports it.
    let mut victim = PgConnection::connect(&url).await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut conn)
        .await
        .unwrap();
    let e = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .unwrap_err();
    assert!(fanbench_db::is_transient(&e), "{e:?}");
}

#[tokio::test]
async fn an_immediate_restart_cuts_connections_and_keeps_committed_data() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.url("postgres");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    let pid = cluster.server_pid().unwrap();

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart_immediate().unwrap();
        cluster
    })
    .await
    .unwrap();
    assert_ne!(cluster.server_pid(), Some(pid), "a new postmaster");
    assert!(!alive(pid));

    let e = sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(fanbench_db::is_transient(&e), "{e:?}");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let (n,): (i32,) = sqlx::query_as("SELECT n FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 42, "committed before the crash, there after recovery");
    conn.close().await.unwrap();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap();
}
