//! Who used the machine: CPU time and peak memory of each process of each design's run (the
//! fanbench process that drives the load, the design's server, the simulator, PostgreSQL, and the
//! broker design's nats-server), so a reader can see whether the driver or the database, rather
//! than the design, was the bottleneck.

use crate::{Run, escape, text};

pub(super) fn render(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        if runs.len() > 1 {
            out.push_str(&format!("<h3>{}</h3>", escape(&run.results.run_id)));
        }
        let (rows, notes) = text::usage_rows(&run.results);
        if rows.is_empty() {
            out.push_str(
                "<p class=\"explain\">Not recorded in this run: its results were written before \
                 fanbench measured its processes.</p>\n",
            );
            continue;
        }
        out.push_str("<table><thead><tr>");
        for h in text::USAGE_HEADER {
            out.push_str(&format!("<th>{}</th>", escape(h)));
        }
        out.push_str("</tr></thead><tbody>");
        for row in rows {
            out.push_str("<tr>");
            for cell in row {
                out.push_str(&format!("<td>{}</td>", escape(&cell)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>\n");
        if !notes.is_empty() {
            out.push_str("<ul class=\"explain\">");
            for note in notes {
                out.push_str(&format!("<li>Not measured: {}</li>", escape(&note)));
            }
            out.push_str("</ul>\n");
        }
    }
    out.push_str(
        "<p class=\"explain\">Measured over each design's window, from just before its load starts \
         to the end of its drain, from Linux's /proc. <em>CPU</em> is user plus system time; \
         <em>cores</em> is that over the window's length, so 1.00 is one core busy throughout. \
         <em>driver</em> is the fanbench process: the load generator, its telemetry sampler and \
         drain poller. Peak RSS is the kernel's exact high-water mark of one process, reset when the \
         window starts. PostgreSQL runs as many processes sharing its buffers, so its figure is the \
         proportional set size (Pss) summed over the postmaster and all its children, sampled every \
         second (shared pages count once; a peak between samples is missed), and its CPU includes \
         backends that exited. The machine's core count is under <em>environment</em> below.</p>",
    );
    out
}
