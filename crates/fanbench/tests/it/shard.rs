//! Load from many drivers: `run --shard` slices, `merge` adds them up.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::{fanbench, load_turn, read_results, spawn};

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn two_shards_against_one_server_merge_into_exactly_the_whole_schedule() {
    let _turn = load_turn();
    let dir = tempfile::tempdir().unwrap();
    // Poisson arrivals: the count is the seed's, not simply the rate times the duration.
    let scenario = dir.path().join("shards.toml");
    std::fs::write(
        &scenario,
        "name = 'shards'\n[arrivals]\nseed = 5\n\
         phases = [{ kind = 'constant', duration = '2s', rate = 40 }, { kind = 'ramp', duration = '1s', from = 40, to = 120 }]\n\
         [gates]\nrules = ['target.requests.sent == target.requests.intended', 'target.requests.share.503 == 0']\n",
    )
    .unwrap();
    let server = spawn(&["serve", "null", "--listen", "127.0.0.1:0"]);
    let run = |out: &Path, extra: &[&str]| {
        fanbench()
            .args(["run", "--quiet", "--target", &server.url, "--scenario"])
            .arg(&scenario)
            .arg("--out")
            .arg(out)
            .args(extra)
            .spawn()
            .unwrap()
    };
    let (whole, s1, s2, merged) = (
        dir.path().join("whole"),
        dir.path().join("s1"),
        dir.path().join("s2"),
        dir.path().join("merged"),
    );
    let done = run(&whole, &[]).wait_with_output().unwrap();
    assert!(done.status.success(), "{}", text(&done));
    // The two shards run at once, as two machines would.
    let (a, b) = (run(&s1, &["--shard", "1/2"]), run(&s2, &["--shard", "2/2"]));
    for child in [a, b] {
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{}", text(&done));
    }

    let intended = |doc: &Value| {
        doc["designs"]["target"]["requests"]["intended"]
            .as_u64()
            .unwrap()
    };
    let whole_doc = read_results(&whole);
    let (d1, d2) = (read_results(&s1), read_results(&s2));
    assert_eq!(d1["shard"], serde_json::json!({ "index": 1, "count": 2 }));
    assert_eq!(d2["shard"], serde_json::json!({ "index": 2, "count": 2 }));
    assert!(whole_doc.get("shard").is_none(), "a whole run has no shard");
    let n = intended(&whole_doc);
    assert!(n > 100, "{n}");
    assert_eq!(intended(&d1) + intended(&d2), n);
    assert!(
        intended(&d1).abs_diff(intended(&d2)) <= 1,
        "interleaved halves"
    );

    let done = fanbench()
        .arg("merge")
        .args([&s2, &s1])
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", text(&done));
    let doc = read_results(&merged);
    results::validate(&doc).unwrap();
    let requests = &doc["designs"]["target"]["requests"];
    assert_eq!(requests["intended"], n, "{requests}");
    assert_eq!(requests["sent"], n, "{requests}");
    assert_eq!(requests["status"]["2xx"], n, "{requests}");
    assert_eq!(doc["merged"]["count"], 2);
    assert_eq!(doc["merged"]["missing"], serde_json::json!([]));
    let timeline_offered: u64 = doc["designs"]["target"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["offered"].as_u64().unwrap())
        .sum();
    assert_eq!(timeline_offered, n);
    // The merged folder is a run folder to report and gate.
    for command in ["report", "gate"] {
        let done = fanbench().arg(command).arg(&merged).output().unwrap();
        assert!(done.status.success(), "{command}: {}", text(&done));
    }
    assert!(merged.join("index.html").is_file());
    let gates: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("gates.json")).unwrap()).unwrap();
    assert_eq!(gates.as_array().map(Vec::len), Some(2), "{gates}");

    // Refusals are errors (exit 2) that say what is wrong.
    let refused = |args: &[&Path], says: &str| {
        let done = fanbench()
            .arg("merge")
            .args(args)
            .arg("--out")
            .arg(dir.path().join("refused"))
            .output()
            .unwrap();
        assert_eq!(done.status.code(), Some(2), "{}", text(&done));
        assert!(text(&done).contains(says), "{says}: {}", text(&done));
    };
    refused(&[&s1, &whole], "not a shard run");
    refused(&[&s1, &s1], "given twice");
    // Shard 1 alone: merged, but incomplete and so invalid.
    let done = fanbench()
        .arg("merge")
        .arg(&s1)
        .arg("--out")
        .arg(dir.path().join("half"))
        .output()
        .unwrap();
    assert_eq!(done.status.code(), Some(2), "{}", text(&done));
    let half = read_results(&dir.path().join("half"));
    assert_eq!(half["merged"]["missing"], serde_json::json!([2]));
    assert_eq!(half["designs"]["target"]["valid"], false);

    // --shard is checked before anything runs.
    for (args, says) in [
        (
            vec!["--shard", "3/2", "--target", &server.url],
            "counts from 1",
        ),
        (vec!["--shard", "half", "--target", &server.url], "i/n"),
        (vec!["--shard", "1/2", "--design", "sync"], "--target"),
    ] {
        let done = fanbench()
            .args(["run", "--quiet", "--scenario"])
            .arg(&scenario)
            .args(&args)
            .arg("--out")
            .arg(dir.path().join("never"))
            .output()
            .unwrap();
        assert_eq!(done.status.code(), Some(2), "{args:?}: {}", text(&done));
        assert!(text(&done).contains(says), "{args:?}: {}", text(&done));
    }
}
