use std::time::{Duration, SystemTime};

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

/// The longest wait a provider's `Retry-After` can ask for. A broken or hostile value (a date years
/// ahead, twenty digits of seconds) must not push a delivery out of reach or overflow the queue's
/// timestamps; a provider that wants more than a day gets asked again after one.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads a `Retry-After` value as RFC 9110 (section 10.2.3) defines it: delay-seconds or an
/// HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms), as seen at `now`. A date in
/// the past means retry now. `None` for anything else; capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too many for a u64 is still a number of seconds: a very long one.
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
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
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date.
    fn example_date() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn retry_after_as_seconds() {
        let now = example_date();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("120", now), secs(120));
        assert_eq!(parse_retry_after(" 0 ", now), secs(0));
        assert_eq!(parse_retry_after("86400", now), secs(86_400));
        assert_eq!(parse_retry_after("86401", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["", "-1", "+5", "1.5", "soon", "5 s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let date = example_date();
        let before = date - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form, before),
                Some(Duration::from_secs(90)),
                "{form}"
            );
            // A date in the past, or now, means retry now.
            assert_eq!(
                parse_retry_after(form, date),
                Some(Duration::ZERO),
                "{form}"
            );
            assert_eq!(
                parse_retry_after(form, date + Duration::from_secs(3600)),
                Some(Duration::ZERO),
                "{form}"
            );
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", before - MAX_RETRY_AFTER),
            Some(MAX_RETRY_AFTER),
            "capped"
        );
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37", before), None);
        assert_eq!(
            parse_retry_after("Sun, 32 Nov 1994 08:49:37 GMT", before),
            None
        );
    }
}
