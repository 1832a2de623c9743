//! The durable per-channel queue in PostgreSQL: the `deliveries` table (migrations 0002, 0003),
//! claimed with `FOR UPDATE SKIP LOCKED` under a lease, finished only by the lease's owner and
//! attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

/// The retry timing, shared with the broker design: it lives in queue-core.
pub use queue_core::Backoff;

/// A claimed delivery: this worker holds its lease for `attempt`.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event_id: Uuid,
    pub address: String,
    pub attempt: i32,
    /// Attempts made before the row's last dead-letter replay (0 if never replayed); the attempt
    /// budget and the backoff count from here.
    pub attempt_base: i32,
    pub created_at: DateTime<Utc>,
}

impl Claimed {
    /// Which attempt this is since the row was queued or last replayed (1-based): what the budget
    /// and the backoff go by, while `attempt` itself keeps growing across replays.
    pub fn attempt_in_budget(&self) -> i32 {
        self.attempt.saturating_sub(self.attempt_base)
    }
}

/// How an attempt ended, to be written back in a batch.
#[derive(Debug, Clone)]
pub enum Finish {
    /// The provider acknowledged it.
    Done,
    /// Try again after `delay`.
    Retry { delay: Duration, error: String },
    /// Give up: out of attempts, or the provider refused the request itself.
    Dead { error: String },
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: i64,
    pub attempt: i32,
    pub finish: Finish,
}

/// Claims up to `limit` due rows of `channel` for `worker`, leasing each for `lease`.
pub async fn claim(
    pool: &PgPool,
    channel: Channel,
    worker: Uuid,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows: Vec<(i64, Uuid, String, i32, i32, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE deliveries d
            SET attempt = d.attempt + 1,
                run_at = now() + make_interval(secs => $4),
                locked_by = $2
           FROM (SELECT id FROM deliveries
                  WHERE state = 'pending' AND channel = $1 AND run_at <= now()
                  ORDER BY run_at, id
                  LIMIT $3
                  FOR UPDATE SKIP LOCKED) due
          WHERE d.id = due.id
      RETURNING d.id, d.event_id, d.address, d.attempt, d.attempt_base, d.created_at",
    )
    .bind(channel.as_str())
    .bind(worker)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, event_id, address, attempt, attempt_base, created_at)| Claimed {
                id,
                event_id,
                address,
                attempt,
                attempt_base,
                created_at,
            },
        )
        .collect())
}

/// Writes a batch of outcomes back, each guarded by owner and attempt so that a worker whose lease
/// ran out (and whose row someone else claimed since) cannot overwrite the newer attempt. Returns
/// how many rows were updated.
///
/// Each row is found by its primary key. The guard does not repeat `state = 'pending'`: a lease
/// holder implies it (constraint `deliveries_leased_rows_pending`, migration 0005), and spelled out
/// it matched the partial index `deliveries_due`, which PostgreSQL, with a table too young to have
/// statistics, took for a few rows and scanned whole for each of the batch's rows: 2 s for 512
/// outcomes at 1,000 sign-ups a second, with every send slot waiting on the finisher. The
/// statement is planned on each call (not a cached generic plan, made when the table was empty),
/// so the plan knows the batch's size and the table's.
pub async fn finish(pool: &PgPool, worker: Uuid, outcomes: &[Outcome]) -> Result<u64, sqlx::Error> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut attempts = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    let mut delays = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        ids.push(o.id);
        attempts.push(o.attempt);
        let (state, delay, error) = match &o.finish {
            Finish::Done => ("done", 0.0, None),
            Finish::Retry { delay, error } => ("pending", delay.as_secs_f64(), Some(error.clone())),
            Finish::Dead { error } => ("dead", 0.0, Some(error.clone())),
        };
        states.push(state);
        delays.push(delay);
        errors.push(error);
    }
    let done = sqlx::query(
        "UPDATE deliveries d
            SET state = o.state,
                locked_by = NULL,
                run_at = CASE WHEN o.state = 'pending' THEN now() + make_interval(secs => o.delay) ELSE d.run_at END,
                finished_at = CASE WHEN o.state = 'done' THEN now() ELSE NULL END,
                last_error = coalesce(o.error, d.last_error)
           FROM unnest($2::bigint[], $3::int[], $4::text[], $5::float8[], $6::text[])
                AS o(id, attempt, state, delay, error)
          WHERE d.id = o.id AND d.attempt = o.attempt AND d.locked_by = $1",
    )
    .persistent(false)
    .bind(worker)
    .bind(&ids)
    .bind(&attempts)
    .bind(&states)
    .bind(&delays)
    .bind(&errors)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Gives back the leases `worker` still holds, due now, so another worker picks them up at once
/// instead of waiting out the lease. Used on shutdown. The attempt stays counted: an abandoned
/// send may have reached the provider, and attempt numbers must never repeat.
pub async fn release(pool: &PgPool, worker: Uuid) -> Result<u64, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE deliveries SET locked_by = NULL, run_at = now()
          WHERE locked_by = $1 AND state = 'pending'",
    )
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(released.rows_affected())
}

/// Deletes up to `batch` done rows finished more than `older_than` ago; returns how many.
pub async fn prune(pool: &PgPool, older_than: Duration, batch: i64) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query(
        "DELETE FROM deliveries WHERE id IN (
            SELECT id FROM deliveries
             WHERE state = 'done' AND finished_at < now() - make_interval(secs => $1)
             LIMIT $2)",
    )
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(pruned.rows_affected())
}

/// The queue's state for one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Depth {
    /// Pending rows (waiting, backing off or claimed).
    pub pending: i64,
    /// Seconds since the oldest pending row fell due (0 when none is overdue).
    pub oldest_due_age: f64,
    /// Dead letters.
    pub dead: i64,
}

/// Depth, oldest-due age and dead letters for every channel.
pub async fn depth(pool: &PgPool) -> Result<[Depth; Channel::ALL.len()], sqlx::Error> {
    let rows: Vec<(String, i64, f64, i64)> = sqlx::query_as(
        "SELECT channel,
                count(*) FILTER (WHERE state = 'pending'),
                coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now())), 0)::float8,
                count(*) FILTER (WHERE state = 'dead')
           FROM deliveries WHERE state IN ('pending', 'dead')
          GROUP BY channel",
    )
    .fetch_all(pool)
    .await?;
    let mut out = [Depth::default(); Channel::ALL.len()];
    for (channel, pending, oldest_due_age, dead) in rows {
        if let Some(c) = Channel::parse(&channel) {
            out[c.index()] = Depth {
                pending,
                oldest_due_age,
                dead,
            };
        }
    }
    Ok(out)
}
