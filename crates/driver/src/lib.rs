//! The load driver: scenario files, the open-model arrival schedule, goose users that keep to it,
//! and HdrHistogram recording of latency from the *intended* send time (no coordinated omission).
//!
//! Only this crate knows goose. It knows nothing of the designs or the database: it sends sign-ups
//! to a URL and measures the answers; starting servers and reconciling deliveries is the caller's
//! job (`fanbench compare`).

pub mod engine;
pub mod progress;
pub mod record;
pub mod scenario;
pub mod schedule;

pub use engine::{DriveOptions, DriverError, Measurement, drive, email_for, seq_of_email, users_for};
pub use record::{Outcome, Recorder};
pub use scenario::{Scenario, ScenarioError};
pub use schedule::{Schedule, Shape, Slot};
