//! Databases for tests: one throwaway cluster per test process, a fresh database per test.
//!
//! The cluster is started on first use and removed when the process exits (its guard sees the pipe
//! close), so a test binary leaves nothing behind even when it panics or is killed. When
//! `DATABASE_URL` is set, tests create their databases on that server instead.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::{Cluster, ClusterOptions, DbError, connect_pool, create_database, migrate};

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

const TEMPLATE_NAME: &str = "fanbench_template";

/// The URL of any database on the test server (used to create the others).
fn server_url() -> Result<String, DbError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    let cluster = CLUSTER
        .get_or_init(|| Cluster::start(&ClusterOptions::default()).map_err(|e| e.to_string()));
    match cluster {
        Ok(c) => Ok(c.url("postgres")),
        Err(e) => Err(DbError::Command {
            program: "throwaway cluster".into(),
            output: e.clone(),
        }),
    }
}

/// The server URL, starting the cluster off the async runtime's threads when needed.
async fn server() -> Result<String, DbError> {
    tokio::task::spawn_blocking(server_url)
        .await
        .map_err(|e| DbError::Command {
            program: "cluster start".into(),
            output: e.to_string(),
        })?
}

/// A new, migrated, empty database; returns its URL. Each call gets its own database, copied from a
/// migrated template, so tests never see each other's rows.
pub async fn fresh_database() -> Result<String, DbError> {
    let server = server().await?;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    // The template is made once per process; on a shared server, each process makes its own.
    let template = TEMPLATE
        .get_or_try_init(|| async {
            let name = format!("{TEMPLATE_NAME}_{suffix}");
            let url = create_database(&server, &name, None).await?;
            let pool = connect_pool(&url, 1, std::time::Duration::from_secs(30)).await?;
            migrate(&pool).await?;
            pool.close().await;
            Ok::<_, DbError>(name)
        })
        .await?;
    create_database(&server, &format!("test_{suffix}"), Some(template)).await
}

/// The throwaway cluster of this process, if one was started (tests of the cluster itself use it).
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get().and_then(|c| c.as_ref().ok())
}

/// A new, empty database with no schema (for stores that bring their own, like the log store).
pub async fn fresh_empty_database() -> Result<String, DbError> {
    let server = server().await?;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    create_database(&server, &format!("empty_{suffix}"), None).await
}

/// Holds today's counter row locked, so a sign-up waits at its bump inside its transaction, and
/// ends that waiting backend the way a crashing or restarting server would.
/// The sync design's tests use it (its sign-up bumps that row); the async design takes no counter
/// row and holds a sign-up of the same email instead, with [`end_lock_waiters_during`].
pub async fn end_a_sign_up_mid_transaction<T>(
    db: &sqlx::PgPool,
    request: impl std::future::Future<Output = T>,
) -> T {
    sqlx::query("INSERT INTO signup_counter (day, count) VALUES (current_date, 0)")
        .execute(db)
        .await
        .expect("the test database answers");
    let mut lock = db.begin().await.expect("the test database answers");
    sqlx::query("SELECT 1 FROM signup_counter WHERE day = current_date FOR UPDATE")
        .execute(&mut *lock)
        .await
        .expect("the test database answers");
    let response = end_lock_waiters_during(db, request).await;
    lock.rollback().await.expect("the test database answers");
    response
}

/// Runs `request` and, once a backend of this database waits on a lock (the caller holds one),
/// terminates it the way a crashing or restarting server would; returns what `request` returned.
/// Fails the test if nothing waits within 10 s.
pub async fn end_lock_waiters_during<T>(
    db: &sqlx::PgPool,
    request: impl std::future::Future<Output = T>,
) -> T {
    let killer = async {
        let started = Instant::now();
        loop {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_all(db)
            .await
            .expect("the test database answers");
            if !killed.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the sign-up never waited"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (response, ()) = tokio::join!(request, killer);
    response
}
