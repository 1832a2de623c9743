//! The request path: one statement in one round trip, no provider call, no log write, no shared
//! counter row.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fanbench_db::signup::NewUser;
use serde_json::json;
use signup_core::{ApiError, Registration, ValidRegistration};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use crate::AppState;
use crate::metrics_def::AsyncMetrics;
use crate::signup;

/// Commits the user and one delivery row per channel (the outbox) in one statement, and answers
/// 202 only after the commit. The day's count is read from `users` ([`crate::signups_on`]), so
/// nothing here touches a row other sign-ups also write.
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
    .map_err(|e| db_failure("insert the user and the deliveries", &e))?;
    metrics.db.record(started.elapsed().as_secs_f64());
    if !inserted {
        return Err(ApiError::duplicate_email());
    }

    let body = json!({ "user_id": user_id, "event_id": event_id });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// What a queue design's sign-up statement binds from a registration: the user, and each channel
/// it is owed with its address (`channels[i]` to `addresses[i]`). The broker design's request path
/// binds the same.
#[derive(Debug)]
pub struct SignupRows<'a> {
    pub user: NewUser<'a>,
    pub channels: Vec<&'static str>,
    pub addresses: Vec<&'a str>,
}

impl<'a> SignupRows<'a> {
    pub fn new(user_id: Uuid, r: &'a Registration) -> Self {
        let owed = r.channels();
        Self {
            user: NewUser::new(
                user_id,
                &r.email,
                &r.name,
                r.phone.as_deref(),
                r.device_token.as_deref(),
            ),
            channels: owed.iter().map(|c| c.as_str()).collect(),
            addresses: owed
                .iter()
                .map(|c| r.address(*c).unwrap_or_default())
                .collect(),
        }
    }
}

/// A pooled connection for one request, its wait counted (requests waiting) and timed (the
/// `pool_acquire` phase); 503 with `Retry-After: 1` when the pool stays exhausted.
pub async fn acquire(
    pool: &PgPool,
    metrics: &AsyncMetrics,
) -> Result<PoolConnection<Postgres>, ApiError> {
    let waited = Instant::now();
    metrics.requests.pool_waiting.increment(1.0);
    let acquired = pool.acquire().await;
    metrics.requests.pool_waiting.decrement(1.0);
    metrics.pool_acquire.record(waited.elapsed().as_secs_f64());
    match acquired {
        Ok(conn) => Ok(conn),
        Err(sqlx::Error::PoolTimedOut) => Err(ApiError::overloaded(1)),
        Err(e) => Err(db_failure("acquire a connection", &e)),
    }
}

/// The answer to a failed statement (see [`ApiError::database_failure`]).
pub fn db_failure(what: &str, e: &sqlx::Error) -> ApiError {
    ApiError::database_failure(what, fanbench_db::is_transient(e), e)
}
