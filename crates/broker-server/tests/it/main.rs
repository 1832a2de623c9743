//! The broker design against a real nats-server (a throwaway one per test), real PostgreSQL, the
//! real provider simulator and real HTTP, Jepsen style: faults are injected while sign-ups arrive,
//! and every sign-up answered 202 must be delivered on each of its channels (duplicates are
//! counted, and absorbed by the providers' idempotency keys). The server never answers 500.
//!
//! The limits on waiting only stop a test that would otherwise hang; nothing here is a timing
//! threshold.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use broker_server::nats::NatsServer;
use broker_server::{Config, Endpoints, Role, Service, Settings, dlq};
use provider_sim::testing::{all, fixed};
use provider_sim::{Outage, SimConfig, Summary};
use queue_core::Backoff;
use serde_json::Value;
use signup_core::testing::{expected_channels, registration};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for deliveries before it gives up (a hang, not a threshold).
const PATIENCE: Duration = Duration::from_secs(120);

/// Quick retries and a short ack wait, so that tests of failure finish in seconds.
fn quick() -> Config {
    Config {
        settings: Settings {
            provider_timeout: Duration::from_secs(2),
            lease: Duration::from_secs(4),
            ..Settings::default()
        },
        backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(500),
        },
        grace: Duration::from_secs(5),
        ..Config::default()
    }
}

struct Stack {
    url: String,
    providers_url: String,
    http: reqwest::Client,
    db: PgPool,
    /// Taken out only while a test restarts it.
    nats: Option<NatsServer>,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

async fn start(providers: SimConfig, config: Config) -> Stack {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .unwrap();
    let providers_url = provider_sim::testing::spawn(providers).await;
    let endpoints = Endpoints {
        database_url: fanbench_db::testing::fresh_database().await.unwrap(),
        log_database_url: fanbench_db::testing::fresh_empty_database().await.unwrap(),
        providers_url: providers_url.clone(),
        nats_url: nats.url(),
    };
    let service = Service::start(&config, Role::All, &endpoints)
        .await
        .unwrap();
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(service.run(listener, stop.clone()));
    let db = PgPool::connect(&endpoints.database_url).await.unwrap();
    Stack {
        url,
        providers_url,
        http: reqwest::Client::new(),
        db,
        nats: Some(nats),
        stop,
        server,
    }
}

impl Stack {
    /// Signs up user `i`; returns its idempotency keys. Every sign-up must be accepted.
    async fn sign_up_one(&self, i: usize) -> Vec<String> {
        let r = self
            .http
            .post(format!("{}/register", self.url))
            .json(&registration(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "sign-up {i}");
        let body: Value = r.json().await.unwrap();
        let event = body["event_id"].as_str().unwrap().to_string();
        expected_channels(i)
            .into_iter()
            .map(|c| format!("{event}:{c}"))
            .collect()
    }

    /// Signs up users `from..from+n`, a few at a time; returns the expected idempotency keys.
    async fn sign_up(&self, from: usize, n: usize) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for chunk in (from..from + n).collect::<Vec<_>>().chunks(10) {
            let answers =
                futures::future::join_all(chunk.iter().map(|&i| self.sign_up_one(i))).await;
            keys.extend(answers.into_iter().flatten());
        }
        keys
    }

    async fn summary(&self) -> Summary {
        provider_sim::testing::summary(&self.http, &self.providers_url).await
    }

    async fn delivered_keys(&self) -> BTreeSet<String> {
        provider_sim::testing::ledger(&self.http, &self.providers_url)
            .await
            .into_iter()
            .map(|d| d.key)
            .collect()
    }

    /// Waits until the ledger holds exactly `keys` (nothing lost, nothing never accepted).
    async fn wait_delivered(&self, keys: &BTreeSet<String>) {
        let start = Instant::now();
        loop {
            let got = self.delivered_keys().await;
            let unexpected: Vec<_> = got.difference(keys).take(5).collect();
            assert!(
                unexpected.is_empty(),
                "delivered but never accepted: {unexpected:?}"
            );
            if got == *keys {
                return;
            }
            let missing: Vec<_> = keys.difference(&got).take(5).collect();
            assert!(
                start.elapsed() < PATIENCE,
                "{} of {} delivered; missing e.g. {missing:?}",
                got.len(),
                keys.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the outbox is published and every consumer has finished everything.
    async fn wait_drained(&self) {
        let url = self.nats.as_ref().unwrap().url();
        let broker = broker_server::stream::Broker::attach(&url).await.unwrap();
        let start = Instant::now();
        loop {
            if broker_server::stream::remaining(&self.db, &broker).await == Ok(0) {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "never drained");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A gauge or counter of the server's `/metrics`, by name and labels.
    async fn metric(&self, name_and_labels: &str) -> f64 {
        signup_core::testing::metric(&self.http, &self.url, name_and_labels).await
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
        if let Some(nats) = self.nats {
            tokio::task::spawn_blocking(move || nats.stop())
                .await
                .unwrap();
        }
    }
}

/// Duplicates the providers absorbed (sends of a key they had already delivered).
fn duplicates(s: &Summary) -> u64 {
    s.email.duplicates + s.sms.duplicates + s.push.duplicates
}

/// The ledger counts each key once, however often it was sent.
fn delivered_once_each(s: &Summary, keys: &BTreeSet<String>) {
    assert_eq!(
        (s.email.delivered + s.sms.delivered + s.push.delivered) as usize,
        keys.len(),
        "{s:?}"
    );
}

#[tokio::test]
async fn every_accepted_sign_up_is_delivered_on_each_of_its_channels() {
    let stack = start(all(fixed(2)), quick()).await;
    let keys = stack.sign_up(0, 60).await;
    stack.wait_delivered(&keys).await;
    let summary = stack.summary().await;
    delivered_once_each(&summary, &keys);
    assert_eq!(duplicates(&summary), 0, "no fault, no re-send: {summary:?}");
    stack.wait_drained().await;

    // A second sign-up of an email is refused, and queues nothing.
    let r = stack
        .http
        .post(format!("{}/register", stack.url))
        .json(&registration(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM broker_outbox")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(rows, 60, "one outbox row per accepted sign-up");

    // The workers report their channels' backlog under the async design's metric names.
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "fanbench_queue_depth{channel=\"sms\"}",
        "fanbench_deliveries_sent_total{channel=\"email\"}",
        "fanbench_outbox_unpublished",
    ] {
        assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
    }
    stack.shutdown().await;
}

/// kill -9 of nats-server in the middle of a burst, then a restart on the same port and store:
/// sign-ups are accepted throughout (the outbox holds them), and the relay catches up.
#[tokio::test]
async fn nats_killed_mid_burst_and_restarted_loses_nothing() {
    // Sends take 50 ms, so the kill lands with messages delivered and not yet acked.
    let mut stack = start(all(fixed(50)), quick()).await;
    let mut nats = stack.nats.take().unwrap();
    let pid = nats.pid().unwrap();

    // 120 sign-ups, ten at a time; the kill lands once a third are in, with messages published,
    // delivered and not yet acked, and the rest of the burst arrives while the broker is down.
    let burst = stack.sign_up(0, 120);
    let killer = async {
        loop {
            let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(&stack.db)
                .await
                .unwrap();
            if users >= 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    let (mut keys, ()) = futures::join!(burst, killer);
    // Reap it, with the store left as the kill left it.
    nats.kill();

    // While the broker is down, sign-ups are still accepted (every one above answered 202), and
    // wait in the outbox.
    keys.extend(stack.sign_up(120, 30).await);
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM broker_outbox WHERE published_at IS NULL")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert!(
        unpublished > 0,
        "with NATS down, the outbox holds the sign-ups"
    );

    let nats = tokio::task::spawn_blocking(move || {
        nats.restart().unwrap();
        nats
    })
    .await
    .unwrap();
    stack.nats = Some(nats);
    keys.extend(stack.sign_up(150, 30).await);

    stack.wait_delivered(&keys).await;
    stack.wait_drained().await;
    let summary = stack.summary().await;
    delivered_once_each(&summary, &keys);
    eprintln!(
        "nats kill -9: {} notifications delivered, {} duplicate sends absorbed",
        keys.len(),
        duplicates(&summary)
    );
    stack.shutdown().await;
}

/// A provider outage: SMS fails with 503 for a while; its sends are retried (nak with a delay)
/// and all arrive once it is back, and the other channels are not held up.
#[tokio::test]
async fn a_provider_outage_delays_sends_and_loses_none() {
    let mut providers = all(fixed(2));
    providers.sms.outages = vec![Outage {
        start: Duration::ZERO,
        duration: Duration::from_secs(3),
    }];
    let stack = start(providers, quick()).await;
    let keys = stack.sign_up(0, 60).await;
    stack.wait_delivered(&keys).await;
    stack.wait_drained().await;
    let summary = stack.summary().await;
    delivered_once_each(&summary, &keys);
    let dead = dlq::list(&stack.db, None, 100).await.unwrap();
    assert!(dead.is_empty(), "retries outlast the outage: {dead:?}");
    eprintln!(
        "provider outage: {} delivered, {} duplicates",
        keys.len(),
        duplicates(&summary)
    );
    stack.shutdown().await;
}

/// A send that never succeeds is dead-lettered in PostgreSQL after the last attempt, and a replay
/// delivers it once the provider is fixed.
#[tokio::test]
async fn the_last_attempt_dead_letters_and_a_replay_delivers() {
    let mut providers = all(fixed(2));
    providers.push.error_rate = 1.0;
    let mut config = quick();
    config.settings.max_attempts = 2;
    let stack = start(providers, config.clone()).await;
    let keys = stack.sign_up(0, 4).await;
    let push: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.ends_with(":push"))
        .cloned()
        .collect();
    let others: BTreeSet<String> = keys.difference(&push).cloned().collect();
    stack.wait_delivered(&others).await;
    stack.wait_drained().await;
    let dead = dlq::list(&stack.db, None, 100).await.unwrap();
    assert_eq!(dead.len(), push.len(), "{dead:?}");
    assert!(dead.iter().all(|d| d.channel == "push" && d.attempt == 2));

    // Fix the provider, replay, and everything owed arrives.
    let r = stack
        .http
        .put(format!("{}/admin/channels/push", stack.providers_url))
        .json(&fixed(2))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let replayed = dlq::replay(&stack.db, None, &[]).await.unwrap();
    assert_eq!(replayed as usize, push.len());
    stack.wait_delivered(&keys).await;
    assert!(dlq::list(&stack.db, None, 100).await.unwrap().is_empty());
    stack.shutdown().await;
}

/// Published outbox rows go once they are older than `prune_after` (here at once); the
/// deliveries they carried are made all the same.
#[tokio::test]
async fn published_outbox_rows_are_pruned() {
    let mut config = quick();
    config.prune_after = Duration::ZERO;
    let stack = start(all(fixed(2)), config).await;
    let keys = stack.sign_up(0, 10).await;
    stack.wait_delivered(&keys).await;
    let start = Instant::now();
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM broker_outbox")
            .fetch_one(&stack.db)
            .await
            .unwrap();
        if rows == 0 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{rows} rows never pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.shutdown().await;
}

const SMS_LIMIT: &str = r#"fanbench_deliveries_concurrency_limit{channel="sms"}"#;

/// A slow but healthy provider with a backlog: the channel's send slots grow past their floor and
/// stay within their cap, as the async design's do (the same `queue_core::limit`), and the gauge
/// says so.
#[tokio::test]
async fn a_saturated_channel_with_a_healthy_provider_gets_more_slots() {
    let providers = SimConfig {
        sms: fixed(100),
        ..all(fixed(1))
    };
    let mut config = quick();
    config.settings.concurrency = 2;
    config.settings.max_concurrency = 48;
    let stack = start(providers, config).await;
    assert_eq!(stack.metric(SMS_LIMIT).await, 2.0, "it starts at the floor");
    let keys = stack.sign_up(0, 300).await;
    stack.wait_delivered(&keys).await;
    delivered_once_each(&stack.summary().await, &keys);
    let grown = stack.metric(SMS_LIMIT).await;
    assert!(grown > 2.0 && grown <= 48.0, "the SMS limit is {grown}");
    stack.shutdown().await;
}

/// `max_concurrency` equal to `concurrency` is a fixed bound, as the broker's slots were before
/// they adapted: the same backlog leaves the limit where it started.
#[tokio::test]
async fn a_cap_at_the_floor_is_a_fixed_bound() {
    let providers = SimConfig {
        sms: fixed(100),
        ..all(fixed(1))
    };
    let mut config = quick();
    config.settings.concurrency = 8;
    config.settings.max_concurrency = 8;
    let stack = start(providers, config).await;
    let keys = stack.sign_up(0, 150).await;
    stack.wait_delivered(&keys).await;
    assert_eq!(stack.metric(SMS_LIMIT).await, 8.0);
    stack.shutdown().await;
}
