//! A Prometheus registry per server instance, fed through the `metrics` macros.
//!
//! `metrics` has one global recorder per process, but tests run several servers in one process, so
//! each server owns a recorder and registers its handles inside [`Registry::register`]; the handles
//! keep pointing at that recorder afterwards, and recording through them costs an atomic add.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Histogram buckets in seconds, from half a millisecond to a minute: wide enough for a healthy async
/// commit and for a sync request stuck behind a full pool.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One server's metrics.
#[derive(Clone)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // The buckets are constant and valid; set_buckets only fails on an empty list.
        let builder = match builder.set_buckets(LATENCY_BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Runs `f` with this registry as the recorder, so `metrics::counter!` and friends inside it
    /// register here. Call it once at start-up and keep the handles it returns.
    pub fn register<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder.as_ref(), f)
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets every few seconds, so memory stays flat
    /// when nobody scrapes. Ends with the runtime.
    pub fn spawn_upkeep(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }

    /// A `/metrics` answer.
    pub fn response(&self) -> impl IntoResponse + use<> {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            self.render(),
        )
    }
}

/// The statuses `POST /register` answers with, each its own series; anything else is `other`.
const STATUSES: [u16; 10] = [201, 202, 400, 409, 413, 415, 422, 500, 502, 503];

/// The request-level metrics both designs expose under the same names, so a report reads them the
/// same way: answers by status, in-flight requests, the pool, and the whole handler's time.
#[derive(Debug)]
pub struct RequestMetrics {
    pub in_flight: metrics::Gauge,
    pub pool_size: metrics::Gauge,
    pub pool_idle: metrics::Gauge,
    pub pool_waiting: metrics::Gauge,
    pub handler: metrics::Histogram,
    statuses: [metrics::Counter; 10],
    other_status: metrics::Counter,
}

impl RequestMetrics {
    pub fn new(registry: &Registry) -> Self {
        registry.register(|| {
            metrics::describe_counter!(
                "fanbench_requests_total",
                "Answers to POST /register, by status"
            );
            metrics::describe_gauge!(
                "fanbench_in_flight_requests",
                "POST /register requests being handled"
            );
            metrics::describe_gauge!(
                "fanbench_pool_connections",
                "Database pool connections, by state"
            );
            metrics::describe_gauge!(
                "fanbench_pool_waiting",
                "Requests waiting for a database connection"
            );
            metrics::describe_histogram!(
                "fanbench_phase_seconds",
                metrics::Unit::Seconds,
                "Time a sign-up spends in each phase"
            );
            Self {
                in_flight: metrics::gauge!("fanbench_in_flight_requests"),
                pool_size: metrics::gauge!("fanbench_pool_connections", "state" => "open"),
                pool_idle: metrics::gauge!("fanbench_pool_connections", "state" => "idle"),
                pool_waiting: metrics::gauge!("fanbench_pool_waiting"),
                handler: metrics::histogram!("fanbench_phase_seconds", "phase" => "handler"),
                statuses: STATUSES.map(
                    |s| metrics::counter!("fanbench_requests_total", "status" => s.to_string()),
                ),
                other_status: metrics::counter!("fanbench_requests_total", "status" => "other"),
            }
        })
    }

    /// A histogram of one phase of a sign-up (`fanbench_phase_seconds{phase=…}`).
    pub fn phase(
        registry: &Registry,
        phase: impl Into<metrics::SharedString>,
    ) -> metrics::Histogram {
        let phase = phase.into();
        registry.register(|| metrics::histogram!("fanbench_phase_seconds", "phase" => phase))
    }

    /// Records the pool's state (read at scrape time).
    pub fn set_pool(&self, size: u32, idle: usize) {
        self.pool_size.set(f64::from(size));
        self.pool_idle.set(idle as f64);
    }

    pub fn count_status(&self, status: axum::http::StatusCode) {
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => self.statuses[i].increment(1),
            None => self.other_status.increment(1),
        }
    }
}

/// Middleware for `POST /register`: counts every answer by status and times the whole handler,
/// rejections included. Install with `from_fn_with_state(metrics, observe)`.
pub async fn observe(
    axum::extract::State(metrics): axum::extract::State<Arc<RequestMetrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    metrics.in_flight.increment(1.0);
    let response = next.run(request).await;
    metrics.in_flight.decrement(1.0);
    metrics.handler.record(started.elapsed().as_secs_f64());
    metrics.count_status(response.status());
    response
}
