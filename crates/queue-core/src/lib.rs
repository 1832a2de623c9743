//! What both queue designs (async: a queue in PostgreSQL; broker: an outbox relayed to JetStream)
//! share about *sending*, so that they differ only where their architectures do: each channel's
//! adaptive send slots ([`limit`]: AIMD over windows of finished sends, applied to a semaphore by
//! [`limit::Gate`]), what a provider's answer says about its load ([`limit::Signal::of`]) and the
//! retry timing ([`Backoff`]).
//!
//! What it is not: a queue. It knows nothing of where work waits (rows, messages), of leases,
//! acks or dead letters, of the database, JetStream or HTTP; it counts finished sends and hands
//! out slots. The designs' settings defaults (`concurrency`, `max_concurrency`, …) are not here
//! either: they are `signup_core::shared`, which the sync design reads too.

mod backoff;
pub mod limit;

pub use backoff::Backoff;
