//! The async server's metrics, registered once at start-up. Public because the broker design
//! reports under the same names (its queue depth is its consumers' backlog), so telemetry reads
//! both alike.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram};
use signup_core::Channel;
use signup_core::telemetry::{Registry, RequestMetrics};

/// Per-channel queue and delivery metrics.
#[derive(Debug)]
pub struct ChannelMetrics {
    pub claimed: Counter,
    pub sent: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub in_flight: Gauge,
    /// The adaptive bound on provider calls in flight.
    pub limit: Gauge,
    /// Commit (the sign-up transaction) → provider acknowledgement.
    pub delivery: Histogram,
    pub depth: Gauge,
    pub oldest_due: Gauge,
    pub dead: Gauge,
}

#[derive(Debug)]
pub struct AsyncMetrics {
    pub requests: Arc<RequestMetrics>,
    pub pool_acquire: Histogram,
    pub db: Histogram,
    pub channels: [ChannelMetrics; Channel::ALL.len()],
    pub logs_written: Counter,
    pub logs_dropped: Counter,
}

impl AsyncMetrics {
    pub fn new(registry: &Registry) -> Self {
        let requests = Arc::new(RequestMetrics::new(registry));
        let pool_acquire = RequestMetrics::phase(registry, "pool_acquire");
        let db = RequestMetrics::phase(registry, "db");
        registry.register(|| {
            metrics::describe_counter!("fanbench_deliveries_claimed_total", "Deliveries claimed by a worker");
            metrics::describe_counter!("fanbench_deliveries_sent_total", "Deliveries the provider acknowledged");
            metrics::describe_counter!("fanbench_deliveries_retried_total", "Attempts that failed and were rescheduled");
            metrics::describe_counter!("fanbench_deliveries_dead_lettered_total", "Deliveries given up on");
            metrics::describe_gauge!("fanbench_deliveries_in_flight", "Provider calls under way");
            metrics::describe_gauge!(
                "fanbench_deliveries_concurrency_limit",
                "The adaptive bound on provider calls in flight"
            );
            metrics::describe_histogram!(
                "fanbench_delivery_seconds",
                metrics::Unit::Seconds,
                "Sign-up commit to provider acknowledgement"
            );
            metrics::describe_gauge!("fanbench_queue_depth", "Pending deliveries (waiting, backing off or claimed)");
            metrics::describe_gauge!("fanbench_queue_oldest_due_seconds", "Age of the oldest overdue delivery");
            metrics::describe_gauge!("fanbench_queue_dead", "Dead letters waiting for a replay");
            metrics::describe_counter!("fanbench_log_entries_written_total", "Delivery log entries written");
            metrics::describe_counter!("fanbench_log_entries_dropped_total", "Delivery log entries dropped");
            let channel = |c: Channel| {
                let name = c.as_str();
                ChannelMetrics {
                    claimed: metrics::counter!("fanbench_deliveries_claimed_total", "channel" => name),
                    sent: metrics::counter!("fanbench_deliveries_sent_total", "channel" => name),
                    retried: metrics::counter!("fanbench_deliveries_retried_total", "channel" => name),
                    dead_lettered: metrics::counter!("fanbench_deliveries_dead_lettered_total", "channel" => name),
                    in_flight: metrics::gauge!("fanbench_deliveries_in_flight", "channel" => name),
                    limit: metrics::gauge!("fanbench_deliveries_concurrency_limit", "channel" => name),
                    delivery: metrics::histogram!("fanbench_delivery_seconds", "channel" => name),
                    depth: metrics::gauge!("fanbench_queue_depth", "channel" => name),
                    oldest_due: metrics::gauge!("fanbench_queue_oldest_due_seconds", "channel" => name),
                    dead: metrics::gauge!("fanbench_queue_dead", "channel" => name),
                }
            };
            Self {
                requests,
                pool_acquire,
                db,
                channels: Channel::ALL.map(channel),
                logs_written: metrics::counter!("fanbench_log_entries_written_total"),
                logs_dropped: metrics::counter!("fanbench_log_entries_dropped_total"),
            }
        })
    }

    pub fn channel(&self, channel: Channel) -> &ChannelMetrics {
        &self.channels[channel.index()]
    }
}
