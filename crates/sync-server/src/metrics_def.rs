//! The sync server's phase metrics, registered once at start-up (the request-level ones are
//! `signup_core::telemetry::RequestMetrics`, shared with the async design).

use std::sync::Arc;
use std::time::Duration;

use metrics::Histogram;
use signup_core::Channel;
use signup_core::telemetry::{Registry, RequestMetrics};

/// Where a sign-up's time goes.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    PoolAcquire,
    Provider(Channel),
    Db,
}

#[derive(Debug)]
pub struct SyncMetrics {
    pub requests: Arc<RequestMetrics>,
    pool_acquire: Histogram,
    /// One per channel, by [`Channel::index`].
    providers: [Histogram; Channel::ALL.len()],
    db: Histogram,
}

impl SyncMetrics {
    pub fn new(registry: &Registry) -> Self {
        let phase = |name| RequestMetrics::phase(registry, name);
        Self {
            requests: Arc::new(RequestMetrics::new(registry)),
            pool_acquire: phase("pool_acquire"),
            providers: Channel::ALL
                .map(|c| RequestMetrics::phase(registry, format!("provider_{c}"))),
            db: phase("db"),
        }
    }

    pub fn observe(&self, phase: Phase, took: Duration) {
        let histogram = match phase {
            Phase::PoolAcquire => &self.pool_acquire,
            Phase::Provider(channel) => &self.providers[channel.index()],
            Phase::Db => &self.db,
        };
        histogram.record(took.as_secs_f64());
    }
}
