//! The generator of `scenarios/traces/launch-day.csv`: a seeded, synthetic launch day — a quiet
//! morning, the announcement, a burst of sign-ups, and its decay — written as a trace so that the
//! trace replay path has a realistic file to replay. Regenerate with `fanbench trace --seed 7`.

use std::io::Write;
use std::path::Path;

use crate::scenario::Scenario;
use crate::schedule::Schedule;

/// The launch day's shape as a scenario: 80 seconds, peaking at 140 sign-ups a second.
const LAUNCH_DAY: &str = r#"
name = "launch-day-generator"
[arrivals]
process = "poisson"
phases = [
  { kind = "ramp", name = "morning", duration = "15s", from = 10, to = 25 },
  { kind = "ramp", name = "announcement", duration = "5s", from = 25, to = 140 },
  { kind = "constant", name = "burst", duration = "25s", rate = 140 },
  { kind = "ramp", name = "decay", duration = "25s", from = 140, to = 40 },
  { kind = "constant", name = "evening", duration = "10s", rate = 30 },
]
[payload]
phone_share = 0.8
device_share = 0.6
"#;

/// Writes the launch-day trace for `seed` as CSV (`offset_ms,phone,device_token`).
pub fn write_launch_day<W: Write>(seed: u64, out: &mut W) -> std::io::Result<()> {
    let mut scenario = Scenario::parse(LAUNCH_DAY, Path::new("launch-day generator"))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    scenario.arrivals.seed = seed;
    let schedule = Schedule::new(&scenario).map_err(|e| std::io::Error::other(e.to_string()))?;
    writeln!(
        out,
        "# fanbench launch-day trace, seed {seed}: `fanbench trace --seed {seed}` regenerates it"
    )?;
    writeln!(out, "offset_ms,phone,device_token")?;
    for slot in schedule {
        let slot = slot.map_err(|e| std::io::Error::other(e.to_string()))?;
        let phone = if slot.phone {
            format!("+1555{:07}", slot.seq % 10_000_000)
        } else {
            String::new()
        };
        let device = if slot.device {
            format!("device-{}", slot.seq)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:.3},{phone},{device}",
            slot.at.as_secs_f64() * 1000.0
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_trace_is_what_seed_7_generates() {
        let mut generated = Vec::new();
        write_launch_day(7, &mut generated).unwrap();
        let committed_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/traces/launch-day.csv");
        let committed = std::fs::read(&committed_path).unwrap();
        assert!(
            generated == committed,
            "scenarios/traces/launch-day.csv differs from `fanbench trace --seed 7`"
        );
    }
}
