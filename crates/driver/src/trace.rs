//! The generator of `scenarios/traces/launch-day.csv`: a seeded, synthetic launch day — a quiet
//! morning, the announcement, a burst of sign-ups, and its decay — written as a trace so that the
//! trace replay path has a realistic file to replay. Regenerate with `fanbench trace --seed 7`.

use std::io::Write;

use crate::schedule::Schedule;
use crate::settings::Load;

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
    let mut load: Load =
        toml::from_str(LAUNCH_DAY).map_err(|e| std::io::Error::other(e.to_string()))?;
    load.arrivals.seed = seed;
    let schedule = Schedule::new(&load.arrivals, &load.payload, None)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
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
    use std::time::Duration;

    use serde::Deserialize;

    /// One row of a generated trace, read back from its CSV.
    struct Row {
        offset_ms: f64,
        phone: bool,
        device: bool,
    }

    fn generate(seed: u64) -> Vec<Row> {
        let mut csv_bytes = Vec::new();
        write_launch_day(seed, &mut csv_bytes).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .from_reader(csv_bytes.as_slice());
        assert_eq!(
            reader.headers().unwrap(),
            vec!["offset_ms", "phone", "device_token"]
        );
        reader
            .records()
            .map(|record| {
                let record = record.unwrap();
                Row {
                    offset_ms: record[0].parse().unwrap(),
                    phone: !record[1].is_empty(),
                    device: !record[2].is_empty(),
                }
            })
            .collect()
    }

    /// The launch day as [`LAUNCH_DAY`] defines it, read here with serde on its own rather than
    /// through the driver's scenario types, so that a misreading there shows up as a mismatch.
    #[derive(Deserialize)]
    struct Definition {
        arrivals: Arrivals,
        payload: Shares,
    }

    #[derive(Deserialize)]
    struct Arrivals {
        phases: Vec<PhaseDef>,
    }

    #[derive(Deserialize)]
    struct PhaseDef {
        kind: String,
        name: String,
        #[serde(with = "humantime_serde")]
        duration: Duration,
        rate: Option<f64>,
        from: Option<f64>,
        to: Option<f64>,
    }

    #[derive(Deserialize)]
    struct Shares {
        phone_share: f64,
        device_share: f64,
    }

    /// One phase: its name, start and end in seconds, and the number of arrivals it should hold
    /// on average (its rate integrated over its duration: a ramp's mean rate is the mean of its
    /// ends).
    type PhaseWindow = (String, f64, f64, f64);

    fn launch_day() -> (Shares, Vec<PhaseWindow>) {
        let definition: Definition = toml::from_str(LAUNCH_DAY).unwrap();
        let mut start = 0.0;
        let phases = definition
            .arrivals
            .phases
            .iter()
            .map(|phase| {
                let seconds = phase.duration.as_secs_f64();
                let mean_rate = match (phase.kind.as_str(), phase.rate, phase.from, phase.to) {
                    ("constant", Some(rate), None, None) => rate,
                    ("ramp", None, Some(from), Some(to)) => (from + to) / 2.0,
                    _ => panic!("phase `{}`: only constant and ramp phases", phase.name),
                };
                let window = (
                    phase.name.clone(),
                    start,
                    start + seconds,
                    mean_rate * seconds,
                );
                start += seconds;
                window
            })
            .collect();
        (definition.payload, phases)
    }

    /// Whether `count` is within four standard deviations of a Poisson count with mean
    /// `expected`: a correct generator lands outside with probability under 1e-4.
    fn poisson_ok(count: usize, expected: f64) -> bool {
        (count as f64 - expected).abs() <= 4.0 * expected.sqrt()
    }

    /// Likewise for a binomial count of `n` trials with probability `p`.
    fn binomial_ok(count: usize, n: usize, p: f64) -> bool {
        let n = n as f64;
        (count as f64 - n * p).abs() <= 4.0 * (n * p * (1.0 - p)).sqrt()
    }

    #[test]
    fn each_phase_of_the_launch_day_holds_a_poisson_count_of_its_rate() {
        let (_, phases) = launch_day();
        let span = phases.last().unwrap().2;
        for seed in [1, 7, 42] {
            let rows = generate(seed);
            for (name, start, end, expected) in &phases {
                let count = rows
                    .iter()
                    .filter(|r| (*start..*end).contains(&(r.offset_ms / 1000.0)))
                    .count();
                assert!(
                    poisson_ok(count, *expected),
                    "seed {seed}: phase `{name}` ({start} s to {end} s) has {count} arrivals, \
                     expected {expected} ± {:.0}",
                    4.0 * expected.sqrt()
                );
            }
            let total: f64 = phases.iter().map(|p| p.3).sum();
            assert!(
                poisson_ok(rows.len(), total),
                "seed {seed}: {} arrivals, expected {total}",
                rows.len()
            );
            // The trace covers its whole span: the first arrival comes within a second of the start
            // and the last within a second of the end (at 10/s and 30/s, a quiet second has
            // probability e^-10 and e^-30).
            assert!(rows.first().unwrap().offset_ms < 1000.0, "seed {seed}");
            assert!(
                rows.last().unwrap().offset_ms > (span - 1.0) * 1000.0,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn launch_day_offsets_are_sorted_and_within_its_span() {
        let (_, phases) = launch_day();
        let span_ms = phases.last().unwrap().2 * 1000.0;
        for seed in [1, 7, 42] {
            let rows = generate(seed);
            assert!(
                rows.windows(2).all(|w| w[0].offset_ms <= w[1].offset_ms),
                "seed {seed}: offsets out of order"
            );
            assert!(
                rows.iter().all(|r| (0.0..=span_ms).contains(&r.offset_ms)),
                "seed {seed}: an offset outside 0 to {span_ms} ms"
            );
        }
    }

    #[test]
    fn launch_day_phone_and_device_shares_match_the_payload() {
        let (shares, _) = launch_day();
        let (phone, device) = (shares.phone_share, shares.device_share);
        for seed in [1, 7, 42] {
            let rows = generate(seed);
            let n = rows.len();
            let phones = rows.iter().filter(|r| r.phone).count();
            let devices = rows.iter().filter(|r| r.device).count();
            // Drawn independently, so both come together at the product of the shares.
            let both = rows.iter().filter(|r| r.phone && r.device).count();
            for (what, count, p) in [
                ("phone", phones, phone),
                ("device_token", devices, device),
                ("both", both, phone * device),
            ] {
                assert!(
                    binomial_ok(count, n, p),
                    "seed {seed}: {count} of {n} rows have {what}, expected a share of {p}"
                );
            }
        }
    }

    /// Detects drift, not correctness: `scenarios/traces/launch-day.csv` says in its first line
    /// that `fanbench trace --seed 7` regenerates it, and this keeps that true after a change to the
    /// generator or the schedule (regenerate the file when it fails). Whether the generator is
    /// right is the business of the statistical tests above.
    #[test]
    fn the_committed_trace_file_is_regenerated_from_seed_7() {
        let mut generated = Vec::new();
        write_launch_day(7, &mut generated).unwrap();
        let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scenarios/traces/launch-day.csv");
        let committed = std::fs::read(&committed_path).unwrap();
        assert!(
            generated == committed,
            "scenarios/traces/launch-day.csv differs from `fanbench trace --seed 7`: regenerate it"
        );
    }
}
