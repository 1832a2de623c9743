//! The design-review report: from one or more run folders, one self-contained HTML page
//! (`index.html`: inline SVG charts drawn with plotters, inline styles, nothing fetched, printable)
//! and a Markdown summary (`summary.md`) for CI job summaries and PR comments.
//!
//! It reads `results.json` and `telemetry.json`, and a capacity folder's `capacity.json`
//! ([`capacity`]: that folder's own page), and nothing else: it never talks to the driver, the
//! servers or the database.

pub mod capacity;
pub mod charts;
mod sections;
pub mod text;

use std::path::{Path, PathBuf};

use results::{RunResults, Telemetry};

/// A run folder, loaded.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub results: RunResults,
    /// Absent for runs that sampled nothing (`fanbench run --target`).
    pub telemetry: Option<Telemetry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("could not read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a fanbench results file: {message}")]
    Invalid { path: String, message: String },
    #[error("could not write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Run {
    /// Reads `results.json` (checked against the schema) and, when present, `telemetry.json`.
    pub fn load(dir: &Path) -> Result<Self, ReportError> {
        let path = dir.join("results.json");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
            path: shown.clone(),
            source,
        })?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ReportError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        results::validate(&doc).map_err(|message| ReportError::Invalid {
            path: shown.clone(),
            message,
        })?;
        let results: RunResults =
            serde_json::from_value(doc).map_err(|e| ReportError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let telemetry = std::fs::read_to_string(dir.join("telemetry.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Telemetry>(&t).ok());
        Ok(Self {
            dir: dir.to_path_buf(),
            results,
            telemetry,
        })
    }
}

/// Writes `index.html` and `summary.md` into the first run's folder; returns their paths.
pub fn write(runs: &[Run]) -> Result<(PathBuf, PathBuf), ReportError> {
    let dir = runs
        .first()
        .map_or_else(|| PathBuf::from("."), |r| r.dir.clone());
    write_to(&dir, runs)
}

/// Gate results written next to a run (`gates.json`), if any.
pub fn load_gates(dir: &Path) -> Option<Vec<gates::GateResult>> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("gates.json")).ok()?).ok()
}

/// Writes `index.html` and `summary.md` into `dir`, with the gate results of `dir/gates.json` when
/// there are any; returns their paths.
pub fn write_to(dir: &Path, runs: &[Run]) -> Result<(PathBuf, PathBuf), ReportError> {
    let evaluated = load_gates(dir);
    let html = dir.join("index.html");
    let md = dir.join("summary.md");
    let write = |path: &Path, body: String| {
        std::fs::write(path, body).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    write(&html, render_page(runs, evaluated.as_deref()))?;
    let mut summary = render_markdown(runs);
    if let Some(g) = &evaluated {
        summary.push('\n');
        summary.push_str(&gates::markdown(g));
    }
    write(&md, summary)?;
    Ok((html, md))
}

/// The ids of the page's sections, in order; the ones with a chart say so.
pub const SECTIONS: [(&str, bool); 11] = [
    ("verdict", false),
    ("summary-table", false),
    ("latency-percentiles", true),
    ("latency-over-time", true),
    ("errors-over-time", true),
    ("time-breakdown", true),
    ("pool-and-postgres", true),
    ("queue", true),
    ("delivery", true),
    ("machine", false),
    ("run-details", false),
];

/// The whole page.
pub fn render_html(runs: &[Run]) -> String {
    render_page(runs, None)
}

/// The whole page, with gate results when there are any.
pub fn render_page(runs: &[Run], gates: Option<&[gates::GateResult]>) -> String {
    let title = match runs {
        [one] => format!(
            "fanbench: {} ({})",
            one.results.scenario.name, one.results.run_id
        ),
        many => format!("fanbench: {} runs compared", many.len()),
    };
    let mut body = String::new();
    body.push_str(&format!(
        "<header><h1>{}</h1>{}</header>\n",
        escape(&title),
        sections::subtitle(runs)
    ));
    for (id, _) in SECTIONS {
        let (heading, content) = sections::render(id, runs, gates);
        body.push_str(&format!(
            "<section id=\"{id}\">\n<h2>{}</h2>\n{content}\n</section>\n",
            escape(heading)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(&title)
    )
}

/// `summary.md`: the verdict and the table of each run.
pub fn render_markdown(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let r = &run.results;
        out.push_str(&format!(
            "## fanbench: {} ({})\n\n",
            r.scenario.name, r.run_id
        ));
        for line in sections::verdict_lines(r) {
            out.push_str(&format!("- {line}\n"));
        }
        out.push('\n');
        out.push_str(&text::markdown_table(r));
        out.push('\n');
        let usage = text::markdown_usage(r);
        if !usage.is_empty() {
            out.push_str(&usage);
            out.push('\n');
        }
    }
    out
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 980px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.subtitle { color: #555; margin-top: 0; }
.verdict { font-size: 1.1rem; background: #f6f8fa; border-left: 4px solid #555; padding: .6rem 1rem; }
.verdict li { margin: .3rem 0; }
.warning { background: #fff4e5; border-left: 4px solid #e08a00; padding: .4rem .8rem; margin: .4rem 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e5e5e5; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.chart svg { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.explain { color: #444; font-size: .95rem; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .85rem; }
@media print { body { margin: 0; max-width: none; } section { break-inside: avoid; } }
";
