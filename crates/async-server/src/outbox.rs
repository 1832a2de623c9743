//! What the harness reads of the outbox after a run: how much is still queued, and, for each
//! committed user, the outbox row of every channel its sign-up asked for. The queue's SQL stays in
//! this crate; the CLI calls these.

use std::collections::HashMap;

use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

/// One notification a committed sign-up is owed, and the outbox row that should deliver it.
#[derive(Debug, Clone, PartialEq)]
pub struct Owed {
    pub user_id: Uuid,
    pub email: String,
    pub channel: String,
    /// The outbox row's event id; `None` when the row is missing.
    pub event_id: Option<Uuid>,
    /// `pending`, `done` or `dead`; `None` when the row is missing.
    pub state: Option<String>,
}

/// Deliveries not finished yet, over all channels (the queue is drained at 0).
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'pending'")
        .fetch_one(pool)
        .await
}

/// For every committed user, each channel its sign-up asked for (email always, SMS with a phone,
/// push with a device token) with that channel's outbox row, if there is one.
pub async fn owed(pool: &PgPool) -> Result<Vec<Owed>, sqlx::Error> {
    let users: Vec<(Uuid, String, bool, bool)> =
        sqlx::query_as("SELECT id, email, phone IS NOT NULL, device_token IS NOT NULL FROM users")
            .fetch_all(pool)
            .await?;
    let rows: Vec<(Uuid, String, Uuid, String)> =
        sqlx::query_as("SELECT user_id, channel, event_id, state FROM deliveries")
            .fetch_all(pool)
            .await?;
    let mut outbox: HashMap<(Uuid, String), (Uuid, String)> = rows
        .into_iter()
        .map(|(user, channel, event, state)| ((user, channel), (event, state)))
        .collect();
    let mut out = Vec::with_capacity(users.len() * Channel::ALL.len());
    for (user_id, email, phone, device) in users {
        for channel in Channel::for_contact(phone, device) {
            let row = outbox.remove(&(user_id, channel.as_str().to_string()));
            out.push(Owed {
                user_id,
                email: email.clone(),
                channel: channel.as_str().to_string(),
                event_id: row.as_ref().map(|(event, _)| *event),
                state: row.map(|(_, state)| state),
            });
        }
    }
    Ok(out)
}
