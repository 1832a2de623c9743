//! The report rendered from the committed results fixture (a real smoke run), so these tests need
//! no load run: the page parses, holds every section with its chart, and fetches nothing.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::path::{Path, PathBuf};

use report::{Run, SECTIONS};
use scraper::{Html, Selector};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/fixtures/smoke")
}

/// A copy of the fixture run folder, optionally without its telemetry.
fn run_folder(telemetry: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("results.json"),
        dir.path().join("results.json"),
    )
    .unwrap();
    if telemetry {
        std::fs::copy(
            fixture_dir().join("telemetry.json"),
            dir.path().join("telemetry.json"),
        )
        .unwrap();
    }
    dir
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn check_page(html: &str) -> Html {
    let doc = Html::parse_document(html);
    assert!(
        doc.errors.is_empty(),
        "the HTML has parse errors: {:?}",
        doc.errors
    );
    for (id, has_chart) in SECTIONS {
        let section = doc
            .select(&sel(&format!("section#{id}")))
            .next()
            .unwrap_or_else(|| panic!("no section {id}"));
        let charts = section.select(&sel("svg")).count();
        if has_chart {
            assert_eq!(charts, 1, "section {id} should hold exactly one chart");
        } else {
            assert_eq!(charts, 0, "section {id} is text");
        }
        assert!(
            section.select(&sel("h2")).next().is_some(),
            "section {id} has a heading"
        );
    }
    // Self-contained: no script at all, and nothing that points off the page.
    assert_eq!(doc.select(&sel("script")).count(), 0);
    for element in doc.select(&sel("[src], [href]")) {
        for attr in ["src", "href"] {
            if let Some(v) = element.value().attr(attr) {
                let v = v.trim().to_ascii_lowercase();
                assert!(
                    !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                    "external reference {attr}={v}"
                );
            }
        }
    }
    assert!(
        !html.contains("<link"),
        "no stylesheets or fonts are linked"
    );
    assert!(
        !html.contains("url(http") && !html.contains("@import"),
        "no CSS fetches"
    );
    doc
}

#[test]
fn the_report_of_a_run_holds_every_section_and_fetches_nothing() {
    let dir = run_folder(true);
    let run = Run::load(dir.path()).unwrap();
    let html = report::render_html(&[run]);
    let doc = check_page(&html);

    let verdict = doc
        .select(&sel("section#verdict"))
        .next()
        .unwrap()
        .text()
        .collect::<String>();
    assert!(
        verdict.contains("sync") && verdict.contains("async") && verdict.contains("p99"),
        "{verdict}"
    );
    let table = doc
        .select(&sel("section#summary-table table"))
        .next()
        .unwrap()
        .text()
        .collect::<String>();
    for row in [
        "latency p99",
        "503",
        "lost",
        "delivery p99 sms",
        "send lag p99",
    ] {
        assert!(table.contains(row), "the table lacks {row}");
    }
    // Charts are labelled: titles, axis descriptions and legends.
    let over_time = doc
        .select(&sel("section#latency-over-time svg"))
        .next()
        .unwrap()
        .html();
    for text in [
        "p50 and p99 per second",
        "time since start (s)",
        "sync p99",
        "async p99",
        "offered/s",
    ] {
        assert!(over_time.contains(text), "latency-over-time lacks {text}");
    }
    let breakdown = doc
        .select(&sel("section#time-breakdown svg"))
        .next()
        .unwrap()
        .html();
    for text in [
        "waiting for a connection",
        "SMS provider",
        "sync · spike",
        "async · baseline",
    ] {
        assert!(breakdown.contains(text), "time-breakdown lacks {text}");
    }
}

#[test]
fn without_telemetry_every_chart_section_still_says_something() {
    let dir = run_folder(false);
    let run = Run::load(dir.path()).unwrap();
    let html = report::render_html(&[run]);
    check_page(&html);
    assert!(html.contains("no server telemetry in this run"));
}

#[test]
fn several_runs_render_one_comparison_page() {
    let (a, b) = (run_folder(true), run_folder(true));
    let runs = vec![Run::load(a.path()).unwrap(), Run::load(b.path()).unwrap()];
    let (html_path, md_path) = report::write(&runs).unwrap();
    assert!(
        html_path.starts_with(a.path()),
        "written to the first run's folder"
    );
    let html = std::fs::read_to_string(html_path).unwrap();
    check_page(&html);
    assert!(html.contains("2 runs compared"));
    assert!(html.contains("sync p99 [run 1]") && html.contains("sync p99 [run 2]"));
    let md = std::fs::read_to_string(md_path).unwrap();
    assert_eq!(md.matches("## fanbench: smoke").count(), 2);
    assert!(md.contains("| accepted latency p99 |"));
    assert!(md.contains("| refusal (503) latency p99 |"));
}

#[test]
fn an_invalid_run_says_so_in_the_verdict_the_table_and_the_summary() {
    let dir = run_folder(true);
    let path = dir.path().join("results.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["designs"]["async"]["valid"] = false.into();
    doc["designs"]["async"]["invalid_reasons"] =
        serde_json::json!(["the async server exited during the run (signal: 9)"]);
    std::fs::write(&path, doc.to_string()).unwrap();
    let run = Run::load(dir.path()).unwrap();
    let (html, md) = report::write(&[run]).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    // The verdict, in summary.md as on the page.
    assert!(
        md.contains("**INVALID: the async server exited during the run"),
        "{md}"
    );
    assert!(
        md.contains("no comparison: a design's run is invalid")
            && !md.contains("lower with the async design"),
        "no ratio is drawn from an invalid run: {md}"
    );
    // And the table's warnings.
    assert!(
        md.contains("**INVALID (async):** the async server exited"),
        "{md}"
    );
    assert!(std::fs::read_to_string(html).unwrap().contains("INVALID"));
}

#[test]
fn a_folder_without_valid_results_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Run::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("results.json"), "{err}");
    std::fs::write(dir.path().join("results.json"), "{\"schema_version\": 1}").unwrap();
    let err = Run::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a fanbench results file"), "{err}");
}

/// The fixture with a `processes` block on each design, as `fanbench compare` writes it; the sync
/// server's memory unreadable.
fn run_folder_with_processes() -> tempfile::TempDir {
    let dir = run_folder(true);
    let path = dir.path().join("results.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (design, cpu) in [("sync", 1.0), ("async", 3.0)] {
        doc["designs"][design]["processes"] = serde_json::json!({
            "window_s": 12.5,
            "driver": {"cpu_seconds": cpu, "peak_rss_bytes": 64u64 << 20, "memory": "vm_hwm", "missing": []},
            "server": {"cpu_seconds": 2.5, "peak_rss_bytes": null, "memory": "vm_hwm",
                       "missing": ["peak memory: /proc/77/status: permission denied"]},
            "simulator": {"cpu_seconds": 0.25, "peak_rss_bytes": 20u64 << 20, "memory": "vm_hwm", "missing": []},
            "postgres": {"cpu_seconds": 6.25, "peak_rss_bytes": 150u64 << 20, "memory": "pss_sum_sampled", "missing": []}
        });
    }
    std::fs::write(&path, doc.to_string()).unwrap();
    dir
}

#[test]
fn who_used_the_machine_is_a_table_per_design_and_process() {
    let dir = run_folder_with_processes();
    let run = Run::load(dir.path()).unwrap();
    let (html, md) = report::write(&[run]).unwrap();
    let doc = check_page(&std::fs::read_to_string(html).unwrap());
    let section = doc.select(&sel("section#machine")).next().unwrap();
    let rows: Vec<Vec<String>> = section
        .select(&sel("tbody tr"))
        .map(|tr| {
            tr.select(&sel("td"))
                .map(|td| td.text().collect::<String>())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 8, "four processes for each of two designs");
    let row = |design: &str, process: &str| {
        rows.iter()
            .find(|r| r[0] == design && r[1] == process)
            .unwrap_or_else(|| panic!("no row for {design} {process}: {rows:?}"))
    };
    // Sync first, as everywhere; the roles in their order.
    assert_eq!(rows[0][..2], ["sync", "driver"]);
    assert_eq!(rows[3][..2], ["sync", "postgres"]);
    // 6.25 s of CPU over a 12.5 s window is half a core; 150 MiB; the tree's Pss.
    let postgres = row("async", "postgres");
    assert_eq!(postgres[2..5], ["6.25 s", "0.50", "150.0 MiB"]);
    assert!(postgres[5].contains("Pss"), "{postgres:?}");
    assert_eq!(row("async", "driver")[2..4], ["3.00 s", "0.24"]);
    // Unknown is a dash with the reason, not a zero.
    assert_eq!(row("sync", "server")[4], "-");
    let text = section.text().collect::<String>();
    assert!(
        text.contains("sync server: peak memory: /proc/77/status: permission denied"),
        "{text}"
    );

    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("### Who used the machine"), "{md}");
    assert!(
        md.contains(
            "| async | postgres | 6.25 s | 0.50 | 150.0 MiB | peak Pss of the tree, sampled |"
        ),
        "{md}"
    );
    assert!(
        md.contains("> Not measured: sync server: peak memory"),
        "{md}"
    );
}

#[test]
fn a_run_from_before_processes_were_recorded_says_so() {
    let dir = run_folder(true);
    let run = Run::load(dir.path()).unwrap();
    let (html, md) = report::write(&[run]).unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    let doc = check_page(&html);
    let section = doc.select(&sel("section#machine")).next().unwrap();
    assert_eq!(section.select(&sel("table")).count(), 0);
    assert!(
        section
            .text()
            .collect::<String>()
            .contains("Not recorded in this run"),
        "{html}"
    );
    let md = std::fs::read_to_string(md).unwrap();
    assert!(!md.contains("Who used the machine"), "{md}");
}

/// The fixture run folder with more designs beside sync and async, each made from the async
/// design's results and telemetry. `broker` accepts sign-ups twice as fast (accepted p99 halved)
/// with a little more throughput, but delivers three times slower; any other name is a plain copy.
fn run_folder_with_designs(extra: &[&str]) -> tempfile::TempDir {
    let dir = run_folder(true);
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.path().join(file);
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut doc);
        std::fs::write(&path, doc.to_string()).unwrap();
    };
    edit("results.json", &|doc| {
        for name in extra {
            let mut d = doc["designs"]["async"].clone();
            if *name == "broker" {
                let p99 = &mut d["latency_ms_by_class"]["2xx"]["p99"];
                *p99 = (p99.as_f64().unwrap() / 2.0).into();
                let rps = &mut d["throughput_rps"];
                *rps = (rps.as_f64().unwrap() * 1.1).into();
                for channel in d["delivery"].as_object_mut().unwrap().values_mut() {
                    let p99 = &mut channel["p99_ms"];
                    *p99 = (p99.as_f64().unwrap() * 3.0).into();
                }
            }
            doc["designs"][*name] = d;
        }
    });
    edit("telemetry.json", &|doc| {
        for name in extra {
            doc["designs"][*name] = doc["designs"]["async"].clone();
        }
    });
    dir
}

/// Every design of the run, in report order, appears in every section that shows designs: each
/// chart names it in a legend or a bar, the tables have a column or rows for it.
fn assert_every_design_in_every_section(doc: &Html, designs: &[&str]) {
    for (id, has_chart) in SECTIONS {
        let section = doc.select(&sel(&format!("section#{id}"))).next().unwrap();
        let text = if has_chart {
            section.select(&sel("svg")).next().unwrap().html()
        } else {
            section.text().collect::<String>()
        };
        // The machine section is empty without processes; the fixture recorded none.
        if id == "machine" {
            continue;
        }
        for design in designs {
            // The sync design has no queue: the queue chart holds the others.
            if id == "queue" && *design == "sync" {
                continue;
            }
            assert!(text.contains(design), "section {id} lacks {design}");
        }
    }
    let header: Vec<String> = doc
        .select(&sel("section#summary-table thead th"))
        .map(|th| th.text().collect())
        .collect();
    assert_eq!(header[1..], *designs, "the table's columns in report order");
}

#[test]
fn three_designs_each_appear_in_every_section_and_the_verdict_names_a_winner_per_measure() {
    let dir = run_folder_with_designs(&["broker"]);
    let run = Run::load(dir.path()).unwrap();
    let (html, md) = report::write(std::slice::from_ref(&run)).unwrap();
    let doc = check_page(&std::fs::read_to_string(html).unwrap());
    assert_every_design_in_every_section(&doc, &["sync", "async", "broker"]);

    let verdict: Vec<String> = doc
        .select(&sel("section#verdict li"))
        .map(|li| li.text().collect())
        .collect();
    let line = |start: &str| {
        verdict
            .iter()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no verdict line on {start}: {verdict:#?}"))
            .clone()
    };
    // One line per design, sync first.
    assert!(verdict[0].starts_with("sync:") && verdict[2].starts_with("broker:"));
    // A winner on each headline measure, by how much against each other design.
    assert_eq!(
        line("accepted sign-up p99:"),
        "accepted sign-up p99: broker is best at 4.1 ms, 1184x lower than sync (4.85 s), \
         2.0x lower than async (8.2 ms)"
    );
    assert!(
        line("throughput:").starts_with("throughput: broker is best at 41.9/s")
            && line("throughput:").ends_with(", 10 % higher than async (38.1/s)"),
        "{verdict:#?}"
    );
    // Only designs with a queue are compared on delivery; the broker's is three times slower.
    assert!(
        line("delivery p99")
            == "delivery p99 (slowest channel, designs with a queue): async is best at 59.0 ms, \
                3.0x lower than broker (177.0 ms)",
        "{verdict:#?}"
    );
    assert_eq!(
        line("refused with 503:"),
        "refused with 503: a tie, sync, async and broker all at 0.0 %"
    );
    assert!(line("notifications lost:").contains("a tie"));
    assert_eq!(
        line("who won on what:"),
        "who won on what: async on delivery p99 (slowest channel, designs with a queue); broker on \
         accepted sign-up p99 \
         and throughput; a tie on refused with 503, notifications lost and notifications still \
         queued at the drain deadline"
    );
    // Today's comparison of the two original designs still stands beside it.
    assert!(
        verdict
            .iter()
            .any(|l| l.contains("lower with the async design than with the sync design"))
    );

    // summary.md: the verdict and a column for each design, in order.
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| | sync | async | broker |"), "{md}");
    assert!(
        md.contains("- accepted sign-up p99: **broker** is best"),
        "{md}"
    );
    assert!(
        md.contains("- **broker**: an accepted sign-up took"),
        "{md}"
    );
    // The terminal table: a column each, in order.
    let table = report::text::table(&run.results);
    let header = table.lines().nth(2).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["sync", "async", "broker"],
        "{table}"
    );
}

#[test]
fn a_design_of_any_name_is_reported_after_the_known_ones() {
    let dir = run_folder_with_designs(&["kafka", "broker"]);
    let run = Run::load(dir.path()).unwrap();
    let html = report::render_html(std::slice::from_ref(&run));
    let doc = check_page(&html);
    assert_every_design_in_every_section(&doc, &["sync", "async", "broker", "kafka"]);
    assert!(report::render_markdown(&[run]).contains("| | sync | async | broker | kafka |"));
}

#[test]
fn an_invalid_third_design_is_left_out_of_the_comparison_by_name() {
    let dir = run_folder_with_designs(&["broker"]);
    let path = dir.path().join("results.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["designs"]["broker"]["valid"] = false.into();
    doc["designs"]["broker"]["invalid_reasons"] = serde_json::json!(["the broker server exited"]);
    std::fs::write(&path, doc.to_string()).unwrap();
    let md = report::render_markdown(&[Run::load(dir.path()).unwrap()]);
    assert!(
        md.contains("no comparison with broker: a design's run is invalid"),
        "{md}"
    );
    // The valid two are still compared, and the broker wins nothing.
    assert!(
        md.contains("accepted sign-up p99: **async** is best"),
        "{md}"
    );
    assert!(
        !md.contains("**broker** is best") && !md.contains("**broker** on"),
        "{md}"
    );
}

/// The capacity page of the committed capacity fixture: well-formed HTML, every section with its
/// chart, nothing fetched (the same checks as the run page's, over its own sections).
#[test]
fn the_capacity_page_parses_and_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/fixtures/capacity/capacity.json"),
        dir.path().join(report::capacity::FILE),
    )
    .unwrap();
    let doc = report::capacity::load(dir.path()).unwrap();
    let path = report::capacity::write(dir.path(), &doc).unwrap();
    let html = std::fs::read_to_string(path).unwrap();
    let page = Html::parse_document(&html);
    assert!(page.errors.is_empty(), "{:?}", page.errors);
    for (id, has_chart) in report::capacity::sections(&doc) {
        let section = page
            .select(&sel(&format!("section#{id}")))
            .next()
            .unwrap_or_else(|| panic!("no section {id}"));
        assert_eq!(
            section.select(&sel("svg")).count(),
            usize::from(has_chart),
            "{id}"
        );
    }
    assert_eq!(page.select(&sel("section#verdict li")).count(), 2);
    assert_eq!(page.select(&sel("script, link, [src], [href]")).count(), 0);
    // A document of another version is refused, naming the file.
    let mut raw: serde_json::Value = serde_json::to_value(&doc).unwrap();
    raw["schema_version"] = 2.into();
    std::fs::write(dir.path().join("capacity.json"), raw.to_string()).unwrap();
    let e = report::capacity::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("capacity.json") && e.contains("version 2"),
        "{e}"
    );
}
