//! The dedicated notification-log store: a separate database with its own small pool
//! (deadpool-postgres), written in batches with binary COPY, off the delivery path.
//!
//! The `deliveries` table is the source of truth; these logs are the audit trail. So the writer never
//! makes a worker wait: entries go into a bounded buffer, and when the buffer is full or the store is
//! down, entries are dropped and counted (`fanbench_log_entries_dropped_total`), never deliveries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::pin_mut;
use signup_core::Channel;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::metrics_def::AsyncMetrics;

/// One attempt, as logged.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub event_id: Uuid,
    pub channel: Channel,
    pub attempt: i32,
    /// `sent`, `retry` or `dead`.
    pub outcome: &'static str,
    /// The provider's HTTP status, when it answered.
    pub status: Option<i16>,
    pub latency_us: i64,
    pub at: DateTime<Utc>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS delivery_log (
    event_id   uuid NOT NULL,
    channel    text NOT NULL,
    attempt    integer NOT NULL,
    outcome    text NOT NULL,
    status     smallint,
    latency_us bigint NOT NULL,
    at         timestamptz NOT NULL
)";

/// What can stop the log store from starting.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("invalid log store URL")]
    Url(#[source] tokio_postgres::Error),
    #[error("could not build the log store pool: {0}")]
    Pool(String),
}

/// Connections to the log store a process opens by default: one writer, and one spare. Both queue
/// designs write to this store, so both read this default.
pub const POOL_SIZE: usize = 2;

/// The pool for the log store (`size` connections; they open lazily, so an unreachable store does
/// not stop the server from starting).
pub fn pool(url: &str, size: usize) -> Result<Pool, LogStoreError> {
    let config: tokio_postgres::Config = url.parse().map_err(LogStoreError::Url)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(2)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| LogStoreError::Pool(e.to_string()))
}

/// The sending side: never blocks.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogEntry>,
}

impl LogSink {
    /// Queues an entry, or drops and counts it when the buffer is full.
    pub fn log(&self, entry: LogEntry, metrics: &AsyncMetrics) {
        if self.tx.try_send(entry).is_err() {
            metrics.logs_dropped.increment(1);
        }
    }
}

/// Buffer size: a few seconds of peak attempts.
const BUFFER: usize = 50_000;
/// Largest COPY.
const BATCH: usize = 2_000;

/// Starts the writer; it ends once every sink is dropped and the buffer is flushed.
pub fn spawn_writer(
    pool: Pool,
    metrics: std::sync::Arc<AsyncMetrics>,
) -> (LogSink, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<LogEntry>(BUFFER);
    let task = tokio::spawn(async move {
        let mut schema_ready = false;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            // Wait for one entry, then take whatever else is already there, up to a batch.
            if rx.recv_many(&mut batch, BATCH).await == 0 {
                break;
            }
            if !schema_ready {
                schema_ready = ensure_schema(&pool).await;
            }
            match write(&pool, &batch).await {
                Ok(()) => metrics.logs_written.increment(batch.len() as u64),
                Err(e) => {
                    metrics.logs_dropped.increment(batch.len() as u64);
                    tracing::warn!(error = %e, dropped = batch.len(), "log store unavailable; entries dropped");
                    // Don't spin against a store that is down.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    (LogSink { tx }, task)
}

async fn ensure_schema(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(client) => client.batch_execute(SCHEMA).await.is_ok(),
        Err(_) => false,
    }
}

async fn write(pool: &Pool, batch: &[LogEntry]) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let sink = client
        .copy_in("COPY delivery_log (event_id, channel, attempt, outcome, status, latency_us, at) FROM STDIN BINARY")
        .await
        .map_err(|e| e.to_string())?;
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::INT4,
        Type::TEXT,
        Type::INT2,
        Type::INT8,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for e in batch {
        writer
            .as_mut()
            .write(&[
                &e.event_id,
                &e.channel.as_str(),
                &e.attempt,
                &e.outcome,
                &e.status,
                &e.latency_us,
                &e.at,
            ])
            .await
            .map_err(|e| e.to_string())?;
    }
    writer.finish().await.map_err(|e| e.to_string())?;
    Ok(())
}
