//! Gate results as a terminal listing, JUnit XML (one test case per gate) and Markdown.

use std::fmt::Write;

use crate::{GateResult, tally};

fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// One line per gate: verdict, value, limit and margin.
pub fn text(results: &[GateResult]) -> String {
    let mut out = String::new();
    for r in results {
        if let Some(reason) = &r.skipped {
            let _ = writeln!(out, "SKIP {}: {reason}", r.name);
            continue;
        }
        let _ = writeln!(
            out,
            "{} {}  (value {}, limit {}, margin {}){}",
            if r.passed { "PASS" } else { "FAIL" },
            r.name,
            num(r.value),
            num(r.limit),
            num(r.margin),
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            }
        );
    }
    let (passed, failed, skipped) = tally(results);
    let _ = writeln!(
        out,
        "gates: {passed} passed, {failed} failed{}",
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        }
    );
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: one `<testcase>` per gate, failures carrying value, limit and margin.
pub fn junit(results: &[GateResult]) -> String {
    let (_, failures, skipped) = tally(results);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"fanbench\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        results.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"fanbench gates\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        results.len()
    );
    for r in results {
        let kind = format!("{:?}", r.kind).to_lowercase();
        let _ = write!(
            out,
            "    <testcase classname=\"fanbench.gates.{kind}\" name=\"{}\" time=\"0\"",
            xml(&r.name)
        );
        if let Some(reason) = &r.skipped {
            let _ = writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                xml(reason)
            );
        } else if r.passed {
            out.push_str("/>\n");
        } else {
            let message = format!(
                "value {} against limit {} (margin {})",
                num(r.value),
                num(r.limit),
                num(r.margin)
            );
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                xml(&message),
                xml(&r.detail)
            );
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A Markdown table for CI job summaries.
pub fn markdown(results: &[GateResult]) -> String {
    let (passed, failed, skipped) = tally(results);
    let mut out = format!(
        "### fanbench gates: {}{}\n\n| | gate | value | limit | margin |\n| --- | --- | ---: | ---: | ---: |\n",
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
    for r in results {
        if r.skipped.is_some() {
            let _ = writeln!(
                out,
                "| skipped | `{}` | – | – | – |",
                r.name.replace('|', "\\|")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} |",
            if r.passed { "pass" } else { "**FAIL**" },
            r.name.replace('|', "\\|"),
            num(r.value),
            num(r.limit),
            num(r.margin)
        );
    }
    for r in results.iter().filter(|r| !r.detail.is_empty()) {
        let _ = writeln!(out, "\n- `{}`: {}", r.name.replace('|', "\\|"), r.detail);
    }
    for r in results {
        if let Some(reason) = &r.skipped {
            let _ = writeln!(
                out,
                "\n- `{}` skipped: {reason}",
                r.name.replace('|', "\\|")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn results() -> Vec<GateResult> {
        vec![
            GateResult {
                name: "async.latency_ms.p99 < 100".into(),
                kind: Kind::Threshold,
                value: 4.5,
                limit: 100.0,
                margin: 95.5,
                passed: true,
                detail: String::new(),
                skipped: None,
            },
            GateResult {
                name: "sync.latency_ms.p99 / async.latency_ms.p99 > 10 & <stuff>".into(),
                kind: Kind::Invariant,
                value: 2.0,
                limit: 10.0,
                margin: -8.0,
                passed: false,
                detail: "median of 3 repeats".into(),
                skipped: None,
            },
            GateResult::skipped(
                "broker.latency_ms.p99 < 50".into(),
                Kind::Threshold,
                "the run has no `broker` design (it ran sync, async)".into(),
            ),
        ]
    }

    #[test]
    fn junit_has_one_case_per_gate_and_escapes() {
        let x = junit(&results());
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(
            x.matches("<skipped message=\"the run has no `broker` design")
                .count(),
            1
        );
        assert!(x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(x.contains("&amp; &lt;stuff&gt;"));
        assert!(x.contains("classname=\"fanbench.gates.invariant\""));
    }

    #[test]
    fn text_and_markdown_show_value_limit_and_margin() {
        let t = text(&results());
        assert!(
            t.contains("PASS async.latency_ms.p99 < 100  (value 4.5, limit 100, margin 95.5)"),
            "{t}"
        );
        assert!(
            t.contains("FAIL") && t.ends_with("gates: 1 passed, 1 failed, 1 skipped\n"),
            "{t}"
        );
        assert!(
            t.contains("SKIP broker.latency_ms.p99 < 50: the run has no `broker` design"),
            "{t}"
        );
        let m = markdown(&results());
        assert!(
            m.contains("1 of 2 failed, 1 skipped") && m.contains("| **FAIL** |"),
            "{m}"
        );
        assert!(
            m.contains("| skipped | `broker.latency_ms.p99 < 50` |"),
            "{m}"
        );
        assert!(m.contains("skipped: the run has no `broker` design"), "{m}");
    }
}
