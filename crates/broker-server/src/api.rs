//! The request path: one statement in one round trip; no broker, no provider, no log write.

use std::time::Instant;

use async_server::api::{SignupRows, acquire, db_failure};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
    let rows = SignupRows::new(user_id, &registration);
    let mut conn = acquire(&state.pool, metrics).await?;

    let started = Instant::now();
    let inserted = signup::insert(
        &mut conn,
        &rows.user,
        event_id,
        &rows.channels,
        &rows.addresses,
    )
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
