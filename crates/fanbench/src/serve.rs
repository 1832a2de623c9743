//! `fanbench serve …`: one piece of the system, until a signal.

use std::path::Path;

use anyhow::{Context, Result};
use fanbench_db::Database;
use provider_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

use crate::cli::{ProvidersArgs, ServeCommand, SyncArgs};
use crate::shutdown;

pub async fn run(command: ServeCommand) -> Result<()> {
    match command {
        ServeCommand::Providers(args) => providers(args).await,
        ServeCommand::Sync(args) => sync(args).await,
    }
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
    let stop = shutdown::on_signal();
    provider_sim::run(listener, sim, async move { stop.cancelled().await })
        .await
        .context("provider simulator failed")
}

async fn sync(args: SyncArgs) -> Result<()> {
    let stop = shutdown::on_signal();
    let db = open_database(args.database.database_url.as_deref()).await?;
    let config = sync_server::Config {
        pool_size: args.pool.pool_size,
        acquire_timeout: args.pool.acquire_timeout,
        provider_timeout: args.provider_timeout,
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
    fn the_example_provider_config_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/providers.example.toml");
        let config = read_sim_config(&path).unwrap();
        assert_eq!(config.sms.rate_limit, Some(200.0));
        assert_eq!(config.sms.outages.len(), 1);
    }
}
