//! `fanbench demo`: the whole stack in one process and one sign-up through it, over real HTTP.

use anyhow::{Context, Result, bail};
use provider_sim::{SimConfig, Simulator};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::serve::{bind, open_database};

pub async fn run(args: DemoArgs) -> Result<()> {
    let stop = CancellationToken::new();
    let db = open_database(args.database.database_url.as_deref()).await?;
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));

    let sim = Simulator::new(SimConfig::default()).map_err(anyhow::Error::msg)?;
    let sim_listener = bind(loopback).await?;
    let providers_url = format!("http://{}", sim_listener.local_addr()?);
    let sim_task = tokio::spawn(provider_sim::run(
        sim_listener,
        sim,
        stop.clone().cancelled_owned(),
    ));

    let state =
        sync_server::AppState::connect(&sync_server::Config::default(), db.url(), &providers_url)
            .await?;
    let sync_listener = bind(loopback).await?;
    let sync_url = format!("http://{}", sync_listener.local_addr()?);
    let sync_task = tokio::spawn(sync_server::run(
        sync_listener,
        state,
        stop.clone().cancelled_owned(),
    ));

    let outcome = sign_up_once(&sync_url, &providers_url).await;
    stop.cancel();
    let _ = sim_task.await;
    let _ = sync_task.await;
    drop(db);
    outcome
}

async fn sign_up_once(sync_url: &str, providers_url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let body = json!({
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "phone": "+441234567890",
        "device_token": "device-ada-1",
    });
    println!("POST {sync_url}/register {body}");
    let started = std::time::Instant::now();
    let response = http
        .post(format!("{sync_url}/register"))
        .json(&body)
        .send()
        .await
        .context("sign-up failed")?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .context("sign-up answer is not JSON")?;
    println!(
        "← {status} in {:.0} ms: {answer}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    if !status.is_success() {
        bail!("the sync server answered {status}");
    }
    let summary: Value = http
        .get(format!("{providers_url}/ledger/summary"))
        .send()
        .await?
        .json()
        .await?;
    println!("provider ledger: {summary}");
    println!(
        "(naive design: the answer waited for all three providers while holding a database connection)"
    );
    Ok(())
}
