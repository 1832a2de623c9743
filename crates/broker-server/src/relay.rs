//! The relay: outbox rows → JetStream, in id order, each marked published only after JetStream
//! acknowledged it.
//!
//! A round locks up to `batch` unpublished rows (`FOR UPDATE SKIP LOCKED`, so relays in several
//! API processes share the work without publishing the same row at once), publishes them all
//! with `Nats-Msg-Id` = the row's message id, waits for every acknowledgement, marks the
//! acknowledged rows published and commits. A row whose publish failed stays unpublished and is
//! tried again after a backoff. A relay that dies between the acknowledgement and the commit
//! publishes the row again later: JetStream drops it if that is within its duplicate window, and
//! otherwise the consumers deliver it twice to providers that de-duplicate by idempotency key.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use signup_core::Channel;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::stream::{Broker, Notice, Send};

/// What the relay task holds.
#[derive(Debug)]
pub struct Ctx {
    /// A pool of its own (one connection).
    pub pool: PgPool,
    pub broker: Broker,
    pub batch: i64,
    pub poll_interval: Duration,
    /// Published rows older than this are deleted (every ten seconds, in batches).
    pub prune_after: Duration,
    /// Notified by each sign-up of this process.
    pub wake: Arc<Notify>,
}

/// An outbox row to publish.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    msg_id: String,
    event_id: Uuid,
    user_id: Uuid,
    subject: String,
    channels: Vec<String>,
    addresses: Vec<String>,
    created_at: DateTime<Utc>,
}

impl Row {
    fn notice(&self) -> Notice {
        Notice {
            event_id: self.event_id,
            user_id: self.user_id,
            created_at: self.created_at,
            sends: self
                .channels
                .iter()
                .zip(&self.addresses)
                .filter_map(|(c, a)| {
                    Channel::parse(c).map(|channel| Send {
                        channel,
                        address: a.clone(),
                    })
                })
                .collect(),
        }
    }
}

/// How a round went.
enum Round {
    /// Published this many (all it found).
    Published(usize),
    /// Something failed (the database or the broker); what did get acknowledged is marked.
    Failed(String),
}

/// Relays until `stop`. Never gives up: while the database or NATS is down it backs off (up to
/// five seconds) and tries again, and the outbox keeps everything meanwhile.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut failures = 0u32;
    let mut last_prune = std::time::Instant::now();
    while !stop.is_cancelled() {
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            prune(&ctx).await;
        }
        match round(&ctx).await {
            Round::Published(n) => {
                if failures > 0 {
                    tracing::info!("relay publishing again");
                }
                failures = 0;
                if (n as i64) < ctx.batch {
                    // Caught up: sleep until a sign-up wakes us or the poll interval passes (a
                    // sign-up committed by another process is found by the poll).
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ctx.wake.notified() => {}
                        _ = tokio::time::sleep(ctx.poll_interval) => {}
                    }
                }
            }
            Round::Failed(error) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(5));
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(%error, failures, "relay round failed; the outbox keeps the rows, retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// How often the relay deletes old published rows.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Deletes published rows older than `prune_after`, 5,000 at a time. A published row has done
/// its work (JetStream has the message); unpublished rows are never deleted.
async fn prune(ctx: &Ctx) {
    const BATCH: i64 = 5_000;
    loop {
        let pruned = sqlx::query(
            "DELETE FROM broker_outbox WHERE id IN (
                SELECT id FROM broker_outbox
                 WHERE published_at < now() - make_interval(secs => $1)
                 LIMIT $2)",
        )
        .bind(ctx.prune_after.as_secs_f64())
        .bind(BATCH)
        .execute(&ctx.pool)
        .await;
        match pruned {
            Ok(done) if done.rows_affected() == BATCH as u64 => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "outbox prune failed");
                return;
            }
        }
    }
}

async fn round(ctx: &Ctx) -> Round {
    let mut tx = match ctx.pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return Round::Failed(format!("database: {e}")),
    };
    let rows: Vec<Row> = match sqlx::query_as(
        "SELECT id, msg_id, event_id, user_id, subject, channels, addresses, created_at
           FROM broker_outbox
          WHERE published_at IS NULL
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(ctx.batch)
    .fetch_all(&mut *tx)
    .await
    {
        Ok(rows) => rows,
        Err(e) => return Round::Failed(format!("database: {e}")),
    };
    if rows.is_empty() {
        let _ = tx.commit().await;
        return Round::Published(0);
    }

    // Publish them all, then wait for the acknowledgements: one round trip's latency per batch,
    // not per row.
    let js = ctx.broker.jetstream();
    let mut pending = Vec::with_capacity(rows.len());
    let mut error = None;
    for row in &rows {
        let payload = match serde_json::to_vec(&row.notice()) {
            Ok(p) => p,
            Err(e) => {
                error = Some(format!("encoding row {}: {e}", row.id));
                continue;
            }
        };
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(&row.msg_id);
        match js.send_publish(row.subject.clone(), publish).await {
            Ok(ack) => pending.push((row.id, ack)),
            Err(e) => {
                error = Some(format!("publish: {e}"));
                break;
            }
        }
    }
    // All at once: each acknowledgement's timeout starts when it is awaited, so awaiting them in
    // turn while NATS is down would wait a timeout per row (a batch of 64 stalled the relay for
    // minutes after a broker restart).
    let acks = futures::future::join_all(
        pending
            .into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    )
    .await;
    let mut published = Vec::with_capacity(acks.len());
    for (id, ack) in acks {
        match ack {
            Ok(_) => published.push(id),
            Err(e) => error = Some(format!("publish acknowledgement: {e}")),
        }
    }
    if !published.is_empty() {
        let marked = sqlx::query(
            "UPDATE broker_outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
        )
        .bind(&published)
        .execute(&mut *tx)
        .await;
        if let Err(e) = marked {
            return Round::Failed(format!("database: {e}"));
        }
    }
    if let Err(e) = tx.commit().await {
        return Round::Failed(format!("database: {e}"));
    }
    match error {
        Some(e) => Round::Failed(e),
        None => Round::Published(published.len()),
    }
}
