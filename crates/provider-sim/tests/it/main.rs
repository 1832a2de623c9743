//! The simulator over real HTTP: latency, errors, rate limits, outages, the admin endpoint and the
//! idempotent ledger.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use provider_sim::testing::{all, fixed};
use provider_sim::{ChannelBehaviour, Latency, Outage, SimConfig, Summary};
use serde_json::{Value, json};
use uuid::Uuid;

struct Sim {
    url: String,
    http: reqwest::Client,
}

async fn start(config: SimConfig) -> Sim {
    Sim {
        url: provider_sim::testing::spawn(config).await,
        http: reqwest::Client::new(),
    }
}

impl Sim {
    async fn send(&self, channel: &str, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/send/{channel}", self.url))
            .header("Idempotency-Key", key)
            .json(&json!({ "registration_id": Uuid::now_v7(), "to": "someone" }))
            .send()
            .await
            .unwrap()
    }

    async fn summary(&self) -> Summary {
        provider_sim::testing::summary(&self.http, &self.url).await
    }
}

#[tokio::test]
async fn a_repeated_key_is_answered_as_success_and_counted_once() {
    let sim = start(all(fixed(0))).await;
    for _ in 0..3 {
        let r = sim.send("email", "reg-1:email").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(sim.send("sms", "reg-1:sms").await.status(), 200);
    let s = sim.summary().await;
    assert_eq!(
        (s.email.delivered, s.email.duplicates, s.email.rejected),
        (1, 2, 0)
    );
    assert_eq!((s.sms.delivered, s.sms.duplicates), (1, 0));
    assert_eq!(s.push.delivered, 0);

    let ledger = sim
        .http
        .get(format!("{}/ledger", sim.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = ledger
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per delivery, duplicates excluded: {ledger}"
    );
    assert_eq!(lines[0]["key"], "reg-1:email");
    assert_eq!(lines[0]["channel"], "email");
    assert!(lines[0]["received_at"].as_str().unwrap().ends_with('Z'));
    assert!(lines[0]["registration_id"].is_string());
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::test]
async fn latencies_follow_the_configured_distribution() {
    let median_ms = 20.0;
    let p99_ms = 80.0;
    let behaviour = ChannelBehaviour {
        latency: Latency::Lognormal {
            median: Duration::from_millis(median_ms as u64),
            p99: Duration::from_millis(p99_ms as u64),
        },
        ..fixed(0)
    };
    let sim = start(all(behaviour)).await;
    let sim = &sim;
    let mut applied: Vec<Duration> = stream::iter(0..3000)
        .map(|i| async move {
            let start = Instant::now();
            let r = sim.send("push", &format!("k{i}")).await;
            let took = start.elapsed();
            assert_eq!(r.status(), 200);
            let us: u64 = r.headers()[provider_sim::LATENCY_HEADER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let applied = Duration::from_micros(us);
            // The latency is really waited out, never cut short (a busy machine can only add to it).
            assert!(
                took >= applied,
                "answered in {took:?}, before its latency of {applied:?}"
            );
            applied
        })
        .buffer_unordered(100)
        .collect()
        .await;
    applied.sort();
    let (median, p99) = (quantile(&applied, 0.5), quantile(&applied, 0.99));
    // 3,000 log-normal samples: the median's standard error is ~2 %, the p99's ~8 %.
    assert!(
        (median - median_ms).abs() < median_ms * 0.08,
        "median {median:.1} ms, want ~{median_ms}"
    );
    assert!(
        (p99 - p99_ms).abs() < p99_ms * 0.25,
        "p99 {p99:.1} ms, want ~{p99_ms}"
    );
    assert_eq!(sim.summary().await.push.delivered, 3000);
}

#[tokio::test]
async fn an_error_rate_rejects_that_share_with_server_errors() {
    let sim = start(all(ChannelBehaviour {
        error_rate: 0.5,
        ..fixed(0)
    }))
    .await;
    let mut errors = 0;
    for i in 0..1000 {
        let r = sim.send("sms", &format!("k{i}")).await;
        match r.status().as_u16() {
            200 => {}
            500 | 503 => errors += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // Binomial(1000, 0.5): the standard deviation is about 16, so 400..600 is over six of them.
    assert!((400..=600).contains(&errors), "{errors} errors of 1000");
    let s = sim.summary().await;
    assert_eq!(s.sms.rejected, errors);
    assert_eq!(s.sms.delivered, 1000 - errors);
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_retry_after() {
    let sim = start(all(ChannelBehaviour {
        rate_limit: Some(10.0),
        ..fixed(0)
    }))
    .await;
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..40 {
        let r = sim.send("email", &format!("k{i}")).await;
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                let secs: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(secs >= 1);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // A burst of one second's worth, plus what refills while the 40 sends run (well under a second).
    assert!((10..=20).contains(&ok), "{ok} accepted");
    assert_eq!(ok + limited, 40);
}

#[tokio::test]
async fn outages_answer_503_and_the_admin_endpoint_changes_behaviour_at_run_time() {
    let down = ChannelBehaviour {
        outages: vec![Outage {
            start: Duration::ZERO,
            duration: Duration::from_secs(60),
        }],
        ..fixed(0)
    };
    let sim = start(SimConfig {
        sms: down,
        ..all(fixed(0))
    })
    .await;
    let r = sim.send("sms", "a:sms").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(
        sim.send("email", "a:email").await.status(),
        200,
        "other channels are unaffected"
    );

    let r = sim
        .http
        .put(format!("{}/admin/channels/sms", sim.url))
        .json(&fixed(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim.send("sms", "a:sms").await.status(), 200);
    let config: SimConfig = sim
        .http
        .get(format!("{}/admin/config", sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config.sms, fixed(1));

    // An outage that starts later counts from the moment it was applied.
    let later = ChannelBehaviour {
        outages: vec![Outage {
            start: Duration::from_secs(1),
            duration: Duration::from_secs(1),
        }],
        ..fixed(0)
    };
    let applied = Instant::now();
    sim.http
        .put(format!("{}/admin/channels/push", sim.url))
        .json(&later)
        .send()
        .await
        .unwrap();
    assert_eq!(sim.send("push", "b:push").await.status(), 200);
    tokio::time::sleep_until((applied + Duration::from_millis(1500)).into()).await;
    assert_eq!(sim.send("push", "c:push").await.status(), 503);
    tokio::time::sleep_until((applied + Duration::from_millis(2500)).into()).await;
    assert_eq!(sim.send("push", "d:push").await.status(), 200);
}

#[tokio::test]
async fn bad_admin_and_send_requests_get_json_errors() {
    let sim = start(SimConfig::default()).await;
    let cases = [
        (
            sim.http.put(format!("{}/admin/config", sim.url)).body("{"),
            400,
        ),
        (
            sim.http
                .put(format!("{}/admin/config", sim.url))
                .body(r#"{"email": {"latency": 5}}"#),
            422,
        ),
        (
            sim.http
                .put(format!("{}/admin/channels/sms", sim.url))
                .json(&ChannelBehaviour {
                    error_rate: 2.0,
                    ..fixed(0)
                }),
            422,
        ),
        (
            sim.http
                .put(format!("{}/admin/channels/fax", sim.url))
                .json(&fixed(0)),
            404,
        ),
        (
            sim.http
                .post(format!("{}/send/fax", sim.url))
                .header("Idempotency-Key", "k")
                .body("{}"),
            404,
        ),
        (
            sim.http
                .post(format!("{}/send/email", sim.url))
                .json(&json!({"registration_id": Uuid::nil(), "to": "x"})),
            400,
        ),
        (
            sim.http
                .post(format!("{}/send/email", sim.url))
                .header("Idempotency-Key", "k")
                .body("{}"),
            422,
        ),
        (sim.http.get(format!("{}/nope", sim.url)), 404),
    ];
    for (i, (request, want)) in cases.into_iter().enumerate() {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "case {i}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "case {i}: {body}");
    }
    assert_eq!(
        sim.summary().await,
        Summary::default(),
        "nothing bad reached the ledger"
    );
}

#[tokio::test]
async fn reset_clears_the_ledger_and_metrics_are_served() {
    let sim = start(all(fixed(0))).await;
    sim.send("email", "x:email").await;
    let metrics = sim
        .http
        .get(format!("{}/metrics", sim.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"provider_sim_sends_total{channel="email",outcome="delivered"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("provider_sim_latency_seconds_bucket"),
        "{metrics}"
    );
    let r = sim
        .http
        .post(format!("{}/admin/reset", sim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sim.summary().await, Summary::default());
}
