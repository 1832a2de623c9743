//! What the harness reads of the outbox after a run: how much is not yet published, and, for each
//! committed user, where each notification it is owed stands. The outbox's SQL stays in this
//! crate; the CLI calls these.

use std::collections::{HashMap, HashSet};

use async_server::outbox::Owed;
use signup_core::Channel;
use sqlx::PgPool;
use uuid::Uuid;

use crate::stream::SIGNUP_SUBJECT;

/// Outbox rows not yet published (sign-ups and replays).
pub async fn unpublished(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM broker_outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
}

/// For every committed user, each channel its sign-up asked for, with its event id (`None` when
/// the sign-up's outbox row is missing) and where it stands, in the async design's terms:
/// `dead` (a live dead letter), `pending` (its outbox row, or a replay's, not yet published; or,
/// when the stream has not drained, published and perhaps still in the stream), `done`
/// (published, and the stream drained: JetStream holds nothing more for it).
pub async fn owed(pool: &PgPool, drained: bool) -> Result<Vec<Owed>, sqlx::Error> {
    let users: Vec<(Uuid, String, bool, bool)> =
        sqlx::query_as("SELECT id, email, phone IS NOT NULL, device_token IS NOT NULL FROM users")
            .fetch_all(pool)
            .await?;
    let rows: Vec<(Uuid, Uuid, String, Vec<String>, bool)> = sqlx::query_as(
        "SELECT user_id, event_id, subject, channels, published_at IS NOT NULL FROM broker_outbox",
    )
    .fetch_all(pool)
    .await?;
    let dead: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT event_id, channel FROM broker_dead_letters WHERE replayed_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let dead: HashSet<(Uuid, String)> = dead.into_iter().collect();
    // The sign-up's event per user, and the (event, channel) pairs some row has not published.
    let mut events: HashMap<Uuid, Uuid> = HashMap::new();
    let mut unpublished: HashSet<(Uuid, String)> = HashSet::new();
    for (user, event, subject, channels, published) in rows {
        if subject == SIGNUP_SUBJECT {
            events.insert(user, event);
        }
        if !published {
            for c in channels {
                unpublished.insert((event, c));
            }
        }
    }
    let mut out = Vec::with_capacity(users.len() * Channel::ALL.len());
    for (user_id, email, phone, device) in users {
        let event = events.get(&user_id).copied();
        for channel in Channel::for_contact(phone, device) {
            let name = channel.as_str().to_string();
            let state = event.map(|e| {
                let key = (e, name.clone());
                if dead.contains(&key) {
                    "dead"
                } else if unpublished.contains(&key) || !drained {
                    "pending"
                } else {
                    "done"
                }
                .to_string()
            });
            out.push(Owed {
                user_id,
                email: email.clone(),
                channel: name,
                event_id: event,
                state,
            });
        }
    }
    Ok(out)
}
