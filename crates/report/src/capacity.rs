//! The capacity page: `index.html` of a `fanbench capacity` folder, from its `capacity.json`
//! (`results::capacity`). The verdict in one line per design, each design's latency and
//! throughput against the offered rate with the knee marked (the hockey stick), the bottleneck
//! table and every step. The same self-contained rules as the run page: inline SVG, inline CSS,
//! no script, nothing fetched.

use std::path::{Path, PathBuf};

use plotters::style::RGBColor;
use results::capacity::{Bottleneck, CapacityReport, DesignCapacity, StepRecord, Stop, Sweep};

use crate::charts::{self, LineChart, Look, Scale, Series, XAxis};
use crate::{ReportError, STYLE, escape};

mod usl;

/// The document a capacity folder holds.
pub const FILE: &str = "capacity.json";

/// Reads `dir/capacity.json`.
pub fn load(dir: &Path) -> Result<CapacityReport, ReportError> {
    let path = dir.join(FILE);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
        path: shown.clone(),
        source,
    })?;
    let doc: CapacityReport = serde_json::from_str(&text).map_err(|e| ReportError::Invalid {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    if doc.schema_version != results::capacity::SCHEMA_VERSION {
        return Err(ReportError::Invalid {
            path: shown,
            message: format!(
                "schema version {}, this fanbench reads version {}",
                doc.schema_version,
                results::capacity::SCHEMA_VERSION
            ),
        });
    }
    Ok(doc)
}

/// Writes the page to `dir/index.html`; returns its path.
pub fn write(dir: &Path, doc: &CapacityReport) -> Result<PathBuf, ReportError> {
    let path = dir.join("index.html");
    std::fs::write(&path, render(doc)).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

/// The searches in page order: a sweep's values in the order given, then the designs in
/// [`results::design_order`].
pub fn ordered(doc: &CapacityReport) -> Vec<(&str, &DesignCapacity)> {
    let keys = doc.sweep.as_ref().map(|s| s.keys()).unwrap_or_default();
    let mut v: Vec<(&str, &DesignCapacity)> =
        doc.designs.iter().map(|(n, d)| (n.as_str(), d)).collect();
    v.sort_by_key(|(n, _)| {
        let sweep = keys.iter().position(|k| k == n).unwrap_or(keys.len());
        (sweep, results::design_order(n))
    });
    v
}

/// The page's sections, in order, and whether each holds a chart (one each).
pub fn sections(doc: &CapacityReport) -> Vec<(String, bool)> {
    let mut s = vec![("verdict".to_string(), false)];
    if doc.sweep.is_some() {
        s.push(("sweep-capacity".into(), true));
        s.push(("sweep-latency".into(), true));
    }
    for (name, _) in ordered(doc) {
        s.push((format!("latency-{name}"), true));
        s.push((format!("throughput-{name}"), true));
    }
    s.push(("bottlenecks".into(), false));
    for (name, _) in ordered(doc) {
        s.push((format!("steps-{name}"), false));
    }
    s.push(("run-details".into(), false));
    s
}

/// A rate as the verdict says it: a pass, and where it failed, and why the search stopped when
/// that qualifies the figure.
fn limit(pass: Option<u32>, fail: Option<u32>, stop: Stop) -> String {
    match (stop, pass, fail) {
        (Stop::NeverPassed, _, _) => "below 1 sign-up/s: even 1/s missed the objective".into(),
        (Stop::DriverLimited, Some(p), _) => {
            format!("at least {p} sign-ups/s (the driver could not offer more: inconclusive above)")
        }
        (Stop::DriverLimited, None, _) => {
            "not measured: the driver could not offer the first rate".into()
        }
        (Stop::Budget, Some(p), Some(f)) => format!(
            "{p} sign-ups/s (failed at {f}/s; the step budget ran out before the resolution)"
        ),
        (Stop::Budget, Some(p), None) => {
            format!("at least {p} sign-ups/s (the step budget ran out while climbing)")
        }
        (_, Some(p), Some(f)) => format!("{p} sign-ups/s (failed at {f}/s)"),
        (_, Some(p), None) => format!("at least {p} sign-ups/s"),
        (_, None, Some(f)) => format!("below {f} sign-ups/s: no rate met the objective"),
        (_, None, None) => "not measured".into(),
    }
}

/// Where a limit lies after its repeats, in words, for the page, the terminal and summary.md
/// alike: "; between 44 and 48/s over 3 runs each", with a warning when the interval is wider
/// than the search's resolution (its repeats disagree beyond what the search could tell apart).
/// Nothing when the limit was not repeated or has no interval.
pub fn interval_text(ci: Option<[Option<u32>; 2]>, repeats: u32, resolution: f64) -> String {
    let Some([low, high]) = ci else {
        return String::new();
    };
    if repeats <= 1 {
        return String::new();
    }
    let span = match (low, high) {
        (Some(l), Some(h)) => format!("at least {l}/s and below {h}/s"),
        (Some(l), None) => format!("at least {l}/s, no rate above failed every run"),
        (None, Some(h)) => format!("below {h}/s, no rate below passed every run"),
        (None, None) => "no rate passed or failed every run".into(),
    };
    let mut text = format!("; over {repeats} runs of each deciding rate: {span}");
    if results::capacity::wider_than(ci, resolution) == Some(true) {
        text.push_str(&format!(
            " (the REPEATS DISAGREE beyond the {:.0} % resolution: this limit is noise-bound here)",
            resolution * 100.0
        ));
    }
    text
}

/// ", bottleneck: connection pool", or nothing.
fn bottleneck_text(b: Option<&Bottleneck>) -> String {
    b.map_or(String::new(), |b| format!(", bottleneck: {}", b.resource))
}

/// One design's verdict in one line.
pub fn verdict_line(name: &str, d: &DesignCapacity, resolution: f64) -> String {
    let mut line = match d.delivery_stop {
        Some(delivery_stop) => format!(
            "{name}: ingest {}{}{}; end to end (delivery keeping up) {}{}{}",
            limit(d.capacity_rps, d.first_fail_rps, d.stop),
            interval_text(d.capacity_ci, d.repeats, resolution),
            bottleneck_text(d.bottleneck.as_ref()),
            limit(
                d.delivery_capacity_rps,
                d.delivery_first_fail_rps,
                delivery_stop
            ),
            interval_text(d.delivery_capacity_ci, d.repeats, resolution),
            bottleneck_text(d.delivery_bottleneck.as_ref()),
        ),
        None => format!(
            "{name}: {}{}{}",
            limit(d.capacity_rps, d.first_fail_rps, d.stop),
            interval_text(d.capacity_ci, d.repeats, resolution),
            bottleneck_text(d.bottleneck.as_ref())
        ),
    };
    if let Some(p) = &d.prediction {
        let method = p.method.split(':').next().unwrap_or(&p.method).trim();
        line.push_str(&format!(" ({method} predicts {:.0}", p.predicted_rps));
        if let Some(r) = p.ratio {
            line.push_str(&format!(", measured {r:.2}×"));
        }
        line.push(')');
    }
    line.push_str(&usl::verdict_suffix(d));
    line
}

/// The whole page.
pub fn render(doc: &CapacityReport) -> String {
    let title = format!("fanbench capacity: {}", doc.scenario);
    let mut body = format!(
        "<header><h1>{}</h1><p class=\"subtitle\">{} cores; each step {:.0} s of constant Poisson load, \
         {}; climb ×{}, then bisection to {:.0} % or {} steps a search</p></header>\n",
        escape(&title),
        doc.cpus,
        doc.step_duration_s,
        if doc.warmup_s > 0.0 {
            format!(
                "judged on what followed its first {:.0} s (the warm-up)",
                doc.warmup_s
            )
        } else {
            "judged whole".to_string()
        },
        doc.factor,
        doc.resolution * 100.0,
        doc.max_steps
    );
    if !doc.overrides.is_empty() {
        body.push_str(&format!(
            "<p class=\"subtitle\">Settings changed for this run: {}</p>\n",
            escape(&doc.overrides.join(", "))
        ));
    }
    let designs = ordered(doc);
    let verdicts: String = designs
        .iter()
        .map(|(n, d)| format!("<li>{}</li>", escape(&verdict_line(n, d, doc.resolution))))
        .collect();
    body.push_str(&section(
        "verdict",
        "Verdict",
        &format!("<ul class=\"verdict\">{verdicts}</ul>"),
    ));
    if let Some(sweep) = &doc.sweep {
        let what = format!("{}.{}", sweep.design, sweep.setting);
        body.push_str(&section(
            "sweep-capacity",
            &format!("What {what} does to the limit"),
            &sweep_capacity_chart(sweep, &designs),
        ));
        body.push_str(&section(
            "sweep-latency",
            &format!("Latency versus offered rate, one line per {what}"),
            &sweep_latency_chart(sweep, &designs),
        ));
    }
    for (name, d) in &designs {
        body.push_str(&section(
            &format!("latency-{name}"),
            &format!("{name}: latency versus offered rate"),
            &latency_chart(name, d),
        ));
        body.push_str(&section(
            &format!("throughput-{name}"),
            &format!("{name}: throughput versus offered rate"),
            &throughput_chart(name, d),
        ));
    }
    body.push_str(&section(
        "bottlenecks",
        "What gave out first",
        &bottlenecks(&designs),
    ));
    for (name, d) in &designs {
        body.push_str(&section(
            &format!("steps-{name}"),
            &format!("{name}: every step"),
            &steps_table(d),
        ));
    }
    body.push_str(&section(
        "run-details",
        "Objectives and search",
        &details(doc, &designs),
    ));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(&title)
    )
}

fn section(id: &str, heading: &str, content: &str) -> String {
    format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n{content}\n</section>\n",
        escape(id),
        escape(heading)
    )
}

fn chart(svg: String, explain: &str) -> String {
    format!(
        "<div class=\"chart\">{svg}</div>\n<p class=\"explain\">{}</p>",
        escape(explain)
    )
}

/// The steps a line may join: the search's own run of each rate, unless it was driver-limited
/// (a step the design missed on its own time while the driver lagged is the design's), by
/// offered rate. Repeats are drawn as dots ([`overlay`]).
fn trusted(d: &DesignCapacity) -> Vec<&StepRecord> {
    let mut v: Vec<&StepRecord> = d
        .steps
        .iter()
        .filter(|s| !s.driver_limited() && s.repeat == 0)
        .collect();
    v.sort_by_key(|s| s.offered_rps);
    v
}

/// Every repeated run as a dot (`figure` of the step, where it has one), and each limit's
/// interval as a band: where the repeats put it.
fn overlay(
    name: &str,
    d: &DesignCapacity,
    figure: impl Fn(&StepRecord) -> Option<f64>,
) -> charts::Overlay {
    let points: Vec<(f64, f64)> = d
        .steps
        .iter()
        .filter(|s| !s.driver_limited() && s.repeat > 0)
        .filter_map(|s| Some((f64::from(s.offered_rps), figure(s)?)))
        .collect();
    let dots = if points.is_empty() {
        Vec::new()
    } else {
        vec![Series {
            label: format!("{name}: repeated runs"),
            look: charts::design_look(name),
            points,
        }]
    };
    let band = |label: &str, ci: Option<[Option<u32>; 2]>, color: RGBColor| match ci? {
        [Some(low), Some(high)] if d.repeats > 1 => Some(charts::Band {
            label: format!(
                "{label} lies here ({low}–{high}/s, {} runs each)",
                d.repeats
            ),
            color,
            from: f64::from(low),
            to: f64::from(high),
        }),
        _ => None,
    };
    let bands = [
        band("knee", d.capacity_ci, KNEE.color),
        band("end-to-end limit", d.delivery_capacity_ci, END_TO_END.color),
    ]
    .into_iter()
    .flatten()
    .collect();
    charts::Overlay { dots, bands }
}

const KNEE: Look = Look {
    color: RGBColor(0, 0, 0),
    dashed: true,
    width: 1,
};
const END_TO_END: Look = Look {
    color: RGBColor(220, 120, 20),
    dashed: true,
    width: 1,
};
const REFERENCE: Look = Look {
    color: RGBColor(150, 150, 150),
    dashed: false,
    width: 1,
};

/// A vertical marker at `x` spanning `lo..hi`.
fn marker(label: String, look: Look, x: u32, lo: f64, hi: f64) -> Series {
    let x = f64::from(x);
    Series {
        label,
        look,
        points: vec![(x, lo), (x, hi)],
    }
}

/// The knee (capacity_rps) and, for a design with a queue, the end-to-end limit.
fn markers(d: &DesignCapacity, lo: f64, hi: f64) -> Vec<Series> {
    let mut v = Vec::new();
    if let Some(c) = d.capacity_rps {
        v.push(marker(format!("knee at {c}/s"), KNEE, c, lo, hi));
    }
    if let Some(c) = d.delivery_capacity_rps {
        v.push(marker(
            format!("end-to-end limit at {c}/s"),
            END_TO_END,
            c,
            lo,
            hi,
        ));
    }
    v
}

fn latency_chart(name: &str, d: &DesignCapacity) -> String {
    let title = format!("{name}: accepted p99 per load step");
    let steps = trusted(d);
    let accepted: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| Some((f64::from(s.offered_rps), s.accepted_p99_ms?)))
        .filter(|p| p.1 > 0.0)
        .collect();
    let delivery: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| {
            let slowest = s
                .delivery_p99_ms
                .values()
                .copied()
                .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))?;
            Some((f64::from(s.offered_rps), slowest))
        })
        .filter(|p| p.1 > 0.0)
        .collect();
    if accepted.is_empty() && delivery.is_empty() {
        return chart(
            charts::note_svg(
                &title,
                "no step the driver kept to schedule accepted a sign-up",
            ),
            "Nothing to draw: see the steps table below.",
        );
    }
    let ys = accepted.iter().chain(&delivery).map(|p| p.1);
    let lo = ys.clone().fold(f64::INFINITY, f64::min);
    let hi = ys.fold(0.0, f64::max);
    let mut series = vec![Series {
        label: format!("{name} accepted p99"),
        look: charts::design_look(name),
        points: accepted,
    }];
    if !delivery.is_empty() {
        series.push(Series {
            label: "delivery p99 (slowest channel)".into(),
            look: Look {
                color: RGBColor(120, 60, 160),
                dashed: false,
                width: 2,
            },
            points: delivery,
        });
    }
    series.extend(markers(d, lo, hi));
    let svg = charts::line_chart_with(
        &LineChart {
            title,
            x: XAxis::Rate,
            y_label: "p99 (ms, log)".into(),
            y_scale: Scale::Log,
            series,
            secondary: None,
        },
        &overlay(name, d, |s| s.accepted_p99_ms.filter(|v| *v > 0.0)),
    );
    chart(
        svg,
        "One point per load step that was not driver-limited (those are left out: \
         they say nothing about the design), joined in order of offered rate. Latency is measured \
         from each request's intended send time, so queueing in front of the server counts. The \
         dashed vertical line is the knee: the highest rate that met the objective. Past it the \
         line turns up — the hockey stick. Circles are the repeated runs of the rates that decide \
         a limit; the shaded band is where the repeats put the limit (at least its left edge, \
         below its right).",
    )
}

/// A sweep's values as x positions: the values themselves when every one is a number, else
/// 1, 2, 3 … in the order given (named in the chart's text).
fn sweep_positions(sweep: &Sweep) -> (Vec<f64>, bool) {
    let numbers: Option<Vec<f64>> = sweep.values.iter().map(|v| v.parse().ok()).collect();
    match numbers {
        Some(n) => (n, true),
        None => ((1..=sweep.values.len()).map(|i| i as f64).collect(), false),
    }
}

/// A colour per sweep value, from light to dark blue-green, so the order of the values reads
/// from the lines.
fn sweep_look(i: usize, n: usize) -> Look {
    let t = if n <= 1 {
        1.0
    } else {
        i as f64 / (n - 1) as f64
    };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    Look {
        color: RGBColor(mix(120.0, 10.0), mix(190.0, 40.0), mix(200.0, 110.0)),
        dashed: false,
        width: 2,
    }
}

fn sweep_capacity_chart(sweep: &Sweep, designs: &[(&str, &DesignCapacity)]) -> String {
    let what = format!("{}.{}", sweep.design, sweep.setting);
    let title = format!("{what}: the highest rate that met the objective");
    let (xs, numeric) = sweep_positions(sweep);
    let search = |key: &str| designs.iter().find(|(n, _)| *n == key).map(|(_, d)| *d);
    let line = |f: fn(&DesignCapacity) -> Option<u32>| -> Vec<(f64, f64)> {
        sweep
            .keys()
            .iter()
            .zip(&xs)
            .filter_map(|(k, x)| Some((*x, f64::from(f(search(k)?)?))))
            .collect()
    };
    let ingest = line(|d| d.capacity_rps);
    let end_to_end = line(|d| d.delivery_stop.and(d.delivery_capacity_rps));
    if ingest.is_empty() && end_to_end.is_empty() {
        return chart(
            charts::note_svg(&title, "no value of the setting met the objective"),
            "Nothing to draw: see each value's steps below.",
        );
    }
    let mut series = vec![Series {
        label: if end_to_end.is_empty() {
            "capacity".into()
        } else {
            "ingest capacity".into()
        },
        look: charts::design_look(&sweep.design),
        points: ingest,
    }];
    if !end_to_end.is_empty() {
        series.push(Series {
            label: "end-to-end capacity".into(),
            look: END_TO_END,
            points: end_to_end,
        });
    }
    let svg = charts::line_chart(&LineChart {
        title,
        x: XAxis::Setting,
        y_label: "sign-ups/s".into(),
        y_scale: Scale::Linear,
        series,
        secondary: None,
    });
    let capped: Vec<&str> = sweep
        .keys()
        .iter()
        .zip(&sweep.values)
        .filter(|(k, _)| {
            search(k).is_some_and(|d| {
                d.stop == Stop::DriverLimited || d.delivery_stop == Some(Stop::DriverLimited)
            })
        })
        .map(|(_, v)| v.as_str())
        .collect();
    let mut explain = format!(
        "One search of the {} design per value of {what}, everything else the same. A flat line \
         says the setting is not what limits the design; a rising one says it is, up to where \
         something else takes over.",
        sweep.design
    );
    if !numeric {
        explain.push_str(&format!(
            " The values are not numbers, so they sit at 1 to {} in the order given: {}.",
            sweep.values.len(),
            sweep.values.join(", ")
        ));
    }
    if !capped.is_empty() {
        explain.push_str(&format!(
            " At {} the driver capped the search: that point is a lower bound.",
            capped.join(", ")
        ));
    }
    chart(svg, &explain)
}

fn sweep_latency_chart(sweep: &Sweep, designs: &[(&str, &DesignCapacity)]) -> String {
    let what = format!("{}.{}", sweep.design, sweep.setting);
    let title = format!("accepted p99 per load step, by {what}");
    let n = sweep.values.len();
    let series: Vec<Series> = sweep
        .keys()
        .iter()
        .zip(&sweep.values)
        .enumerate()
        .filter_map(|(i, (key, value))| {
            let d = designs.iter().find(|(k, _)| k == key)?.1;
            let points: Vec<(f64, f64)> = trusted(d)
                .iter()
                .filter_map(|s| Some((f64::from(s.offered_rps), s.accepted_p99_ms?)))
                .filter(|p| p.1 > 0.0)
                .collect();
            (!points.is_empty()).then(|| Series {
                label: format!("{}={value}", sweep.setting),
                look: sweep_look(i, n),
                points,
            })
        })
        .collect();
    if series.is_empty() {
        return chart(
            charts::note_svg(
                &title,
                "no step the driver kept to schedule accepted a sign-up",
            ),
            "Nothing to draw: see each value's steps below.",
        );
    }
    let svg = charts::line_chart(&LineChart {
        title,
        x: XAxis::Rate,
        y_label: "p99 (ms, log)".into(),
        y_scale: Scale::Log,
        series,
        secondary: None,
    });
    chart(
        svg,
        "Each value's hockey stick on one chart: one point per load step the driver kept to \
         schedule, darker lines for later values. Where the curves lie on top of each other the \
         setting changes nothing; where one turns up later, it moved the knee.",
    )
}

fn throughput_chart(name: &str, d: &DesignCapacity) -> String {
    let title = format!("{name}: answers a second per load step");
    let steps = trusted(d);
    if steps.is_empty() {
        return chart(
            charts::note_svg(&title, "no step the driver kept to schedule"),
            "Nothing to draw: see the steps table below.",
        );
    }
    let points: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (f64::from(s.offered_rps), s.throughput_rps))
        .collect();
    let top = points
        .iter()
        .map(|p| p.0.max(p.1))
        .fold(0.0, f64::max)
        .max(1.0);
    let mut series = vec![
        Series {
            label: format!("{name} throughput"),
            look: charts::design_look(name),
            points,
        },
        Series {
            label: "offered (y = x)".into(),
            look: REFERENCE,
            points: vec![(0.0, 0.0), (top, top)],
        },
    ];
    series.extend(markers(d, 0.0, top));
    series.extend(usl::knee_marker(d, 0.0, top));
    let svg = charts::line_chart_with(
        &LineChart {
            title,
            x: XAxis::Rate,
            y_label: "answers/s".into(),
            y_scale: Scale::Linear,
            series,
            secondary: None,
        },
        &overlay(name, d, |s| Some(s.throughput_rps)),
    );
    chart(
        svg,
        "Answers a second (accepted and refused alike) against the rate offered. On the grey y = x \
         line the design answers everything it is sent; where the curve bends away below it, \
         requests wait or time out.",
    )
}

fn bottlenecks(designs: &[(&str, &DesignCapacity)]) -> String {
    let mut rows = String::new();
    for (name, d) in designs {
        let objective = if d.delivery_stop.is_some() {
            "ingest"
        } else {
            "objective"
        };
        // Per limit: what was filling up at the knee, then what gave out just past it.
        let mut reads: Vec<(&str, &str, Option<&Bottleneck>, Option<u32>)> = vec![
            (objective, "knee", d.knee.as_ref(), d.capacity_rps),
            (objective, "past", d.bottleneck.as_ref(), d.capacity_rps),
        ];
        if d.delivery_stop.is_some() {
            reads.push((
                "end to end",
                "knee",
                d.delivery_knee.as_ref(),
                d.delivery_capacity_rps,
            ));
            reads.push((
                "end to end",
                "past",
                d.delivery_bottleneck.as_ref(),
                d.delivery_capacity_rps,
            ));
        }
        for (which, when, b, cap) in reads {
            // A document written before the knee was read has none: its row is left out.
            if when == "knee" && b.is_none() {
                continue;
            }
            let cap = cap.map_or("—".to_string(), |c| format!("{c}/s"));
            let (at, resource, evidence) = match b {
                Some(b) => (
                    format!(
                        "{}/s{}",
                        b.offered_rps,
                        if when == "knee" {
                            " (the knee)"
                        } else {
                            " (past it)"
                        }
                    ),
                    if when == "knee" {
                        format!("closest to its limit: {}", escape(&b.resource))
                    } else {
                        format!("gave out: {}", escape(&b.resource))
                    },
                    b.evidence
                        .iter()
                        .map(|e| escape(e))
                        .collect::<Vec<_>>()
                        .join("<br>"),
                ),
                None => (
                    "—".into(),
                    "not attributed".into(),
                    "no failing step to read it from".into(),
                ),
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td style=\"text-align:left\">{which}</td><td>{cap}</td><td>{at}</td>\
                 <td style=\"text-align:left\">{resource}</td>\
                 <td style=\"text-align:left\">{evidence}</td></tr>\n",
                escape(name)
            ));
        }
    }
    let mut out = format!(
        "<table><thead><tr><th>design</th><th style=\"text-align:left\">limit</th><th>capacity</th><th>read at</th>\
         <th style=\"text-align:left\">resource</th><th style=\"text-align:left\">evidence</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n"
    );
    for (name, d) in designs {
        if let Some(p) = &d.prediction {
            out.push_str(&format!(
                "<p class=\"explain\"><strong>{}, prediction.</strong> {}: {}</p>\n",
                escape(name),
                escape(&p.method),
                escape(&p.detail)
            ));
        }
        if let Some(u) = &d.usl {
            out.push_str(&usl::paragraph(name, u));
        }
    }
    out.push_str(
        "<p class=\"explain\">Two reads a limit. At the knee, the last step that passed: each \
         resource's use as a share of what it has (pool connections, a channel's send slots, the \
         machine's cores), the nearest to its limit first. Past it, at the first step that missed \
         (or, for the end-to-end limit, did not keep up with delivery): the first resource found \
         at its limit for most of the measurement window, in the order driver, database locks, \
         connection pool (or what held its connections: a provider's latency, the CPU), a \
         provider's rate limit, a channel's send slots, CPU.</p>",
    );
    out
}

/// A step's verdict in a word, and what it missed in words (none for a pass).
fn step_verdict(s: &StepRecord) -> (&'static str, Option<String>) {
    if s.driver_limited() {
        ("driver-limited", Some(s.why.join("; ")))
    } else if s.passed_end_to_end() {
        ("pass", None)
    } else if s.passed {
        let why: Vec<&str> = s
            .why
            .iter()
            .map(|w| w.strip_prefix("delivery: ").unwrap_or(w))
            .collect();
        (
            "ingest only",
            Some(format!("delivery fell behind: {}", why.join("; "))),
        )
    } else {
        ("fail", Some(s.why.join("; ")))
    }
}

fn steps_table(d: &DesignCapacity) -> String {
    // Growth rates shown only when the design measured them: (heading, figure of a step).
    type Slope = fn(&StepRecord) -> Option<f64>;
    let slopes: Vec<(&str, Slope)> = [
        (
            "pool waiters Δ/s",
            (|s: &StepRecord| s.pool_waiting_slope_per_s) as Slope,
        ),
        ("queue rows Δ/s", |s: &StepRecord| s.backlog_slope_per_s),
    ]
    .into_iter()
    .filter(|(_, f)| d.steps.iter().any(|s| f(s).is_some()))
    .collect();
    // A column of cores per process, in the results model's order, then any other by name.
    let mut roles: Vec<&str> = d
        .steps
        .iter()
        .flat_map(|s| s.cores.keys().map(String::as_str))
        .collect();
    roles.sort_by_key(|r| {
        let known = results::PROCESS_ROLES.iter().position(|k| k == r);
        (known.unwrap_or(usize::MAX), *r)
    });
    roles.dedup();
    let mut steps: Vec<(usize, &StepRecord)> = d.steps.iter().enumerate().collect();
    steps.sort_by_key(|(_, s)| s.offered_rps);
    let mut rows = String::new();
    for (i, s) in steps {
        let figures: String = slopes
            .iter()
            .map(|(_, f)| f(s).map_or("—".into(), |v| format!("{v:+.1}")))
            .chain(
                roles
                    .iter()
                    .map(|r| s.cores.get(*r).map_or("—".into(), |c| format!("{c:.2}"))),
            )
            .map(|v| format!("<td>{v}</td>"))
            .collect();
        let (verdict, why) = step_verdict(s);
        rows.push_str(&format!(
            "<tr><td>{}/s{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.2}</td>{figures}\
             <td style=\"text-align:left\">{verdict}</td></tr>\n",
            s.offered_rps,
            if s.repeat > 0 {
                format!(" <small>(repeat {})</small>", s.repeat)
            } else {
                String::new()
            },
            i + 1,
            s.throughput_rps,
            s.accepted_p99_ms.map_or("—".into(), |v| format!("{v:.1}")),
            s.share_503 * 100.0,
        ));
        // What it missed gets a row of its own, under its figures, so the columns stay narrow.
        if let Some(why) = why.filter(|w| !w.is_empty()) {
            rows.push_str(&format!(
                "<tr class=\"why\"><td colspan=\"{}\" style=\"text-align:left; color: #555; font-size: .9rem\">↳ {}</td></tr>\n",
                6 + slopes.len() + roles.len(),
                escape(&why)
            ));
        }
    }
    let heads: String = slopes
        .iter()
        .map(|(h, _)| h.to_string())
        .chain(roles.iter().map(|r| format!("{} cores", escape(r))))
        .map(|h| format!("<th>{h}</th>"))
        .collect();
    format!(
        "<table style=\"font-size: .92rem\"><thead><tr><th>offered</th><th>run</th><th>answers/s</th><th>2xx p99 ms</th>\
         <th>503 %</th>{heads}<th style=\"text-align:left\">passed</th></tr></thead>\n\
         <tbody>\n{rows}</tbody></table>\n<p class=\"explain\">By offered rate; “run” is the order \
         the search ran them in. Δ/s is a figure's growth a second, its least-squares slope over \
         the second half of the load (a growing queue is a design falling behind). Cores are each process's \
         average over the step.</p>"
    )
}

fn details(doc: &CapacityReport, designs: &[(&str, &DesignCapacity)]) -> String {
    let mut out = String::from("<ul>\n");
    for (name, d) in designs {
        let slo = d
            .slo
            .iter()
            .map(|s| format!("<code>{}</code>", escape(s)))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "<li>{}: objective {}{}; {} steps</li>\n",
            escape(name),
            if slo.is_empty() { "—".into() } else { slo },
            if d.delivery_stop.is_some() {
                ", and delivery keeping up for the end-to-end limit"
            } else {
                ""
            },
            d.steps.len()
        ));
    }
    out.push_str(&format!(
        "<li>scenario {}; {} cores; {:.0} s a step; factor {}; resolution {:.0} %; at most {} steps a search</li>\n</ul>",
        escape(&doc.scenario),
        doc.cpus,
        doc.step_duration_s,
        doc.factor,
        doc.resolution * 100.0,
        doc.max_steps
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> CapacityReport {
        serde_json::from_str(include_str!(
            "../../results/fixtures/capacity/capacity.json"
        ))
        .unwrap()
    }

    /// The text of the section `id`, tags stripped.
    fn section_of<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html
            .find(&format!("<section id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no section {id}"));
        let end = start + html[start..].find("</section>").unwrap();
        &html[start..end]
    }

    #[test]
    fn the_verdict_is_one_line_per_design() {
        let doc = fixture();
        let d = ordered(&doc);
        assert_eq!(
            d.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["sync", "async"]
        );
        assert_eq!(
            verdict_line(d[0].0, d[0].1, doc.resolution),
            "sync: 32 sign-ups/s (failed at 34/s), bottleneck: connection pool \
             (Little's law predicts 32, measured 0.99×); \
             USL knee 36/s predicted, 34/s measured there (confirmed)"
        );
        assert_eq!(
            verdict_line(d[1].0, d[1].1, doc.resolution),
            "async: ingest 1200 sign-ups/s (failed at 1300/s), bottleneck: CPU (postgres); \
             end to end (delivery keeping up) 500 sign-ups/s (failed at 550/s), \
             bottleneck: provider rate limit (sms); \
             USL knee 1341/s predicted, 1302/s measured there (confirmed)"
        );
    }

    #[test]
    fn a_repeated_limit_says_where_it_lies_and_when_its_repeats_disagree() {
        // Not repeated, or no interval: nothing to add.
        assert_eq!(interval_text(Some([Some(44), Some(48)]), 1, 0.1), "");
        assert_eq!(interval_text(None, 3, 0.1), "");
        let agreed = interval_text(Some([Some(44), Some(48)]), 3, 0.1);
        assert_eq!(
            agreed,
            "; over 3 runs of each deciding rate: at least 44/s and below 48/s"
        );
        let disagreed = interval_text(Some([Some(40), Some(64)]), 3, 0.1);
        assert!(
            disagreed.contains("at least 40/s and below 64/s")
                && disagreed.contains("REPEATS DISAGREE beyond the 10 % resolution"),
            "{disagreed}"
        );
        let open = interval_text(Some([Some(40), None]), 3, 0.1);
        assert!(
            open.contains("no rate above failed every run") && open.contains("DISAGREE"),
            "{open}"
        );
        // The verdict carries it.
        let mut doc = fixture();
        let sync = doc.designs.get_mut("sync").unwrap();
        sync.repeats = 3;
        sync.capacity_ci = Some([Some(32), Some(34)]);
        let line = verdict_line("sync", &doc.designs["sync"], doc.resolution);
        assert!(line.contains("at least 32/s and below 34/s"), "{line}");
    }

    #[test]
    fn every_way_a_search_stops_reads_as_a_limit() {
        assert_eq!(
            limit(Some(80), None, Stop::DriverLimited),
            "at least 80 sign-ups/s (the driver could not offer more: inconclusive above)"
        );
        assert!(limit(None, Some(1), Stop::NeverPassed).contains("even 1/s"));
        assert!(limit(Some(80), Some(160), Stop::Budget).contains("budget"));
        assert!(limit(Some(80), None, Stop::Budget).starts_with("at least 80"));
        assert_eq!(limit(None, None, Stop::Converged), "not measured");
    }

    #[test]
    fn the_page_holds_verdicts_knees_bottlenecks_and_steps_and_fetches_nothing() {
        let doc = fixture();
        let html = render(&doc);
        let verdict = section_of(&html, "verdict");
        for (name, d) in ordered(&doc) {
            assert!(
                verdict.contains(&escape(&verdict_line(name, d, doc.resolution))),
                "{verdict}"
            );
        }
        assert_eq!(verdict.matches("<li>").count(), 2);
        for (id, has_chart) in sections(&doc) {
            let s = section_of(&html, &id);
            assert_eq!(s.matches("<svg").count(), usize::from(has_chart), "{id}");
            assert!(s.contains("<h2>"), "{id}");
        }
        // One knee per design, at its capacity, on the latency chart; the async design's
        // end-to-end limit beside it.
        let sync = section_of(&html, "latency-sync");
        assert_eq!(sync.matches("knee at").count(), 1);
        assert!(sync.contains("knee at 32/s") && sync.contains("offered rate (sign-ups/s)"));
        assert!(!sync.contains("end-to-end limit"));
        let async_ = section_of(&html, "latency-async");
        assert_eq!(async_.matches("knee at").count(), 1);
        assert!(async_.contains("knee at 1200/s") && async_.contains("end-to-end limit at 500/s"));
        assert!(section_of(&html, "throughput-sync").contains("offered (y = x)"));
        // The USL's predicted peak on the throughput chart, and its fit under the bottlenecks.
        assert!(section_of(&html, "throughput-sync").contains("USL predicted peak 36/s"));
        // The bottleneck table: each limit with its resource and evidence.
        // Sync: the knee's read and the one past it; async: past its two limits (the fixture
        // has no knee read for it, as documents written before it existed).
        let b = section_of(&html, "bottlenecks");
        assert_eq!(b.matches("<tr><td>").count(), 4, "{b}");
        for text in [
            "32/s (the knee)",
            "closest to its limit: connection pool",
            "connection pool at 93 % of its limit",
            "gave out: connection pool",
            "connection pool",
            "mean wait for a connection 182 ms",
            "CPU (postgres)",
            "provider rate limit (sms)",
            "end to end",
            "Little's law",
            "Universal Scalability Law",
            "One step at 36/s served 33.8/s",
        ] {
            assert!(b.contains(text), "the bottleneck table lacks {text}");
        }
        // Steps: every one, the driver-limited and the delivery failures named.
        let steps = section_of(&html, "steps-async");
        assert_eq!(steps.matches("<tr><td>").count(), 10);
        assert!(steps.contains("ingest only"));
        assert!(steps.contains("↳ delivery fell behind: sms delivery p99"));
        assert!(steps.contains("queue rows Δ/s"));
        let sync_steps = section_of(&html, "steps-sync");
        assert!(sync_steps.contains("pool waiters Δ/s") && !sync_steps.contains("queue rows Δ/s"));
        // Self-contained.
        assert!(!html.contains("<script") && !html.contains("<link"));
        assert!(
            !html
                .replace("http://www.w3.org/2000/svg", "")
                .contains("http"),
            "nothing points off the page"
        );
    }

    /// The fixture's sync search, as three values of its pool size would have it.
    fn sweep_fixture() -> CapacityReport {
        let mut doc = fixture();
        let sync = doc.designs["sync"].clone();
        let sweep = Sweep {
            design: "sync".into(),
            setting: "pool_size".into(),
            values: vec!["10".into(), "20".into(), "5".into()],
        };
        doc.designs = sweep
            .keys()
            .into_iter()
            .zip([32, 35, 17])
            .map(|(k, cap)| {
                let mut d = sync.clone();
                d.capacity_rps = Some(cap);
                (k, d)
            })
            .collect();
        doc.sweep = Some(sweep);
        doc
    }

    #[test]
    fn a_sweep_draws_each_values_limit_and_hockey_stick_on_one_chart() {
        let doc = sweep_fixture();
        // The values in the order given, not the map's.
        let names: Vec<&str> = ordered(&doc).iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "sync[pool_size=10]",
                "sync[pool_size=20]",
                "sync[pool_size=5]"
            ]
        );
        let html = render(&doc);
        for (id, has_chart) in sections(&doc) {
            let s = section_of(&html, &id);
            assert_eq!(s.matches("<svg").count(), usize::from(has_chart), "{id}");
        }
        let limits = section_of(&html, "sweep-capacity");
        assert!(limits.contains("What sync.pool_size does to the limit"));
        assert!(limits.contains("setting value") && limits.contains("capacity"));
        let latency = section_of(&html, "sweep-latency");
        for v in ["pool_size=10", "pool_size=20", "pool_size=5"] {
            assert!(latency.contains(v), "the latency chart has no line for {v}");
        }
        assert_eq!(section_of(&html, "verdict").matches("<li>").count(), 3);
        // Values that are not numbers sit at 1, 2, 3 and are named.
        let mut words = doc.clone();
        let sweep = words.sweep.as_mut().unwrap();
        sweep.setting = "acquire_timeout".into();
        sweep.values = vec!["1s".into(), "2s".into(), "5s".into()];
        let designs = std::mem::take(&mut words.designs);
        words.designs = sweep
            .keys()
            .into_iter()
            .zip(designs.into_values())
            .collect();
        let html = render(&words);
        assert!(
            section_of(&html, "sweep-capacity").contains("in the order given: 1s, 2s, 5s"),
            "{}",
            section_of(&html, "sweep-capacity")
        );
    }

    #[test]
    fn a_design_without_a_usable_step_still_has_its_charts() {
        let mut doc = fixture();
        for d in doc.designs.values_mut() {
            for s in &mut d.steps {
                s.trustworthy = false;
            }
            d.capacity_rps = None;
        }
        let html = render(&doc);
        for (id, has_chart) in sections(&doc) {
            assert_eq!(
                section_of(&html, &id).matches("<svg").count(),
                usize::from(has_chart),
                "{id}"
            );
        }
        assert!(!html.contains("knee at"));
        assert!(html.contains("<td style=\"text-align:left\">driver-limited</td>"));
    }

    #[test]
    fn repeated_runs_are_dots_and_the_interval_a_band() {
        let mut doc = fixture();
        let without = render(&doc);
        let sync = doc.designs.get_mut("sync").unwrap();
        let knee = sync.capacity_rps.unwrap();
        sync.repeats = 3;
        sync.capacity_ci = Some([Some(knee), sync.first_fail_rps]);
        let first = sync
            .steps
            .iter()
            .find(|s| s.offered_rps == knee)
            .unwrap()
            .clone();
        for k in 1..3 {
            let mut again = first.clone();
            again.repeat = k;
            again.accepted_p99_ms = again
                .accepted_p99_ms
                .map(|v| v * (1.0 + f64::from(k) / 10.0));
            sync.steps.push(again);
        }
        let html = render(&doc);
        let latency = section_of(&html, "latency-sync");
        let circles = |h: &str| h.matches("<circle").count();
        // Two repeats, and one circle in the legend.
        assert_eq!(circles(latency), 3, "{latency}");
        assert!(latency.contains("knee lies here"), "{latency}");
        assert_eq!(circles(section_of(&without, "latency-sync")), 0);
        // The steps table names the repeats.
        assert_eq!(
            section_of(&html, "steps-sync").matches("(repeat ").count(),
            2
        );
    }
}
