use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: an HTTP status and `{"error": {"code", "message"}}`. The message is for the
/// client; internal causes are logged where they happen and never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (503 answers carry one).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the body is not JSON at all.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    /// 422: JSON, but not a valid sign-up (missing field, wrong type, unknown field, bad value).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_registration",
            message,
        )
    }

    /// 409: the email is already registered.
    pub fn duplicate_email() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "duplicate_email",
            "this email is already registered",
        )
    }

    /// 503: no database connection could be had in time; try again after `retry_after` seconds.
    pub fn overloaded(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "no database connection became free in time; retry later",
            )
        }
    }

    /// 503: the database failed while the sign-up was under way (it went away, was restarting, or
    /// ran out of resources). The sign-up may or may not have been stored, since a failure at
    /// `COMMIT` cannot tell; retrying with the same email is safe either way, because a stored one
    /// answers 409. The caller logs the cause.
    pub fn database_unavailable(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database failed while handling this sign-up, which may or may not have been \
                 stored; retrying with the same email is safe: if it was stored, the retry answers \
                 409 duplicate_email",
            )
        }
    }

    /// The answer to a failed database statement, logging its cause: 503 with `Retry-After` when
    /// the database went away or was overloaded mid-request (`transient`, as the caller's database
    /// layer classifies it; see [`ApiError::database_unavailable`]), 500 for anything else. Both
    /// designs answer database failures through this one place.
    pub fn database_failure(what: &str, transient: bool, cause: &dyn std::fmt::Display) -> Self {
        if transient {
            tracing::warn!(error = %cause, "could not {what}: the database is unavailable");
            Self::database_unavailable(1)
        } else {
            tracing::error!(error = %cause, "could not {what}");
            Self::internal()
        }
    }

    /// 500: something failed that the client cannot fix. The cause is logged by the caller.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The fallback for unknown paths: a JSON 404 like every other error.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
