//! The page's sections. Every chart section always holds exactly one chart: when its data is
//! missing (no telemetry, no async design) the chart says so instead of vanishing.

use plotters::style::RGBColor;
use results::{DesignResults, DesignTelemetry, RunResults};

use crate::charts::{self, Bar, LineChart, Look, Scale, Series, XAxis};
use crate::text::ms;
use crate::{Run, escape, text};

/// Under the title: what was run, where and when.
pub fn subtitle(runs: &[Run]) -> String {
    let parts: Vec<String> = runs
        .iter()
        .map(|run| {
            let r = &run.results;
            format!(
                "{} — {} ({:.0} s, peak {:.0}/s), {}",
                escape(&r.run_id),
                escape(&r.scenario.description),
                r.scenario.duration_s,
                r.scenario.peak_rps,
                escape(&r.started_at)
            )
        })
        .collect();
    format!("<p class=\"subtitle\">{}</p>", parts.join("<br>"))
}

/// A series label: the design, and the run when several are shown.
fn label(runs: &[Run], run: usize, design: &str, what: &str) -> String {
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    if runs.len() > 1 {
        format!("{design}{what} [run {}]", run + 1)
    } else {
        format!("{design}{what}")
    }
}

/// The design's look, thinner for the second and later runs.
fn look(design: &str, run: usize) -> Look {
    let base = charts::design_look(design);
    Look {
        width: if run == 0 { base.width } else { 1 },
        ..base
    }
}

fn each_design(runs: &[Run]) -> impl Iterator<Item = (usize, &Run, &String, &DesignResults)> {
    runs.iter().enumerate().flat_map(|(i, run)| {
        text::ordered(&run.results)
            .into_iter()
            .map(move |(name, d)| (i, run, name, d))
    })
}

fn telemetry<'a>(run: &'a Run, design: &str) -> Option<&'a DesignTelemetry> {
    run.telemetry
        .as_ref()?
        .designs
        .get(design)
        .filter(|t| !t.samples.is_empty())
}

fn chart(svg: String, explain: &str) -> String {
    format!("<div class=\"chart\">{svg}</div>\n<p class=\"explain\">{explain}</p>")
}

pub fn render(
    id: &str,
    runs: &[Run],
    gates: Option<&[gates::GateResult]>,
) -> (&'static str, String) {
    match id {
        "verdict" => ("Verdict", verdict(runs)),
        "summary-table" => ("Side by side", summary_table(runs)),
        "latency-percentiles" => ("Latency by percentile", latency_percentiles(runs)),
        "latency-over-time" => ("Latency over time", latency_over_time(runs)),
        "errors-over-time" => ("503s and errors over time", errors_over_time(runs)),
        "time-breakdown" => ("Where the time goes", time_breakdown(runs)),
        "pool-and-postgres" => (
            "Connection pool and PostgreSQL waits",
            pool_and_postgres(runs),
        ),
        "queue" => ("The async queue", queue(runs)),
        "delivery" => ("Delivery latency per channel", delivery(runs)),
        _ => (
            "Scenario, settings, environment and gates",
            run_details(runs, gates),
        ),
    }
}

/// The verdict in plain words, one line per design, then the comparison.
pub fn verdict_lines(r: &RunResults) -> Vec<String> {
    let mut lines = Vec::new();
    let accepted_p99 = |d: &DesignResults| d.latency_ms_by_class.get("2xx").map(|c| c.latency.p99);
    for (name, d) in text::ordered(r) {
        let sent = d.requests.sent.max(1);
        let refused = d.requests.status["503"];
        let mut line = match d.latency_ms_by_class.get("2xx") {
            Some(ok) => format!(
                "**{name}**: an accepted sign-up took p99 {} (p50 {})",
                ms(ok.latency.p99),
                ms(ok.latency.p50)
            ),
            None => format!("**{name}**: no sign-up was accepted"),
        };
        line.push_str(&format!(
            "; {} of {} sign-ups refused with 503 ({:.1} %)",
            refused,
            d.requests.sent,
            refused as f64 * 100.0 / sent as f64
        ));
        if let Some(no) = d.latency_ms_by_class.get("503") {
            line.push_str(&format!(
                ", told so after p50 {} (p99 {})",
                ms(no.latency.p50),
                ms(no.latency.p99)
            ));
        }
        if let Some(rec) = &d.reconciliation {
            let worst = d
                .delivery
                .values()
                .filter(|c| c.delivered > 0)
                .map(|c| c.p99_ms)
                .fold(0.0, f64::max);
            line.push_str(&format!(
                "; {} notifications lost, {} users never notified; delivery p99 {}",
                rec.lost,
                rec.never_notified,
                ms(worst)
            ));
            if rec.undelivered > 0 {
                line.push_str(&format!(
                    "; {} still queued at the drain deadline",
                    rec.undelivered
                ));
            }
            if rec.dead > 0 {
                line.push_str(&format!("; {} dead-lettered", rec.dead));
            }
        }
        if !d.trustworthy {
            line.push_str(" — **UNTRUSTWORTHY: the driver fell behind its schedule**");
        }
        if !d.valid {
            line.push_str(&format!(" — **INVALID: {}**", d.invalid_reasons.join("; ")));
        }
        lines.push(line);
    }
    if let (Some(s), Some(a)) = (r.designs.get("sync"), r.designs.get("async")) {
        match (accepted_p99(s), accepted_p99(a)) {
            _ if !(s.valid && a.valid) => lines.push(
                "no comparison: a design's run is invalid, so its numbers do not describe it".into(),
            ),
            (Some(sp), Some(ap)) if ap > 0.0 => lines.push(format!(
                "an accepted sign-up's p99 is **{:.0}x** lower with the async design than with the sync design under the same load",
                sp / ap
            )),
            _ => {}
        }
    }
    lines
}

fn verdict(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let items: String = verdict_lines(&run.results)
            .iter()
            .map(|l| {
                let html = escape(l);
                // **bold** → <strong>, pairwise.
                let mut parts = html.split("**");
                let mut s = parts.next().unwrap_or_default().to_string();
                for (i, p) in parts.enumerate() {
                    s.push_str(if i % 2 == 0 { "<strong>" } else { "</strong>" });
                    s.push_str(p);
                }
                format!("<li>{s}</li>")
            })
            .collect();
        let prefix = if runs.len() > 1 {
            format!("<p>{}</p>", escape(&run.results.run_id))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<div class=\"verdict\">{prefix}<ul>{items}</ul></div>\n"
        ));
        for (name, d) in text::ordered(&run.results) {
            for w in &d.warnings {
                out.push_str(&format!(
                    "<p class=\"warning\"><strong>{}:</strong> {}</p>\n",
                    escape(name),
                    escape(w)
                ));
            }
        }
    }
    out
}

fn summary_table(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let designs = text::ordered(&run.results);
        if runs.len() > 1 {
            out.push_str(&format!("<h3>{}</h3>", escape(&run.results.run_id)));
        }
        out.push_str("<table><thead><tr><th></th>");
        for (name, _) in &designs {
            out.push_str(&format!("<th>{}</th>", escape(name)));
        }
        out.push_str("</tr></thead><tbody>");
        for (label, cells) in text::rows(&designs) {
            out.push_str(&format!("<tr><td>{}</td>", escape(label)));
            for c in cells {
                out.push_str(&format!("<td>{}</td>", escape(&c)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str(
        "<p class=\"explain\">Latency counts from each request's <em>intended</em> send time, so time a \
         request spent waiting for the server to accept it is included (no coordinated omission). \
         <em>Accepted</em> latency is that of sign-ups answered 2xx, <em>refusal</em> latency that of \
         503s; <em>all answers</em> mixes every outcome. A run is <em>invalid</em> when its server \
         died, more than a small share of requests got no answer, or nothing was accepted: its \
         numbers do not describe the design. Service time counts from the actual send. Send lag is the driver's own delay: above 10 ms \
         the run marks itself untrustworthy.</p>",
    );
    out
}

fn latency_percentiles(runs: &[Run]) -> String {
    let series = each_design(runs)
        .map(|(i, _, name, d)| Series {
            label: label(runs, i, name, ""),
            look: look(name, i),
            points: d
                .latency_spectrum
                .iter()
                .map(|p| (charts::percentile_x(p.percentile), p.ms.max(0.001)))
                .collect(),
        })
        .collect();
    let svg = charts::line_chart(&LineChart {
        title: "Latency by percentile (from intended send time)".into(),
        x: XAxis::Percentile,
        y_label: "latency (ms, log)".into(),
        y_scale: Scale::Log,
        series,
        secondary: None,
    });
    chart(
        svg,
        "Each line is one design's whole latency distribution over all answers (accepted and refused alike), HdrHistogram style: the further right, the rarer the request. A flat line far above another is a design that is slow for everyone.",
    )
}

fn latency_over_time(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, _, name, d) in each_design(runs) {
        let points = |f: fn(&results::Second) -> f64| -> Vec<(f64, f64)> {
            d.timeline
                .iter()
                .filter(|s| f(s) > 0.0)
                .map(|s| (f64::from(s.t), f(s)))
                .collect()
        };
        series.push(Series {
            label: label(runs, i, name, "p99"),
            look: look(name, i),
            points: points(|s| s.p99_ms),
        });
        let thin = Look {
            width: 1,
            ..look(name, i)
        };
        series.push(Series {
            label: label(runs, i, name, "p50"),
            look: thin,
            points: points(|s| s.p50_ms),
        });
    }
    let offered = runs
        .first()
        .and_then(|r| text::ordered(&r.results).first().map(|(_, d)| (*d).clone()))
        .map(|d| {
            d.timeline
                .iter()
                .map(|s| (f64::from(s.t), s.offered as f64))
                .collect()
        })
        .unwrap_or_default();
    let grey = Look {
        color: RGBColor(110, 110, 110),
        dashed: false,
        width: 1,
    };
    let svg = charts::line_chart(&LineChart {
        title: "p50 and p99 per second, with the offered rate".into(),
        x: XAxis::Seconds,
        y_label: "latency (ms, log)".into(),
        y_scale: Scale::Log,
        series,
        secondary: Some((
            "offered (sign-ups/s)".into(),
            vec![Series {
                label: "offered/s".into(),
                look: grey,
                points: offered,
            }],
        )),
    });
    chart(
        svg,
        "Latency of the requests scheduled in each second (left axis), against the sign-ups offered per second (grey, right axis).",
    )
}

fn errors_over_time(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, _, name, d) in each_design(runs) {
        let points = |f: fn(&results::Second) -> u64| -> Vec<(f64, f64)> {
            d.timeline
                .iter()
                .map(|s| (f64::from(s.t), f(s) as f64))
                .collect()
        };
        series.push(Series {
            label: label(runs, i, name, "503/s"),
            look: look(name, i),
            points: points(|s| s.status_503),
        });
        let thin = Look {
            width: 1,
            ..look(name, i)
        };
        series.push(Series {
            label: label(runs, i, name, "other errors/s"),
            look: thin,
            points: points(|s| s.errors),
        });
    }
    let svg = charts::line_chart(&LineChart {
        title: "503s and other errors per second".into(),
        x: XAxis::Seconds,
        y_label: "answers per second".into(),
        y_scale: Scale::Linear,
        series,
        secondary: None,
    });
    chart(
        svg,
        "Refusals (503: no database connection within the acquire timeout) and every other failure, by the second they arrived. A 503 here is a user who never got in.",
    )
}

/// The mean of a phase (ms) between two samples, from the histogram's sum and count.
fn phase_mean(t: &DesignTelemetry, phase: &str, from: f64, to: f64) -> Option<f64> {
    let at = |when: f64| {
        t.samples
            .iter()
            .rev()
            .find(|s| s.t <= when)
            .or(t.samples.first())
    };
    let (a, b) = (at(from)?, at(to)?);
    let sum = format!("fanbench_phase_seconds_sum{{phase=\"{phase}\"}}");
    let count = format!("fanbench_phase_seconds_count{{phase=\"{phase}\"}}");
    let d_sum = b.server.get(&sum)? - a.server.get(&sum).copied().unwrap_or(0.0);
    let d_count = b.server.get(&count)? - a.server.get(&count).copied().unwrap_or(0.0);
    (d_count > 0.0).then(|| d_sum / d_count * 1000.0)
}

/// The baseline (the first phase, at most ten seconds) and the ten seconds with the most offered load.
fn windows(r: &RunResults, d: &DesignResults) -> [(&'static str, f64, f64); 2] {
    let first_phase = r.scenario.definition["arrivals"]["phases"][0]["duration"]
        .as_str()
        .and_then(seconds);
    let baseline = first_phase.unwrap_or(10.0).min(10.0);
    let offered: Vec<u64> = d.timeline.iter().map(|s| s.offered).collect();
    let busiest = (0..offered.len().saturating_sub(9).max(1))
        .max_by_key(|i| offered.iter().skip(*i).take(10).sum::<u64>())
        .unwrap_or(0) as f64;
    [
        ("baseline", 0.0, baseline),
        ("spike", busiest, busiest + 10.0),
    ]
}

/// Seconds in a duration written like the scenario files do (`3s`, `500ms`, `2m`).
fn seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|v| v * scale)
}

fn time_breakdown(runs: &[Run]) -> String {
    let mut bars = Vec::new();
    for (i, run, name, d) in each_design(runs) {
        let Some(t) = telemetry(run, name) else {
            continue;
        };
        let phases: &[(&str, &str)] = if name == "sync" {
            &[
                ("pool_acquire", "waiting for a connection"),
                ("provider_email", "email provider"),
                ("provider_sms", "SMS provider"),
                ("provider_push", "push provider"),
                ("db", "database work"),
            ]
        } else {
            &[
                ("pool_acquire", "waiting for a connection"),
                ("db", "database work"),
            ]
        };
        for (window, from, to) in windows(&run.results, d) {
            let segments: Vec<(String, f64)> = phases
                .iter()
                .filter_map(|(p, text)| phase_mean(t, p, from, to).map(|v| (text.to_string(), v)))
                .collect();
            if !segments.is_empty() {
                bars.push(Bar {
                    label: format!("{} · {window}", label(runs, i, name, "")),
                    segments,
                });
            }
        }
    }
    let svg = if bars.is_empty() {
        charts::note_svg(
            "Where the time goes",
            "no server telemetry in this run (telemetry.json is missing or empty)",
        )
    } else {
        charts::stacked_bars(
            "Mean time per sign-up, by phase",
            "milliseconds per sign-up",
            &bars,
        )
    };
    chart(
        svg,
        "The mean time a sign-up spent in each phase, in the first ten seconds and in the busiest ten. The sync design waits for each provider in turn while holding its connection; at the spike most of its time is spent waiting for a connection another sign-up holds.",
    )
}

fn pool_and_postgres(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, run, name, _) in each_design(runs) {
        let Some(t) = telemetry(run, name) else {
            continue;
        };
        let get = |s: &results::TelemetrySample, k: &str| s.server.get(k).copied().unwrap_or(0.0);
        let in_use: Vec<(f64, f64)> = t
            .samples
            .iter()
            .map(|s| {
                (
                    s.t,
                    get(s, "fanbench_pool_connections{state=\"open\"}")
                        - get(s, "fanbench_pool_connections{state=\"idle\"}"),
                )
            })
            .collect();
        let waiting = t
            .samples
            .iter()
            .map(|s| (s.t, get(s, "fanbench_pool_waiting")))
            .collect();
        let locks = t
            .samples
            .iter()
            .map(|s| (s.t, s.postgres.locks_waiting as f64))
            .collect();
        series.push(Series {
            label: label(runs, i, name, "pool in use"),
            look: look(name, i),
            points: in_use,
        });
        series.push(Series {
            label: label(runs, i, name, "waiting for a connection"),
            look: Look {
                width: 1,
                ..look(name, i)
            },
            points: waiting,
        });
        series.push(Series {
            label: label(runs, i, name, "PostgreSQL lock waits"),
            look: Look {
                color: RGBColor(90, 90, 90),
                width: 1,
                ..look(name, i)
            },
            points: locks,
        });
    }
    let svg = if series.is_empty() {
        charts::note_svg(
            "Connection pool and PostgreSQL waits",
            "no server telemetry in this run",
        )
    } else {
        charts::line_chart(&LineChart {
            title: "Pool connections in use, requests waiting for one, and lock waits".into(),
            x: XAxis::Seconds,
            y_label: "count".into(),
            y_scale: Scale::Linear,
            series,
            secondary: None,
        })
    };
    chart(
        svg,
        "Sampled every second from each server's /metrics and from pg_stat_activity and pg_locks. A pool pinned at its size with requests queueing behind it is the sync design's collapse; lock waits are sign-ups queueing on the shared per-day counter row.",
    )
}

fn queue(runs: &[Run]) -> String {
    let mut series = Vec::new();
    let mut secondary = Vec::new();
    for (i, run, name, _) in each_design(runs) {
        let Some(t) = telemetry(run, name) else {
            continue;
        };
        if !t.samples.iter().any(|s| {
            s.server
                .keys()
                .any(|k| k.starts_with("fanbench_queue_depth"))
        }) {
            continue;
        }
        for channel in ["email", "sms", "push"] {
            let depth_key = format!("fanbench_queue_depth{{channel=\"{channel}\"}}");
            let age_key = format!("fanbench_queue_oldest_due_seconds{{channel=\"{channel}\"}}");
            let depth = t
                .samples
                .iter()
                .map(|s| (s.t, s.server.get(&depth_key).copied().unwrap_or(0.0)))
                .collect();
            let age = t
                .samples
                .iter()
                .map(|s| (s.t, s.server.get(&age_key).copied().unwrap_or(0.0)))
                .collect();
            let look = charts::channel_look(channel, name);
            series.push(Series {
                label: label(runs, i, channel, "depth"),
                look,
                points: depth,
            });
            secondary.push(Series {
                label: label(runs, i, channel, "oldest due (s)"),
                look: Look { width: 1, ..look },
                points: age,
            });
        }
    }
    let svg = if series.is_empty() {
        charts::note_svg(
            "The async queue",
            "no async design with queue telemetry in this run",
        )
    } else {
        charts::line_chart(&LineChart {
            title: "Queue depth and oldest-due age per channel (async)".into(),
            x: XAxis::Seconds,
            y_label: "pending deliveries".into(),
            y_scale: Scale::Linear,
            series,
            secondary: Some(("oldest due (s)".into(), secondary)),
        })
    };
    chart(
        svg,
        "Pending deliveries per channel (left axis) and how long the oldest one has been due (right axis). A provider outage shows as one channel's backlog growing and draining while the others stay flat.",
    )
}

fn delivery(runs: &[Run]) -> String {
    let mut series = Vec::new();
    for (i, _, name, d) in each_design(runs) {
        for (channel, c) in &d.delivery {
            if c.spectrum.is_empty() {
                continue;
            }
            series.push(Series {
                label: label(runs, i, name, channel),
                look: charts::channel_look(channel, name),
                points: c
                    .spectrum
                    .iter()
                    .map(|p| (charts::percentile_x(p.percentile), p.ms.max(0.001)))
                    .collect(),
            });
        }
    }
    let svg = if series.is_empty() {
        charts::note_svg(
            "Delivery latency per channel",
            "no reconciliation in this run (the target was not started by fanbench)",
        )
    } else {
        charts::line_chart(&LineChart {
            title: "Sign-up (intended send) to provider receipt, by percentile".into(),
            x: XAxis::Percentile,
            y_label: "delivery latency (ms, log)".into(),
            y_scale: Scale::Log,
            series,
            secondary: None,
        })
    };
    chart(
        svg,
        "How long a user waited for each notification, from the moment the sign-up was meant to be sent to the provider's receipt, for the sign-ups that got in. Dashed lines are the sync design, solid the async design.",
    )
}

fn gate_table(gates: Option<&[gates::GateResult]>) -> String {
    let Some(gates) = gates else {
        return "<p class=\"explain\">Gates: none evaluated for this run.</p>".into();
    };
    let (passed, failed, skipped) = gates::tally(gates);
    let mut out = format!(
        "<h3>Gates: {}{}</h3><table><thead><tr><th>gate</th><th>value</th><th>limit</th><th>margin</th><th>result</th></tr></thead><tbody>",
        if failed == 0 {
            format!("all {passed} evaluated passed")
        } else {
            format!("{failed} of {} failed", passed + failed)
        },
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        }
    );
    for g in gates {
        if let Some(reason) = &g.skipped {
            out.push_str(&format!(
                "<tr><td><code>{}</code><br><small>{}</small></td><td>–</td><td>–</td><td>–</td><td>skipped</td></tr>",
                escape(&g.name),
                escape(reason)
            ));
            continue;
        }
        out.push_str(&format!(
            "<tr><td><code>{}</code>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            escape(&g.name),
            if g.detail.is_empty() { String::new() } else { format!("<br><small>{}</small>", escape(&g.detail)) },
            g.value,
            g.limit,
            g.margin,
            if g.passed { "pass" } else { "<strong>FAIL</strong>" }
        ));
    }
    out.push_str("</tbody></table>");
    out
}

fn run_details(runs: &[Run], gates: Option<&[gates::GateResult]>) -> String {
    let mut out = String::new();
    for run in runs {
        let r = &run.results;
        let e = &r.environment;
        out.push_str(&format!(
            "<h3>{}</h3><p>Scenario <code>{}</code> ({}). fanbench {}{}, {} {} with {} CPUs{}, PostgreSQL {} ({}).</p>",
            escape(&r.run_id),
            escape(&r.scenario.path),
            escape(&r.scenario.name),
            escape(&e.fanbench_version),
            e.git_sha.as_deref().map(|s| format!(" at {}", escape(s))).unwrap_or_default(),
            escape(&e.os),
            escape(&e.arch),
            e.cpus,
            e.memory_bytes.map(|m| format!(" and {:.0} GiB", m as f64 / (1u64 << 30) as f64)).unwrap_or_default(),
            escape(e.postgres_version.as_deref().unwrap_or("unknown")),
            escape(&e.database),
        ));
        for (name, d) in text::ordered(r) {
            let settings = serde_json::to_string_pretty(&d.settings).unwrap_or_default();
            out.push_str(&format!(
                "<p><strong>{}</strong> at <code>{}</code>:</p><pre>{}</pre>",
                escape(name),
                escape(&d.target),
                escape(&settings)
            ));
        }
        let definition = serde_json::to_string_pretty(&r.scenario.definition).unwrap_or_default();
        out.push_str(&format!(
            "<details><summary>The scenario as run</summary><pre>{}</pre></details>",
            escape(&definition)
        ));
    }
    out.push_str(&gate_table(gates));
    out
}
