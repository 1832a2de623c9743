//! Helpers for other crates' tests that need outbox rows in a given state (dead letters to replay,
//! rows to reconcile), so that no test outside this crate writes SQL against its tables. Behind the
//! `testing` feature, which only dev-dependencies turn on.

use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

/// Inserts an outbox row for `user` on `channel` in `state` (`pending`, `done` or `dead`), as if
/// it had made `attempt` attempts, the last failing with `last_error`; returns its event id.
pub async fn seed(
    pool: &PgPool,
    user: Uuid,
    channel: Channel,
    state: &str,
    attempt: i32,
    last_error: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let event = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO deliveries (event_id, user_id, channel, address, state, attempt, last_error)
         VALUES ($1, $2, $3, 'x', $4, $5, $6)",
    )
    .bind(event)
    .bind(user)
    .bind(channel.as_str())
    .bind(state)
    .bind(attempt)
    .bind(last_error)
    .execute(pool)
    .await?;
    Ok(event)
}

/// The state, attempt and attempt base of the row of `event` on `channel`.
pub async fn row(
    pool: &PgPool,
    event: Uuid,
    channel: Channel,
) -> Result<(String, i32, i32), sqlx::Error> {
    sqlx::query_as(
        "SELECT state, attempt, attempt_base FROM deliveries WHERE event_id = $1 AND channel = $2",
    )
    .bind(event)
    .bind(channel.as_str())
    .fetch_one(pool)
    .await
}
