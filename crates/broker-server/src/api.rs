//! The request path: one statement in one round trip; no broker, no provider, no log write.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fanbench_db::signup::NewUser;
use serde_json::json;
use signup_core::{ApiError, ValidRegistration};
use uuid::Uuid;

use crate::AppState;
use crate::signup;

/// Commits the user and its outbox row, answers 202 only after the commit, and wakes the relay.
/// Publishing is the relay's job: a request that published itself could commit and then fail to
/// publish (or publish and then fail to commit), which is what the outbox exists to rule out.
pub async fn register(
    State(state): State<AppState>,
    ValidRegistration(registration): ValidRegistration,
) -> Result<Response, ApiError> {
    let metrics = &state.metrics;
    let user_id = Uuid::now_v7();
    let event_id = Uuid::now_v7();

    let r = &registration;
    let user = NewUser::new(
        user_id,
        &r.email,
        &r.name,
        r.phone.as_deref(),
        r.device_token.as_deref(),
    );
    let channels = registration.channels();
    let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    let addresses: Vec<&str> = channels
        .iter()
        .map(|c| registration.address(*c).unwrap_or_default())
        .collect();

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
    let inserted = signup::insert(&mut conn, &user, event_id, &names, &addresses)
        .await
        .map_err(|e| db_failure("insert the user and the outbox row", &e))?;
    metrics.db.record(started.elapsed().as_secs_f64());
    drop(conn);
    if !inserted {
        return Err(ApiError::duplicate_email());
    }
    state.relay_wake.notify_one();

    let body = json!({ "user_id": user_id, "event_id": event_id });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The answer to a failed statement (see [`ApiError::database_failure`]).
fn db_failure(what: &str, e: &sqlx::Error) -> ApiError {
    ApiError::database_failure(what, fanbench_db::is_transient(e), e)
}
