//! Server-side telemetry during a run: every second, the server's and the simulator's `/metrics`
//! and PostgreSQL's view of the design's database, so a report can show *why* (a full pool and
//! lock waits on the hot row, or a queue's depth and age).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prometheus_parse::{Labels, Value};
use results::{PgSample, TelemetrySample};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A sampler running in the background; [`Sampler::finish`] stops it and returns its samples.
#[derive(Debug)]
pub struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Vec<(SystemTime, TelemetrySample)>>,
}

impl Sampler {
    /// Samples `server_url`, `providers_url` and database `db_name` (through `pool`) every second.
    pub fn start(server_url: &str, providers_url: &str, pool: PgPool, db_name: &str) -> Self {
        let stop = CancellationToken::new();
        let (server, providers, db_name) = (
            server_url.to_string(),
            providers_url.to_string(),
            db_name.to_string(),
        );
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(900))
                .build()
                .unwrap_or_default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut samples = Vec::new();
            loop {
                tokio::select! {
                    _ = until.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let at = SystemTime::now();
                let (server, providers, postgres) = tokio::join!(
                    scrape(&http, &server),
                    scrape(&http, &providers),
                    sample_postgres(&pool, &db_name)
                );
                samples.push((
                    at,
                    TelemetrySample {
                        t: 0.0,
                        server,
                        providers,
                        postgres,
                    },
                ));
            }
            pool.close().await;
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling; times become seconds since `zero` (the run's zero).
    pub async fn finish(self, zero: SystemTime) -> Vec<TelemetrySample> {
        self.stop.cancel();
        let samples = self.task.await.unwrap_or_default();
        samples
            .into_iter()
            .map(|(at, mut s)| {
                s.t = match at.duration_since(zero) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                s
            })
            .collect()
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => parse_prometheus(&r.text().await.unwrap_or_default()),
        Err(_) => BTreeMap::new(),
    }
}

/// The samples of a Prometheus text exposition, by series: `name{label="value",…}` with the labels
/// in name order, as the servers print them (`results::TelemetrySample` keys). Histogram buckets and
/// summary quantiles are left out; their sums and counts stay.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    // Reading lines from a string cannot fail, so neither can the parse.
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return BTreeMap::new();
    };
    scrape
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(_) | Value::Summary(_) => return None,
            };
            // Buckets and quantiles of a metric whose `# TYPE` line is missing come as plain samples.
            let le = sample.metric.ends_with("_bucket") && sample.labels.get("le").is_some();
            if le || sample.labels.get("quantile").is_some() {
                return None;
            }
            Some((series_key(&sample.metric, &sample.labels), value))
        })
        .collect()
}

/// `name` or `name{a="x",b="y"}`, labels sorted by name (the parser keeps them in a hash map).
fn series_key(name: &str, labels: &Labels) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let sorted: BTreeMap<&String, &String> = labels.iter().collect();
    let labels: Vec<String> = sorted
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

async fn sample_postgres(pool: &PgPool, db_name: &str) -> PgSample {
    let activity: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT coalesce(state, 'unknown'),
                CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'none') ELSE '' END,
                count(*)
           FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid()
          GROUP BY 1, 2",
    )
    .bind(db_name)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let mut sample = PgSample::default();
    for (state, wait, n) in activity {
        *sample.connections.entry(state).or_default() += n as u64;
        if !wait.is_empty() {
            *sample.wait_events.entry(wait).or_default() += n as u64;
        }
    }
    sample.locks_waiting = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE NOT l.granted AND d.datname = $1",
    )
    .bind(db_name)
    .fetch_one(pool)
    .await
    .unwrap_or(0) as u64;
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_becomes_series() {
        let text = "# HELP x y\n# TYPE fanbench_pool_waiting gauge\nfanbench_pool_waiting 3\n\
                    fanbench_phase_seconds_bucket{phase=\"db\",le=\"0.1\"} 4\n\
                    fanbench_phase_seconds_sum{phase=\"db\"} 0.25\n\
                    fanbench_queue_depth{channel=\"sms\"} 12\n";
        let series = parse_prometheus(text);
        assert_eq!(series.get("fanbench_pool_waiting"), Some(&3.0));
        assert_eq!(
            series.get("fanbench_phase_seconds_sum{phase=\"db\"}"),
            Some(&0.25)
        );
        assert_eq!(
            series.get("fanbench_queue_depth{channel=\"sms\"}"),
            Some(&12.0)
        );
        assert_eq!(series.len(), 3, "buckets are left out: {series:?}");
    }

    #[test]
    fn summaries_lose_their_quantiles_and_labels_are_put_in_name_order() {
        let text = "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n\
                    # TYPE c counter\nc{outcome=\"error\",channel=\"sms\"} 4\n";
        let series = parse_prometheus(text);
        let want = [
            ("c{channel=\"sms\",outcome=\"error\"}", 4.0),
            ("s_count", 3.0),
            ("s_sum", 2.0),
        ];
        assert_eq!(series, want.map(|(k, v)| (k.to_string(), v)).into());
    }

    /// Each server's real `/metrics` answer and the series the hand-written parser this module
    /// used before made of it, a `name{labels}<tab>value` line each (fixtures/metrics/README.md).
    const REAL: [(&str, &str, &str); 3] = [
        (
            "sync",
            include_str!("../fixtures/metrics/sync.prom"),
            include_str!("../fixtures/metrics/sync.series.tsv"),
        ),
        (
            "async",
            include_str!("../fixtures/metrics/async.prom"),
            include_str!("../fixtures/metrics/async.series.tsv"),
        ),
        (
            "providers",
            include_str!("../fixtures/metrics/providers.prom"),
            include_str!("../fixtures/metrics/providers.series.tsv"),
        ),
    ];

    #[test]
    fn real_metrics_give_the_series_the_old_parser_gave() {
        for (server, text, old) in REAL {
            // Read with the standard library's exact float parsing, as the old parser did.
            let old: BTreeMap<String, f64> = old
                .lines()
                .map(|l| {
                    let (series, value) = l.split_once('\t').unwrap();
                    (series.to_string(), value.parse().unwrap())
                })
                .collect();
            assert_eq!(parse_prometheus(text), old, "{server}");
        }
    }

    /// The keys are those of the committed smoke run's telemetry.json, which the reports read.
    #[test]
    fn real_metrics_give_the_keys_of_the_smoke_telemetry() {
        let smoke: results::Telemetry =
            serde_json::from_str(include_str!("../../results/fixtures/smoke/telemetry.json"))
                .unwrap();
        let keys = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
        let parsed = |server: usize| parse_prometheus(REAL[server].1);
        for (design, server) in [("sync", 0), ("async", 1)] {
            let last = smoke.designs[design].samples.last().unwrap();
            assert_eq!(keys(&parsed(server)), keys(&last.server), "{design}");
            assert_eq!(keys(&parsed(2)), keys(&last.providers), "{design}");
        }
    }
}
