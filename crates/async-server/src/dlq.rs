//! Dead letters: deliveries given up on, kept in the `deliveries` table (`state = 'dead'`) until
//! someone replays them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub event_id: Uuid,
    pub channel: String,
    pub address: String,
    pub attempt: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Dead letters, oldest first, optionally of one channel.
pub async fn list(
    pool: &PgPool,
    channel: Option<Channel>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, channel, address, attempt, last_error, created_at
           FROM deliveries
          WHERE state = 'dead' AND ($1::text IS NULL OR channel = $1)
          ORDER BY id
          LIMIT $2",
    )
    .bind(channel.map(Channel::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts dead letters back in the queue, due now with a fresh attempt budget: all of them, those of
/// one channel, or the given ids. Returns how many.
///
/// `attempt` is kept, since attempt numbers must never repeat (the delivery log records every
/// attempt by number); the fresh budget is `attempt_base` moved up to it, from where the workers
/// count `max_attempts` and the backoff anew.
pub async fn replay(
    pool: &PgPool,
    channel: Option<Channel>,
    ids: &[i64],
) -> Result<u64, sqlx::Error> {
    let replayed = sqlx::query(
        "UPDATE deliveries
            SET state = 'pending', attempt_base = attempt, run_at = now(), locked_by = NULL,
                finished_at = NULL
          WHERE state = 'dead'
            AND ($1::text IS NULL OR channel = $1)
            AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))",
    )
    .bind(channel.map(Channel::as_str))
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(replayed.rows_affected())
}
