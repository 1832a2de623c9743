//! The async design's sign-up statement, and how it counts a day's sign-ups without a hot row.
//!
//! The sign-up is one statement with data-modifying CTEs, so it costs one round trip and commits
//! in PostgreSQL's implicit transaction: the user and its outbox rows together, or neither.

use chrono::NaiveDate;
use fanbench_db::signup::NewUser;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The sign-up: the user (`$1` id, `$2` email, `$3` name, `$4` phone, `$5` device token) and one
/// `deliveries` row per channel (`$6` event id, `$7` channels, `$8` addresses) in one statement.
/// `ON CONFLICT (email) DO NOTHING` turns a duplicate into an empty `u`, so the deliveries insert,
/// which selects from `u`, inserts nothing either. Both CTEs run whether or not the outer query
/// reads them, in one snapshot and one transaction. Public so that `fanbench bench ingest` gives
/// pgbench this very statement.
pub const SIGNUP_SQL: &str = "WITH u AS (
             INSERT INTO users (id, email, name, phone, device_token)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email) DO NOTHING
             RETURNING id
         ), d AS (
             INSERT INTO deliveries (event_id, user_id, channel, address)
             SELECT $6, u.id, t.c, t.a FROM u, unnest($7::text[], $8::text[]) AS t(c, a)
         )
         SELECT count(*) FROM u";

/// Inserts the user and one `deliveries` row per channel (`channels[i]` to `addresses[i]`) in one
/// statement. Returns false, having inserted nothing, when the email is already registered; a
/// concurrent, uncommitted sign-up of the same email makes it wait for that one's outcome.
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
        .bind(channels)
        .bind(addresses)
        .fetch_one(conn)
        .await?;
    Ok(inserted == 1)
}

/// How many users signed up on `day` (the database's time zone, as `current_date`): exact, read
/// from `users` itself, so no sign-up has to bump a shared counter row.
pub async fn signups_on(pool: &PgPool, day: NaiveDate) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM users
          WHERE created_at >= $1::date::timestamptz AND created_at < ($1::date + 1)::timestamptz",
    )
    .bind(day)
    .fetch_one(pool)
    .await
}

/// How many users signed up today, by the database's clock (see [`signups_on`]).
pub async fn signups_today(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM users
          WHERE created_at >= current_date::timestamptz
            AND created_at < (current_date + 1)::timestamptz",
    )
    .fetch_one(pool)
    .await
}
