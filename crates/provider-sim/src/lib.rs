//! A simulator of the three notification providers (email, SMS, push), served over real HTTP.
//!
//! Each channel has a latency distribution, an error rate, a rate limit and scheduled outages, set at
//! start and changeable at run time (`PUT /admin/config`). Every send carries an idempotency key; the
//! ledger counts the first accepted send of a key as a delivery and later ones as duplicates, which
//! is how a run proves that nothing was lost and nothing delivered twice.
//!
//! It is not a mock of anything inside a design: the servers reach it over HTTP exactly as they would
//! reach a real provider. It knows nothing of the designs or the database.
//!
//! Endpoints: `POST /send/{channel}`, `GET /ledger/summary`, `GET /ledger` (NDJSON),
//! `GET|PUT /admin/config`, `PUT /admin/channels/{channel}`, `POST /admin/reset`, `GET /metrics`,
//! `GET /healthz`.

mod config;
mod ledger;
/// Test helpers (fixed behaviours, a simulator on a free port), with the `testing` feature:
/// dev-dependencies turn it on, so none of it ships in the binary.
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use chrono::Utc;
use rand::Rng;
use serde_json::json;
use signup_core::telemetry::Registry;
use signup_core::{ApiError, Channel, SendRequest, UnknownChannel};
use tokio::net::TcpListener;

pub use config::{ChannelBehaviour, Latency, LatencySampler, Outage, SimConfig};
pub use ledger::{Accepted, ChannelCounts, Delivery, Ledger, Summary};

/// The simulator's state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    applied: RwLock<Applied>,
    /// One per channel, by [`Channel::index`], as are the other per-channel arrays.
    buckets: [Mutex<TokenBucket>; Channel::ALL.len()],
    ledger: Mutex<Ledger>,
    metrics: SimMetrics,
    registry: Registry,
}

/// A configuration and the moment it took effect (outage windows count from there).
#[derive(Debug)]
struct Applied {
    config: SimConfig,
    /// One per channel, by [`Channel::index`].
    samplers: Vec<LatencySampler>,
    at: Instant,
}

impl Applied {
    fn new(config: SimConfig) -> Result<Self, String> {
        config.validate()?;
        let sampler = |c: Channel| {
            config
                .channel(c)
                .latency
                .sampler()
                .map_err(|e| format!("{c}: {e}"))
        };
        let samplers = Channel::ALL
            .into_iter()
            .map(sampler)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config,
            samplers,
            at: Instant::now(),
        })
    }
}

/// A token bucket holding at most one second of sends.
#[derive(Debug)]
struct TokenBucket {
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: Option<f64>) -> Self {
        Self {
            rate,
            tokens: rate.unwrap_or(0.0).max(1.0),
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is free.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else { return Ok(()) };
        let capacity = rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// The header carrying the latency the simulator applied to an answer, in microseconds.
pub const LATENCY_HEADER: &str = "x-simulated-latency-us";

/// The outcome of one send, as counted in `/metrics`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Delivered,
    Duplicate,
    Error,
    RateLimited,
    Outage,
}

const OUTCOMES: [&str; 5] = ["delivered", "duplicate", "error", "rate_limited", "outage"];

#[derive(Debug)]
struct SimMetrics {
    sends: [[metrics::Counter; OUTCOMES.len()]; Channel::ALL.len()],
    latency: [metrics::Histogram; Channel::ALL.len()],
    in_flight: [metrics::Gauge; Channel::ALL.len()],
}

impl SimMetrics {
    fn new(registry: &Registry) -> Self {
        registry.register(|| {
            metrics::describe_counter!("provider_sim_sends_total", "Sends received, by channel and outcome");
            metrics::describe_histogram!(
                "provider_sim_latency_seconds",
                metrics::Unit::Seconds,
                "Latency the simulator applied to sends"
            );
            metrics::describe_gauge!("provider_sim_in_flight", "Sends being answered now");
            let per_channel = |c: Channel| {
                OUTCOMES.map(|o| metrics::counter!("provider_sim_sends_total", "channel" => c.as_str(), "outcome" => o))
            };
            Self {
                sends: Channel::ALL.map(per_channel),
                latency: Channel::ALL
                    .map(|c| metrics::histogram!("provider_sim_latency_seconds", "channel" => c.as_str())),
                in_flight: Channel::ALL.map(|c| metrics::gauge!("provider_sim_in_flight", "channel" => c.as_str())),
            }
        })
    }

    fn count(&self, channel: Channel, outcome: Outcome) {
        self.sends[channel.index()][outcome as usize].increment(1);
    }
}

impl Simulator {
    /// A simulator with `config`; fails when a behaviour is invalid (the message names the channel).
    pub fn new(config: SimConfig) -> Result<Self, String> {
        let applied = Applied::new(config)?;
        let bucket =
            |c: Channel| Mutex::new(TokenBucket::new(applied.config.channel(c).rate_limit));
        let buckets = Channel::ALL.map(bucket);
        let registry = Registry::new();
        let metrics = SimMetrics::new(&registry);
        Ok(Self {
            inner: Arc::new(Inner {
                applied: RwLock::new(applied),
                buckets,
                ledger: Mutex::new(Ledger::default()),
                metrics,
                registry,
            }),
        })
    }

    /// Replaces the configuration; outage windows count from now and rate limits start full.
    pub fn apply(&self, config: SimConfig) -> Result<(), String> {
        let applied = Applied::new(config)?;
        for c in Channel::ALL {
            *lock(&self.inner.buckets[c.index()]) =
                TokenBucket::new(applied.config.channel(c).rate_limit);
        }
        *self
            .inner
            .applied
            .write()
            .unwrap_or_else(|p| p.into_inner()) = applied;
        Ok(())
    }

    pub fn config(&self) -> SimConfig {
        self.inner
            .applied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .config
            .clone()
    }

    pub fn summary(&self) -> Summary {
        lock(&self.inner.ledger).summary()
    }

    /// Every delivery so far, in the order they were accepted.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.ledger).deliveries().to_vec()
    }

    /// Answers one send: outage, then rate limit, then latency, then the error roll, then the ledger.
    async fn send(&self, channel: Channel, key: String, request: SendRequest) -> Response {
        let received_at = Utc::now();
        let now = Instant::now();
        let i = channel.index();
        let metrics = &self.inner.metrics;

        let (outage, delay, error_rate) = {
            let applied = self.inner.applied.read().unwrap_or_else(|p| p.into_inner());
            let behaviour = applied.config.channel(channel);
            let elapsed = now.duration_since(applied.at);
            let outage = behaviour
                .outages
                .iter()
                .find_map(|o| o.remaining_at(elapsed));
            let delay = applied.samplers[i].sample(&mut rand::rng());
            (outage, delay, behaviour.error_rate)
        };

        if let Some(remaining) = outage {
            lock(&self.inner.ledger).reject(channel);
            metrics.count(channel, Outcome::Outage);
            return provider_error(StatusCode::SERVICE_UNAVAILABLE, "outage", Some(remaining));
        }
        if let Err(wait) = lock(&self.inner.buckets[i]).take(now) {
            lock(&self.inner.ledger).reject(channel);
            metrics.count(channel, Outcome::RateLimited);
            return provider_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(wait));
        }

        metrics.in_flight[i].increment(1.0);
        metrics.latency[i].record(delay.as_secs_f64());
        tokio::time::sleep(delay).await;
        metrics.in_flight[i].decrement(1.0);

        let roll: f64 = rand::rng().random();
        let mut response = if roll < error_rate {
            lock(&self.inner.ledger).reject(channel);
            metrics.count(channel, Outcome::Error);
            let status = if roll < error_rate / 2.0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            provider_error(status, "provider_error", None)
        } else {
            let delivery = Delivery {
                key,
                channel,
                registration_id: request.registration_id,
                received_at,
            };
            self.accept(delivery)
        };
        // Says how long this answer was held, so a client can check the distribution exactly.
        let applied_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        response
            .headers_mut()
            .insert(LATENCY_HEADER, HeaderValue::from(applied_us));
        response
    }

    fn accept(&self, delivery: Delivery) -> Response {
        let (channel, key) = (delivery.channel, delivery.key.clone());
        let accepted = lock(&self.inner.ledger).accept(delivery);
        let outcome = match accepted {
            Accepted::Delivered => Outcome::Delivered,
            Accepted::Duplicate => Outcome::Duplicate,
        };
        self.inner.metrics.count(channel, outcome);
        let status = OUTCOMES[outcome as usize];
        Json(json!({ "status": status, "key": key })).into_response()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A provider-style error answer, with `Retry-After` in whole seconds (rounded up) when given.
fn provider_error(
    status: StatusCode,
    code: &'static str,
    retry_after: Option<Duration>,
) -> Response {
    let mut response = (status, Json(json!({ "error": { "code": code } }))).into_response();
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

fn parse_channel(name: &str) -> Result<Channel, ApiError> {
    name.parse().map_err(|e: UnknownChannel| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_channel", e.to_string())
    })
}

async fn send_handler(
    State(sim): State<Simulator>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = parse_channel(&channel)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "send an Idempotency-Key header",
            )
        })?
        .to_string();
    let request: SendRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(sim.send(channel, key, request).await)
}

async fn summary_handler(State(sim): State<Simulator>) -> Json<Summary> {
    Json(sim.summary())
}

async fn ledger_handler(State(sim): State<Simulator>) -> Response {
    let mut body = String::new();
    for d in lock(&sim.inner.ledger).deliveries() {
        // Serialising these plain structs cannot fail.
        if let Ok(line) = serde_json::to_string(d) {
            body.push_str(&line);
            body.push('\n');
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn get_config(State(sim): State<Simulator>) -> Json<SimConfig> {
    Json(sim.config())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::malformed_json(e.to_string()),
    })
}

async fn put_config(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<Json<SimConfig>, ApiError> {
    let config: SimConfig = parse_json(&body)?;
    sim.apply(config).map_err(ApiError::invalid)?;
    Ok(Json(sim.config()))
}

async fn put_channel(
    State(sim): State<Simulator>,
    Path(channel): Path<String>,
    body: Bytes,
) -> Result<Json<SimConfig>, ApiError> {
    let channel = parse_channel(&channel)?;
    let behaviour: ChannelBehaviour = parse_json(&body)?;
    let mut config = sim.config();
    *config.channel_mut(channel) = behaviour;
    sim.apply(config).map_err(ApiError::invalid)?;
    Ok(Json(sim.config()))
}

async fn reset(State(sim): State<Simulator>) -> StatusCode {
    lock(&sim.inner.ledger).clear();
    StatusCode::NO_CONTENT
}

async fn metrics_handler(State(sim): State<Simulator>) -> impl IntoResponse {
    sim.inner.registry.response()
}

/// The simulator's routes.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/send/{channel}", post(send_handler))
        .route("/ledger", get(ledger_handler))
        .route("/ledger/summary", get(summary_handler))
        .route("/admin/config", get(get_config).put(put_config))
        .route("/admin/channels/{channel}", put(put_channel))
        .route("/admin/reset", post(reset))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(signup_core::not_found)
        .with_state(sim)
}

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    sim: Simulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    sim.inner.registry.spawn_upkeep();
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_limits_and_refills() {
        let start = Instant::now();
        let mut b = TokenBucket::new(Some(2.0));
        b.last = start;
        assert!(b.take(start).is_ok());
        assert!(b.take(start).is_ok());
        let wait = b.take(start).unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(b.take(start + Duration::from_millis(500)).is_ok());
        let mut unlimited = TokenBucket::new(None);
        assert!((0..1000).all(|_| unlimited.take(start).is_ok()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = provider_error(
            StatusCode::TOO_MANY_REQUESTS,
            "x",
            Some(Duration::from_millis(1200)),
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = provider_error(
            StatusCode::TOO_MANY_REQUESTS,
            "x",
            Some(Duration::from_millis(10)),
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
