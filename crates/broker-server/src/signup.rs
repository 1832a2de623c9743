//! The broker design's sign-up statement: the user and its outbox row in one statement, one round
//! trip, in PostgreSQL's implicit transaction (both or neither).

use fanbench_db::signup::NewUser;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::stream::SIGNUP_SUBJECT;

/// The sign-up: the user (`$1` id, `$2` email, `$3` name, `$4` phone, `$5` device token) and one
/// `broker_outbox` row (`$6` event id, also its `Nats-Msg-Id`; `$7` subject; `$8` channels; `$9`
/// addresses). `ON CONFLICT (email) DO NOTHING` turns a duplicate into an empty `u`, so the outbox
/// insert, which selects from `u`, inserts nothing either.
pub const SIGNUP_SQL: &str = "WITH u AS (
             INSERT INTO users (id, email, name, phone, device_token)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email) DO NOTHING
             RETURNING id
         ), o AS (
             INSERT INTO broker_outbox (msg_id, event_id, user_id, subject, channels, addresses)
             SELECT $6::uuid::text, $6, u.id, $7, $8::text[], $9::text[] FROM u
         )
         SELECT count(*) FROM u";

/// Inserts the user and its outbox row in one statement. Returns false, having inserted nothing,
/// when the email is already registered.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    user: &NewUser<'_>,
    event_id: Uuid,
    channels: &[&str],
    addresses: &[&str],
) -> Result<bool, sqlx::Error> {
    let inserted: i64 = sqlx::query_scalar(SIGNUP_SQL)
        .bind(user.id)
        .bind(user.email)
        .bind(user.name)
        .bind(user.phone)
        .bind(user.device_token)
        .bind(event_id)
        .bind(SIGNUP_SUBJECT)
        .bind(channels)
        .bind(addresses)
        .fetch_one(conn)
        .await?;
    Ok(inserted == 1)
}
