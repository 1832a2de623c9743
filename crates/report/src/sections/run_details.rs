//! Scenario, settings and environment of each run, and the gates evaluated.

use crate::{Run, escape, text};

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

pub(super) fn render(runs: &[Run], gates: Option<&[gates::GateResult]>) -> String {
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
