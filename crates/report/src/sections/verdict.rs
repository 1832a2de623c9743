//! The verdict in plain words: one line per design, then the comparison (which design won on each
//! headline measure, and by how much), and every warning.

use results::{DesignResults, RunResults};

use crate::text::{self, ms};
use crate::{Run, escape};

/// The verdict in plain words, one line per design, then the comparison: for any number of valid
/// designs, the best on each headline measure ([`MEASURES`]) and by how much, and who won on what.
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
    let designs = text::ordered(r);
    let invalid: Vec<&str> = designs
        .iter()
        .filter(|(_, d)| !d.valid)
        .map(|(n, _)| n.as_str())
        .collect();
    let valid: Vec<(&str, &DesignResults)> = designs
        .iter()
        .filter(|(_, d)| d.valid)
        .map(|(n, d)| (n.as_str(), *d))
        .collect();
    if designs.len() > 1 && !invalid.is_empty() {
        lines.push(if valid.len() < 2 {
            "no comparison: a design's run is invalid, so its numbers do not describe it".into()
        } else {
            format!(
                "no comparison with {}: a design's run is invalid, so its numbers do not describe it; the others are compared below",
                and_list(&invalid)
            )
        });
    }
    // The story's own question, in the words it has always had: how much faster is the queue.
    if let (Some(s), Some(a)) = (r.designs.get(results::SYNC), r.designs.get(results::ASYNC)) {
        if let (true, true, Some(sp), Some(ap)) =
            (s.valid, a.valid, accepted_p99(s), accepted_p99(a))
        {
            if ap > 0.0 {
                lines.push(format!(
                    "an accepted sign-up's p99 is **{:.0}x** lower with the async design than with the sync design under the same load",
                    sp / ap
                ));
            }
        }
    }
    lines.extend(winners(&valid));
    lines
}

/// Which way is better for a measure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

/// How a measure's values read, and how a difference between two of them is said.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// Milliseconds: differences as a ratio ("3.2x lower") or a percentage.
    Ms,
    /// A share of the requests sent: differences in percentage points.
    Share,
    /// Per second: differences as a ratio or a percentage.
    Rate,
    /// Whole things: differences as a count.
    Count,
}

/// A headline measure the verdict names a winner on.
struct Measure {
    name: &'static str,
    better: Better,
    unit: Unit,
    /// Only designs that deliver after answering (those with a queue) are compared on it.
    queued_only: bool,
    value: fn(&DesignResults) -> Option<f64>,
}

/// The measures the verdict compares designs on, in the order it says them.
const MEASURES: [Measure; 6] = [
    Measure {
        name: "accepted sign-up p99",
        better: Better::Lower,
        unit: Unit::Ms,
        queued_only: false,
        value: |d| d.latency_ms_by_class.get("2xx").map(|c| c.latency.p99),
    },
    Measure {
        name: "refused with 503",
        better: Better::Lower,
        unit: Unit::Share,
        queued_only: false,
        value: |d| {
            let refused = d.requests.status.get("503").copied().unwrap_or(0);
            (d.requests.sent > 0).then(|| refused as f64 / d.requests.sent as f64)
        },
    },
    Measure {
        name: "throughput",
        better: Better::Higher,
        unit: Unit::Rate,
        queued_only: false,
        value: |d| Some(d.throughput_rps),
    },
    Measure {
        name: "notifications lost",
        better: Better::Lower,
        unit: Unit::Count,
        queued_only: false,
        value: |d| d.reconciliation.as_ref().map(|r| r.lost as f64),
    },
    Measure {
        name: "notifications still queued at the drain deadline",
        better: Better::Lower,
        unit: Unit::Count,
        queued_only: false,
        value: |d| d.reconciliation.as_ref().map(|r| r.undelivered as f64),
    },
    Measure {
        name: "delivery p99 (slowest channel, designs with a queue)",
        better: Better::Lower,
        unit: Unit::Ms,
        queued_only: true,
        value: |d| {
            d.delivery
                .values()
                .filter(|c| c.delivered > 0)
                .map(|c| c.p99_ms)
                .reduce(f64::max)
        },
    },
];

/// A value as the verdict shows it.
fn shown(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Ms => ms(v),
        Unit::Share => format!("{:.1} %", v * 100.0),
        Unit::Rate => format!("{v:.1}/s"),
        Unit::Count => format!("{v:.0}"),
    }
}

/// A ratio for people: whole above ten, one decimal below.
fn times(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.1}x")
    }
}

/// By how much `best` beats `other`, in the measure's own terms.
fn margin(m: &Measure, best: f64, other: f64) -> String {
    let (lower, more) = match m.better {
        Better::Lower => ("lower", "fewer"),
        Better::Higher => ("higher", "more"),
    };
    let (small, large) = match m.better {
        Better::Lower => (best, other),
        Better::Higher => (other, best),
    };
    match m.unit {
        Unit::Share => format!("{:.1} points {lower}", (large - small).abs() * 100.0),
        Unit::Count => format!("{:.0} {more}", (large - small).abs()),
        Unit::Ms | Unit::Rate if small > 0.0 && large / small >= 2.0 => {
            format!("{} {lower}", times(large / small))
        }
        Unit::Ms | Unit::Rate if small > 0.0 => {
            // As a share of the worse value, so "lower" never exceeds 100 %.
            let base = if m.better == Better::Lower {
                large
            } else {
                small
            };
            format!("{:.0} % {lower}", (large - small) / base * 100.0)
        }
        Unit::Ms | Unit::Rate => format!("{} {lower}", shown(m.unit, large - small)),
    }
}

/// "a", "a and b", "a, b and c".
fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => format!(
            "{} and {}",
            init.iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

/// Who won on what: one line per headline measure two or more valid designs were measured on,
/// naming the best and by how much it beat each other design, then a line that sums them up.
/// Values that read the same as shown are a tie.
fn winners(valid: &[(&str, &DesignResults)]) -> Vec<String> {
    let mut lines = Vec::new();
    // (measure, the designs that won it); no winners when every design tied.
    let mut won: Vec<(&'static str, Vec<&str>)> = Vec::new();
    for m in &MEASURES {
        let values: Vec<(&str, f64)> = valid
            .iter()
            .filter(|(_, d)| !m.queued_only || d.drain.is_some())
            .filter_map(|(n, d)| (m.value)(d).filter(|v| v.is_finite()).map(|v| (*n, v)))
            .collect();
        if values.len() < 2 {
            continue;
        }
        let best = values
            .iter()
            .map(|(_, v)| *v)
            .reduce(|a, b| match m.better {
                Better::Lower => a.min(b),
                Better::Higher => a.max(b),
            })
            .unwrap_or_default();
        let best_shown = shown(m.unit, best);
        let (top, rest): (Vec<_>, Vec<_>) = values
            .iter()
            .partition(|(_, v)| shown(m.unit, *v) == best_shown);
        let top: Vec<&str> = top.iter().map(|(n, _)| *n).collect();
        if rest.is_empty() {
            lines.push(format!(
                "{}: a tie, {} all at {best_shown}",
                m.name,
                and_list(&top)
            ));
            won.push((m.name, Vec::new()));
            continue;
        }
        let bold: Vec<String> = top.iter().map(|n| format!("**{n}**")).collect();
        let beaten: Vec<String> = rest
            .iter()
            .map(|(n, v)| format!("{} than {n} ({})", margin(m, best, *v), shown(m.unit, *v)))
            .collect();
        lines.push(format!(
            "{}: {} {} at {best_shown}, {}",
            m.name,
            and_list(&bold),
            if top.len() > 1 {
                "tie for best"
            } else {
                "is best"
            },
            beaten.join(", ")
        ));
        won.push((m.name, top));
    }
    if won.is_empty() {
        return lines;
    }
    // The sum-up: each winner (or set of joint winners) with the measures it won, in design order.
    let mut by_winner: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    let mut tied = Vec::new();
    for (measure, top) in won {
        if top.is_empty() {
            tied.push(measure);
        } else if let Some((_, measures)) = by_winner.iter_mut().find(|(w, _)| *w == top) {
            measures.push(measure);
        } else {
            by_winner.push((top, vec![measure]));
        }
    }
    by_winner.sort_by_key(|(w, _)| w.first().copied().map(results::design_order));
    let mut parts: Vec<String> = by_winner
        .iter()
        .map(|(w, measures)| {
            let who: Vec<String> = w.iter().map(|n| format!("**{n}**")).collect();
            format!(
                "{}{} on {}",
                and_list(&who),
                if w.len() > 1 { " (jointly)" } else { "" },
                and_list(measures)
            )
        })
        .collect();
    if !tied.is_empty() {
        parts.push(format!("a tie on {}", and_list(&tied)));
    }
    lines.push(format!("who won on what: {}", parts.join("; ")));
    lines
}

pub(super) fn render(runs: &[Run]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed smoke run (sync and async, both valid, nothing refused or lost).
    fn smoke() -> RunResults {
        serde_json::from_str(include_str!("../../../results/fixtures/smoke/results.json")).unwrap()
    }

    #[test]
    fn two_designs_keep_their_comparison_and_gain_who_won_on_what() {
        let lines = verdict_lines(&smoke());
        assert!(lines[0].starts_with("**sync**") && lines[1].starts_with("**async**"));
        assert_eq!(
            lines[2],
            "an accepted sign-up's p99 is **592x** lower with the async design than with the sync design under the same load"
        );
        assert_eq!(
            lines[3],
            "accepted sign-up p99: **async** is best at 8.2 ms, 592x lower than sync (4.85 s)"
        );
        // Only one design has a queue, so delivery is not compared.
        assert!(
            !lines.iter().any(|l| l.starts_with("delivery p99")),
            "{lines:#?}"
        );
        assert_eq!(
            lines.last().unwrap(),
            "who won on what: **async** on accepted sign-up p99; a tie on refused with 503, \
             throughput, notifications lost and notifications still queued at the drain deadline"
        );
    }

    #[test]
    fn joint_winners_and_margins_in_each_measures_terms() {
        let mut r = smoke();
        let a = r.designs[results::ASYNC].clone();
        for (name, refused, lost) in [("broker", 0, 0), ("kafka", 0, 3)] {
            let mut d = a.clone();
            d.requests.status.insert("503".into(), refused);
            d.reconciliation.as_mut().unwrap().lost = lost;
            r.designs.insert(name.into(), d);
        }
        let sync = r.designs.get_mut(results::SYNC).unwrap();
        sync.requests.status.insert("503".into(), 100);
        sync.throughput_rps = 10.0;
        let lines = verdict_lines(&r);
        let line = |start: &str| lines.iter().find(|l| l.starts_with(start)).unwrap().clone();
        assert_eq!(
            line("refused with 503"),
            "refused with 503: **async**, **broker** and **kafka** tie for best at 0.0 %, \
             21.9 points lower than sync (21.9 %)"
        );
        assert_eq!(
            line("notifications lost"),
            "notifications lost: **sync**, **async** and **broker** tie for best at 0, 3 fewer than kafka (3)"
        );
        assert!(
            line("throughput").ends_with("3.8x higher than sync (10.0/s)"),
            "{lines:#?}"
        );
        assert!(
            line("who won on what").contains(
                "**async**, **broker** and **kafka** (jointly) on accepted sign-up p99, refused with 503 and throughput"
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn close_values_are_a_percentage_and_zero_best_a_difference() {
        let ms = &MEASURES[0];
        assert_eq!(margin(ms, 8.0, 10.0), "20 % lower");
        assert_eq!(margin(ms, 8.0, 16.0), "2.0x lower");
        assert_eq!(margin(ms, 0.0, 16.0), "16.0 ms lower");
        let rate = &MEASURES[2];
        assert_eq!(margin(rate, 11.0, 10.0), "10 % higher");
        assert_eq!(margin(rate, 11.0, 0.0), "11.0/s higher");
    }

    #[test]
    fn a_single_design_has_nothing_to_win() {
        let mut r = smoke();
        r.designs.remove(results::SYNC);
        let lines = verdict_lines(&r);
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
}
