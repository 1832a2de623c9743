//! The story's fix: an asynchronous, event-driven notification service.
//!
//! A sign-up commits the user and one `deliveries` row per channel (a transactional outbox: the work
//! exists if and only if the user does) in one statement, one round trip, and answers 202. No
//! provider call, no log write and no shared counter row happen on the request path: the day's
//! count is read from `users` when asked ([`signups_on`]).
//!
//! Per-channel workers claim due rows with `FOR UPDATE SKIP LOCKED` under a lease, call the provider
//! with no database connection held, and write outcomes back in batches, guarded by lease owner and
//! attempt. Failures retry with exponential backoff and jitter (respecting `Retry-After`), up to a
//! maximum, then dead-letter (replayable). Delivery is at-least-once; every send carries the
//! idempotency key `<event id>:<channel>`, so a provider that honours it delivers once. Exactly-once
//! to an external provider is not possible; at-least-once plus idempotency keys is.
//!
//! Delivery logs go to a dedicated store (a separate database, its own small deadpool-postgres pool,
//! batched binary COPY) off the delivery path; the `deliveries` table stays the source of truth.
//!
//! API and workers run side by side by default; [`Role`] runs either alone. This crate knows nothing
//! of the driver or the report.

pub mod api;
pub mod dlq;
pub mod logstore;
pub mod metrics_def;
pub mod outbox;
pub mod queue;
pub mod signup;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use signup_core::telemetry::{self, Registry};
use signup_core::{Channel, ProviderClient};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The adaptive send slots, shared with the broker design: they live in queue-core.
pub use queue_core::limit;
pub use signup::{signups_on, signups_today};
pub use worker::WorkerConfig;

use crate::metrics_def::AsyncMetrics;

/// Which halves of the service this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// API and workers side by side.
    #[default]
    All,
    /// Only `POST /register` (and `/metrics`, `/healthz`).
    Api,
    /// Only the workers (and `/metrics`, `/healthz`).
    Workers,
}

impl Role {
    fn api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
    fn workers(self) -> bool {
        matches!(self, Role::All | Role::Workers)
    }
}

/// Connections the workers of one process use (claims, finishes, depth, pruning), in a pool of
/// their own: one per channel and one for the upkeep loops. Sharing the request path's pool put
/// every claim and finish in the queue behind a thousand sign-ups a second, so the queue was
/// drained only as fast as the pool's leftovers allowed; and the request path, like the sync
/// design's, keeps `pool_size` connections to itself.
pub const WORKER_POOL_SIZE: u32 = Channel::ALL.len() as u32 + 1;

/// Settings. Pool size (the request path's pool), acquire timeout and provider timeout mean the
/// same as in the sync design; they and the send-slot, retry and lease defaults are the ones every
/// design shares (`signup_core::shared`).
#[derive(Debug, Clone)]
pub struct Config {
    pub pool_size: u32,
    pub acquire_timeout: Duration,
    pub provider_timeout: Duration,
    /// Connections to the log store.
    pub log_pool_size: usize,
    pub workers: WorkerConfig,
}

impl Default for Config {
    fn default() -> Self {
        use signup_core::shared;
        Self {
            pool_size: shared::POOL_SIZE,
            acquire_timeout: shared::ACQUIRE_TIMEOUT,
            provider_timeout: shared::PROVIDER_TIMEOUT,
            log_pool_size: logstore::POOL_SIZE,
            workers: WorkerConfig::default(),
        }
    }
}

/// What a scenario may set for this design (`[servers.async]`): the settings of [`Config`] and
/// [`WorkerConfig`] a run varies, and how long the run waits for the queue to drain. Its defaults
/// are theirs, so each is written once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub provider_timeout: Duration,
    /// Provider calls in flight per channel to start with, and the floor of the adaptive limit.
    pub concurrency: u32,
    /// The most provider calls in flight per channel the adaptive limit grows to.
    pub max_concurrency: u32,
    pub batch: u32,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    pub max_attempts: u32,
    /// How long a run waits after its load for the queue to drain before it reconciles (read by
    /// the harness, not the server).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        let c = Config::default();
        let w = &c.workers;
        Self {
            pool_size: c.pool_size,
            acquire_timeout: c.acquire_timeout,
            provider_timeout: c.provider_timeout,
            concurrency: u32::try_from(w.concurrency).unwrap_or(u32::MAX),
            max_concurrency: u32::try_from(w.max_concurrency).unwrap_or(u32::MAX),
            batch: u32::try_from(w.batch).unwrap_or(u32::MAX),
            poll_interval: w.poll_interval,
            lease: w.lease,
            max_attempts: u32::try_from(w.max_attempts).unwrap_or(0),
            drain_timeout: signup_core::shared::DRAIN_TIMEOUT,
        }
    }
}

/// Where the service's parts are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub database_url: String,
    /// The dedicated log store (a different database from the primary).
    pub log_database_url: String,
    pub providers_url: String,
}

/// What can stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not connect to the database")]
    Database(#[from] fanbench_db::DbError),
    #[error("could not set up the log store")]
    LogStore(#[from] logstore::LogStoreError),
    #[error("could not build the provider client: {0}")]
    Providers(String),
}

/// The state the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pool: PgPool,
    metrics: Arc<AsyncMetrics>,
    registry: Registry,
}

/// A started (not yet serving) service.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    role: Role,
    workers: Option<(Arc<worker::Ctx>, tokio::task::JoinHandle<()>)>,
}

/// The async design's own tables (the outbox and queue, `deliveries`), embedded at build time from
/// `crates/async-server/migrations`. Their versions follow the primary schema's (fanbench-db), and
/// each history ignores the other's in sqlx's shared table.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!()
};

/// Brings the database at `pool` up to the async design's schema: the primary schema first, then
/// the queue's tables. [`Service::start`] runs it, so a server needs nothing set up beforehand.
pub async fn migrate(pool: &PgPool) -> Result<(), fanbench_db::DbError> {
    fanbench_db::migrate(pool).await?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(fanbench_db::DbError::from)?;
    Ok(())
}

impl Service {
    /// Connects everything `role` needs. The log store pool connects lazily: a log store that is
    /// down costs logs, not sign-ups or deliveries.
    pub async fn start(
        config: &Config,
        role: Role,
        endpoints: &Endpoints,
    ) -> Result<Self, StartError> {
        let pool = fanbench_db::connect_pool(
            &endpoints.database_url,
            config.pool_size,
            config.acquire_timeout,
        )
        .await?;
        migrate(&pool).await?;
        let registry = Registry::new();
        let metrics = Arc::new(AsyncMetrics::new(&registry));
        let workers = if role.workers() {
            let providers = ProviderClient::new(&endpoints.providers_url, config.provider_timeout)
                .map_err(|e| StartError::Providers(e.to_string()))?;
            let log_pool = logstore::pool(&endpoints.log_database_url, config.log_pool_size)?;
            let (logs, log_task) = logstore::spawn_writer(log_pool, metrics.clone());
            let worker_pool = fanbench_db::connect_pool(
                &endpoints.database_url,
                WORKER_POOL_SIZE,
                config.acquire_timeout,
            )
            .await?;
            let ctx = Arc::new(worker::Ctx {
                pool: worker_pool,
                providers,
                metrics: metrics.clone(),
                logs,
                config: config.workers.clone(),
                worker_id: Uuid::now_v7(),
            });
            Some((ctx, log_task))
        } else {
            None
        };
        Ok(Self {
            state: AppState {
                pool,
                metrics,
                registry,
            },
            role,
            workers,
        })
    }

    /// The primary database pool.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// The routes of this role: `POST /register` (API roles), `GET /metrics`, `GET /healthz`.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        if self.role.api() {
            router = router.route("/register", post(api::register)).route_layer(
                middleware::from_fn_with_state(
                    self.state.metrics.requests.clone(),
                    telemetry::observe,
                ),
            );
        }
        router
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(metrics_handler))
            .fallback(signup_core::not_found)
            .layer(signup_core::body_limit())
            .with_state(self.state.clone())
    }

    /// Serves and works until `stop` is cancelled; then stops accepting, lets in-flight sends
    /// finish within the grace period, releases leases, flushes logs and closes the pools.
    pub async fn run(self, listener: TcpListener, stop: CancellationToken) -> std::io::Result<()> {
        self.state.registry.spawn_upkeep();
        let router = self.router();
        let (worker_task, log_task, worker_pool) = match self.workers {
            Some((ctx, log_task)) => {
                let worker_pool = ctx.pool.clone();
                (
                    Some(tokio::spawn(worker::run(ctx, stop.clone()))),
                    Some(log_task),
                    Some(worker_pool),
                )
            }
            None => (None, None, None),
        };
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
        if let Some(task) = worker_task {
            let _ = task.await;
        }
        // The workers held the only log sinks; with them gone the writer flushes and ends.
        if let Some(task) = log_task {
            let _ = task.await;
        }
        if let Some(pool) = worker_pool {
            pool.close().await;
        }
        self.state.pool.close().await;
        served
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .requests
        .set_pool(state.pool.size(), state.pool.num_idle());
    state.registry.response()
}
