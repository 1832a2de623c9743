//! Dead letters: sends given up on after the last attempt, kept in PostgreSQL
//! (`broker_dead_letters`), since JetStream forgets a message once it is terminated. A replay puts
//! a one-channel notice back through the outbox, so the relay publishes it like any other.

use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

use crate::stream::REPLAY_SUBJECT;

pub use async_server::dlq::DeadLetter;

/// A dead letter to record.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub channel: Channel,
    pub address: &'a str,
    pub attempt: i32,
    pub last_error: &'a str,
}

/// Records a dead letter; a second record of the same live letter (a redelivery whose terminate
/// was lost) changes nothing.
pub async fn record(pool: &PgPool, letter: &NewDeadLetter<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO broker_dead_letters (event_id, user_id, channel, address, attempt, last_error)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (event_id, channel) WHERE replayed_at IS NULL DO NOTHING",
    )
    .bind(letter.event_id)
    .bind(letter.user_id)
    .bind(letter.channel.as_str())
    .bind(letter.address)
    .bind(letter.attempt)
    .bind(letter.last_error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Dead letters not replayed, oldest first, optionally of one channel; in the async design's shape,
/// so `fanbench dlq list` prints both alike.
pub async fn list(
    pool: &PgPool,
    channel: Option<Channel>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, channel, address, attempt, last_error, created_at
           FROM broker_dead_letters
          WHERE replayed_at IS NULL AND ($1::text IS NULL OR channel = $1)
          ORDER BY id
          LIMIT $2",
    )
    .bind(channel.map(Channel::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Replays dead letters (all, one channel's, or the given ids): each becomes an outbox row for its
/// one channel, with its own `Nats-Msg-Id` so JetStream does not take it for the original, and a
/// fresh attempt budget (a new message). Returns how many.
pub async fn replay(
    pool: &PgPool,
    channel: Option<Channel>,
    ids: &[i64],
) -> Result<u64, sqlx::Error> {
    let replayed = sqlx::query(
        "WITH r AS (
             UPDATE broker_dead_letters SET replayed_at = now()
              WHERE replayed_at IS NULL
                AND ($1::text IS NULL OR channel = $1)
                AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
          RETURNING id, event_id, user_id, channel, address
         )
         INSERT INTO broker_outbox (msg_id, event_id, user_id, subject, channels, addresses)
         SELECT r.event_id::text || ':' || r.channel || ':replay:' || r.id, r.event_id, r.user_id,
                $3, ARRAY[r.channel], ARRAY[r.address]
           FROM r",
    )
    .bind(channel.map(Channel::as_str))
    .bind(ids)
    .bind(REPLAY_SUBJECT)
    .execute(pool)
    .await?;
    Ok(replayed.rows_affected())
}

/// Live dead letters per channel.
pub async fn counts(pool: &PgPool) -> Result<[i64; Channel::ALL.len()], sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT channel, count(*) FROM broker_dead_letters WHERE replayed_at IS NULL GROUP BY channel",
    )
    .fetch_all(pool)
    .await?;
    let mut out = [0; Channel::ALL.len()];
    for (channel, n) in rows {
        if let Some(c) = Channel::parse(&channel) {
            out[c.index()] = n;
        }
    }
    Ok(out)
}
