//! The sync server's metrics, registered once at start-up.

use std::time::Duration;

use axum::http::StatusCode;
use metrics::{Counter, Gauge, Histogram};
use signup_core::Channel;
use signup_core::telemetry::Registry;

/// Where a sign-up's time goes.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    PoolAcquire,
    Provider(Channel),
    Db,
    Handler,
}

/// The statuses `/register` answers with, each its own series; anything else is `other`.
const STATUSES: [u16; 9] = [201, 400, 409, 413, 415, 422, 500, 502, 503];

#[derive(Debug)]
pub struct SyncMetrics {
    pub in_flight: Gauge,
    pub pool_size: Gauge,
    pub pool_idle: Gauge,
    pub pool_waiting: Gauge,
    statuses: [Counter; 9],
    other_status: Counter,
    pool_acquire: Histogram,
    providers: [Histogram; 3],
    db: Histogram,
    handler: Histogram,
}

impl SyncMetrics {
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
            let phase =
                |name: &'static str| metrics::histogram!("fanbench_phase_seconds", "phase" => name);
            Self {
                in_flight: metrics::gauge!("fanbench_in_flight_requests"),
                pool_size: metrics::gauge!("fanbench_pool_connections", "state" => "open"),
                pool_idle: metrics::gauge!("fanbench_pool_connections", "state" => "idle"),
                pool_waiting: metrics::gauge!("fanbench_pool_waiting"),
                statuses: STATUSES.map(
                    |s| metrics::counter!("fanbench_requests_total", "status" => s.to_string()),
                ),
                other_status: metrics::counter!("fanbench_requests_total", "status" => "other"),
                pool_acquire: phase("pool_acquire"),
                providers: [
                    phase("provider_email"),
                    phase("provider_sms"),
                    phase("provider_push"),
                ],
                db: phase("db"),
                handler: phase("handler"),
            }
        })
    }

    pub fn observe(&self, phase: Phase, took: Duration) {
        let histogram = match phase {
            Phase::PoolAcquire => &self.pool_acquire,
            Phase::Provider(Channel::Email) => &self.providers[0],
            Phase::Provider(Channel::Sms) => &self.providers[1],
            Phase::Provider(Channel::Push) => &self.providers[2],
            Phase::Db => &self.db,
            Phase::Handler => &self.handler,
        };
        histogram.record(took.as_secs_f64());
    }

    pub fn count_status(&self, status: StatusCode) {
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => self.statuses[i].increment(1),
            None => self.other_status.increment(1),
        }
    }
}
