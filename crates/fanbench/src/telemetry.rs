//! Server-side telemetry during a run: every second, the server's and the simulator's `/metrics`
//! and PostgreSQL's view of the design's database, so a report can show *why* (a full pool and
//! lock waits on the hot row, or a queue's depth and age), and the whole machine's CPU (who else
//! took the cores).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prometheus_parse::{Labels, Value};
use results::{MachineSample, PgSample, TelemetrySample};
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
                // Read at the sample's time stamp: its rates are taken between time stamps.
                let machine = sample_machine();
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
                        machine,
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

/// The machine's CPU now, from `/proc`; `None` off Linux or when `/proc/stat` cannot be read.
fn sample_machine() -> Option<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let pressure = std::fs::read_to_string("/proc/pressure/cpu").ok();
    parse_machine(
        &stat,
        pressure.as_deref(),
        crate::usage::clock_ticks().ok()?,
    )
}

/// A [`MachineSample`] from `/proc/stat` (times in clock ticks of `ticks_per_s`) and
/// `/proc/pressure/cpu` (microseconds).
pub fn parse_machine(
    stat: &str,
    pressure: Option<&str>,
    ticks_per_s: u64,
) -> Option<MachineSample> {
    let mut sample = MachineSample::default();
    let mut busy = None;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            // user nice system idle iowait irq softirq steal (guest times are inside user/nice).
            Some("cpu") => {
                let ticks: Vec<u64> = fields.take(8).map_while(|f| f.parse().ok()).collect();
                if ticks.len() < 5 {
                    return None;
                }
                let total: u64 = ticks.iter().sum();
                busy = Some((total - ticks[3] - ticks[4]) as f64 / ticks_per_s.max(1) as f64);
            }
            Some(cpu) if cpu.starts_with("cpu") => sample.cores += 1,
            Some("procs_running") => {
                sample.procs_running = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            }
            _ => {}
        }
    }
    sample.busy_s = busy?;
    sample.cpu_stall_s = pressure.and_then(|p| {
        let some = p.lines().find(|l| l.starts_with("some "))?;
        let total = some
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?;
        total.parse::<f64>().ok().map(|us| us / 1e6)
    });
    Some(sample)
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
    fn the_machine_is_read_from_proc_stat_and_cpu_pressure() {
        let stat = "cpu  100 20 30 400 50 5 5 0 0 0\ncpu0 50 10 15 200 25 2 3 0 0 0\n\
                    cpu1 50 10 15 200 25 3 2 0 0 0\nintr 1 2\nctxt 9\nprocs_running 5\n\
                    procs_blocked 0\n";
        let pressure = "some avg10=86.83 avg60=58.68 avg300=27.33 total=131003396\n\
                        full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let m = parse_machine(stat, Some(pressure), 100).unwrap();
        assert_eq!(m.cores, 2);
        assert_eq!(m.procs_running, 5);
        // Busy: everything but idle (400) and iowait (50) of 610 ticks, at 100 a second.
        assert!((m.busy_s - 1.6).abs() < 1e-9, "{m:?}");
        assert_eq!(m.cpu_stall_s, Some(131.003396));
        // No pressure file: the rest still reads; no cpu line: nothing does.
        assert_eq!(parse_machine(stat, None, 100).unwrap().cpu_stall_s, None);
        assert_eq!(parse_machine("procs_running 3\n", None, 100), None);
    }

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
