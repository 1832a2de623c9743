//! `fanbench serve …`: one piece of the system, until a signal.

use std::path::Path;

use anyhow::{Context, Result};
use fanbench_db::Database;
use provider_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

use crate::cli::{AsyncArgs, BrokerArgs, NullArgs, ProvidersArgs, RoleArg, ServeCommand, SyncArgs};
use crate::shutdown;

pub async fn run(command: ServeCommand) -> Result<()> {
    match command {
        ServeCommand::Providers(args) => providers(args).await,
        ServeCommand::Sync(args) => sync(args).await,
        ServeCommand::Async(args) => serve_async(args).await,
        ServeCommand::Broker(args) => serve_broker(args).await,
        ServeCommand::Null(args) => null(args).await,
    }
}

/// Reads the body (as a real server would) and answers 202 with a small JSON body.
async fn null(args: NullArgs) -> Result<()> {
    use axum::http::StatusCode;
    let router = axum::Router::new().route(
        "/register",
        axum::routing::post(|_body: axum::body::Bytes| async {
            (
                StatusCode::ACCEPTED,
                [("content-type", "application/json")],
                r#"{"accepted":true}"#,
            )
        }),
    );
    let listener = bind(args.listen).await?;
    announce("null endpoint", &listener)?;
    let stop = stop_token(args.watch_stdin);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("null endpoint failed")
}

async fn providers(args: ProvidersArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => read_sim_config(path)?,
        None => SimConfig::default(),
    };
    let sim = Simulator::new(config)
        .map_err(anyhow::Error::msg)
        .context("invalid provider behaviour")?;
    let listener = bind(args.listen).await?;
    announce("provider simulator", &listener)?;
    let stop = stop_token(args.watch_stdin);
    provider_sim::run(listener, sim, async move { stop.cancelled().await })
        .await
        .context("provider simulator failed")
}

async fn sync(args: SyncArgs) -> Result<()> {
    let stop = stop_token(args.watch_stdin);
    let db = open_database(args.database.database_url.as_deref()).await?;
    let config = sync_server::Config {
        pool_size: args.pool.pool_size,
        acquire_timeout: args.pool.acquire_timeout.into(),
        provider_timeout: args.provider_timeout.into(),
    };
    let state = sync_server::AppState::connect(&config, db.url(), &args.providers_url)
        .await
        .context("could not start the sync server")?;
    let listener = bind(args.listen).await?;
    announce("sync server (naive design)", &listener)?;
    let served = sync_server::run(listener, state, async move { stop.cancelled().await }).await;
    // The database (and a throwaway cluster with it) goes only after the server has stopped.
    drop(db);
    served.context("sync server failed")
}

async fn serve_async(args: AsyncArgs) -> Result<()> {
    let stop = stop_token(args.watch_stdin);
    let db = open_database(args.database.database_url.as_deref()).await?;
    let log_database_url = match args.log_database_url {
        Some(url) => url,
        None => {
            let name = format!("{}_logs", database_name(db.url()));
            fanbench_db::database_url_with_name(db.url(), &name)?
        }
    };
    fanbench_db::ensure_database(&log_database_url)
        .await
        .context("could not prepare the log store database")?;
    let w = &args.workers;
    let config = async_server::Config {
        pool_size: args.pool.pool_size,
        acquire_timeout: args.pool.acquire_timeout.into(),
        provider_timeout: args.provider_timeout.into(),
        workers: async_server::WorkerConfig {
            concurrency: w.concurrency as usize,
            max_concurrency: w.max_concurrency as usize,
            batch: w.batch as usize,
            poll_interval: w.poll_interval.into(),
            lease: w.lease.into(),
            max_attempts: w.max_attempts,
            grace: w.grace.into(),
            prune_after: w.prune_after.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    if config.workers.lease <= config.provider_timeout {
        tracing::warn!(
            lease = ?config.workers.lease,
            provider_timeout = ?config.provider_timeout,
            "the lease is not longer than the provider timeout: a slow send can be claimed again while it runs"
        );
    }
    let role = role(args.role);
    let endpoints = async_server::Endpoints {
        database_url: db.url().to_string(),
        log_database_url,
        providers_url: args.providers_url,
    };
    let service = async_server::Service::start(&config, role, &endpoints)
        .await
        .context("could not start the async server")?;
    let listener = bind(args.listen).await?;
    announce("async server (queue-backed design)", &listener)?;
    let served = service.run(listener, stop).await;
    drop(db);
    served.context("async server failed")
}

fn role(arg: RoleArg) -> async_server::Role {
    match arg {
        RoleArg::All => async_server::Role::All,
        RoleArg::Api => async_server::Role::Api,
        RoleArg::Workers => async_server::Role::Workers,
    }
}

/// `fanbench serve broker`: the database (or a throwaway cluster), NATS (or a throwaway
/// `nats-server -js`), then the service; on the way out the service stops first, then the
/// throwaway servers go.
async fn serve_broker(args: BrokerArgs) -> Result<()> {
    let stop = stop_token(args.watch_stdin);
    let db = open_database(args.database.database_url.as_deref()).await?;
    let log_database_url = match args.log_database_url {
        Some(url) => url,
        None => {
            let name = format!("{}_logs", database_name(db.url()));
            fanbench_db::database_url_with_name(db.url(), &name)?
        }
    };
    fanbench_db::ensure_database(&log_database_url)
        .await
        .context("could not prepare the log store database")?;
    let (nats_url, nats) = match args.nats_url {
        Some(url) => (url, None),
        None => {
            tracing::info!("no --nats-url: starting a throwaway nats-server -js");
            let server = start_nats().await?;
            (server.url(), Some(server))
        }
    };
    let config = broker_server::Config {
        settings: broker_server::Settings {
            pool_size: args.pool_size,
            acquire_timeout: args.acquire_timeout.into(),
            provider_timeout: args.provider_timeout.into(),
            concurrency: args.concurrency,
            max_concurrency: args.max_concurrency,
            batch: args.batch,
            poll_interval: args.poll_interval.into(),
            lease: args.lease.into(),
            max_attempts: args.max_attempts,
            ..Default::default()
        },
        grace: args.grace.into(),
        prune_after: args.prune_after.into(),
        ..Default::default()
    };
    let endpoints = broker_server::Endpoints {
        database_url: db.url().to_string(),
        log_database_url,
        providers_url: args.providers_url,
        nats_url,
    };
    let service = broker_server::Service::start(&config, role(args.role), &endpoints)
        .await
        .context("could not start the broker server")?;
    let listener = bind(args.listen).await?;
    announce("broker server (JetStream design)", &listener)?;
    let served = service.run(listener, stop).await;
    if let Some(nats) = nats {
        let _ = tokio::task::spawn_blocking(move || nats.stop()).await;
    }
    drop(db);
    served.context("broker server failed")
}

/// Starts a throwaway `nats-server -js` off the async runtime's threads.
pub async fn start_nats() -> Result<broker_server::nats::NatsServer> {
    tokio::task::spawn_blocking(broker_server::nats::NatsServer::start)
        .await
        .context("starting nats-server")?
        .context("could not start a throwaway nats-server")
}

/// The database name in a PostgreSQL URL (`postgres` when it names none).
fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let after_host = path.split_once("://").map_or(path, |(_, rest)| rest);
    match after_host.split_once('/') {
        Some((_, name)) if !name.is_empty() => name.to_string(),
        _ => "postgres".to_string(),
    }
}

fn stop_token(watch_stdin: bool) -> tokio_util::sync::CancellationToken {
    let stop = shutdown::on_signal();
    if watch_stdin {
        shutdown::on_stdin_eof(stop.clone());
    }
    stop
}

/// Opens the primary database, starting a throwaway cluster when no URL is given.
pub async fn open_database(url: Option<&str>) -> Result<Database> {
    if url.is_none() {
        tracing::info!("no DATABASE_URL: starting a throwaway PostgreSQL cluster");
    }
    Database::open(url, "fanbench")
        .await
        .context("could not prepare the database")
}

pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))
}

/// Prints where a server listens, on stdout, so scripts can read the port when it was 0.
pub fn announce(what: &str, listener: &TcpListener) -> Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    println!("{what} listening on http://{addr}");
    Ok(())
}

/// Reads a provider configuration from JSON or TOML (by extension; TOML otherwise).
pub fn read_sim_config(path: &Path) -> Result<SimConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    let config: SimConfig = if is_json {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid provider configuration", path.display()))?
    } else {
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{}: invalid provider configuration: {e}", path.display())
        })?
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_come_from_the_url() {
        assert_eq!(database_name("postgres://u@h:5/app?sslmode=disable"), "app");
        assert_eq!(database_name("postgres://u@h:5"), "postgres");
        assert_eq!(database_name("postgres://u@h:5/"), "postgres");
    }

    #[test]
    fn the_example_provider_config_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/providers.example.toml");
        let config = read_sim_config(&path).unwrap();
        assert_eq!(config.sms.rate_limit, Some(200.0));
        assert_eq!(config.sms.outages.len(), 1);
    }
}
