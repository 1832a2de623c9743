//! The request path: one short transaction, no provider call, no log write.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fanbench_db::signup::{self, Inserted, NewUser};
use serde_json::json;
use signup_core::{ApiError, ValidRegistration};
use sqlx::Acquire;
use uuid::Uuid;

use crate::AppState;

/// Commits the user, one delivery row per channel (the outbox) and the day's counter bump in one
/// transaction, and answers 202 only after the commit.
pub async fn register(
    State(state): State<AppState>,
    ValidRegistration(registration): ValidRegistration,
) -> Result<Response, ApiError> {
    let metrics = &state.metrics;
    let user_id = Uuid::now_v7();
    let event_id = Uuid::now_v7();

    let waited = Instant::now();
    metrics.requests.pool_waiting.increment(1.0);
    let acquired = state.pool.acquire().await;
    metrics.requests.pool_waiting.decrement(1.0);
    metrics.pool_acquire.record(waited.elapsed().as_secs_f64());
    let mut conn = match acquired {
        Ok(conn) => conn,
        Err(sqlx::Error::PoolTimedOut) => return Err(ApiError::overloaded(1)),
        Err(e) => return Err(db_failure("acquire a connection", &e)),
    };

    let started = Instant::now();
    let mut tx = conn.begin().await.map_err(|e| db_failure("begin", &e))?;
    let r = &registration;
    let user = NewUser::new(
        user_id,
        &r.email,
        &r.name,
        r.phone.as_deref(),
        r.device_token.as_deref(),
    );
    match signup::insert_user(&mut tx, &user).await {
        Ok(Inserted::Yes) => {}
        Ok(Inserted::DuplicateEmail) => {
            let _ = tx.rollback().await;
            return Err(ApiError::duplicate_email());
        }
        Err(e) => return Err(db_failure("insert the user", &e)),
    }

    let channels = registration.channels();
    let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    let addresses: Vec<&str> = channels
        .iter()
        .map(|c| registration.address(*c).unwrap_or_default())
        .collect();
    sqlx::query(
        "INSERT INTO deliveries (event_id, user_id, channel, address)
         SELECT $1, $2, c, a FROM unnest($3::text[], $4::text[]) AS t(c, a)",
    )
    .bind(event_id)
    .bind(user_id)
    .bind(&names)
    .bind(&addresses)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_failure("insert the deliveries", &e))?;

    // The same hot row the sync design bumps; here its lock lives for milliseconds, not for three
    // provider round trips.
    signup::bump_signup_counter(&mut tx)
        .await
        .map_err(|e| db_failure("bump the sign-up counter", &e))?;
    tx.commit().await.map_err(|e| db_failure("commit", &e))?;
    metrics.db.record(started.elapsed().as_secs_f64());

    let body = json!({ "user_id": user_id, "event_id": event_id });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The answer to a failed statement (see [`ApiError::database_failure`]).
fn db_failure(what: &str, e: &sqlx::Error) -> ApiError {
    ApiError::database_failure(what, fanbench_db::is_transient(e), e)
}
