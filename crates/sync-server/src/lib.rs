//! # The naive design — slow ON PURPOSE. Do not "fix" it.
//!
//! This is the notification service as the story first built it: a sign-up request takes a
//! connection from a fixed pool, opens a transaction, inserts the user, and then, *inside that
//! transaction and while holding that connection*, calls the email, SMS and push providers one after
//! another, writing a notification-log row after each, bumps the shared per-day sign-up counter and
//! only then commits. Each request holds a pooled connection for the sum of three provider round
//! trips, so the pool caps throughput at `pool size / fan-out time` (Little's law); past that,
//! requests queue for a connection until the acquire timeout and are answered 503.
//!
//! Nothing here is slowed artificially: no sleeps, no crippled settings. The pool, the database crate
//! (sqlx) and its settings are the ones the async design uses too; the only knobs are the ones the
//! story needs (pool size, acquire timeout, provider timeout).
//!
//! A provider failure rolls the whole sign-up back and answers 502: the user does not exist, so the
//! client may retry. The notifications already sent for earlier channels are *not* unsent; a retry
//! gets a new registration id and so sends them again. That is one more flaw of the design, recorded
//! by the provider ledger, not hidden.
//!
//! A database that fails mid-request (gone, restarting, out of resources) answers 503 with
//! `Retry-After`, as in the async design: the sign-up may or may not have committed, and a retry
//! with the same email is safe (a committed one answers 409).
//!
//! This crate is a library plus the `fanbench serve sync` command; it knows nothing of the driver or
//! the report.

mod metrics_def;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fanbench_db::signup::{self, Inserted, NewUser};
use serde_json::json;
use signup_core::telemetry::{self, Registry};
use signup_core::{ApiError, Channel, ProviderClient, Registration, ValidRegistration};
use sqlx::{Acquire, PgPool};
use tokio::net::TcpListener;
use tracing::{Instrument, field};
use uuid::Uuid;

use crate::metrics_def::{Phase, SyncMetrics};

/// The knobs the story needs, and no others. A scenario's `[servers.sync]` is this type, and
/// `fanbench serve sync`'s flags default to [`Config::default`], which reads the defaults every
/// design shares (`signup_core::shared`): each default is written once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Connections in the pool (fixed size).
    pub pool_size: u32,
    /// How long a request waits for a free connection before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How long one provider call may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub provider_timeout: Duration,
}

/// The defaults are the ones every design shares (`signup_core::shared`).
impl Default for Config {
    fn default() -> Self {
        use signup_core::shared;
        Self {
            pool_size: shared::POOL_SIZE,
            acquire_timeout: shared::ACQUIRE_TIMEOUT,
            provider_timeout: shared::PROVIDER_TIMEOUT,
        }
    }
}

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not connect to the database")]
    Database(#[from] fanbench_db::DbError),
    #[error("could not build the provider client: {0}")]
    Providers(String),
}

/// The server's shared state.
#[derive(Debug, Clone)]
pub struct AppState {
    pool: PgPool,
    providers: ProviderClient,
    metrics: Arc<SyncMetrics>,
    registry: Registry,
}

impl AppState {
    /// Connects the pool to `database_url` (already migrated) and the client to `providers_url`.
    pub async fn connect(
        config: &Config,
        database_url: &str,
        providers_url: &str,
    ) -> Result<Self, StartError> {
        let pool =
            fanbench_db::connect_pool(database_url, config.pool_size, config.acquire_timeout)
                .await?;
        let providers = ProviderClient::new(providers_url, config.provider_timeout)
            .map_err(|e| StartError::Providers(e.to_string()))?;
        let registry = Registry::new();
        let metrics = Arc::new(SyncMetrics::new(&registry));
        Ok(Self {
            pool,
            providers,
            metrics,
            registry,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The server's routes: `POST /register`, `GET /healthz`, `GET /metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/register", post(register))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.requests.clone(),
            telemetry::observe,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler))
        .fallback(signup_core::not_found)
        .layer(signup_core::body_limit())
        .with_state(state)
}

/// Serves until `shutdown` completes, lets in-flight requests finish, then closes the pool.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.registry.spawn_upkeep();
    let pool = state.pool.clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    pool.close().await;
    served
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .requests
        .set_pool(state.pool.size(), state.pool.num_idle());
    state.registry.response()
}

/// The sign-up, naive on purpose: everything happens inside one transaction on one pooled connection.
async fn register(
    State(state): State<AppState>,
    ValidRegistration(registration): ValidRegistration,
) -> Result<Response, ApiError> {
    let user_id = Uuid::now_v7();
    let span = tracing::info_span!(
        "register",
        %user_id,
        pool_wait_ms = field::Empty,
        email_ms = field::Empty,
        sms_ms = field::Empty,
        push_ms = field::Empty,
        db_ms = field::Empty,
    );
    fan_out(&state, user_id, &registration)
        .instrument(span)
        .await
}

async fn fan_out(
    state: &AppState,
    user_id: Uuid,
    registration: &Registration,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    let metrics = &state.metrics;

    let waited = Instant::now();
    metrics.requests.pool_waiting.increment(1.0);
    let acquired = state.pool.acquire().await;
    metrics.requests.pool_waiting.decrement(1.0);
    let waited = waited.elapsed();
    metrics.observe(Phase::PoolAcquire, waited);
    span.record("pool_wait_ms", waited.as_millis() as u64);
    let mut conn = match acquired {
        Ok(conn) => conn,
        Err(sqlx::Error::PoolTimedOut) => {
            tracing::debug!("no connection within the acquire timeout");
            return Err(ApiError::overloaded(1));
        }
        Err(e) => return Err(db_failure("acquire a connection", &e)),
    };

    let mut db_time = Duration::ZERO;
    let t = Instant::now();
    let mut tx = conn.begin().await.map_err(|e| db_failure("begin", &e))?;
    let r = registration;
    let user = NewUser::new(
        user_id,
        &r.email,
        &r.name,
        r.phone.as_deref(),
        r.device_token.as_deref(),
    );
    let inserted = signup::insert_user(&mut tx, &user).await;
    db_time += t.elapsed();
    match inserted {
        Ok(Inserted::Yes) => {}
        Ok(Inserted::DuplicateEmail) => {
            let _ = tx.rollback().await;
            return Err(ApiError::duplicate_email());
        }
        Err(e) => return Err(db_failure("insert the user", &e)),
    }

    let mut notified = Vec::with_capacity(3);
    for channel in registration.channels() {
        let to = registration.address(channel).unwrap_or_default();
        let t = Instant::now();
        let sent = state.providers.send(channel, user_id, to).await;
        let took = t.elapsed();
        metrics.observe(Phase::Provider(channel), took);
        span.record(phase_field(channel), took.as_millis() as u64);
        let status = match sent {
            Ok(status) => status,
            Err(e) => {
                tracing::debug!(error = %e, "provider failed; rolling the sign-up back");
                let _ = tx.rollback().await;
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provider_failed",
                    format!("{e}; the sign-up was rolled back, retry it"),
                ));
            }
        };
        let t = Instant::now();
        sqlx::query(
            "INSERT INTO notification_log (user_id, channel, provider_status, provider_latency_us) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(channel.as_str())
        .bind(status.as_u16() as i16)
        .bind(i64::try_from(took.as_micros()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_failure("insert a notification log", &e))?;
        db_time += t.elapsed();
        notified.push(channel);
    }

    // The hot row: every sign-up of the day updates it, and holds its lock until the commit below.
    let t = Instant::now();
    signup::bump_signup_counter(&mut tx)
        .await
        .map_err(|e| db_failure("bump the sign-up counter", &e))?;
    tx.commit().await.map_err(|e| db_failure("commit", &e))?;
    db_time += t.elapsed();
    metrics.observe(Phase::Db, db_time);
    span.record("db_ms", db_time.as_millis() as u64);
    tracing::debug!("signed up and notified");

    let body = json!({ "user_id": user_id, "notified": notified });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn phase_field(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email_ms",
        Channel::Sms => "sms_ms",
        Channel::Push => "push_ms",
    }
}

/// The answer to a failed statement (see [`ApiError::database_failure`]).
fn db_failure(what: &str, e: &sqlx::Error) -> ApiError {
    ApiError::database_failure(what, fanbench_db::is_transient(e), e)
}
