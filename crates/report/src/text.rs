//! The side-by-side table: printed to the terminal, and in the report and `summary.md`; and the
//! table of who used the machine, in the report and `summary.md`.

use std::fmt::Write;

use results::{DesignResults, RunResults};
use signup_core::Channel;

type Row = (&'static str, fn(&DesignResults) -> String);

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// Milliseconds for people: seconds past one, two decimals under one millisecond.
pub(crate) fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v < 1.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn rec(d: &DesignResults, f: fn(&results::Reconciliation) -> u64) -> String {
    d.reconciliation
        .as_ref()
        .map_or("-".into(), |r| f(r).to_string())
}

/// A percentile of one outcome class's latency, with how many fell into it.
fn class_ms(d: &DesignResults, class: &str, f: fn(&results::Percentiles) -> f64) -> String {
    d.latency_ms_by_class
        .get(class)
        .map_or("-".into(), |c| ms(f(&c.latency)))
}

fn delivery_p99(d: &DesignResults, channel: &str) -> String {
    d.delivery
        .get(channel)
        .filter(|c| c.delivered > 0)
        .map_or("-".into(), |c| ms(c.p99_ms))
}

const ROWS: &[Row] = &[
    ("requests sent", |d| {
        format!("{} of {}", d.requests.sent, d.requests.intended)
    }),
    ("2xx", |d| d.requests.status["2xx"].to_string()),
    ("503", |d| {
        format!(
            "{} ({})",
            d.requests.status["503"],
            pct(d.requests.status["503"], d.requests.sent)
        )
    }),
    ("other 4xx/5xx", |d| {
        let s = &d.requests.status;
        (s["409"] + s["4xx"] + s["5xx"]).to_string()
    }),
    ("no answer (timeout, conn.)", |d| {
        let s = &d.requests.status;
        format!(
            "{} ({})",
            s["timeout"] + s["connection_error"],
            pct(s["timeout"] + s["connection_error"], d.requests.sent)
        )
    }),
    ("accepted latency p50", |d| class_ms(d, "2xx", |p| p.p50)),
    ("accepted latency p99", |d| class_ms(d, "2xx", |p| p.p99)),
    ("accepted latency max", |d| class_ms(d, "2xx", |p| p.max)),
    ("refusal (503) latency p50", |d| {
        class_ms(d, "503", |p| p.p50)
    }),
    ("refusal (503) latency p99", |d| {
        class_ms(d, "503", |p| p.p99)
    }),
    ("all answers latency p50", |d| ms(d.latency_ms.p50)),
    ("all answers latency p90", |d| ms(d.latency_ms.p90)),
    ("all answers latency p99", |d| ms(d.latency_ms.p99)),
    ("all answers latency p99.9", |d| ms(d.latency_ms.p999)),
    ("all answers latency max", |d| ms(d.latency_ms.max)),
    ("service time p99", |d| ms(d.service_time_ms.p99)),
    ("throughput (2xx/s)", |d| format!("{:.1}", d.throughput_rps)),
    ("delivery p99 email", |d| {
        delivery_p99(d, Channel::Email.as_str())
    }),
    ("delivery p99 sms", |d| {
        delivery_p99(d, Channel::Sms.as_str())
    }),
    ("delivery p99 push", |d| {
        delivery_p99(d, Channel::Push.as_str())
    }),
    ("notifications owed", |d| rec(d, |r| r.expected)),
    ("delivered", |d| rec(d, |r| r.delivered)),
    ("lost", |d| rec(d, |r| r.lost)),
    ("dead-lettered", |d| rec(d, |r| r.dead)),
    ("still queued at deadline", |d| rec(d, |r| r.undelivered)),
    ("duplicates absorbed", |d| rec(d, |r| r.duplicates)),
    ("never notified (refused)", |d| rec(d, |r| r.never_notified)),
    ("send lag p99 (driver)", |d| ms(d.send_lag_ms.p99)),
    ("trustworthy", |d| {
        if d.trustworthy {
            "yes".into()
        } else {
            "NO".into()
        }
    }),
    ("valid", |d| {
        if d.valid {
            "yes".into()
        } else {
            "INVALID".into()
        }
    }),
];

/// The designs of a run in report order (`results::design_order`): sync, async, broker, target,
/// then any other by name.
pub fn ordered(results: &RunResults) -> Vec<(&String, &DesignResults)> {
    let mut designs: Vec<(&String, &DesignResults)> = results.designs.iter().collect();
    designs.sort_by_key(|(name, _)| results::design_order(name));
    designs
}

/// The rows of the table: a label and one cell per design.
pub fn rows(designs: &[(&String, &DesignResults)]) -> Vec<(&'static str, Vec<String>)> {
    ROWS.iter()
        .map(|(label, f)| (*label, designs.iter().map(|(_, d)| f(d)).collect()))
        .collect()
}

/// The table as Markdown, followed by every warning.
pub fn markdown_table(results: &RunResults) -> String {
    let designs = ordered(results);
    let mut out = String::from("| |");
    for (name, _) in &designs {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(designs.len()));
    out.push('\n');
    for (label, cells) in rows(&designs) {
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    for (name, d) in &designs {
        for reason in &d.invalid_reasons {
            let _ = writeln!(out, "\n> **INVALID ({name}):** {reason}");
        }
        for w in &d.warnings {
            let _ = writeln!(out, "\n> **Warning ({name}):** {w}");
        }
    }
    out
}

/// The table, designs side by side, followed by every warning.
pub fn table(results: &RunResults) -> String {
    let designs = ordered(results);
    let mut out = String::new();
    let _ = writeln!(out, "\n{} — {}", results.scenario.name, results.run_id);
    let _ = write!(out, "{:<28}", "");
    // A space before each column, so a long design name or cell never runs into its neighbour.
    for (name, _) in &designs {
        let _ = write!(out, " {name:>17}");
    }
    out.push('\n');
    for (label, f) in ROWS {
        let _ = write!(out, "{label:<28}");
        for (_, d) in &designs {
            let _ = write!(out, " {:>17}", f(d));
        }
        out.push('\n');
    }
    for (name, d) in &designs {
        // First and loudest: these numbers do not describe the design under load.
        for reason in &d.invalid_reasons {
            let _ = writeln!(out, "!!! INVALID RUN [{name}]: {reason}");
        }
        for w in &d.warnings {
            let _ = writeln!(out, "WARNING [{name}]: {w}");
        }
    }
    out
}

/// The header of [`usage_rows`]' cells.
pub const USAGE_HEADER: [&str; 6] = [
    "design",
    "process",
    "CPU",
    "cores",
    "peak memory",
    "memory counted as",
];

/// Who used the machine in a run: one row per design and process (CPU seconds over the design's
/// window, that over the window's length as cores used on average, the peak memory and what it
/// counts), and one note per figure that is missing, saying why. Empty when no design recorded
/// its processes (files written before fanbench did).
pub fn usage_rows(results: &RunResults) -> (Vec<[String; 6]>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (name, d) in ordered(results) {
        let Some(p) = &d.processes else {
            continue;
        };
        for (role, u) in p.roles() {
            let cores = match u.cpu_seconds {
                Some(cpu) if p.window_s > 0.0 => format!("{:.2}", cpu / p.window_s),
                _ => "-".into(),
            };
            let measure = match u.memory {
                results::MemoryMeasure::VmHwm => "peak RSS (VmHWM)",
                results::MemoryMeasure::PssSumSampled => "peak Pss of the tree, sampled",
            };
            rows.push([
                name.clone(),
                role.to_string(),
                u.cpu_seconds.map_or("-".into(), |s| format!("{s:.2} s")),
                cores,
                u.peak_rss_bytes.map_or("-".into(), mib),
                measure.to_string(),
            ]);
            for why in &u.missing {
                notes.push(format!("{name} {role}: {why}"));
            }
        }
    }
    (rows, notes)
}

/// Bytes in mebibytes.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// [`usage_rows`] as Markdown; empty when there are none.
pub fn markdown_usage(results: &RunResults) -> String {
    let (rows, notes) = usage_rows(results);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "### Who used the machine\n\n| {} |\n| --- | --- | ---: | ---: | ---: | --- |\n",
        USAGE_HEADER.join(" | ")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    for note in notes {
        let _ = writeln!(out, "\n> Not measured: {note}");
    }
    out
}
