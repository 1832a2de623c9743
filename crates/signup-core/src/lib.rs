//! The sign-up API that both designs share, so that they differ only in what happens after a
//! request is understood: the request model and its validation, the JSON error body every failure
//! answers with, the notification channels, and the HTTP client for the providers; and the one
//! default of each setting the designs share ([`shared`]), with the list of those settings.
//!
//! This crate holds no database code and no design decision: it must not know whether a sign-up
//! fans out inline or through a queue (the shared defaults are values, not behaviour).

mod error;
mod provider;
mod registration;
pub mod shared;
pub mod telemetry;
/// Test helpers (bad inputs, the fuzz run), with the `testing` feature: dev-dependencies turn it on,
/// so none of it ships in the binary.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{ApiError, not_found};
pub use provider::{
    MAX_RETRY_AFTER, ProviderClient, ProviderError, SendRequest, idempotency_key, parse_retry_after,
};
pub use registration::{
    Channel, MAX_BODY_BYTES, Registration, UnknownChannel, ValidRegistration, body_limit,
};
