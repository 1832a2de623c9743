//! The broker design: a transactional outbox in PostgreSQL, relayed to NATS JetStream, delivered by
//! one durable pull consumer per channel.
//!
//! A sign-up commits the user and one outbox row in one statement and answers 202; it never talks
//! to the broker. A relay ([`relay`]) publishes outbox rows to the stream with `Nats-Msg-Id` set to
//! the event id, so JetStream drops a re-publish within its duplicate window, and marks a row
//! published only after JetStream acknowledged it. While NATS is down, sign-ups are still accepted:
//! the outbox holds them, and the relay catches up when the broker is back.
//!
//! Each channel (email, SMS, push) is a durable pull consumer with explicit acks ([`worker`]): a
//! send is acked after the provider answered 2xx, nak'd with a backoff delay on a retryable
//! failure, and after the last attempt dead-lettered in PostgreSQL ([`dlq`]) and terminated.
//! Delivery is at-least-once; every send carries the idempotency key `<event id>:<channel>`, as in
//! the async design. Attempts are logged to the async design's dedicated log store.
//!
//! What this crate is not: it knows nothing of the driver, the report, the gates or results. It
//! reuses signup-core (validation, errors, the provider client), fanbench-db (pool, schema,
//! transient classifier), queue-core (the adaptive send slots and the retry backoff, as the async
//! design has them) and the async design's log store and metrics.

mod api;
pub mod dlq;
pub mod nats;
pub mod outbox;
pub mod relay;
pub mod signup;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_server::logstore;
use async_server::metrics_def::AsyncMetrics;
use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use queue_core::Backoff;
use signup_core::ProviderClient;
use signup_core::telemetry::{self, Registry};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use async_server::Role;

/// What a scenario may set for this design (`[servers.broker]`), and what `fanbench serve broker`
/// takes: the one home of the design's own defaults; those every design shares are
/// `signup_core::shared`'s.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Connections of the request path's pool (as in the other designs).
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub provider_timeout: Duration,
    /// Provider calls in flight per channel to start with, and the floor of the adaptive limit
    /// (the async design's, [`queue_core::limit`]).
    pub concurrency: u32,
    /// The most provider calls in flight per channel the adaptive limit grows to; equal to
    /// `concurrency` for a fixed bound.
    pub max_concurrency: u32,
    /// Most messages one pull asks for, and most outbox rows one relay round publishes.
    pub batch: u32,
    /// How long the relay waits before looking again when the outbox was empty (a sign-up in the
    /// same process wakes it at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The consumers' ack wait: how long a delivered message is ours before JetStream delivers it
    /// again. Must outlast the provider timeout.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Attempts (deliveries) before a send is dead-lettered.
    pub max_attempts: u32,
    /// How long a run waits after its load for the outbox and the consumers to drain (read by the
    /// harness, not the server).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        use signup_core::shared;
        Self {
            pool_size: shared::POOL_SIZE,
            acquire_timeout: shared::ACQUIRE_TIMEOUT,
            provider_timeout: shared::PROVIDER_TIMEOUT,
            concurrency: shared::CONCURRENCY,
            max_concurrency: shared::MAX_CONCURRENCY,
            batch: 64,
            poll_interval: Duration::from_millis(50),
            lease: shared::LEASE,
            max_attempts: shared::MAX_ATTEMPTS,
            drain_timeout: shared::DRAIN_TIMEOUT,
        }
    }
}

/// Everything the server runs with: the settings and what is not a knob of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    /// Retry delays of a failed send (nak delay): exponential with full jitter, never sooner than
    /// the provider's `Retry-After`.
    pub backoff: Backoff,
    /// On shutdown, how long in-flight sends may take to finish.
    pub grace: Duration,
    /// How long published outbox rows are kept before the relay deletes them.
    pub prune_after: Duration,
    /// Connections to the log store.
    pub log_pool_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            backoff: Backoff::default(),
            grace: signup_core::shared::GRACE,
            prune_after: Duration::from_secs(300),
            log_pool_size: logstore::POOL_SIZE,
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
    /// The NATS server with JetStream, `nats://host:port`.
    pub nats_url: String,
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
    #[error("could not set up JetStream at {url}")]
    Stream {
        url: String,
        #[source]
        source: stream::StreamError,
    },
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// The state the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pool: PgPool,
    metrics: Arc<AsyncMetrics>,
    registry: Registry,
    /// Wakes the relay of this process after a sign-up committed.
    relay_wake: Arc<Notify>,
    /// Outbox rows not yet published (`fanbench_outbox_unpublished`).
    unpublished: metrics::Gauge,
}

/// A started (not yet serving) service.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    role: Role,
    relay: Option<Arc<relay::Ctx>>,
    workers: Option<(Arc<worker::Ctx>, tokio::task::JoinHandle<()>)>,
    sampler: stream::Broker,
    relay_pool: Option<PgPool>,
}

/// The broker design's own tables (the outbox and the dead letters), embedded from
/// `crates/broker-server/migrations`. Versions start at 0101, clear of the primary schema's and
/// the async design's, and each history ignores the others' in sqlx's shared table.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!()
};

/// Brings the database at `pool` up to the broker design's schema: the primary schema first, then
/// the outbox and dead letters. [`Service::start`] runs it.
pub async fn migrate(pool: &PgPool) -> Result<(), fanbench_db::DbError> {
    fanbench_db::migrate(pool).await?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(fanbench_db::DbError::from)?;
    Ok(())
}

fn runs_api(role: Role) -> bool {
    matches!(role, Role::All | Role::Api)
}

fn runs_workers(role: Role) -> bool {
    matches!(role, Role::All | Role::Workers)
}

impl Service {
    /// Connects everything `role` needs and makes sure the stream and the three consumers exist
    /// (before any message is published: the stream keeps a message only while some consumer is
    /// interested). JetStream must be reachable to start; once started, the service rides out its
    /// restarts.
    pub async fn start(
        config: &Config,
        role: Role,
        endpoints: &Endpoints,
    ) -> Result<Self, StartError> {
        let s = &config.settings;
        if s.lease <= s.provider_timeout {
            return Err(StartError::Settings(format!(
                "the lease (ack wait, {:?}) must be longer than the provider timeout ({:?}), or a slow send is delivered again while it runs",
                s.lease, s.provider_timeout
            )));
        }
        let pool =
            fanbench_db::connect_pool(&endpoints.database_url, s.pool_size, s.acquire_timeout)
                .await?;
        migrate(&pool).await?;
        let registry = Registry::new();
        let metrics = Arc::new(AsyncMetrics::new(&registry));
        let unpublished = registry.register(|| {
            metrics::describe_gauge!(
                "fanbench_outbox_unpublished",
                "Outbox rows the relay has not yet published to JetStream"
            );
            metrics::gauge!("fanbench_outbox_unpublished")
        });
        let broker = stream::Broker::connect(&endpoints.nats_url, s)
            .await
            .map_err(|source| StartError::Stream {
                url: endpoints.nats_url.clone(),
                source,
            })?;
        let relay_wake = Arc::new(Notify::new());
        let (relay, relay_pool) = if runs_api(role) {
            // The relay has a connection of its own: it holds a transaction while it publishes,
            // and must never queue behind sign-ups.
            let relay_pool =
                fanbench_db::connect_pool(&endpoints.database_url, 1, s.acquire_timeout).await?;
            let ctx = Arc::new(relay::Ctx {
                pool: relay_pool.clone(),
                broker: broker.clone(),
                batch: s.batch.max(1) as i64,
                poll_interval: s.poll_interval,
                prune_after: config.prune_after,
                wake: relay_wake.clone(),
            });
            (Some(ctx), Some(relay_pool))
        } else {
            (None, None)
        };
        let workers = if runs_workers(role) {
            let providers = ProviderClient::new(&endpoints.providers_url, s.provider_timeout)
                .map_err(|e| StartError::Providers(e.to_string()))?;
            let log_pool = logstore::pool(&endpoints.log_database_url, config.log_pool_size)?;
            let (logs, log_task) = logstore::spawn_writer(log_pool, metrics.clone());
            // Dead letters and the depth sampler: one connection per channel and one for upkeep.
            let worker_pool = fanbench_db::connect_pool(
                &endpoints.database_url,
                async_server::WORKER_POOL_SIZE,
                s.acquire_timeout,
            )
            .await?;
            let ctx = Arc::new(worker::Ctx {
                pool: worker_pool,
                broker: broker.clone(),
                providers,
                metrics: metrics.clone(),
                logs,
                config: config.clone(),
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
                relay_wake,
                unpublished,
            },
            role,
            relay,
            workers,
            sampler: broker,
            relay_pool,
        })
    }

    /// The primary database pool.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// The routes of this role: `POST /register` (API roles), `GET /metrics`, `GET /healthz`.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        if runs_api(self.role) {
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

    /// Serves, relays and works until `stop` is cancelled; then stops accepting, lets in-flight
    /// sends finish within the grace period (what does not finish is delivered again by
    /// JetStream), flushes logs and closes the pools.
    pub async fn run(self, listener: TcpListener, stop: CancellationToken) -> std::io::Result<()> {
        self.state.registry.spawn_upkeep();
        let router = self.router();
        let relay_task = self
            .relay
            .map(|ctx| tokio::spawn(relay::run(ctx, stop.clone())));
        let depth_task = tokio::spawn(stream::sample_depth(
            self.sampler.clone(),
            self.state.pool.clone(),
            self.state.metrics.clone(),
            self.state.unpublished.clone(),
            runs_workers(self.role),
            stop.clone(),
        ));
        let (worker_task, log_task, worker_pool) = match self.workers {
            Some((ctx, log_task)) => {
                let pool = ctx.pool.clone();
                (
                    Some(tokio::spawn(worker::run(ctx, stop.clone()))),
                    Some(log_task),
                    Some(pool),
                )
            }
            None => (None, None, None),
        };
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
        if let Some(task) = relay_task {
            let _ = task.await;
        }
        if let Some(task) = worker_task {
            let _ = task.await;
        }
        let _ = depth_task.await;
        // The workers held the only log sinks; with them gone the writer flushes and ends.
        if let Some(task) = log_task {
            let _ = task.await;
        }
        self.sampler.flush().await;
        if let Some(pool) = worker_pool {
            pool.close().await;
        }
        if let Some(pool) = self.relay_pool {
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
