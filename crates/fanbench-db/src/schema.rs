//! Migrations, database creation and the pool settings both designs share.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::{Cluster, ClusterOptions, DbError};

/// The primary database's migrations (users, the notification log, the sign-up counter), embedded
/// at build time from `crates/fanbench-db/migrations`. A design that needs tables of its own keeps
/// their migrations in its crate (the async design's queue: `async_server::migrate`); both
/// histories share sqlx's table with distinct version numbers, so each ignores the other's.
pub static MIGRATOR: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!()
};

/// Brings the database at `pool` up to the current primary schema.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// A pool with the settings both designs share: a fixed size (no minimum idle trickle, every
/// connection opened up front) and a bounded acquire wait. The designs differ only in how long they
/// hold a connection, so this is the one place the pool is configured.
pub async fn connect_pool(
    url: &str,
    size: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| DbError::BadUrl(e.to_string()))?;
    // Per-statement logging at INFO would flood the log under load; keep only slow ones, as warnings.
    let options = options
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1));
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .acquire_timeout(acquire_timeout)
        // A slow acquire is the naive design working as designed under load, and the metrics
        // measure it; a warning per request would only flood the log.
        .acquire_slow_level(log::LevelFilter::Debug)
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Creates database `name` on the server `server_url` points at (optionally copying `template`) and
/// returns its URL.
pub async fn create_database(
    server_url: &str,
    name: &str,
    template: Option<&str>,
) -> Result<String, DbError> {
    let admin = database_url_with_name(server_url, "postgres")?;
    let mut conn = PgConnection::connect(&admin).await?;
    let sql = match template {
        Some(t) => format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(name),
            quote_ident(t)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(name)),
    };
    sqlx::raw_sql(&sql).execute(&mut conn).await?;
    conn.close().await?;
    database_url_with_name(server_url, name)
}

/// Drops database `name` on the server `server_url` points at, if it exists, closing any
/// connection still open to it (PostgreSQL 13+ `WITH (FORCE)`).
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), DbError> {
    let admin = database_url_with_name(server_url, "postgres")?;
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    ))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// Makes sure the database `url` names exists, creating it (empty) when it does not.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| DbError::BadUrl(e.to_string()))?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    let mut conn = PgConnection::connect(&database_url_with_name(url, "postgres")?).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let created = sqlx::raw_sql(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut conn)
            .await;
        // Another process may have created it in between; that is as good.
        if let Err(e) = created {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04");
            if !duplicate {
                return Err(e.into());
            }
        }
    }
    conn.close().await?;
    Ok(())
}

/// `url` with its database name replaced by `name`; the query string is kept.
pub fn database_url_with_name(url: &str, name: &str) -> Result<String, DbError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| DbError::BadUrl(url.into()))?;
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The primary database a serving command uses: the one `DATABASE_URL` names, or a new one on a
/// throwaway cluster that lives as long as this value.
#[derive(Debug)]
pub enum Database {
    /// A database someone else runs; we create it if missing and migrate it.
    External { url: String },
    /// A database on our own cluster; dropping this stops the cluster and deletes it.
    Throwaway { url: String, cluster: Cluster },
}

impl Database {
    /// Opens the database: creates (when missing) and migrates `database_url` when given, else starts a throwaway cluster and
    /// creates and migrates database `name` on it.
    pub async fn open(database_url: Option<&str>, name: &str) -> Result<Self, DbError> {
        match database_url {
            Some(url) => {
                ensure_database(url).await?;
                let pool = connect_pool(url, 1, Duration::from_secs(30)).await?;
                migrate(&pool).await?;
                pool.close().await;
                Ok(Self::External {
                    url: url.to_string(),
                })
            }
            None => {
                let cluster =
                    tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
                        .await
                        .map_err(|e| DbError::Command {
                            program: "cluster start".into(),
                            output: e.to_string(),
                        })??;
                let url = create_database(&cluster.url("postgres"), name, None).await?;
                let pool = connect_pool(&url, 1, Duration::from_secs(30)).await?;
                migrate(&pool).await?;
                pool.close().await;
                Ok(Self::Throwaway { url, cluster })
            }
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        match self {
            Self::External { url } | Self::Throwaway { url, .. } => url,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        let cases = [
            ("postgres://u@h:5432/a", "b", "postgres://u@h:5432/b"),
            ("postgres://u@h:5432", "b", "postgres://u@h:5432/b"),
            (
                "postgres://u:p@h/a?sslmode=disable",
                "b",
                "postgres://u:p@h/b?sslmode=disable",
            ),
            ("postgresql://h/", "x", "postgresql://h/x"),
        ];
        for (url, name, want) in cases {
            assert_eq!(database_url_with_name(url, name).unwrap(), want, "{url}");
        }
        assert!(database_url_with_name("not a url", "x").is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
