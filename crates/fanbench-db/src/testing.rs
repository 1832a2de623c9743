//! Databases for tests: one throwaway cluster per test process, a fresh database per test.
//!
//! The cluster is started on first use and removed when the process exits (its guard sees the pipe
//! close), so a test binary leaves nothing behind even when it panics or is killed. When
//! `DATABASE_URL` is set, tests create their databases on that server instead.

use std::sync::OnceLock;

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
