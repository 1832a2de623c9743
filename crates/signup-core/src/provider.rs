use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Channel;

/// The idempotency key of one notification: the id it belongs to and the channel. A provider that
/// sees the same key twice delivers once.
pub fn idempotency_key(id: Uuid, channel: Channel) -> String {
    format!("{id}:{channel}")
}

/// The body of a send, as the provider simulator and a real provider adapter take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The registration (sync) or event (async) this notification is for.
    pub registration_id: Uuid,
    /// Address, phone number or device token.
    pub to: String,
}

/// Why a send did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with a non-2xx status.
    #[error("{channel} provider answered {status}")]
    Status {
        channel: Channel,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// No answer within the client's timeout.
    #[error("{channel} provider did not answer within {timeout:?}")]
    Timeout { channel: Channel, timeout: Duration },
    /// The connection failed.
    #[error("{channel} provider could not be reached")]
    Transport {
        channel: Channel,
        #[source]
        source: reqwest::Error,
    },
}

impl ProviderError {
    /// Whether trying again later can help: 5xx, 429, timeouts and connection failures can; other
    /// 4xx mean the request itself is wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Timeout { .. } | Self::Transport { .. } => true,
        }
    }

    /// The provider's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An HTTP client for the providers at `base_url` (`POST {base_url}/send/{channel}`).
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl ProviderClient {
    /// A client with a per-send timeout. Connections are pooled and kept alive.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one notification and waits for the provider's answer; returns the 2xx status.
    pub async fn send(
        &self,
        channel: Channel,
        id: Uuid,
        to: &str,
    ) -> Result<StatusCode, ProviderError> {
        let url = format!("{}/send/{channel}", self.base_url);
        let response = self
            .http
            .post(url)
            .header("Idempotency-Key", idempotency_key(id, channel))
            .json(&SendRequest {
                registration_id: id,
                to: to.to_string(),
            })
            .send()
            .await
            .map_err(|source| {
                if source.is_timeout() {
                    ProviderError::Timeout {
                        channel,
                        timeout: self.timeout,
                    }
                } else {
                    ProviderError::Transport { channel, source }
                }
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Reading the (small) body to its end lets the connection go back to the pool.
        let _ = response.bytes().await;
        if status.is_success() {
            return Ok(status);
        }
        Err(ProviderError::Status {
            channel,
            status,
            retry_after,
        })
    }
}
