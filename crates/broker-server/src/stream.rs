//! JetStream: the stream, the three consumers, the message the relay publishes, and how much is
//! left to deliver. Every JetStream setting the design relies on is written here (and listed in
//! docs/ARCHITECTURE.md).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_server::metrics_def::AsyncMetrics;
use chrono::{DateTime, Utc};
use signup_core::Channel;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Settings;

/// The stream every notice goes to.
pub const STREAM: &str = "FANBENCH_SIGNUPS";
/// What the stream captures.
pub const STREAM_SUBJECTS: &str = "fanbench.signups.>";
/// A sign-up's notice (all its channels).
pub const SIGNUP_SUBJECT: &str = "fanbench.signups.created";
/// A dead letter's replay (one channel).
pub const REPLAY_SUBJECT: &str = "fanbench.signups.replay";
/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-publish of it. The relay re-publishes
/// only rows whose acknowledgement it did not record, normally within seconds.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Deliveries JetStream makes beyond the workers' attempt budget (`max_attempts`): a worker
/// killed during a message's last attempt leaves it to be delivered again, and that delivery
/// dead-letters it instead of being the one JetStream never makes.
pub const CRASH_MARGIN: i64 = 2;
/// Unacknowledged messages (in flight or waiting out a nak delay) a consumer may have, per send
/// slot: enough that messages backing off after a failure do not stop new ones.
pub const ACK_PENDING_PER_SLOT: i64 = 16;

/// The durable consumer of `channel`.
pub fn consumer_name(channel: Channel) -> String {
    format!("fanbench-{channel}")
}

/// What the relay publishes: a sign-up's event and the sends it asks for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    pub event_id: Uuid,
    pub user_id: Uuid,
    /// When the sign-up (or the replay) committed.
    pub created_at: DateTime<Utc>,
    pub sends: Vec<Send>,
}

/// One channel of a notice and where it goes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Send {
    pub channel: Channel,
    pub address: String,
}

impl Notice {
    /// The send of `channel`, if this notice asks for one.
    pub fn send(&self, channel: Channel) -> Option<&Send> {
        self.sends.iter().find(|s| s.channel == channel)
    }
}

/// What can go wrong talking to JetStream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("could not connect to NATS: {0}")]
    Connect(String),
    #[error("could not create the stream or a consumer: {0}")]
    Setup(String),
    #[error("could not read consumer state: {0}")]
    Info(String),
}

/// The stream's configuration: file storage (survives a restart), interest retention (a message
/// goes once every consumer has acked or terminated it; the consumers exist before anything is
/// published), no age or size limit (nothing owed is dropped for space), one replica (one server
/// here; a cluster would use 3).
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.to_string(),
        subjects: vec![STREAM_SUBJECTS.to_string()],
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        duplicate_window: DUPLICATE_WINDOW,
        max_messages: -1,
        max_bytes: -1,
        ..Default::default()
    }
}

/// The consumer of `channel`: durable, pull, explicit acks, every message from the start, an ack
/// wait of the lease (longer than the provider timeout), `max_deliver` the attempt budget plus
/// [`CRASH_MARGIN`]. Retry delays are the nak delays the worker asks for (exponential with jitter,
/// after `Retry-After`); a message whose worker died is delivered again after the ack wait.
pub fn consumer_config(channel: Channel, settings: &Settings) -> consumer::pull::Config {
    let name = consumer_name(channel);
    consumer::pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(format!("fanbench broker design: {channel} sends")),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.lease,
        max_deliver: i64::from(settings.max_attempts.max(1)) + CRASH_MARGIN,
        // Per slot at the most the adaptive limit may open.
        max_ack_pending: i64::from(settings.max_concurrency.max(settings.concurrency).max(1))
            * ACK_PENDING_PER_SLOT,
        replay_policy: consumer::ReplayPolicy::Instant,
        ..Default::default()
    }
}

/// A connection to NATS and its JetStream context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: Arc<stream::Stream>,
}

impl Broker {
    /// Connects (the client reconnects by itself for ever afterwards) and makes sure the stream
    /// and the three consumers exist. Retries for a while: a server just started may not have
    /// JetStream ready yet.
    pub async fn connect(url: &str, settings: &Settings) -> Result<Self, StreamError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|e| StreamError::Connect(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let mut last = String::new();
        for _ in 0..40 {
            match Self::setup(&js, settings).await {
                Ok(stream) => {
                    return Ok(Self {
                        client,
                        js,
                        stream: Arc::new(stream),
                    });
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(StreamError::Setup(last))
    }

    /// Connects to a stream the service has already set up, changing nothing: what the harness
    /// uses to watch the consumers drain.
    pub async fn attach(url: &str) -> Result<Self, StreamError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| StreamError::Connect(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let stream = js
            .get_stream(STREAM)
            .await
            .map_err(|e| StreamError::Info(e.to_string()))?;
        Ok(Self {
            client,
            js,
            stream: Arc::new(stream),
        })
    }

    async fn setup(js: &jetstream::Context, settings: &Settings) -> Result<stream::Stream, String> {
        let stream = js
            .get_or_create_stream(stream_config())
            .await
            .map_err(|e| e.to_string())?;
        for channel in Channel::ALL {
            stream
                .create_consumer(consumer_config(channel, settings))
                .await
                .map_err(|e| format!("consumer {}: {e}", consumer_name(channel)))?;
        }
        Ok(stream)
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The consumer of `channel`.
    pub async fn consumer(
        &self,
        channel: Channel,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, StreamError> {
        self.stream
            .get_consumer(&consumer_name(channel))
            .await
            .map_err(|e| StreamError::Info(e.to_string()))
    }

    /// Messages each channel's consumer has still to finish: not yet delivered (`num_pending`)
    /// plus delivered and not yet acked or terminated (`num_ack_pending`).
    pub async fn backlog(&self) -> Result<[u64; Channel::ALL.len()], StreamError> {
        let mut out = [0u64; Channel::ALL.len()];
        for channel in Channel::ALL {
            let info = self
                .stream
                .consumer_info(consumer_name(channel))
                .await
                .map_err(|e| StreamError::Info(e.to_string()))?;
            out[channel.index()] = info.num_pending + info.num_ack_pending as u64;
        }
        Ok(out)
    }

    /// Sends what the client still buffers (acks, naks) before the process ends.
    pub async fn flush(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }
}

/// Everything still to deliver: outbox rows not yet published plus every consumer's backlog.
/// Zero means drained.
pub async fn remaining(pool: &PgPool, broker: &Broker) -> Result<u64, String> {
    let unpublished = crate::outbox::unpublished(pool)
        .await
        .map_err(|e| e.to_string())?;
    let backlog = broker.backlog().await.map_err(|e| e.to_string())?;
    Ok(u64::try_from(unpublished).unwrap_or(0) + backlog.iter().sum::<u64>())
}

/// Turns the backlog into the metrics the harness reads, every second: per channel, the
/// consumer's backlog as `fanbench_queue_depth` (the async design's name, so telemetry and charts
/// treat both alike) and, in a worker process, its dead letters; and the unpublished outbox rows
/// (`fanbench_outbox_unpublished`).
pub async fn sample_depth(
    broker: Broker,
    pool: PgPool,
    metrics: Arc<AsyncMetrics>,
    unpublished: metrics::Gauge,
    workers: bool,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(n) = crate::outbox::unpublished(&pool).await {
            unpublished.set(n as f64);
        }
        if !workers {
            continue;
        }
        if let Ok(backlog) = broker.backlog().await {
            for c in Channel::ALL {
                metrics.channel(c).depth.set(backlog[c.index()] as f64);
            }
        }
        if let Ok(dead) = crate::dlq::counts(&pool).await {
            for c in Channel::ALL {
                metrics.channel(c).dead.set(dead[c.index()] as f64);
            }
        }
    }
}
