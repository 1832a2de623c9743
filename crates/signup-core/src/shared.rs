//! The settings the designs share: those that are not part of any design's architecture. Each has
//! one default, written here once, that every design's settings type reads (`sync_server::Config`,
//! `async_server::Config`/`WorkerConfig`/`Settings`, `broker_server::Settings`/`Config`), and
//! [`KEYS`] names them as a scenario's `[servers.*]` spells them, so that a scenario giving two
//! designs different values for one is refused unless it says it is a what-if
//! (`scenario::Scenario::parse`). A comparison then changes only what the designs' architectures
//! change.
//!
//! These are defaults, not behaviour: nothing here decides how a sign-up fans out. Some keys exist
//! only in the designs with a queue (async and broker); the naive sync design calls its providers
//! inside the request, one after another, so it has no send slots, no retries, no lease and
//! nothing to drain, and is compared on the keys it has.
//!
//! **Architecture-specific, so not shared:** `batch` (the async design's rows per claim; the
//! broker's messages per pull *and* outbox rows per relay round) and `poll_interval` (the async
//! claim loop's pause after a short claim; the broker relay's pause on an empty outbox): the same
//! name for different mechanisms, each tuned to its own. The queue designs' pruning
//! (`prune_after`: finished `deliveries` rows against published outbox rows) is likewise each
//! design's own.

use std::time::Duration;

/// Connections of the request path's pool. The sync design's throughput is this ÷ the time a
/// request holds a connection; the queue designs' request path is sized the same, so the two
/// stories differ in what a request does while it holds one.
pub const POOL_SIZE: u32 = 10;
/// How long a request waits for a pooled connection before it is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one provider call may take before it counts as failed: provider behaviour, the same
/// providers for every design.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Send slots per channel to start with, and the floor of the adaptive limit (queue designs).
pub const CONCURRENCY: u32 = 64;
/// The most send slots per channel the adaptive limit grows to (queue designs). Covers 1,000
/// sends a second per channel at a mean provider latency up to ~1 s.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Attempts before a send is dead-lettered (queue designs).
pub const MAX_ATTEMPTS: u32 = 8;
/// How long a claimed row (async) or a delivered message (broker: the ack wait) is a worker's
/// before it is delivered again; must outlast [`PROVIDER_TIMEOUT`] (queue designs).
pub const LEASE: Duration = Duration::from_secs(30);
/// How long a run waits after its load for the design to finish delivering before it reconciles
/// (queue designs; read by the harness). A design given longer would show fewer sends queued at
/// the deadline for no reason of its own.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// On shutdown, how long in-flight sends may take to finish (queue designs; not a scenario key).
pub const GRACE: Duration = Duration::from_secs(10);

// The defaults must make a server that starts: a lease that outlasts a provider call, a cap at or
// above the floor.
const _: () = assert!(LEASE.as_nanos() > PROVIDER_TIMEOUT.as_nanos());
const _: () = assert!(MAX_CONCURRENCY >= CONCURRENCY);

/// A shared scenario key, and why it is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedKey {
    /// The key in a scenario's `[servers.DESIGN]` tables.
    pub key: &'static str,
    pub why: &'static str,
}

/// The scenario keys every design that has them must set alike. A design whose settings lack a
/// key (the sync design has no queue) is not compared on it.
pub const KEYS: &[SharedKey] = &[
    SharedKey {
        key: "pool_size",
        why: "the request path's pool: every design has one, and it bounds what a request may hold",
    },
    SharedKey {
        key: "acquire_timeout",
        why: "how long a request waits for the pool: the same patience for every design",
    },
    SharedKey {
        key: "provider_timeout",
        why: "provider behaviour: the same providers answer every design",
    },
    SharedKey {
        key: "concurrency",
        why: "the send-slot floor: send-slot policy, not architecture",
    },
    SharedKey {
        key: "max_concurrency",
        why: "the send-slot cap: a lower one caps a design's end-to-end rate by a setting",
    },
    SharedKey {
        key: "max_attempts",
        why: "the retry budget: the same failures must dead-letter alike",
    },
    SharedKey {
        key: "lease",
        why: "when unfinished work is delivered again: both queue designs have one",
    },
    SharedKey {
        key: "drain_timeout",
        why: "how long the harness waits for delivery before it reconciles",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_listed_once() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(!KEYS[..i].iter().any(|o| o.key == k.key), "{}", k.key);
            assert!(!k.why.is_empty());
        }
    }
}
