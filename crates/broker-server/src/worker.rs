//! The per-channel workers: pull from the channel's durable consumer, send with no database
//! connection held, and ack, nak with a delay, or dead-letter and terminate.
//!
//! Each channel has its own consumer and its own bound on provider calls in flight, so a slow or
//! failing SMS provider holds up only SMS. The bound adapts exactly as the async design's does
//! ([`queue_core::limit`], fed the same signals): from `concurrency` up to `max_concurrency` while
//! the channel is saturated and its provider healthy, back down when the provider pushes back. A
//! pull asks for no more messages than there are free slots, so no message waits in this process
//! while its ack wait runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{Consumer, pull};
use async_server::logstore::{LogEntry, LogSink};
use async_server::metrics_def::AsyncMetrics;
use chrono::Utc;
use futures::StreamExt;
use queue_core::limit::{Aimd, Gate, Signal};
use signup_core::{Channel, ProviderClient, ProviderError};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::dlq;
use crate::stream::{Broker, Notice};

/// What every worker task shares.
#[derive(Debug)]
pub struct Ctx {
    /// For dead letters and the depth sampler.
    pub pool: PgPool,
    pub broker: Broker,
    pub providers: ProviderClient,
    pub metrics: Arc<AsyncMetrics>,
    pub logs: LogSink,
    pub config: Config,
}

/// How long a pull waits for messages when there are none.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How long past its expiry a silent pull is waited for. A message the server sends just as the
/// pull is given up is not lost: unacked, it is delivered again after the ack wait.
const PULL_GRACE: Duration = Duration::from_secs(1);

/// Runs the three channels' workers until `stop`; then lets in-flight sends finish within the
/// grace period. What is abandoned is not acked, so JetStream delivers it again.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    for channel in Channel::ALL {
        tasks.spawn(channel_loop(ctx.clone(), channel, stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a worker task failed");
        }
    }
}

async fn channel_loop(ctx: Arc<Ctx>, channel: Channel, stop: CancellationToken) {
    let settings = &ctx.config.settings;
    let gate = Arc::new(Gate::new(Aimd::new(
        settings.concurrency as usize,
        settings.max_concurrency as usize,
    )));
    let slots = gate.slots().clone();
    let metrics = ctx.metrics.channel(channel);
    metrics.limit.set(gate.limit() as f64);
    let mut sends = JoinSet::new();
    let mut consumer: Option<Consumer<pull::Config>> = None;
    let mut failures = 0u32;

    while !stop.is_cancelled() {
        while sends.try_join_next().is_some() {}
        if slots.available_permits() == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        let c = match &consumer {
            Some(c) => c,
            None => match ctx.broker.consumer(channel).await {
                Ok(c) => consumer.insert(c),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    backoff(&stop, failures, &format!("{channel} consumer: {e}")).await;
                    continue;
                }
            },
        };
        // As the async design's claims: up to `batch` messages, or a quarter of the current limit
        // once the limit has grown past four batches.
        let pull_size = (ctx.config.settings.batch as usize)
            .max(gate.limit() / 4)
            .max(1);
        let want = slots.available_permits().min(pull_size);
        let mut received = 0;
        let batch = c
            .batch()
            .max_messages(want)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failures = failures.saturating_add(1);
                backoff(&stop, failures, &format!("{channel} pull: {e}")).await;
                continue;
            }
        };
        loop {
            // The server ends a pull at its expiry; a pull made before NATS restarted is one the
            // new server never heard of, and the client would wait five more seconds for it. So
            // a pull silent past its expiry is given up here.
            let next = tokio::select! {
                _ = stop.cancelled() => None,
                next = tokio::time::timeout(PULL_EXPIRES + PULL_GRACE, batch.next()) => {
                    next.ok().flatten()
                }
            };
            let Some(next) = next else { break };
            match next {
                Ok(message) => {
                    failures = 0;
                    received += 1;
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let ctx = ctx.clone();
                    let gate = gate.clone();
                    sends.spawn(async move {
                        match handle(&ctx, channel, message).await {
                            Some(signal) => {
                                if let Some(limit) = gate.finished(permit, signal) {
                                    ctx.metrics.channel(channel).limit.set(limit as f64);
                                }
                            }
                            None => gate.unused(permit),
                        }
                    });
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(%channel, error = %e, "pull ended with an error");
                    break;
                }
            }
        }
        // Every slot busy and the stream had more: more slots would have been used.
        if received == want && slots.available_permits() == 0 {
            gate.saturated();
        }
        if stop.is_cancelled() {
            // Messages this pull still brings are not ours to start: give them back now rather
            // than after the ack wait.
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_millis(50), batch.next()).await
            {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
    }

    let drained = tokio::time::timeout(ctx.config.grace, async {
        while sends.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(%channel, left = sends.len(), "grace period over; abandoning sends (JetStream delivers them again)");
        sends.abort_all();
        while sends.join_next().await.is_some() {}
    }
}

async fn backoff(stop: &CancellationToken, failures: u32, error: &str) {
    if failures == 1 || failures % 20 == 0 {
        tracing::warn!(%error, failures, "JetStream unavailable; retrying");
    }
    let delay = Duration::from_millis(100)
        .saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(3));
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// What became of one delivery.
enum Verdict {
    Ack,
    Retry(Duration),
    Dead(String),
}

/// One delivery of one message to this channel's worker. Returns what its provider call said about
/// the provider's load, or nothing when no call was made.
async fn handle(
    ctx: &Ctx,
    channel: Channel,
    message: async_nats::jetstream::Message,
) -> Option<Signal> {
    let attempt = message.info().map(|i| i.delivered).unwrap_or(1);
    let notice: Notice = match serde_json::from_slice(&message.payload) {
        Ok(n) => n,
        Err(e) => {
            // Nothing in it can be delivered; redelivering it would fail the same way.
            tracing::error!(%channel, error = %e, "a message that is not a notice; terminated");
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        }
    };
    let Some(send) = notice.send(channel) else {
        // A notice for other channels only (no phone, no device, or another channel's replay).
        let _ = message.ack().await;
        return None;
    };
    let m = ctx.metrics.channel(channel);
    m.claimed.increment(1);
    let max_attempts = i64::from(ctx.config.settings.max_attempts.max(1));
    let attempt_i32 = i32::try_from(attempt).unwrap_or(i32::MAX);

    let (verdict, outcome, status, took, signal) = if attempt > max_attempts {
        // Delivered again past the budget: a worker died during the last attempt. Dead-letter it
        // now rather than leave it to a delivery JetStream will never make.
        (
            Verdict::Dead("attempts exhausted (delivered again after a worker died)".into()),
            "dead",
            None,
            Duration::ZERO,
            None,
        )
    } else {
        m.in_flight.increment(1.0);
        let started = Instant::now();
        let sent = ctx
            .providers
            .send(channel, notice.event_id, &send.address)
            .await;
        let took = started.elapsed();
        m.in_flight.decrement(1.0);
        let signal = Some(Signal::of(&sent, took));
        match sent {
            Ok(status) => {
                m.sent.increment(1);
                let since = (Utc::now() - notice.created_at)
                    .to_std()
                    .unwrap_or_default();
                m.delivery.record(since.as_secs_f64());
                (Verdict::Ack, "sent", Some(status.as_u16()), took, signal)
            }
            Err(e) => {
                let status = match &e {
                    ProviderError::Status { status, .. } => Some(status.as_u16()),
                    _ => None,
                };
                if e.is_retryable() && attempt < max_attempts {
                    m.retried.increment(1);
                    let delay =
                        ctx.config
                            .backoff
                            .delay(attempt_i32, e.retry_after(), &mut rand::rng());
                    (Verdict::Retry(delay), "retry", status, took, signal)
                } else {
                    (Verdict::Dead(e.to_string()), "dead", status, took, signal)
                }
            }
        }
    };

    match verdict {
        Verdict::Ack => {
            if let Err(e) = message.ack().await {
                // The provider has it; a redelivery is absorbed by the idempotency key.
                tracing::debug!(%channel, error = %e, "ack not sent");
            }
        }
        Verdict::Retry(delay) => {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
        Verdict::Dead(error) => {
            let letter = dlq::NewDeadLetter {
                event_id: notice.event_id,
                user_id: notice.user_id,
                channel,
                address: &send.address,
                attempt: attempt_i32,
                last_error: &error,
            };
            match dlq::record(&ctx.pool, &letter).await {
                Ok(()) => {
                    m.dead_lettered.increment(1);
                    tracing::warn!(%channel, event_id = %notice.event_id, attempt, %error, "dead-lettered");
                    let _ = message.ack_with(AckKind::Term).await;
                }
                Err(e) => {
                    // Not recorded: keep the message rather than lose it; it comes back after a
                    // delay and is dead-lettered then.
                    tracing::warn!(%channel, error = %e, "could not record a dead letter; retrying later");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
    }
    ctx.logs.log(
        LogEntry {
            event_id: notice.event_id,
            channel,
            attempt: attempt_i32,
            outcome,
            status: status.map(|s| s as i16),
            latency_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
            at: Utc::now(),
        },
        &ctx.metrics,
    );
    signal
}
