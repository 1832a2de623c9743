//! The designs side by side: the terminal table's rows, as HTML.

use crate::{Run, escape, text};

pub(super) fn render(runs: &[Run]) -> String {
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
