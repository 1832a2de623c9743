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
    providers: [Histogram; 3],
    db: Histogram,
}

impl SyncMetrics {
    pub fn new(registry: &Registry) -> Self {
        let phase = |name| RequestMetrics::phase(registry, name);
        Self {
            requests: Arc::new(RequestMetrics::new(registry)),
            pool_acquire: phase("pool_acquire"),
            providers: [
                phase("provider_email"),
                phase("provider_sms"),
                phase("provider_push"),
            ],
            db: phase("db"),
        }
    }

    pub fn observe(&self, phase: Phase, took: Duration) {
        let histogram = match phase {
            Phase::PoolAcquire => &self.pool_acquire,
            Phase::Provider(Channel::Email) => &self.providers[0],
            Phase::Provider(Channel::Sms) => &self.providers[1],
            Phase::Provider(Channel::Push) => &self.providers[2],
            Phase::Db => &self.db,
        };
        histogram.record(took.as_secs_f64());
    }
}
