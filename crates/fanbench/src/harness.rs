//! The provider simulator's admin and ledger, draining the async queue, and reconciliation: what
//! the providers received, set against what the database committed.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use results::{ChannelDelivery, Reconciliation};
use signup_core::Channel;
use sqlx::PgPool;

/// The provider simulator's admin and ledger, over HTTP.
#[derive(Debug, Clone)]
pub struct Providers {
    pub url: String,
    http: reqwest::Client,
}

#[derive(Debug, serde::Deserialize)]
struct LedgerLine {
    key: String,
    received_at: DateTime<Utc>,
}

impl Providers {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Clears the ledger and applies `config` (outage windows count from now).
    pub async fn prepare(&self, config: &provider_sim::SimConfig) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/admin/reset", self.url))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("provider reset answered {}", r.status());
        }
        let r = self
            .http
            .put(format!("{}/admin/config", self.url))
            .json(config)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "provider config answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn summary(&self) -> Result<provider_sim::Summary> {
        Ok(self
            .http
            .get(format!("{}/ledger/summary", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn ledger(&self) -> Result<Vec<LedgerLine>> {
        let text = self
            .http
            .get(format!("{}/ledger", self.url))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .map(|l| serde_json::from_str(l).context("a ledger line is not valid"))
            .collect()
    }
}

/// How the designs name a sign-up's notifications in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// `<user id>:<channel>`, for every committed user (sync).
    Users,
    /// `<event id>:<channel>`, from each user's outbox rows (async).
    Outbox,
    /// `<event id>:<channel>`, from each user's outbox row in the broker design; whether its
    /// stream drained decides if a published notification not delivered is lost or still queued.
    Broker { drained: bool },
}

/// Where an owed notification stands in the design's own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Nothing would deliver it any more: a sync sign-up's send (made inside its request or never),
    /// an outbox row marked done, or no outbox row at all.
    Nowhere,
    /// Still queued (pending) when the drain deadline passed.
    Queued,
    /// Dead-lettered.
    Dead,
}

/// One owed notification: its channel, its sign-up's intended send time, where it stands.
#[derive(Debug, Clone, Copy)]
struct Owed {
    channel: usize,
    at: Duration,
    held: Held,
}

/// What the driver saw of the sign-ups, for reconciliation.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// The sequence numbers answered 2xx.
    pub accepted: &'a driver::SeqSet,
    /// How many were refused (503, other 5xx) or unanswered (timeouts, connection errors).
    pub refused: u64,
}

/// Reconciles what the database committed against what the providers received: set arithmetic
/// over idempotency keys. Every owed notification ends up in exactly one of delivered, lost, dead
/// or undelivered. Delivery latency runs from each sign-up's intended send time (read back from
/// its email) to the provider's receipt.
pub async fn reconcile(
    pool: &PgPool,
    keys: Keys,
    providers: &Providers,
    started_at: SystemTime,
    answered: Answered<'_>,
) -> Result<(
    Reconciliation,
    std::collections::BTreeMap<String, ChannelDelivery>,
)> {
    // Each committed user and the channels its sign-up asked for; for the async design, the outbox
    // row of each (absent when the outbox lost it).
    let rows: Vec<async_server::outbox::Owed> = match keys {
        Keys::Users => {
            let users: Vec<(uuid::Uuid, String, bool, bool)> = sqlx::query_as(
                "SELECT id, email, phone IS NOT NULL, device_token IS NOT NULL FROM users",
            )
            .fetch_all(pool)
            .await?;
            users
                .into_iter()
                .flat_map(|(user_id, email, phone, device)| {
                    Channel::for_contact(phone, device)
                        .into_iter()
                        .map(move |c| async_server::outbox::Owed {
                            user_id,
                            email: email.clone(),
                            channel: c.as_str().to_string(),
                            event_id: None,
                            state: None,
                        })
                })
                .collect()
        }
        Keys::Outbox => async_server::outbox::owed(pool).await?,
        Keys::Broker { drained } => broker_server::outbox::owed(pool, drained).await?,
    };
    // Each committed sign-up, by whether the driver saw it accepted: the two must not net out.
    let emails: Vec<String> = sqlx::query_scalar("SELECT email FROM users")
        .fetch_all(pool)
        .await?;
    let committed = emails.len() as u64;
    let committed_accepted = emails
        .iter()
        .filter_map(|e| driver::parse_email(e))
        .filter(|(seq, _)| answered.accepted.contains(*seq))
        .count() as u64;

    // key → what is owed. A notification with no outbox row is owed all the same; it cannot be
    // delivered under any key the providers would see, so it is keyed by its user.
    let mut owed: HashMap<String, Owed> = HashMap::with_capacity(rows.len());
    for row in rows {
        let (user, channel) = (row.user_id, row.channel.as_str());
        let at = driver::parse_email(&row.email)
            .map(|(_, at)| at)
            .unwrap_or_default();
        let i = Channel::parse(channel).map_or(0, Channel::index);
        let (key, held) = match (keys, row.event_id) {
            (Keys::Users, _) => (format!("{user}:{channel}"), Held::Nowhere),
            (Keys::Outbox | Keys::Broker { .. }, None) => (
                format!("missing-outbox-row:{user}:{channel}"),
                Held::Nowhere,
            ),
            (Keys::Outbox | Keys::Broker { .. }, Some(event)) => (
                format!("{event}:{channel}"),
                match row.state.as_deref() {
                    Some("pending") => Held::Queued,
                    Some("dead") => Held::Dead,
                    _ => Held::Nowhere,
                },
            ),
        };
        owed.insert(
            key,
            Owed {
                channel: i,
                at,
                held,
            },
        );
    }

    let mut latency: [Histogram<u64>; Channel::ALL.len()] =
        std::array::from_fn(|_| results::new_histogram());
    let mut delivered = 0u64;
    let mut unexpected = 0u64;
    let zero: DateTime<Utc> = started_at.into();
    for line in providers.ledger().await? {
        match owed.remove(&line.key) {
            Some(o) => {
                delivered += 1;
                let intended = zero + chrono::Duration::from_std(o.at).unwrap_or_default();
                let us = (line.received_at - intended)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(1) as u64;
                latency[o.channel].saturating_record(us);
            }
            None => unexpected += 1,
        }
    }
    // What is left was not delivered: where does it stand?
    let (mut lost, mut dead, mut undelivered) = (0u64, 0u64, 0u64);
    for o in owed.values() {
        match o.held {
            Held::Nowhere => lost += 1,
            Held::Queued => undelivered += 1,
            Held::Dead => dead += 1,
        }
    }
    // Accepted sign-ups the database does not hold were lost with everything they were owed; which
    // channels they asked for is not kept, so each counts as its one certain notification (email).
    let missing = answered.accepted.len().saturating_sub(committed_accepted);
    lost += missing;
    // Sign-ups that committed without a 2xx (the driver gave up first, or the answer was lost) are
    // owed like any other; the rest of the refused ones never got in.
    let committed_unanswered = committed - committed_accepted;
    let summary = providers.summary().await?;
    let duplicates = summary.email.duplicates + summary.sms.duplicates + summary.push.duplicates;
    let reconciliation = Reconciliation {
        accepted: answered.accepted.len(),
        committed,
        expected: delivered + lost + dead + undelivered,
        delivered,
        lost,
        dead,
        undelivered,
        duplicates,
        unexpected,
        never_notified: answered.refused.saturating_sub(committed_unanswered),
    };
    let delivery = Channel::ALL
        .iter()
        .zip(latency.iter())
        .map(|(channel, h)| {
            let p = results::Percentiles::from_histogram(h);
            (
                channel.as_str().to_string(),
                ChannelDelivery {
                    delivered: h.len(),
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                    max_ms: p.max,
                    spectrum: results::spectrum(h),
                },
            )
        })
        .collect();
    Ok((reconciliation, delivery))
}

/// Waits until the async design has no pending deliveries, or `timeout`; returns whether it drained
/// and how long it took.
pub async fn wait_for_drain(
    pool: &PgPool,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(bool, Duration)> {
    let started = Instant::now();
    loop {
        let pending = async_server::outbox::pending(pool).await?;
        if pending == 0 {
            return Ok((true, started.elapsed()));
        }
        if started.elapsed() >= timeout || cancel.is_cancelled() {
            tracing::warn!(pending, "the queue did not drain within {timeout:?}");
            return Ok((false, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the broker design has nothing left to deliver — every outbox row published and
/// every consumer's pending and ack-pending at zero — or `timeout`; returns whether it drained
/// and how long it took. A broker that cannot be asked counts as not drained yet.
pub async fn wait_for_broker_drain(
    pool: &PgPool,
    broker: &broker_server::stream::Broker,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(bool, Duration)> {
    let started = Instant::now();
    loop {
        let remaining = broker_server::stream::remaining(pool, broker).await;
        if remaining == Ok(0) {
            return Ok((true, started.elapsed()));
        }
        if started.elapsed() >= timeout || cancel.is_cancelled() {
            tracing::warn!(
                ?remaining,
                "the broker design did not drain within {timeout:?}"
            );
            return Ok((false, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sign-up as the driver would have made it: seq `seq`, intended at `seq` ms.
    fn email(seq: u64) -> String {
        format!("s{seq}-t{}.test@load.fanbench.test", seq * 1000)
    }

    async fn user(pool: &PgPool, seq: u64, phone: bool) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO users (id, email, name, phone) VALUES ($1, $2, 'T', $3)")
            .bind(id)
            .bind(email(seq))
            .bind(phone.then_some("+441234567890"))
            .execute(pool)
            .await
            .unwrap();
        id
    }

    async fn outbox(pool: &PgPool, user: uuid::Uuid, channel: &str, state: &str) -> String {
        let channel: Channel = channel.parse().unwrap();
        let event = async_server::testing::seed(pool, user, channel, state, 1, None)
            .await
            .unwrap();
        format!("{event}:{channel}")
    }

    async fn deliver(providers: &str, key: &str) {
        let channel = key.rsplit(':').next().unwrap();
        let r = reqwest::Client::new()
            .post(format!("{providers}/send/{channel}"))
            .header("idempotency-key", key)
            .json(&signup_core::SendRequest {
                registration_id: uuid::Uuid::now_v7(),
                to: "x".into(),
            })
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// A fresh database with the async design's tables, and a simulator that answers at once.
    async fn setup() -> (PgPool, String) {
        let pool = PgPool::connect(&fanbench_db::testing::fresh_database().await.unwrap())
            .await
            .unwrap();
        async_server::migrate(&pool).await.unwrap();
        let sim = provider_sim::testing::spawn(provider_sim::testing::all(
            provider_sim::testing::fixed(0),
        ))
        .await;
        (pool, sim)
    }

    async fn reconciled(
        pool: &PgPool,
        keys: Keys,
        sim: &str,
        accepted: &driver::SeqSet,
        refused: u64,
    ) -> (
        Reconciliation,
        std::collections::BTreeMap<String, ChannelDelivery>,
    ) {
        let answered = Answered { accepted, refused };
        reconcile(
            pool,
            keys,
            &Providers::new(sim),
            SystemTime::now(),
            answered,
        )
        .await
        .unwrap()
    }

    /// Every owed notification lands in exactly one bucket, and each bucket is what its name says.
    #[tokio::test]
    async fn the_async_buckets_tell_loss_from_backlog_and_dead_letters() {
        let (pool, sim) = setup().await;
        let mut accepted = driver::SeqSet::default();

        // seq 0: email and SMS, both delivered.
        let u0 = user(&pool, 0, true).await;
        deliver(&sim, &outbox(&pool, u0, "email", "done").await).await;
        deliver(&sim, &outbox(&pool, u0, "sms", "done").await).await;
        accepted.insert(0);
        // seq 1: email marked done but the provider never got it (lost); SMS has no outbox row (lost).
        let u1 = user(&pool, 1, true).await;
        outbox(&pool, u1, "email", "done").await;
        accepted.insert(1);
        // seq 2: still pending (backlog) — seq 3: dead-lettered.
        let u2 = user(&pool, 2, false).await;
        outbox(&pool, u2, "email", "pending").await;
        accepted.insert(2);
        let u3 = user(&pool, 3, false).await;
        outbox(&pool, u3, "email", "dead").await;
        accepted.insert(3);
        // seq 4: the driver timed out, but the sign-up committed and was delivered.
        let u4 = user(&pool, 4, false).await;
        deliver(&sim, &outbox(&pool, u4, "email", "done").await).await;
        // seq 5: accepted, but the database does not hold it at all (lost, counted as its email).
        accepted.insert(5);
        // A delivery nobody owes.
        deliver(&sim, &format!("{}:email", uuid::Uuid::now_v7())).await;

        // seq 4 timed out; seqs 6 and 7 were refused with 503.
        let (r, delivery) = reconciled(&pool, Keys::Outbox, &sim, &accepted, 3).await;
        assert_eq!((r.accepted, r.committed, r.expected), (5, 5, 8), "{r:?}");
        assert_eq!(
            (r.delivered, r.lost, r.dead, r.undelivered),
            (3, 3, 1, 1),
            "{r:?}"
        );
        assert_eq!(r.unexpected, 1, "{r:?}");
        assert_eq!(
            r.never_notified, 2,
            "the timed-out sign-up that committed is owed and delivered, not never notified"
        );
        assert_eq!(delivery["email"].delivered + delivery["sms"].delivered, 3);
    }

    /// The broker design's buckets: a live dead letter is dead; an unpublished outbox row is
    /// backlog; a published one is in JetStream until the drain, and after it must be in the
    /// ledger or it is lost.
    #[tokio::test]
    async fn the_broker_buckets_tell_loss_from_backlog_and_dead_letters() {
        use signup_core::Channel;
        let (pool, sim) = setup().await;
        broker_server::migrate(&pool).await.unwrap();
        let mut accepted = driver::SeqSet::default();

        // seq 0: email and SMS published, both delivered.
        let u0 = user(&pool, 0, true).await;
        let e0 =
            broker_server::testing::seed_signup(&pool, u0, &[Channel::Email, Channel::Sms], true)
                .await
                .unwrap();
        deliver(&sim, &format!("{e0}:email")).await;
        deliver(&sim, &format!("{e0}:sms")).await;
        accepted.insert(0);
        // seq 1: published, SMS never delivered (lost once drained); email delivered.
        let u1 = user(&pool, 1, true).await;
        let e1 =
            broker_server::testing::seed_signup(&pool, u1, &[Channel::Email, Channel::Sms], true)
                .await
                .unwrap();
        deliver(&sim, &format!("{e1}:email")).await;
        accepted.insert(1);
        // seq 2: not yet published (backlog) — seq 3: its email dead-lettered.
        let u2 = user(&pool, 2, false).await;
        broker_server::testing::seed_signup(&pool, u2, &[Channel::Email], false)
            .await
            .unwrap();
        accepted.insert(2);
        let u3 = user(&pool, 3, false).await;
        let e3 = broker_server::testing::seed_signup(&pool, u3, &[Channel::Email], true)
            .await
            .unwrap();
        broker_server::dlq::record(
            &pool,
            &broker_server::dlq::NewDeadLetter {
                event_id: e3,
                user_id: u3,
                channel: Channel::Email,
                address: "x",
                attempt: 8,
                last_error: "503",
            },
        )
        .await
        .unwrap();
        accepted.insert(3);
        // seq 4: committed with no outbox row at all (lost).
        user(&pool, 4, false).await;
        accepted.insert(4);

        let (r, _) = reconciled(&pool, Keys::Broker { drained: true }, &sim, &accepted, 0).await;
        assert_eq!((r.accepted, r.committed, r.expected), (5, 5, 7), "{r:?}");
        assert_eq!(
            (r.delivered, r.lost, r.dead, r.undelivered),
            (3, 2, 1, 1),
            "{r:?}"
        );
        // Not drained: what is published and undelivered may still be in the stream.
        let (r, _) = reconciled(&pool, Keys::Broker { drained: false }, &sim, &accepted, 0).await;
        assert_eq!(
            (r.delivered, r.lost, r.dead, r.undelivered),
            (3, 1, 1, 2),
            "{r:?}"
        );
    }

    /// The same accounting for the sync design, whose only record is the user row: a sign-up that
    /// committed after the driver gave up is delivered once, and not counted as refused; the
    /// accepted and the unanswered do not net out.
    #[tokio::test]
    async fn the_sync_buckets_count_each_sign_up_once() {
        let (pool, sim) = setup().await;
        let mut accepted = driver::SeqSet::default();
        let u0 = user(&pool, 0, false).await;
        deliver(&sim, &format!("{u0}:email")).await;
        accepted.insert(0);
        // Two timed out and committed (delivered) while two accepted ones are missing: the
        // totals match (3 committed, 3 accepted), the sign-ups do not.
        for seq in [1, 2] {
            let u = user(&pool, seq, false).await;
            deliver(&sim, &format!("{u}:email")).await;
        }
        accepted.insert(3);
        accepted.insert(4);
        let (r, _) = reconciled(&pool, Keys::Users, &sim, &accepted, 2).await;
        assert_eq!((r.accepted, r.committed), (3, 3), "{r:?}");
        assert_eq!((r.delivered, r.lost), (3, 2), "{r:?}");
        assert_eq!(r.never_notified, 0, "{r:?}");
        assert_eq!(r.expected, r.delivered + r.lost + r.dead + r.undelivered);
    }
}
