//! The database server a run uses, and the machine and versions it ran on.

use std::time::Duration;

use anyhow::Result;
use results::Environment;

use crate::cli::RunDatabaseArgs;

/// The PostgreSQL server the designs' databases are created on.
pub struct DatabaseServer {
    /// A URL on the server (its database part is replaced per design).
    pub url: String,
    _cluster: Option<fanbench_db::Cluster>,
    /// Drop each design's databases once reconciled (someone else's server, not kept).
    drop_after: bool,
}

impl DatabaseServer {
    pub async fn start(args: &RunDatabaseArgs) -> Result<Self> {
        match &args.database_url {
            Some(url) => Ok(Self {
                url: url.to_string(),
                _cluster: None,
                drop_after: !args.keep_databases,
            }),
            None => {
                eprintln!(
                    "fanbench: starting a throwaway PostgreSQL (set DATABASE_URL to use your own)"
                );
                let cluster = tokio::task::spawn_blocking(|| {
                    fanbench_db::Cluster::start(&fanbench_db::ClusterOptions::default())
                })
                .await??;
                Ok(Self {
                    url: cluster.url("postgres"),
                    _cluster: Some(cluster),
                    // The cluster goes with everything on it.
                    drop_after: false,
                })
            }
        }
    }

    /// The postmaster's process id when fanbench started the server (a throwaway cluster); `None`
    /// on `DATABASE_URL`, whose processes are not fanbench's to account for.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self._cluster.as_ref()?.server_pid()
    }

    /// A design's databases are reconciled: drop them (and the log store beside them) unless
    /// they are to be kept. A failure to drop is reported, not fatal: the measurement stands.
    pub async fn finished_with(&self, db_name: &str) {
        if !self.drop_after {
            if self._cluster.is_none() {
                eprintln!(
                    "fanbench: kept databases {db_name} and {db_name}_logs (--keep-databases)"
                );
            }
            return;
        }
        for name in [db_name.to_string(), format!("{db_name}_logs")] {
            if let Err(e) = fanbench_db::drop_database(&self.url, &name).await {
                eprintln!("fanbench: could not drop database {name}: {e} (drop it by hand)");
            }
        }
    }
}

pub async fn environment(server: &DatabaseServer) -> Environment {
    let mut env = environment_without_database();
    env.database = if server._cluster.is_some() {
        "throwaway cluster (fsync on)".into()
    } else {
        "DATABASE_URL".into()
    };
    if let Ok(pool) = fanbench_db::connect_pool(&server.url, 1, Duration::from_secs(5)).await {
        env.postgres_version = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await
            .ok();
        pool.close().await;
    }
    env
}

pub fn environment_without_database() -> Environment {
    let git_sha = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kb: u64 = m
            .lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    });
    Environment {
        fanbench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_sha,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        postgres_version: None,
        database: "none".into(),
    }
}
