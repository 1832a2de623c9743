//! The verdict in plain words: one line per design, then the comparison, and every warning.

use results::{DesignResults, RunResults};

use crate::text::{self, ms};
use crate::{Run, escape};

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
    if let (Some(s), Some(a)) = (r.designs.get(results::SYNC), r.designs.get(results::ASYNC)) {
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
