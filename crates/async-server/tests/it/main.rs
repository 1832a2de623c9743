//! The queue-backed design against real PostgreSQL, the real provider simulator and real HTTP:
//! nothing accepted is lost, failures are retried or dead-lettered, channels do not hold each
//! other up, and shutdown gives back what it held.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use async_server::queue::Backoff;
use async_server::{Config, Endpoints, Role, Service, WorkerConfig, dlq};
use chrono::Utc;
use provider_sim::testing::{all, fixed};
use provider_sim::{ChannelBehaviour, Delivery, Outage, SimConfig, Summary};
use serde_json::Value;
use signup_core::Channel;
use signup_core::testing::{expected_channels, registration};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Quick retries so that tests of failure finish in seconds.
fn quick() -> Config {
    Config {
        workers: WorkerConfig {
            backoff: Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(200),
            },
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
        ..Config::default()
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap()
}

struct Stack {
    url: String,
    providers_url: String,
    endpoints: Endpoints,
    http: reqwest::Client,
    db: PgPool,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

async fn start_providers(providers: SimConfig) -> String {
    provider_sim::testing::spawn(providers).await
}

async fn serve(
    config: &Config,
    endpoints: &Endpoints,
) -> (String, CancellationToken, JoinHandle<std::io::Result<()>>) {
    let service = Service::start(config, Role::All, endpoints).await.unwrap();
    let server_listener = listener().await;
    let url = format!("http://{}", server_listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(service.run(server_listener, stop.clone()));
    (url, stop, server)
}

async fn start(providers: SimConfig, config: Config) -> Stack {
    let providers_url = start_providers(providers).await;
    let endpoints = Endpoints {
        database_url: fanbench_db::testing::fresh_database().await.unwrap(),
        log_database_url: fanbench_db::testing::fresh_empty_database().await.unwrap(),
        providers_url: providers_url.clone(),
    };
    let (url, stop, server) = serve(&config, &endpoints).await;
    let db = PgPool::connect(&endpoints.database_url).await.unwrap();
    Stack {
        url,
        providers_url,
        endpoints,
        http: reqwest::Client::new(),
        db,
        stop,
        server,
    }
}

impl Stack {
    /// Signs up `n` users (ids `from..from+n`) concurrently; returns the expected idempotency keys.
    async fn sign_up(&self, from: usize, n: usize) -> BTreeSet<String> {
        let answers = futures::future::join_all((from..from + n).map(|i| async move {
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
                .collect::<Vec<_>>()
        }))
        .await;
        answers.into_iter().flatten().collect()
    }

    async fn summary(&self) -> Summary {
        provider_sim::testing::summary(&self.http, &self.providers_url).await
    }

    async fn ledger(&self) -> Vec<Delivery> {
        provider_sim::testing::ledger(&self.http, &self.providers_url).await
    }

    async fn delivered_keys(&self) -> BTreeSet<String> {
        self.ledger().await.into_iter().map(|d| d.key).collect()
    }

    /// Waits until the ledger holds exactly `keys`, or fails after `limit` naming what is missing.
    async fn wait_delivered(&self, keys: &BTreeSet<String>, limit: Duration) {
        let start = Instant::now();
        loop {
            let got = self.delivered_keys().await;
            if got == *keys {
                return;
            }
            let missing: Vec<_> = keys.difference(&got).take(5).collect();
            let unexpected: Vec<_> = got.difference(keys).take(5).collect();
            assert!(
                unexpected.is_empty(),
                "delivered but never accepted: {unexpected:?}"
            );
            assert!(
                start.elapsed() < limit,
                "{} of {} delivered after {limit:?}; missing e.g. {missing:?}",
                got.len(),
                keys.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A gauge or counter of the server's `/metrics`, by name and labels.
    async fn metric(&self, name_and_labels: &str) -> f64 {
        signup_core::testing::metric(&self.http, &self.url, name_and_labels).await
    }

    async fn pending(&self, channel: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM deliveries WHERE state = 'pending' AND channel = $1",
        )
        .bind(channel)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.server.await.unwrap().unwrap();
    }
}

fn no_duplicates(s: &Summary) {
    assert_eq!(
        (s.email.duplicates, s.sms.duplicates, s.push.duplicates),
        (0, 0, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn every_accepted_registration_is_delivered_once_per_channel() {
    let stack = start(all(fixed(2)), Config::default()).await;
    let keys = stack.sign_up(0, 60).await;
    stack.wait_delivered(&keys, Duration::from_secs(20)).await;
    no_duplicates(&stack.summary().await);

    // The day's count is exact, read from the users themselves; the request path left the shared
    // counter row alone.
    let (users, counter_rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM signup_counter)",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!((users, counter_rows), (60, 0));
    assert_eq!(async_server::signups_today(&stack.db).await.unwrap(), 60);
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM deliveries GROUP BY state")
            .fetch_all(&stack.db)
            .await
            .unwrap();
    assert_eq!(states, vec![("done".to_string(), keys.len() as i64)]);

    // The request path wrote no logs; the workers wrote them to the dedicated store, not here.
    let (primary_logs,): (i64,) = sqlx::query_as("SELECT count(*) FROM notification_log")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(primary_logs, 0);
    let logs = PgPool::connect(&stack.endpoints.log_database_url)
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_log WHERE outcome = 'sent'")
            .fetch_one(&logs)
            .await
            .unwrap_or(0);
        if n == keys.len() as i64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{n} of {} logs written",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn half_the_sends_failing_still_delivers_everything_with_retries_counted() {
    let stack = start(
        all(ChannelBehaviour {
            error_rate: 0.5,
            ..fixed(1)
        }),
        Config {
            workers: WorkerConfig {
                max_attempts: 30,
                ..quick().workers
            },
            ..quick()
        },
    )
    .await;
    let keys = stack.sign_up(0, 40).await;
    stack.wait_delivered(&keys, Duration::from_secs(30)).await;
    let s = stack.summary().await;
    no_duplicates(&s);
    let rejected = s.email.rejected + s.sms.rejected + s.push.rejected;
    let retried = stack
        .metric(r#"fanbench_deliveries_retried_total{channel="email"}"#)
        .await
        + stack
            .metric(r#"fanbench_deliveries_retried_total{channel="sms"}"#)
            .await
        + stack
            .metric(r#"fanbench_deliveries_retried_total{channel="push"}"#)
            .await;
    assert!(rejected > 10, "a 50 % error rate rejected only {rejected}");
    assert_eq!(retried as u64, rejected, "every rejected send was retried");
    stack.shutdown().await;
}

/// Every provider answers in a millisecond, and SMS always fails.
fn sms_always_failing() -> SimConfig {
    SimConfig {
        sms: ChannelBehaviour {
            error_rate: 1.0,
            ..fixed(1)
        },
        ..all(fixed(1))
    }
}

/// The quick settings, with a dead letter after the third attempt.
fn three_attempts() -> Config {
    Config {
        workers: WorkerConfig {
            max_attempts: 3,
            ..quick().workers
        },
        ..quick()
    }
}

#[tokio::test]
async fn permanent_failure_dead_letters_after_max_attempts_and_replay_delivers() {
    let stack = start(sms_always_failing(), three_attempts()).await;
    let keys = stack.sign_up(0, 12).await;
    let sms_keys: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.ends_with(":sms"))
        .cloned()
        .collect();
    let others: BTreeSet<String> = keys.difference(&sms_keys).cloned().collect();
    stack.wait_delivered(&others, Duration::from_secs(20)).await;

    let start = Instant::now();
    let dead = loop {
        let dead = dlq::list(&stack.db, None, 100).await.unwrap();
        if dead.len() == sms_keys.len() {
            break dead;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {} dead-lettered",
            dead.len(),
            sms_keys.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dead.iter().all(|d| d.channel == "sms" && d.attempt == 3),
        "{dead:?}"
    );
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("sms provider answered"),
        "{dead:?}"
    );
    assert_eq!(
        stack.summary().await.sms.rejected,
        3 * sms_keys.len() as u64,
        "exactly max_attempts tries each"
    );
    let dead_gauge = stack.metric(r#"fanbench_queue_dead{channel="sms"}"#).await;
    let dead_counter = stack
        .metric(r#"fanbench_deliveries_dead_lettered_total{channel="sms"}"#)
        .await;
    assert_eq!(dead_counter as usize, sms_keys.len());
    assert!(dead_gauge <= sms_keys.len() as f64);

    // The provider recovers; a replay delivers every dead letter.
    stack.sms_recovers().await;
    assert_eq!(
        dlq::replay(&stack.db, Some(signup_core::Channel::Sms), &[])
            .await
            .unwrap(),
        sms_keys.len() as u64
    );
    stack.wait_delivered(&keys, Duration::from_secs(20)).await;
    assert!(dlq::list(&stack.db, None, 100).await.unwrap().is_empty());
    no_duplicates(&stack.summary().await);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_replay_keeps_attempt_numbers_growing_with_a_fresh_budget() {
    let stack = start(sms_always_failing(), three_attempts()).await;
    // user1 has email and SMS only: one SMS delivery to follow.
    let keys = stack.sign_up(1, 1).await;
    let sms_key = keys.iter().find(|k| k.ends_with(":sms")).unwrap().clone();
    let event_id = sms_key.split(':').next().unwrap().to_string();

    let wait_dead = |attempt: i32| {
        let db = &stack.db;
        async move {
            let start = Instant::now();
            loop {
                let dead = dlq::list(db, Some(Channel::Sms), 10).await.unwrap();
                if let [d] = dead.as_slice() {
                    assert_eq!(d.attempt, attempt, "{d:?}");
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "not dead-lettered"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_dead(3).await;
    assert_eq!(stack.summary().await.sms.rejected, 3);

    // Still failing: the replay gets a whole new budget of three attempts, numbered 4 to 6.
    assert_eq!(
        dlq::replay(&stack.db, Some(Channel::Sms), &[])
            .await
            .unwrap(),
        1
    );
    let (attempt, base): (i32, i32) =
        sqlx::query_as("SELECT attempt, attempt_base FROM deliveries WHERE channel = 'sms'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    // A worker may have claimed it again already (attempt 4); the number is never reset.
    assert_eq!(base, 3, "the budget restarts from the attempts made");
    assert!(attempt >= 3, "the number is kept: {attempt}");
    wait_dead(6).await;
    assert_eq!(
        stack.summary().await.sms.rejected,
        6,
        "exactly three more tries"
    );

    // Recovered: the second replay delivers, with attempt 7.
    stack.sms_recovers().await;
    assert_eq!(dlq::replay(&stack.db, None, &[]).await.unwrap(), 1);
    stack.wait_delivered(&keys, Duration::from_secs(20)).await;

    // The delivery log saw every attempt once, numbered 1 to 7.
    let logs = PgPool::connect(&stack.endpoints.log_database_url)
        .await
        .unwrap();
    let start = Instant::now();
    let attempts = loop {
        let attempts: Vec<i32> = sqlx::query_scalar(
            "SELECT attempt FROM delivery_log WHERE event_id::text = $1 AND channel = 'sms'
              ORDER BY attempt",
        )
        .bind(&event_id)
        .fetch_all(&logs)
        .await
        .unwrap_or_default();
        if attempts.len() >= 7 || start.elapsed() > Duration::from_secs(10) {
            break attempts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempts, (1..=7).collect::<Vec<i32>>());
    stack.shutdown().await;
}

#[tokio::test]
async fn an_outage_grows_a_backlog_that_drains_afterwards() {
    let down = ChannelBehaviour {
        outages: vec![Outage {
            start: Duration::ZERO,
            duration: Duration::from_secs(2),
        }],
        ..fixed(1)
    };
    let stack = start(
        SimConfig {
            sms: down,
            ..all(fixed(1))
        },
        quick(),
    )
    .await;
    let outage_started = Instant::now();
    let keys = stack.sign_up(0, 30).await;
    let sms_count = keys.iter().filter(|k| k.ends_with(":sms")).count() as i64;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        outage_started.elapsed() < Duration::from_secs(2),
        "the machine was too slow to observe the outage"
    );
    assert_eq!(
        stack.pending("sms").await,
        sms_count,
        "SMS backs up during the outage"
    );
    assert_eq!(stack.pending("email").await, 0, "email is unaffected");

    stack.wait_delivered(&keys, Duration::from_secs(20)).await;
    assert!(outage_started.elapsed() >= Duration::from_secs(2));
    no_duplicates(&stack.summary().await);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_slow_sms_provider_does_not_delay_email() {
    // SMS takes 2 s a send with only 4 slots (a fixed bound: the limit does not adapt): 30 SMS
    // take about 15 s to get through.
    let providers = SimConfig {
        sms: fixed(2000),
        ..all(fixed(5))
    };
    let config = Config {
        workers: WorkerConfig {
            concurrency: 4,
            max_concurrency: 4,
            ..WorkerConfig::default()
        },
        ..Config::default()
    };
    let stack = start(providers, config).await;
    let sent_at = Utc::now();
    let keys = stack.sign_up(0, 45).await;
    let emails: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.ends_with(":email"))
        .cloned()
        .collect();
    stack
        .wait_delivered_subset(&emails, Duration::from_secs(10))
        .await;

    let ledger = stack.ledger().await;
    let slowest_email = ledger
        .iter()
        .filter(|d| d.channel == Channel::Email)
        .map(|d| (d.received_at - sent_at).to_std().unwrap())
        .max()
        .unwrap();
    let sms_done = ledger.iter().filter(|d| d.channel == Channel::Sms).count();
    // The bound: the sign-up burst itself, a poll interval and a few batches of 5 ms sends with
    // 4 slots — well under a second — while SMS has barely started.
    assert!(
        slowest_email < Duration::from_secs(2),
        "an email waited {slowest_email:?}"
    );
    assert!(
        sms_done < 15,
        "SMS was meant to be slow, yet {sms_done} are done"
    );
    stack.shutdown().await;
}

/// A slow but healthy provider with a backlog: the channel's limit grows past its floor (and
/// stays within its cap), and the gauge says so.
#[tokio::test]
async fn a_saturated_channel_with_a_healthy_provider_gets_more_slots() {
    let providers = SimConfig {
        sms: fixed(100),
        ..all(fixed(1))
    };
    let config = Config {
        workers: WorkerConfig {
            concurrency: 2,
            max_concurrency: 48,
            ..quick().workers
        },
        ..quick()
    };
    let stack = start(providers, config).await;
    let limit = r#"fanbench_deliveries_concurrency_limit{channel="sms"}"#;
    assert_eq!(stack.metric(limit).await, 2.0, "it starts at the floor");
    let keys = stack.sign_up(0, 300).await;
    stack.wait_delivered(&keys, Duration::from_secs(60)).await;
    no_duplicates(&stack.summary().await);
    let grown = stack.metric(limit).await;
    assert!(grown > 2.0 && grown <= 48.0, "the SMS limit is {grown}");
    stack.shutdown().await;
}

impl Stack {
    /// SMS answers in a millisecond and never fails again (the simulator's admin API).
    async fn sms_recovers(&self) {
        let r = self
            .http
            .put(format!("{}/admin/channels/sms", self.providers_url))
            .json(&fixed(1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Waits until every key in `keys` is delivered (others may be too).
    async fn wait_delivered_subset(&self, keys: &BTreeSet<String>, limit: Duration) {
        let start = Instant::now();
        while !keys.is_subset(&self.delivered_keys().await) {
            assert!(
                start.elapsed() < limit,
                "not all delivered within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn bad_inputs_get_the_same_answers_as_the_sync_design() {
    let stack = start(all(fixed(0)), Config::default()).await;
    for case in signup_core::testing::bad_inputs() {
        let mut request = stack
            .http
            .post(format!("{}/register", stack.url))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), case.status, "{}", case.what);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{}: {body}",
            case.what
        );
    }
    let (users, deliveries): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM deliveries)")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!((users, deliveries), (0, 0));

    stack.sign_up(0, 1).await;
    let r = stack
        .http
        .post(format!("{}/register", stack.url))
        .json(&registration(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "duplicate_email"
    );
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(
        deliveries,
        expected_channels(0).len() as i64,
        "the duplicate queued nothing"
    );
    stack.shutdown().await;
}

/// The one-statement sign-up: a 202 leaves exactly one outbox row per channel the sign-up asked
/// for, and of many concurrent sign-ups of one email exactly one is accepted; the others answer 409
/// and queue nothing.
#[tokio::test]
async fn one_statement_queues_one_row_per_channel_and_a_duplicate_queues_none() {
    // Delivered rows stay in the outbox until pruned, minutes later.
    let stack = start(all(fixed(0)), Config::default()).await;
    let keys = stack.sign_up(0, 12).await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT u.email, d.channel, d.address FROM deliveries d JOIN users u ON u.id = d.user_id
          ORDER BY u.email, d.channel",
    )
    .fetch_all(&stack.db)
    .await
    .unwrap();
    let mut expected: Vec<(String, String, String)> = (0..12)
        .flat_map(|i| {
            let body = registration(i);
            expected_channels(i).into_iter().map(move |c| {
                let field = match c {
                    "email" => "email",
                    "sms" => "phone",
                    _ => "device_token",
                };
                (
                    body["email"].as_str().unwrap().to_string(),
                    c.to_string(),
                    body[field].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    expected.sort();
    assert_eq!(rows, expected);
    assert_eq!(rows.len(), keys.len());

    let answers = futures::future::join_all((0..8).map(|_| {
        stack
            .http
            .post(format!("{}/register", stack.url))
            .json(&registration(100))
            .send()
    }))
    .await;
    let mut statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [202, 409, 409, 409, 409, 409, 409, 409]);
    let (users, deliveries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE email = 'user100@example.com'),
                (SELECT count(*) FROM deliveries d JOIN users u ON u.id = d.user_id
                  WHERE u.email = 'user100@example.com')",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(
        (users, deliveries),
        (1, expected_channels(100).len() as i64)
    );
    stack.shutdown().await;
}

/// The day's count is exact with no counter row: N concurrent sign-ups read back as N, on the day
/// they happened and on no other.
#[tokio::test]
async fn the_days_count_is_exact_without_a_counter_row() {
    let stack = start(all(fixed(0)), Config::default()).await;
    stack.sign_up(0, 50).await;
    let today: chrono::NaiveDate = sqlx::query_scalar("SELECT current_date")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(
        async_server::signups_on(&stack.db, today).await.unwrap(),
        50
    );
    assert_eq!(async_server::signups_today(&stack.db).await.unwrap(), 50);
    let yesterday = today.pred_opt().unwrap();
    let tomorrow = today.succ_opt().unwrap();
    assert_eq!(
        async_server::signups_on(&stack.db, yesterday)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        async_server::signups_on(&stack.db, tomorrow).await.unwrap(),
        0
    );
    // A refused duplicate is not a sign-up.
    let r = stack
        .http
        .post(format!("{}/register", stack.url))
        .json(&registration(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(async_server::signups_today(&stack.db).await.unwrap(), 50);
    let counter_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM signup_counter")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(
        counter_rows, 0,
        "the request path does not write the counter"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_nul_in_any_text_field_gets_422_naming_the_field() {
    let stack = start(all(fixed(0)), Config::default()).await;
    signup_core::testing::assert_nul_inputs_refused(&stack.url).await;
    let (users, deliveries): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM deliveries)")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!((users, deliveries), (0, 0));
    stack.shutdown().await;
}

#[tokio::test]
async fn hostile_bodies_never_get_a_5xx_and_the_server_still_signs_up() {
    let stack = start(all(fixed(0)), Config::default()).await;
    let report = signup_core::testing::fuzz_register(&stack.url, 0x5eed).await;
    assert!(report.sent >= 300, "{report:?}");
    assert!(report.statuses.keys().all(|s| *s < 500), "{report:?}");
    // No panic took the server down: a valid sign-up still goes through.
    let keys = stack.sign_up(1_000_000, 1).await;
    stack
        .wait_delivered_subset(&keys, Duration::from_secs(10))
        .await;
    stack.shutdown().await;
}

/// Holds an uncommitted sign-up of `email`, so the server's sign-up of the same email waits inside
/// its one statement, and ends that waiting backend the way a crashing or restarting server would;
/// then rolls the held one back. (The sync design's tests wait on the counter row instead, which
/// this design's request path no longer touches.)
async fn end_a_sign_up_mid_statement<T>(
    db: &PgPool,
    email: &str,
    request: impl std::future::Future<Output = T>,
) -> T {
    let mut holder = db.begin().await.unwrap();
    sqlx::query("INSERT INTO users (id, email, name) VALUES ($1, $2, 'holder')")
        .bind(uuid::Uuid::now_v7())
        .bind(email)
        .execute(&mut *holder)
        .await
        .unwrap();
    let response = fanbench_db::testing::end_lock_waiters_during(db, request).await;
    holder.rollback().await.unwrap();
    response
}

#[tokio::test]
async fn a_database_failing_mid_request_gets_503_with_retry_after_and_a_retry_is_safe() {
    let stack = start(all(fixed(0)), Config::default()).await;
    let request = stack
        .http
        .post(format!("{}/register", stack.url))
        .json(&registration(0))
        .send();
    let r = end_a_sign_up_mid_statement(&stack.db, "user0@example.com", request)
        .await
        .unwrap();
    signup_core::testing::assert_database_unavailable(r).await;
    let (users, deliveries): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM deliveries)")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!((users, deliveries), (0, 0), "this one had not committed");

    // The server carries on, and the retry the answer invites is accepted and delivered.
    let keys = stack.sign_up(0, 1).await;
    let r = stack
        .http
        .post(format!("{}/register", stack.url))
        .json(&registration(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    stack.wait_delivered(&keys, Duration::from_secs(10)).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_sends_and_releases_what_it_holds() {
    // 300 ms sends and 2 slots a channel (fixed): at shutdown most rows are still waiting, a few
    // in flight.
    let config = Config {
        workers: WorkerConfig {
            concurrency: 2,
            max_concurrency: 2,
            ..WorkerConfig::default()
        },
        ..Config::default()
    };
    let stack = start(all(fixed(300)), config.clone()).await;
    let keys = stack.sign_up(0, 20).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Stack {
        endpoints,
        db,
        http,
        providers_url,
        stop,
        server,
        ..
    } = stack;
    stop.cancel();
    server.await.unwrap().unwrap();

    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE locked_by IS NOT NULL")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(held, 0, "no lease outlives a clean shutdown");
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'done'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        done > 0 && (done as usize) < keys.len(),
        "in-flight sends finished, the rest waited: {done}"
    );

    // A new process picks up the rest at once, not after a lease expiry.
    let (url, stop, server) = serve(&config, &endpoints).await;
    let stack = Stack {
        url,
        providers_url,
        endpoints,
        http,
        db,
        stop,
        server,
    };
    stack.wait_delivered(&keys, Duration::from_secs(20)).await;
    no_duplicates(&stack.summary().await);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_log_store_outage_costs_logs_not_deliveries() {
    let providers_url = start_providers(all(fixed(1))).await;
    // Nothing listens on port 9 of loopback: the log store is down for the whole run.
    let endpoints = Endpoints {
        database_url: fanbench_db::testing::fresh_database().await.unwrap(),
        log_database_url: "postgres://postgres@127.0.0.1:9/logs".into(),
        providers_url: providers_url.clone(),
    };
    let (url, stop, server) = serve(&Config::default(), &endpoints).await;
    let db = PgPool::connect(&endpoints.database_url).await.unwrap();
    let stack = Stack {
        url,
        providers_url,
        endpoints,
        http: reqwest::Client::new(),
        db,
        stop,
        server,
    };
    let keys = stack.sign_up(0, 20).await;
    stack.wait_delivered(&keys, Duration::from_secs(20)).await;
    let start = Instant::now();
    while stack.metric("fanbench_log_entries_dropped_total").await < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dropped logs are counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_postgres_crash_restart_mid_burst_loses_nothing_accepted() {
    // A cluster of its own, since this test restarts it.
    let cluster = tokio::task::spawn_blocking(|| {
        fanbench_db::Cluster::start(&fanbench_db::ClusterOptions::default())
    })
    .await
    .unwrap()
    .unwrap();
    let server_url = cluster.url("postgres");
    let database_url = fanbench_db::create_database(&server_url, "primary", None)
        .await
        .unwrap();
    let pool = fanbench_db::connect_pool(&database_url, 1, Duration::from_secs(10))
        .await
        .unwrap();
    fanbench_db::migrate(&pool).await.unwrap();
    pool.close().await;
    let providers_url = start_providers(all(fixed(1))).await;
    let endpoints = Endpoints {
        database_url,
        log_database_url: fanbench_db::create_database(&server_url, "logs", None)
            .await
            .unwrap(),
        providers_url: providers_url.clone(),
    };
    let config = Config {
        acquire_timeout: Duration::from_secs(2),
        provider_timeout: Duration::from_secs(2),
        workers: WorkerConfig {
            lease: Duration::from_secs(5),
            ..quick().workers
        },
        ..quick()
    };
    let (url, stop, server) = serve(&config, &endpoints).await;

    // 300 sign-ups, one every 7 ms; the server crashes and restarts 0.7 s in.
    let http = reqwest::Client::new();
    let burst = futures::future::join_all((0..300usize).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(7 * i as u64)).await;
            let r = http
                .post(format!("{url}/register"))
                .json(&registration(i))
                .send()
                .await
                .unwrap_or_else(|e| panic!("sign-up {i} got no answer: {e}"));
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            let body: Value = r.json().await.unwrap();
            (i, status, retry_after, body)
        }
    }));
    let restart = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        tokio::task::spawn_blocking(move || {
            cluster.restart_immediate().unwrap();
            cluster
        })
        .await
        .unwrap()
    };
    let (answers, cluster) = tokio::join!(burst, restart);

    let mut accepted = BTreeSet::new();
    let mut refused = Vec::new();
    for (i, status, retry_after, body) in &answers {
        match status {
            202 => {
                let event = body["event_id"].as_str().unwrap();
                accepted.extend(expected_channels(*i).iter().map(|c| format!("{event}:{c}")));
            }
            503 => {
                assert!(
                    retry_after,
                    "sign-up {i}: a 503 without Retry-After: {body}"
                );
                refused.push(*i);
            }
            _ => panic!("sign-up {i}: {status} {body}"),
        }
    }
    assert!(!refused.is_empty(), "the restart was not felt");
    assert!(
        !accepted.is_empty() && refused.len() < answers.len(),
        "{} refused",
        refused.len()
    );

    // The server recovers by itself; retrying a refused sign-up with the same email is safe:
    // accepted now, or 409 when the refused attempt had committed after all.
    for i in &refused {
        let started = Instant::now();
        loop {
            let r = http
                .post(format!("{url}/register"))
                .json(&registration(*i))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                202 | 409 => break,
                503 if started.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                status => panic!("retry of {i}: {status} {}", r.text().await.unwrap()),
            }
        }
    }

    // Nothing accepted is lost: every 202 has its user and its outbox rows...
    let db = PgPool::connect(&endpoints.database_url).await.unwrap();
    let committed: BTreeSet<String> =
        sqlx::query_scalar("SELECT d.event_id::text || ':' || d.channel FROM deliveries d JOIN users u ON u.id = d.user_id")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let missing: Vec<_> = accepted.difference(&committed).take(5).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 300, "every sign-up is in, once");

    // ...and every stored notification reaches the provider after recovery.
    let stack = Stack {
        url,
        providers_url,
        endpoints,
        http,
        db,
        stop,
        server,
    };
    stack
        .wait_delivered(&committed, Duration::from_secs(30))
        .await;
    stack.shutdown().await;
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap();
}
