//! The per-channel workers: claim due rows, call the provider with no connection held, write the
//! outcomes back in batches.
//!
//! Each channel has its own claim loop, its own bound on provider calls in flight and its own
//! finisher, so a slow or failing SMS provider fills only SMS's slots: email and push keep moving.
//! The bound adapts ([`crate::limit`]): from `concurrency` up to `max_concurrency` while the channel
//! is saturated and its provider healthy, back down when the provider pushes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use queue_core::limit::{Aimd, Gate, Signal};
use signup_core::{Channel, ProviderClient};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::logstore::{LogEntry, LogSink};
use crate::metrics_def::AsyncMetrics;
use crate::queue::{self, Backoff, Claimed, Finish, Outcome};

/// How the workers run. The defaults are what the design gives, not tuning for a benchmark; those
/// the designs share are `signup_core::shared`'s.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Provider calls in flight per channel to start with, and the least the adaptive limit goes
    /// down to.
    pub concurrency: usize,
    /// The most provider calls in flight per channel the adaptive limit grows to.
    pub max_concurrency: usize,
    /// Most rows one claim takes.
    pub batch: usize,
    /// How long a claim loop sleeps when it found less than a full batch.
    pub poll_interval: Duration,
    /// How long a claimed row is ours; must exceed the provider timeout by a margin.
    pub lease: Duration,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: i32,
    pub backoff: Backoff,
    /// How long finished rows are kept before pruning.
    pub prune_after: Duration,
    /// On shutdown, how long in-flight sends may take to finish.
    pub grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        use signup_core::shared;
        Self {
            concurrency: shared::CONCURRENCY as usize,
            max_concurrency: shared::MAX_CONCURRENCY as usize,
            batch: 32,
            poll_interval: Duration::from_millis(50),
            lease: shared::LEASE,
            max_attempts: i32::try_from(shared::MAX_ATTEMPTS).unwrap_or(i32::MAX),
            backoff: Backoff::default(),
            prune_after: Duration::from_secs(300),
            grace: shared::GRACE,
        }
    }
}

/// What every worker task shares.
#[derive(Debug)]
pub struct Ctx {
    pub pool: PgPool,
    pub providers: ProviderClient,
    pub metrics: Arc<AsyncMetrics>,
    pub logs: LogSink,
    pub config: WorkerConfig,
    /// This process's lease-owner id.
    pub worker_id: Uuid,
}

/// Runs the workers of every channel, plus the pruner and the depth sampler, until `stop`; then
/// lets in-flight sends finish (within the grace period), writes their outcomes and releases the
/// leases still held.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    for channel in Channel::ALL {
        tasks.spawn(channel_loop(ctx.clone(), channel, stop.clone()));
    }
    let background = CancellationToken::new();
    tasks.spawn(prune_loop(ctx.clone(), background.clone()));
    tasks.spawn(depth_loop(ctx.clone(), background.clone()));
    // The channel loops end only after `stop`; then the background loops follow.
    let mut channels_left = Channel::ALL.len();
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a worker task failed");
        }
        channels_left = channels_left.saturating_sub(1);
        if channels_left == 0 {
            background.cancel();
        }
    }
    match queue::release(&ctx.pool, ctx.worker_id).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "released leases still held"),
        Err(e) => tracing::warn!(error = %e, "could not release leases; they expire by themselves"),
    }
}

async fn channel_loop(ctx: Arc<Ctx>, channel: Channel, stop: CancellationToken) {
    let gate = Arc::new(Gate::new(Aimd::new(
        ctx.config.concurrency,
        ctx.config.max_concurrency,
    )));
    let metrics = ctx.metrics.channel(channel);
    metrics.limit.set(gate.limit() as f64);
    let slots = gate.slots().clone();
    let (done_tx, done_rx) = mpsc::channel::<Outcome>(
        ctx.config
            .max_concurrency
            .max(ctx.config.concurrency)
            .max(1)
            * 2,
    );
    let finisher = tokio::spawn(finish_loop(ctx.clone(), done_rx));
    let mut sends = JoinSet::new();

    while !stop.is_cancelled() {
        // Claim only what can be sent right away, so no lease ticks while a row waits for a slot.
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        // A claim takes up to `batch` rows, or a quarter of the current limit once the limit has
        // grown past four batches: a backlog drained at thousands a second then costs tens of
        // claims a second, not hundreds (each is a commit).
        let limit_now = gate.limit();
        let claim_size = ctx.config.batch.max(limit_now / 4).max(1);
        // Under saturation slots free up one at a time; gather half a batch (or wait a poll
        // interval) rather than run a claim query per finished send.
        let half_batch = ctx.config.batch.min(limit_now).div_ceil(2);
        if free < half_batch && sends.len() >= half_batch {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(ctx.config.poll_interval) => {}
                _ = sends.join_next() => {}
            }
            while sends.try_join_next().is_some() {}
            if slots.available_permits() < half_batch && !stop.is_cancelled() {
                continue;
            }
        }
        let limit = slots.available_permits().min(claim_size);
        let claimed = queue::claim(
            &ctx.pool,
            channel,
            ctx.worker_id,
            limit as i64,
            ctx.config.lease,
        )
        .await;
        let full = match claimed {
            Ok(rows) => {
                let n = rows.len();
                metrics.claimed.increment(n as u64);
                for row in rows {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let ctx = ctx.clone();
                    let gate = gate.clone();
                    let done_tx = done_tx.clone();
                    sends.spawn(async move {
                        let (outcome, signal) = send(&ctx, channel, row).await;
                        let _ = done_tx.send(outcome).await;
                        if let Some(limit) = gate.finished(permit, signal) {
                            ctx.metrics.channel(channel).limit.set(limit as f64);
                        }
                    });
                }
                n == limit
            }
            Err(e) => {
                tracing::warn!(%channel, error = %e, "claim failed; retrying after the poll interval");
                false
            }
        };
        // Every slot busy and the queue had more: more slots would have been used.
        if full && slots.available_permits() == 0 {
            gate.saturated();
        }
        // Reap finished send tasks so the set does not grow.
        while sends.try_join_next().is_some() {}
        if !full {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(ctx.config.poll_interval) => {}
            }
        }
    }

    // Shutdown: no more claims; let the sends under way finish within the grace period.
    let drained = tokio::time::timeout(ctx.config.grace, async {
        while sends.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(%channel, left = sends.len(), "grace period over; abandoning sends (their leases are released)");
        sends.abort_all();
        while sends.join_next().await.is_some() {}
    }
    drop(done_tx);
    let _ = finisher.await;
}

/// One attempt: the provider call, with no database connection held. Returns its outcome, and
/// what it says about the provider's load.
async fn send(ctx: &Ctx, channel: Channel, row: Claimed) -> (Outcome, Signal) {
    let m = ctx.metrics.channel(channel);
    m.in_flight.increment(1.0);
    let started = Instant::now();
    let sent = ctx
        .providers
        .send(channel, row.event_id, &row.address)
        .await;
    let took = started.elapsed();
    m.in_flight.decrement(1.0);

    let signal = Signal::of(&sent, took);
    let (finish, outcome, status) = match sent {
        Ok(status) => {
            m.sent.increment(1);
            let since_commit = (Utc::now() - row.created_at).to_std().unwrap_or_default();
            m.delivery.record(since_commit.as_secs_f64());
            (Finish::Done, "sent", Some(status.as_u16()))
        }
        Err(e) => {
            let status = match &e {
                signup_core::ProviderError::Status { status, .. } => Some(status.as_u16()),
                _ => None,
            };
            if e.is_retryable() && row.attempt_in_budget() < ctx.config.max_attempts {
                m.retried.increment(1);
                let delay = ctx.config.backoff.delay(
                    row.attempt_in_budget(),
                    e.retry_after(),
                    &mut rand::rng(),
                );
                (
                    Finish::Retry {
                        delay,
                        error: e.to_string(),
                    },
                    "retry",
                    status,
                )
            } else {
                m.dead_lettered.increment(1);
                tracing::warn!(%channel, event_id = %row.event_id, attempt = row.attempt, error = %e, "dead-lettered");
                (
                    Finish::Dead {
                        error: e.to_string(),
                    },
                    "dead",
                    status,
                )
            }
        }
    };
    ctx.logs.log(
        LogEntry {
            event_id: row.event_id,
            channel,
            attempt: row.attempt,
            outcome,
            status: status.map(|s| s as i16),
            latency_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
            at: Utc::now(),
        },
        &ctx.metrics,
    );
    let outcome = Outcome {
        id: row.id,
        attempt: row.attempt,
        finish,
    };
    (outcome, signal)
}

/// How long a finisher with less than a full batch waits for more outcomes before it writes.
const FINISH_LINGER: Duration = Duration::from_millis(20);

/// Writes outcomes back in batches: whatever has arrived since the last write (and within
/// [`FINISH_LINGER`] of the first), up to 512 rows.
async fn finish_loop(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Outcome>) {
    const MOST: usize = 512;
    let mut batch = Vec::with_capacity(MOST);
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, MOST).await == 0 {
            return;
        }
        // A short batch waits a moment for company: at a thousand sends a second a channel would
        // otherwise commit a finish every few milliseconds. The send slots are already free (the
        // outcome is in the channel), so the wait delays only the row's bookkeeping.
        if batch.len() < MOST {
            tokio::time::sleep(FINISH_LINGER).await;
            while batch.len() < MOST {
                match rx.try_recv() {
                    Ok(outcome) => batch.push(outcome),
                    Err(_) => break,
                }
            }
        }
        for attempt in 0.. {
            match queue::finish(&ctx.pool, ctx.worker_id, &batch).await {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    tracing::warn!(error = %e, "could not record outcomes; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    // The rows stay claimed; when their leases expire they are sent again, and the
                    // idempotency key keeps the provider from delivering twice.
                    tracing::error!(error = %e, rows = batch.len(), "gave up recording outcomes");
                    break;
                }
            }
        }
    }
}

async fn prune_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    const BATCH: i64 = 5_000;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        loop {
            match queue::prune(&ctx.pool, ctx.config.prune_after, BATCH).await {
                Ok(n) if n == BATCH as u64 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "prune failed");
                    break;
                }
            }
        }
    }
}

async fn depth_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(depths) = queue::depth(&ctx.pool).await {
            for c in Channel::ALL {
                let d = depths[c.index()];
                let m = ctx.metrics.channel(c);
                m.depth.set(d.pending as f64);
                m.oldest_due.set(d.oldest_due_age);
                m.dead.set(d.dead as f64);
            }
        }
    }
}
