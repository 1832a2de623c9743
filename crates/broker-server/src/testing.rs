//! Helpers for other crates' tests that need the broker design's outbox in a given state, so that
//! no test outside this crate writes SQL against its tables. Behind the `testing` feature, which
//! only dev-dependencies turn on.

use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

use crate::stream::SIGNUP_SUBJECT;

/// Inserts `user`'s sign-up outbox row for `channels` (addresses `x`), published or not; returns
/// its event id.
pub async fn seed_signup(
    pool: &PgPool,
    user: Uuid,
    channels: &[Channel],
    published: bool,
) -> Result<Uuid, sqlx::Error> {
    let event = Uuid::now_v7();
    let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    let addresses: Vec<&str> = channels.iter().map(|_| "x").collect();
    sqlx::query(
        "INSERT INTO broker_outbox (msg_id, event_id, user_id, subject, channels, addresses, published_at)
         VALUES ($1::uuid::text, $1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
    )
    .bind(event)
    .bind(user)
    .bind(SIGNUP_SUBJECT)
    .bind(&names)
    .bind(&addresses)
    .bind(published)
    .execute(pool)
    .await?;
    Ok(event)
}
