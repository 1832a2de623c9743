//! The load driver: scenario files, the open-model arrival schedule, goose users that keep to it,
//! and HdrHistogram recording of latency from the *intended* send time (no coordinated omission).
//!
//! Only this crate knows goose. It knows nothing of the designs or the database: it sends sign-ups
//! to a URL and measures the answers; starting servers and reconciling deliveries is the caller's
//! job (`fanbench compare`).

pub mod engine;
pub mod http;
pub mod inbox;
pub mod progress;
pub mod record;
pub mod schedule;
pub mod settings;
pub mod slots;
pub mod timer;
pub mod trace;

pub use engine::{
    DriveOptions, DriverError, Measurement, RATE_PER_THREAD, drive, email_for, parse_email,
    threads_for, users_for,
};
pub use record::{Outcome, Recorder, SeqSet};
pub use schedule::{Schedule, Shape, Shard, ShardError, Slot};
pub use settings::{Arrivals, DriverSettings, Load, Payload, Phase, Process, Trace};

/// Whether a stop was asked for: goose's own Ctrl-C handler (which owns SIGINT while a run is
/// under way) sets the same flag as [`request_stop`].
pub fn stop_requested() -> bool {
    goose::is_killswitch_triggered()
}

/// Asks every run in this process to stop, keeping what it measured.
pub fn request_stop(reason: &str) {
    goose::trigger_killswitch(reason);
}
