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
