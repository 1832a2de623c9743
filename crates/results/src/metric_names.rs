//! The names of the server metrics that the report reads from `telemetry.json`: series names,
//! label names and label values, as the servers' `/metrics` writes them.
//!
//! The servers define these metrics with the `metrics` macros in `signup-core`'s
//! `telemetry.rs` (pool and phase metrics, shared by both designs),
//! `sync-server/src/metrics_def.rs` and `async-server/src/metrics_def.rs`; **those must use the
//! same strings**. This crate cannot depend on the servers, so the report's tests read those files
//! and fail when a name listed here is missing from them.
//!
//! A sampled series is keyed as the Prometheus text format writes it:
//! `name{label="value"}`, with `_sum` and `_count` after a histogram's name.

/// Histogram of the time a sign-up spends in one phase, labelled [`PHASE`].
pub const PHASE_SECONDS: &str = "fanbench_phase_seconds";
/// The label naming a sign-up's phase.
pub const PHASE: &str = "phase";
/// Phase: waiting for a pooled database connection (both designs).
pub const PHASE_POOL_ACQUIRE: &str = "pool_acquire";
/// Phase: database work (both designs).
pub const PHASE_DB: &str = "db";
/// Phase: a provider's round trip (the sync design), this followed by the channel's name (one of
/// `signup_core::Channel`): `provider_email`.
pub const PHASE_PROVIDER_PREFIX: &str = "provider_";

/// Gauge of the pool's connections, labelled [`POOL_STATE`].
pub const POOL_CONNECTIONS: &str = "fanbench_pool_connections";
/// The label of [`POOL_CONNECTIONS`].
pub const POOL_STATE: &str = "state";
/// Connections the pool holds, idle or not.
pub const POOL_STATE_OPEN: &str = "open";
/// Connections the pool holds and nobody is using.
pub const POOL_STATE_IDLE: &str = "idle";
/// Gauge of requests waiting for a pooled connection.
pub const POOL_WAITING: &str = "fanbench_pool_waiting";

/// Gauge of pending deliveries per channel (the async design), labelled [`CHANNEL`].
pub const QUEUE_DEPTH: &str = "fanbench_queue_depth";
/// Gauge of the age of the oldest overdue delivery per channel (the async design).
pub const QUEUE_OLDEST_DUE_SECONDS: &str = "fanbench_queue_oldest_due_seconds";
/// The label naming a channel; its values are `signup_core::Channel`.
pub const CHANNEL: &str = "channel";

/// Every whole name above, for the test that keeps them in step with the servers.
pub const ALL: &[&str] = &[
    PHASE_SECONDS,
    PHASE,
    PHASE_POOL_ACQUIRE,
    PHASE_DB,
    POOL_CONNECTIONS,
    POOL_STATE,
    POOL_STATE_OPEN,
    POOL_STATE_IDLE,
    POOL_WAITING,
    QUEUE_DEPTH,
    QUEUE_OLDEST_DUE_SECONDS,
    CHANNEL,
];

/// Every prefix above (the servers build these names with `format!`), for the same test.
pub const PREFIXES: &[&str] = &[PHASE_PROVIDER_PREFIX];
