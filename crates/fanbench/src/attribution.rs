//! What gave out at a capacity step: [`summarise`] reduces the step's telemetry (one scrape a
//! second) over its measurement window to a figure or two per resource ([`Figures`]), and
//! [`judge`] names the resource at its limit from those figures alone. `judge` is pure, so every
//! rule is tested on figures written by hand, without a run.
//!
//! **Every threshold is derived from what the resource is, not fitted to a run.** Two ideas do
//! all the work:
//!
//! - *A queue is saturated when all its servers are busy and work is waiting.* A pool is
//!   saturated when every connection is in use while a request waits for one; a channel's send
//!   slots when every slot is busy (up to what the claim loop leaves free by design) while
//!   deliveries wait for one; a lock when the work in the database waits on it. One such reading
//!   is an instant; a knee is a steady state.
//! - *"For most of the window" means in more than half of the measurement window's samples.* A
//!   knee is a rate the design cannot keep up with for the window; a resource saturated for less
//!   than half of it did not hold the rate down for the window, and one saturated for more of it
//!   did, whatever the rest did. No other fraction has a reason behind it.
//!
//! The rules are taken in an order of cause before effect: a lock holds the connections that
//! wait on it, so it comes before the pool; what holds a saturated pool's connections (a
//! provider's calls, or CPU work on a machine without a free core) is named instead of the pool
//! when it is most of the hold; a provider that refuses sends is the limit whatever the slots
//! sending to it; the CPU, which every process shares, comes last.
//!
//! This module knows nothing of the search; `capacity` calls it at the steps the search found.

use std::collections::BTreeMap;

use results::TelemetrySample;
use results::capacity::Bottleneck;

use crate::steps::cores_text;

// ---------------------------------------------------------------------------------------------
// The figures

/// One step, reduced to what the rules read. Counts of samples are over the measurement window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub offered_rps: u32,
    /// Samples in the measurement window (one a second).
    pub samples: usize,
    /// The driver kept to its schedule (its send lag p99 stayed under its threshold).
    pub trustworthy: bool,
    pub send_lag_p99_ms: f64,
    /// Absent when the pool's size is unknown (`--target`).
    pub pool: Option<Pool>,
    /// What a sign-up's pooled connection was held for, from the server's phase times.
    pub hold: Option<Hold>,
    pub channels: BTreeMap<String, Channel>,
    pub providers: BTreeMap<String, Provider>,
    pub locks: Locks,
    pub cpu: Cpu,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pool {
    pub size: f64,
    /// Samples with every connection in use and at least one request waiting for one.
    pub saturated: usize,
    pub in_use_mean: f64,
    /// Connections in use, on average over the saturated samples.
    pub in_use_saturated_mean: f64,
    pub waiting_mean: f64,
    pub waiting_max: f64,
    /// A request's mean wait for a connection over the window.
    pub wait_mean_ms: Option<f64>,
}

/// Milliseconds a sign-up held its connection, by phase (`provider_sms`, `db`, …), over the
/// window: each phase's time ÷ the sign-ups that reached the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hold {
    pub phases: BTreeMap<String, f64>,
}

impl Hold {
    pub fn total_ms(&self) -> f64 {
        self.phases.values().sum()
    }

    /// The provider phase that held the connection longest: its channel and milliseconds.
    fn top_provider(&self) -> Option<(&str, f64)> {
        self.phases
            .iter()
            .filter_map(|(p, ms)| Some((p.strip_prefix("provider_")?, *ms)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Milliseconds held for anything but provider calls (the database work, and the CPU it takes).
    fn outside_providers_ms(&self) -> f64 {
        self.phases
            .iter()
            .filter(|(p, _)| !p.starts_with("provider_"))
            .map(|(_, ms)| ms)
            .sum()
    }

    fn text(&self) -> String {
        let total = self.total_ms();
        let mut parts: Vec<(&String, &f64)> = self.phases.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = parts
            .iter()
            .map(|(p, ms)| format!("{p} {ms:.0} ms ({:.0} %)", share(**ms, total) * 100.0))
            .collect();
        format!(
            "each sign-up held its connection {total:.0} ms: {}",
            parts.join(", ")
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Channel {
    /// Samples where the channel's send slots were saturated (see [`summarise`]).
    pub saturated: usize,
    /// In-flight sends as a share of the limit, on average.
    pub in_flight_share_mean: f64,
    pub limit_first: f64,
    pub limit_last: f64,
    /// Slots a saturated channel may leave free by design at a sample (the claim loop's refill).
    pub refill_band: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provider {
    /// Seconds of the window (between two samples) in which the provider answered 429.
    pub refusing: usize,
    /// Seconds between the window's samples.
    pub intervals: usize,
    /// 429s over the window.
    pub refused: f64,
    /// Sends it delivered a second over the window.
    pub delivered_per_s: f64,
    /// Its own mean latency over the window (the simulator's figure), milliseconds.
    pub latency_mean_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Locks {
    /// Samples where most of the design's active database work waited on a lock.
    pub bound: usize,
    /// Backends waiting on a heavyweight lock (`wait_event_type = 'Lock'`), on average.
    pub waiting_mean: f64,
    /// Active backends, on average.
    pub active_mean: f64,
    /// Lock waits by wait event (`transactionid`, `tuple`, `relation`, …), on average.
    pub events: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cpu {
    /// Cores the machine has.
    pub cores: f64,
    /// Cores busy over the window, the whole machine's (every process, the run's or not).
    pub busy: Option<f64>,
    /// The share of the window in which some runnable task waited for a core (CPU pressure).
    pub stall_share: Option<f64>,
    /// Without pressure figures: samples with more tasks runnable than cores, and of how many.
    pub runnable_over_cores: Option<(usize, usize)>,
    /// Cores each of the run's processes used over the whole run.
    pub run: BTreeMap<String, f64>,
}

impl Cpu {
    /// Demand for cores exceeded the cores for most of the window: some runnable task waited for
    /// one more than half the time (pressure stall information measures exactly that share); or,
    /// where the kernel keeps no such figure, more tasks were runnable than there are cores in
    /// most samples (the sampler counts itself, and it is demand too). Without machine-wide
    /// figures the CPU is never named: the run's own processes' cores are averaged over start-up
    /// and drain, and say nothing of what other processes took.
    pub fn contended(&self) -> bool {
        match (self.stall_share, self.runnable_over_cores) {
            (Some(s), _) => s > 0.5,
            (None, Some((n, of))) => most(n, of),
            (None, None) => false,
        }
    }

    fn text(&self) -> String {
        let mut s = match self.busy {
            Some(b) => format!("{b:.2} of {:.0} cores busy machine-wide", self.cores),
            None => format!("{:.0} cores", self.cores),
        };
        if let Some(st) = self.stall_share {
            s.push_str(&format!(
                "; a runnable task waited for a core {:.0} % of the time",
                st * 100.0
            ));
        } else if let Some((n, of)) = self.runnable_over_cores {
            s.push_str(&format!(
                "; more tasks runnable than cores in {n} of {of} samples"
            ));
        }
        let run: f64 = self.run.values().sum();
        if !self.run.is_empty() {
            s.push_str(&format!(
                "; the run's processes {run:.2} over the whole run ({})",
                cores_text(&self.run)
            ));
        }
        s
    }
}

/// More than half.
fn most(n: usize, of: usize) -> bool {
    of > 0 && 2 * n > of
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

// ---------------------------------------------------------------------------------------------
// Reading the telemetry

/// What [`summarise`] needs besides the samples: the step's own figures and the design's settings.
#[derive(Debug, Clone, Default)]
pub struct StepInput {
    pub offered_rps: u32,
    pub trustworthy: bool,
    pub send_lag_p99_ms: f64,
    /// Cores each of the run's processes used, over the whole run.
    pub cores: BTreeMap<String, f64>,
    /// The measurement window, seconds on the telemetry's clock.
    pub from_s: f64,
    pub to_s: f64,
    /// The design's pool size (0: unknown).
    pub pool_size: u32,
    /// The design's claim batch, when its workers claim in batches (the async design).
    pub claim_batch: Option<u32>,
    /// Cores the machine has, when the telemetry does not say.
    pub cores_available: f64,
}

/// A label's value in a series key such as `x{channel="sms",outcome="rate_limited"}`.
pub fn label<'a>(key: &'a str, name: &str) -> Option<&'a str> {
    let inner = key.split_once('{')?.1.strip_suffix('}')?;
    inner.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Slots a saturated channel may show free at a sample. The async design's claim loop, once
/// fewer than half a claim (`⌈min(batch, limit) ÷ 2⌉`) are free, waits for that many before it
/// claims again (worker.rs: one claim query per finished send would cost a commit each), so its
/// in-flight gauge reads anywhere from the limit down to the limit less half a claim while every
/// slot it means to fill is busy. Without batched claims (the broker's consumer hands each
/// message to the next free slot) a gauge read between one send ending and the next starting is
/// one short.
fn refill_band(limit: f64, batch: Option<u32>) -> f64 {
    match batch {
        Some(b) => (f64::from(b.max(1)).min(limit) / 2.0).ceil(),
        None => 1.0,
    }
}

/// Reduces `samples` (the step's telemetry) over the measurement window to per-resource figures.
pub fn summarise(input: &StepInput, samples: &[TelemetrySample]) -> Figures {
    let window: Vec<&TelemetrySample> = samples
        .iter()
        .filter(|s| s.t >= input.from_s && s.t <= input.to_s)
        .collect();
    // The sample just before the window, for the first interval's counters and limits.
    let before = samples.iter().rev().find(|s| s.t < input.from_s);
    let server = |s: &TelemetrySample, k: &str| s.server.get(k).copied();
    let (first, last) = (before.or(window.first().copied()), window.last().copied());

    // The pool: every connection in use while a request waits.
    let pool = (input.pool_size > 0).then(|| {
        let size = f64::from(input.pool_size);
        let read: Vec<(f64, f64)> = window
            .iter()
            .map(|s| {
                let open = server(s, "fanbench_pool_connections{state=\"open\"}").unwrap_or(0.0);
                let idle = server(s, "fanbench_pool_connections{state=\"idle\"}").unwrap_or(0.0);
                let waiting = server(s, "fanbench_pool_waiting").unwrap_or(0.0);
                (open - idle, waiting)
            })
            .collect();
        let saturated: Vec<f64> = read
            .iter()
            .filter(|(u, w)| *u >= size && *w >= 1.0)
            .map(|(u, _)| *u)
            .collect();
        let phase = |s: Option<&TelemetrySample>, what: &str| {
            s.and_then(|s| {
                server(
                    s,
                    &format!("fanbench_phase_seconds_{what}{{phase=\"pool_acquire\"}}"),
                )
            })
        };
        let delta = |what: &str| Some(phase(last, what)? - phase(first, what).unwrap_or(0.0));
        let wait_mean_ms = match (delta("sum"), delta("count")) {
            (Some(sum), Some(n)) if n > 0.0 => Some(sum / n * 1000.0),
            _ => None,
        };
        Pool {
            size,
            saturated: saturated.len(),
            in_use_mean: mean(read.iter().map(|(u, _)| *u)),
            in_use_saturated_mean: mean(saturated.iter().copied()),
            waiting_mean: mean(read.iter().map(|(_, w)| *w)),
            waiting_max: read.iter().map(|(_, w)| *w).fold(0.0, f64::max),
            wait_mean_ms,
        }
    });

    // What a connection was held for: the phases timed while it is held (the database work and,
    // in the sync design, the provider calls), per sign-up that reached the database, over the
    // window.
    let hold = last.and_then(|last| {
        let delta = |k: &str| {
            let end = server(last, k)?;
            Some(end - first.and_then(|f| server(f, k)).unwrap_or(0.0))
        };
        let signups = delta("fanbench_phase_seconds_count{phase=\"db\"}").filter(|n| *n > 0.0)?;
        let phases: BTreeMap<String, f64> = last
            .server
            .keys()
            .filter(|k| k.starts_with("fanbench_phase_seconds_sum{"))
            .filter_map(|k| {
                // The database work and the provider calls; not the acquire before the hold,
                // nor the handler's whole time around it.
                let phase =
                    label(k, "phase").filter(|p| *p == "db" || p.starts_with("provider_"))?;
                Some((phase.to_string(), delta(k)? / signups * 1000.0))
            })
            .collect();
        (!phases.is_empty()).then_some(Hold { phases })
    });

    // Channels: each one's send slots.
    let mut channels: BTreeMap<String, Channel> = BTreeMap::new();
    let mut shares: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut previous: Option<&TelemetrySample> = before;
    for s in &window {
        for (k, in_flight) in &s.server {
            if !k.starts_with("fanbench_deliveries_in_flight{") {
                continue;
            }
            let Some(c) = label(k, "channel") else {
                continue;
            };
            let key = |name: &str| format!("{name}{{channel=\"{c}\"}}");
            let Some(limit) =
                server(s, &key("fanbench_deliveries_concurrency_limit")).filter(|l| *l > 0.0)
            else {
                continue;
            };
            // An adaptive limit grows only after a window of calls in which every slot was busy
            // and the queue had more due (limit.rs): a limit higher than a second ago is a
            // channel that was saturated in that second.
            let grew = previous
                .and_then(|p| server(p, &key("fanbench_deliveries_concurrency_limit")))
                .is_some_and(|p| limit > p);
            // Work waiting for a slot: the channel's pending deliveries beyond those in flight.
            // A design that does not report its queue is taken as having some.
            let waiting = server(s, &key("fanbench_queue_depth")).is_none_or(|d| d > *in_flight);
            let band = refill_band(limit, input.claim_batch);
            let at_limit = *in_flight >= limit - band;
            let ch = channels.entry(c.to_string()).or_insert_with(|| Channel {
                limit_first: limit,
                ..Default::default()
            });
            ch.limit_last = limit;
            ch.refill_band = band;
            if grew || (at_limit && waiting) {
                ch.saturated += 1;
            }
            shares
                .entry(c.to_string())
                .or_default()
                .push(in_flight / limit);
        }
        previous = Some(s);
    }
    for (c, v) in shares {
        if let Some(ch) = channels.get_mut(&c) {
            ch.in_flight_share_mean = mean(v);
        }
    }

    // Providers: seconds in which each answered 429, from the simulator's counters.
    let mut providers: BTreeMap<String, Provider> = BTreeMap::new();
    let points: Vec<&TelemetrySample> = before.into_iter().chain(window.iter().copied()).collect();
    let outcome = |s: &TelemetrySample, c: &str, o: &str| {
        s.providers
            .get(&format!(
                "provider_sim_sends_total{{channel=\"{c}\",outcome=\"{o}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    let names: Vec<String> = points
        .iter()
        .flat_map(|s| s.providers.keys())
        .filter(|k| k.starts_with("provider_sim_sends_total{"))
        .filter_map(|k| label(k, "channel").map(str::to_string))
        .collect();
    for c in names {
        if providers.contains_key(&c) {
            continue;
        }
        let mut p = Provider::default();
        for pair in points.windows(2) {
            let refused =
                outcome(pair[1], &c, "rate_limited") - outcome(pair[0], &c, "rate_limited");
            p.intervals += 1;
            if refused > 0.0 {
                p.refusing += 1;
            }
        }
        if let (Some(a), Some(b)) = (points.first(), points.last()) {
            p.refused = outcome(b, &c, "rate_limited") - outcome(a, &c, "rate_limited");
            let seconds = b.t - a.t;
            if seconds > 0.0 {
                p.delivered_per_s =
                    (outcome(b, &c, "delivered") - outcome(a, &c, "delivered")) / seconds;
            }
            let latency = |s: &TelemetrySample, what: &str| {
                s.providers
                    .get(&format!(
                        "provider_sim_latency_seconds_{what}{{channel=\"{c}\"}}"
                    ))
                    .copied()
                    .unwrap_or(0.0)
            };
            let n = latency(b, "count") - latency(a, "count");
            if n > 0.0 {
                p.latency_mean_ms = Some((latency(b, "sum") - latency(a, "sum")) / n * 1000.0);
            }
        }
        providers.insert(c, p);
    }

    // PostgreSQL: backends waiting on a heavyweight lock against the active ones.
    let mut locks = Locks::default();
    let mut events: BTreeMap<String, f64> = BTreeMap::new();
    let mut waits = Vec::new();
    let mut actives = Vec::new();
    for s in &window {
        let waiting: f64 = s
            .postgres
            .wait_events
            .iter()
            .filter_map(|(k, v)| {
                let event = k.strip_prefix("Lock:")?;
                *events.entry(event.to_string()).or_default() += *v as f64;
                Some(*v as f64)
            })
            .sum();
        let active = s.postgres.connections.get("active").copied().unwrap_or(0) as f64;
        // The lock is what the database work waits for when most of the active backends (the
        // waiters among them) wait on it.
        if waiting >= 1.0 && 2.0 * waiting > active {
            locks.bound += 1;
        }
        waits.push(waiting);
        actives.push(active);
    }
    locks.waiting_mean = mean(waits);
    locks.active_mean = mean(actives);
    let n = window.len().max(1) as f64;
    locks.events = events.into_iter().map(|(k, v)| (k, v / n)).collect();

    // The machine's CPU, whoever used it.
    let machines: Vec<(f64, results::MachineSample)> = points
        .iter()
        .filter_map(|s| Some((s.t, s.machine?)))
        .collect();
    let mut cpu = Cpu {
        cores: machines
            .last()
            .map_or(input.cores_available, |(_, m)| f64::from(m.cores)),
        run: input.cores.clone(),
        ..Default::default()
    };
    if let (Some((t0, a)), Some((t1, b))) = (machines.first(), machines.last()) {
        let seconds = t1 - t0;
        if seconds > 0.0 {
            cpu.busy = Some((b.busy_s - a.busy_s) / seconds);
            cpu.stall_share = a
                .cpu_stall_s
                .zip(b.cpu_stall_s)
                .map(|(x, y)| ((y - x) / seconds).clamp(0.0, 1.0));
        }
        let in_window: Vec<&results::MachineSample> = machines
            .iter()
            .filter(|(t, _)| *t >= input.from_s)
            .map(|(_, m)| m)
            .collect();
        cpu.runnable_over_cores = Some((
            in_window
                .iter()
                .filter(|m| m.procs_running > m.cores)
                .count(),
            in_window.len(),
        ));
    }

    Figures {
        offered_rps: input.offered_rps,
        samples: window.len(),
        trustworthy: input.trustworthy,
        send_lag_p99_ms: input.send_lag_p99_ms,
        pool,
        hold,
        channels,
        providers,
        locks,
        cpu,
    }
}

// ---------------------------------------------------------------------------------------------
// The rules

/// The resource at its limit at a step that failed, with its evidence and the figures behind it.
/// The first rule that holds, in this order (see the module's documentation for why):
///
/// 1. **The driver** fell behind its schedule: the step says nothing about the design. Named the
///    CPU instead when the machine's cores were contended (the driver starved, not slow).
/// 2. **Database locks**: most of the active backends waited on a heavyweight lock, for most of
///    the window.
/// 3. **The connection pool**: every connection in use with a request waiting, for most of the
///    window. Little's law: the pool serves at most size ÷ hold sign-ups a second, so what holds
///    the connection is named instead when it is more than half the hold, more than everything
///    else together: **a provider's latency**, when its calls are; **the CPU**, when the work
///    outside provider calls is and the machine's cores were contended.
/// 4. **A provider's rate limit**: it answered 429 in most seconds of the window (a burst refused
///    now and then is not a rate the design is held to).
/// 5. **A channel's send slots**: saturated for most of the window (every slot busy but what the
///    claim loop leaves free, deliveries waiting; or its adaptive limit growing, which it does only
///    while saturated).
/// 6. **The CPU**: demand for cores exceeded the cores for most of the window ([`Cpu::contended`]).
pub fn judge(f: &Figures) -> Bottleneck {
    let mut evidence = Vec::new();
    let n = f.samples;
    let seconds = |k: usize| format!("{k} of {n} s of the measurement window");
    let resource = 'rule: {
        if !f.trustworthy {
            evidence.push(format!(
                "the driver's send lag p99 was {:.1} ms: it could not offer {}/s on schedule, so the step is inconclusive about the design",
                f.send_lag_p99_ms, f.offered_rps
            ));
            if f.cpu.contended() {
                evidence.push(format!(
                    "the machine's cores were contended: {}",
                    f.cpu.text()
                ));
                break 'rule "CPU".to_string();
            }
            break 'rule "driver".to_string();
        }
        if most(f.locks.bound, n) {
            let top = f
                .locks
                .events
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or("lock", |(e, _)| e.as_str());
            evidence.push(format!(
                "most of the database's active work waited on a lock in {}: {:.1} backends waiting on average, of {:.1} active",
                seconds(f.locks.bound),
                f.locks.waiting_mean,
                f.locks.active_mean
            ));
            let events: Vec<String> = f
                .locks
                .events
                .iter()
                .map(|(e, v)| format!("Lock:{e} {v:.1}"))
                .collect();
            evidence.push(format!("waits by event, on average: {}", events.join(", ")));
            break 'rule format!("database locks ({top})");
        }
        if let Some(p) = f.pool.as_ref().filter(|p| most(p.saturated, n)) {
            evidence.push(format!(
                "{:.1} of {:.0} connections in use with requests waiting in {} ({:.1} in use over the window); {:.1} requests waiting for one on average, at most {:.0}",
                p.in_use_saturated_mean,
                p.size,
                seconds(p.saturated),
                p.in_use_mean,
                p.waiting_mean,
                p.waiting_max
            ));
            if let Some(w) = p.wait_mean_ms {
                evidence.push(format!("mean wait for a connection {w:.0} ms"));
            }
            let Some(hold) = &f.hold else {
                break 'rule "connection pool".to_string();
            };
            let total = hold.total_ms();
            evidence.push(hold.text());
            if let Some((c, ms)) = hold.top_provider().filter(|(_, ms)| *ms > total / 2.0) {
                evidence.insert(
                    0,
                    format!(
                        "the {c} provider's calls held each sign-up's connection {ms:.0} ms of {total:.0} ({:.0} %): more than everything else it is held for, so the pool's limit (size ÷ hold) is that provider's latency",
                        share(ms, total) * 100.0
                    ),
                );
                if let Some(l) = f.providers.get(c).and_then(|p| p.latency_mean_ms) {
                    evidence.push(format!("the {c} provider answered in {l:.0} ms on average"));
                }
                break 'rule format!("provider latency ({c})");
            }
            if hold.outside_providers_ms() > total / 2.0 && f.cpu.contended() {
                evidence.push(format!(
                    "the connections were held mostly for work outside provider calls, on a machine whose cores were contended: {}",
                    f.cpu.text()
                ));
                break 'rule "CPU".to_string();
            }
            break 'rule "connection pool".to_string();
        }
        if let Some((c, p)) = f
            .providers
            .iter()
            .filter(|(_, p)| most(p.refusing, p.intervals))
            .max_by(|a, b| a.1.refused.total_cmp(&b.1.refused))
        {
            evidence.push(format!(
                "the {c} provider answered 429 in {} of {} s of the measurement window, {:.0} times, while delivering {:.1} sends a second",
                p.refusing, p.intervals, p.refused, p.delivered_per_s
            ));
            break 'rule format!("provider rate limit ({c})");
        }
        if let Some((c, ch)) = f
            .channels
            .iter()
            .filter(|(_, ch)| most(ch.saturated, n))
            .max_by(|a, b| {
                (a.1.saturated, a.1.in_flight_share_mean)
                    .partial_cmp(&(b.1.saturated, b.1.in_flight_share_mean))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        {
            let limit = if ch.limit_last > ch.limit_first {
                format!(
                    "its send limit grew from {:.0} to {:.0} (it grows only while the channel is saturated)",
                    ch.limit_first, ch.limit_last
                )
            } else {
                format!("its send limit {:.0}", ch.limit_last)
            };
            evidence.push(format!(
                "{c}: send slots saturated in {} (in flight within {:.0} of the limit with deliveries waiting, or the limit growing); in-flight sends at {:.0} % of the limit on average; {limit}",
                seconds(ch.saturated),
                ch.refill_band,
                ch.in_flight_share_mean * 100.0
            ));
            break 'rule format!("channel concurrency ({c})");
        }
        if f.cpu.contended() {
            evidence.push(format!(
                "demand for cores exceeded the cores: {}",
                f.cpu.text()
            ));
            break 'rule "CPU".to_string();
        }
        evidence.push("no resource was at its limit for most of the measurement window".into());
        "unclear".to_string()
    };
    if resource != "CPU" && (f.cpu.busy.is_some() || !f.cpu.run.is_empty()) {
        evidence.push(format!("CPU: {}", f.cpu.text()));
    }
    Bottleneck {
        offered_rps: f.offered_rps,
        resource,
        evidence,
        signals: signals(f),
    }
}

/// The figures behind the evidence, by name (capacity.json's `signals`).
fn signals(f: &Figures) -> BTreeMap<String, f64> {
    let mut s = BTreeMap::new();
    let n = f.samples.max(1) as f64;
    s.insert("window_samples".into(), f.samples as f64);
    s.insert("send_lag_p99_ms".into(), f.send_lag_p99_ms);
    if let Some(p) = &f.pool {
        s.insert("pool_size".into(), p.size);
        s.insert("pool_in_use_mean".into(), p.in_use_mean);
        s.insert("pool_waiting_mean".into(), p.waiting_mean);
        s.insert("pool_waiting_max".into(), p.waiting_max);
        s.insert("pool_saturated_share".into(), p.saturated as f64 / n);
        if let Some(w) = p.wait_mean_ms {
            s.insert("pool_wait_mean_ms".into(), w);
        }
    }
    if let Some(h) = &f.hold {
        s.insert("hold_ms".into(), h.total_ms());
        for (p, ms) in &h.phases {
            s.insert(format!("hold_{p}_ms"), *ms);
        }
    }
    for (c, ch) in &f.channels {
        s.insert(
            format!("channel_{c}_in_flight_share_of_limit"),
            ch.in_flight_share_mean,
        );
        s.insert(
            format!("channel_{c}_saturated_share"),
            ch.saturated as f64 / n,
        );
        s.insert(format!("channel_{c}_limit_first"), ch.limit_first);
        s.insert(format!("channel_{c}_limit_last"), ch.limit_last);
    }
    for (c, p) in &f.providers {
        if p.refused > 0.0 {
            s.insert(format!("provider_{c}_429"), p.refused);
            s.insert(
                format!("provider_{c}_refusing_share"),
                share(p.refusing as f64, p.intervals as f64),
            );
        }
        if let Some(l) = p.latency_mean_ms {
            s.insert(format!("provider_{c}_latency_mean_ms"), l);
        }
    }
    s.insert("pg_lock_waits_mean".into(), f.locks.waiting_mean);
    s.insert("pg_lock_bound_share".into(), f.locks.bound as f64 / n);
    s.insert("cores_available".into(), f.cpu.cores);
    s.insert("cores_used".into(), f.cpu.run.values().sum());
    if let Some(b) = f.cpu.busy {
        s.insert("machine_cores_busy".into(), b);
    }
    if let Some(st) = f.cpu.stall_share {
        s.insert("cpu_stall_share".into(), st);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::{MachineSample, PgSample};

    /// A trustworthy step with a window of 9 samples and nothing at a limit.
    fn quiet() -> Figures {
        Figures {
            offered_rps: 40,
            samples: 9,
            trustworthy: true,
            send_lag_p99_ms: 0.5,
            pool: Some(Pool {
                size: 10.0,
                in_use_mean: 3.0,
                ..Default::default()
            }),
            cpu: Cpu {
                cores: 2.0,
                busy: Some(0.4),
                stall_share: Some(0.1),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pool_saturated(samples: usize) -> Option<Pool> {
        Some(Pool {
            size: 10.0,
            saturated: samples,
            in_use_mean: 10.0,
            in_use_saturated_mean: 10.0,
            waiting_mean: 12.0,
            waiting_max: 30.0,
            wait_mean_ms: Some(800.0),
        })
    }

    fn hold(phases: &[(&str, f64)]) -> Option<Hold> {
        Some(Hold {
            phases: phases.iter().map(|(p, ms)| (p.to_string(), *ms)).collect(),
        })
    }

    fn channel(saturated: usize, share: f64) -> Channel {
        Channel {
            saturated,
            in_flight_share_mean: share,
            limit_first: 4.0,
            limit_last: 4.0,
            refill_band: 2.0,
        }
    }

    fn refusing(seconds: usize) -> Provider {
        Provider {
            refusing: seconds,
            intervals: 9,
            refused: 40.0 * seconds as f64,
            delivered_per_s: 20.0,
            latency_mean_ms: Some(120.0),
        }
    }

    fn locks(bound: usize) -> Locks {
        Locks {
            bound,
            waiting_mean: 9.0,
            active_mean: 10.0,
            events: BTreeMap::from([("transactionid".to_string(), 9.0)]),
        }
    }

    fn stall(share: f64) -> Cpu {
        Cpu {
            stall_share: Some(share),
            busy: Some(2.0),
            ..quiet().cpu
        }
    }

    /// Each rule's cases: the figures, the resource named, and a phrase of its first evidence.
    #[test]
    fn each_rule_names_its_resource_for_most_of_the_window_and_not_for_less() {
        let sms_heavy = [
            ("provider_sms", 400.0),
            ("provider_email", 100.0),
            ("provider_push", 30.0),
            ("db", 5.0),
        ];
        // The simulator's default latencies: SMS just under half of the hold.
        let balanced = [
            ("provider_sms", 122.0),
            ("provider_email", 102.0),
            ("provider_push", 31.0),
            ("db", 5.0),
        ];
        let cases: Vec<(&str, Figures, &str, &str)> = vec![
            ("nothing at a limit", quiet(), "unclear", "no resource"),
            (
                "the driver fell behind on a quiet machine",
                Figures {
                    trustworthy: false,
                    send_lag_p99_ms: 40.0,
                    ..quiet()
                },
                "driver",
                "send lag p99 was 40.0 ms",
            ),
            (
                "the driver fell behind on a machine without a free core",
                Figures {
                    trustworthy: false,
                    cpu: stall(0.9),
                    pool: pool_saturated(9),
                    ..quiet()
                },
                "CPU",
                "send lag p99",
            ),
            (
                "a lock most of the work waited on, holding the pool's connections",
                Figures {
                    locks: locks(5),
                    pool: pool_saturated(9),
                    ..quiet()
                },
                "database locks (transactionid)",
                "waited on a lock in 5 of 9 s",
            ),
            (
                "lock waits in under half the window",
                Figures {
                    locks: locks(4),
                    ..quiet()
                },
                "unclear",
                "no resource",
            ),
            (
                "a pool saturated for most of the window, hold unknown",
                Figures {
                    pool: pool_saturated(5),
                    ..quiet()
                },
                "connection pool",
                "10.0 of 10 connections in use with requests waiting in 5 of 9 s",
            ),
            (
                "a pool saturated for under half of it",
                Figures {
                    pool: pool_saturated(4),
                    ..quiet()
                },
                "unclear",
                "no resource",
            ),
            (
                "a saturated pool held mostly by one provider's calls",
                Figures {
                    pool: pool_saturated(9),
                    hold: hold(&sms_heavy),
                    ..quiet()
                },
                "provider latency (sms)",
                "held each sign-up's connection 400 ms of 535 (75 %)",
            ),
            (
                "a saturated pool held by no phase for more than half",
                Figures {
                    pool: pool_saturated(9),
                    hold: hold(&balanced),
                    cpu: stall(0.9),
                    ..quiet()
                },
                "connection pool",
                "connections in use",
            ),
            (
                "a saturated pool held for database work on a contended machine",
                Figures {
                    pool: pool_saturated(9),
                    hold: hold(&[("db", 12.0)]),
                    cpu: stall(0.8),
                    ..quiet()
                },
                "CPU",
                "connections in use",
            ),
            (
                "a saturated pool held for database work on a machine with cores to spare",
                Figures {
                    pool: pool_saturated(9),
                    hold: hold(&[("db", 12.0)]),
                    ..quiet()
                },
                "connection pool",
                "connections in use",
            ),
            (
                "a provider refusing most seconds, its channel's slots busy with it",
                Figures {
                    providers: BTreeMap::from([("sms".to_string(), refusing(5))]),
                    channels: BTreeMap::from([("sms".to_string(), channel(9, 1.0))]),
                    ..quiet()
                },
                "provider rate limit (sms)",
                "answered 429 in 5 of 9 s",
            ),
            (
                "a provider refusing a burst",
                Figures {
                    providers: BTreeMap::from([("sms".to_string(), refusing(4))]),
                    ..quiet()
                },
                "unclear",
                "no resource",
            ),
            (
                "send slots saturated for most of the window",
                Figures {
                    channels: BTreeMap::from([
                        ("email".to_string(), channel(3, 0.5)),
                        ("sms".to_string(), channel(5, 0.7)),
                    ]),
                    ..quiet()
                },
                "channel concurrency (sms)",
                "send slots saturated in 5 of 9 s",
            ),
            (
                "send slots saturated for under half of it",
                Figures {
                    channels: BTreeMap::from([("sms".to_string(), channel(4, 0.9))]),
                    ..quiet()
                },
                "unclear",
                "no resource",
            ),
            (
                "demand for cores over the cores most of the time",
                Figures {
                    cpu: stall(0.6),
                    ..quiet()
                },
                "CPU",
                "demand for cores exceeded the cores",
            ),
            (
                "demand over the cores half the time",
                Figures {
                    cpu: stall(0.5),
                    ..quiet()
                },
                "unclear",
                "no resource",
            ),
            (
                "no pressure figures: more runnable tasks than cores in most samples",
                Figures {
                    cpu: Cpu {
                        stall_share: None,
                        runnable_over_cores: Some((5, 9)),
                        ..quiet().cpu
                    },
                    ..quiet()
                },
                "CPU",
                "more tasks runnable than cores in 5 of 9 samples",
            ),
            (
                "no machine-wide figures at all: the CPU is never named",
                Figures {
                    cpu: Cpu {
                        cores: 2.0,
                        run: BTreeMap::from([("postgres".to_string(), 2.0)]),
                        ..Default::default()
                    },
                    ..quiet()
                },
                "unclear",
                "no resource",
            ),
        ];
        for (what, figures, resource, says) in cases {
            let b = judge(&figures);
            assert_eq!(b.resource, resource, "{what}: {b:#?}");
            assert!(
                b.evidence.iter().any(|e| e.contains(says)),
                "{what}: {says:?} not in {:#?}",
                b.evidence
            );
            assert_eq!(b.offered_rps, 40);
        }
    }

    #[test]
    fn a_provider_latency_names_the_provider_and_its_own_figure() {
        let f = Figures {
            pool: pool_saturated(9),
            hold: hold(&[("provider_sms", 500.0), ("provider_email", 100.0)]),
            providers: BTreeMap::from([(
                "sms".to_string(),
                Provider {
                    latency_mean_ms: Some(498.0),
                    ..Default::default()
                },
            )]),
            ..quiet()
        };
        let b = judge(&f);
        assert_eq!(b.resource, "provider latency (sms)");
        assert!(
            b.evidence.iter().any(|e| e.contains("answered in 498 ms")),
            "{b:#?}"
        );
        assert_eq!(b.signals["hold_provider_sms_ms"], 500.0);
        assert_eq!(b.signals["pool_saturated_share"], 1.0);
    }

    #[test]
    fn the_claim_loops_refill_band_is_half_a_claim_and_one_slot_without_batches() {
        // (limit, batch, band)
        for (limit, batch, band) in [
            (4.0, Some(32), 2.0),
            (64.0, Some(32), 16.0),
            (7.0, Some(32), 4.0),
            (1.0, Some(32), 1.0),
            (64.0, None, 1.0),
        ] {
            assert_eq!(refill_band(limit, batch), band, "{limit} {batch:?}");
        }
    }

    fn sample(t: u32) -> TelemetrySample {
        TelemetrySample {
            t: f64::from(t),
            ..Default::default()
        }
    }

    fn input() -> StepInput {
        StepInput {
            offered_rps: 60,
            trustworthy: true,
            from_s: 2.0,
            to_s: 10.0,
            pool_size: 2,
            claim_batch: Some(32),
            cores_available: 2.0,
            ..Default::default()
        }
    }

    #[test]
    fn the_window_is_read_into_per_resource_figures() {
        let samples: Vec<TelemetrySample> = (0..=12)
            .map(|t| {
                let mut s = sample(t);
                let tf = f64::from(t);
                let server = [
                    // The pool: both connections in use, and waiters from t = 4 on.
                    ("fanbench_pool_connections{state=\"open\"}", 2.0),
                    ("fanbench_pool_connections{state=\"idle\"}", 0.0),
                    ("fanbench_pool_waiting", if t >= 4 { 3.0 } else { 0.0 }),
                    // Each second, 5 sign-ups hold a connection 0.5 s at SMS and 0.1 s at the
                    // database, and wait 0.2 s for it.
                    (
                        "fanbench_phase_seconds_sum{phase=\"provider_sms\"}",
                        2.5 * tf,
                    ),
                    ("fanbench_phase_seconds_sum{phase=\"db\"}", 0.5 * tf),
                    ("fanbench_phase_seconds_count{phase=\"db\"}", 5.0 * tf),
                    (
                        "fanbench_phase_seconds_sum{phase=\"pool_acquire\"}",
                        1.0 * tf,
                    ),
                    (
                        "fanbench_phase_seconds_count{phase=\"pool_acquire\"}",
                        5.0 * tf,
                    ),
                    // SMS: 4 slots, 2 or 3 in flight, deliveries waiting behind them.
                    (
                        "fanbench_deliveries_in_flight{channel=\"sms\"}",
                        if t % 2 == 0 { 2.0 } else { 3.0 },
                    ),
                    (
                        "fanbench_deliveries_concurrency_limit{channel=\"sms\"}",
                        4.0,
                    ),
                    ("fanbench_queue_depth{channel=\"sms\"}", 10.0 * tf),
                    // Email: 1 of 4 in flight, nothing waiting.
                    ("fanbench_deliveries_in_flight{channel=\"email\"}", 1.0),
                    (
                        "fanbench_deliveries_concurrency_limit{channel=\"email\"}",
                        4.0,
                    ),
                    ("fanbench_queue_depth{channel=\"email\"}", 1.0),
                ];
                s.server = server.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                // The SMS provider refuses sends in every other second.
                s.providers = BTreeMap::from([
                    (
                        "provider_sim_sends_total{channel=\"sms\",outcome=\"rate_limited\"}"
                            .to_string(),
                        f64::from(t / 2) * 7.0,
                    ),
                    (
                        "provider_sim_sends_total{channel=\"sms\",outcome=\"delivered\"}"
                            .to_string(),
                        20.0 * tf,
                    ),
                ]);
                // Two of ten active backends wait on a tuple lock; from t = 7, eight do.
                let waiting = if t >= 7 { 8 } else { 2 };
                s.postgres = PgSample {
                    connections: BTreeMap::from([("active".to_string(), 10)]),
                    wait_events: BTreeMap::from([
                        ("Lock:tuple".to_string(), waiting),
                        ("none".to_string(), 10 - waiting),
                    ]),
                    locks_waiting: waiting,
                };
                // Two cores, 1.5 busy, someone waiting for a core 70 % of the time.
                s.machine = Some(MachineSample {
                    cores: 2,
                    busy_s: 1.5 * tf,
                    cpu_stall_s: Some(0.7 * tf),
                    procs_running: 3,
                });
                s
            })
            .collect();
        let f = summarise(&input(), &samples);
        assert_eq!(f.samples, 9, "t = 2…10");
        let pool = f.pool.as_ref().unwrap();
        assert_eq!(pool.saturated, 7, "t = 4…10: {pool:?}");
        assert!(
            (pool.wait_mean_ms.unwrap() - 200.0).abs() < 1e-6,
            "{pool:?}"
        );
        let hold = f.hold.as_ref().unwrap();
        assert!(
            (hold.phases["provider_sms"] - 500.0).abs() < 1e-6,
            "{hold:?}"
        );
        assert!((hold.phases["db"] - 100.0).abs() < 1e-6, "{hold:?}");
        assert!(!hold.phases.contains_key("pool_acquire"));
        assert!(
            !hold.phases.contains_key("handler"),
            "the whole request, acquire included"
        );
        // SMS: within ⌈min(32, 4) ÷ 2⌉ = 2 of its limit with work waiting, every sample; email
        // never (1 in flight, and nothing waiting beyond it).
        assert_eq!(f.channels["sms"].saturated, 9);
        assert_eq!(f.channels["email"].saturated, 0);
        // Refusals between t = 1…10: a rise at each even second (2, 4, 6, 8, 10): 5 of 9.
        let sms = &f.providers["sms"];
        assert_eq!((sms.refusing, sms.intervals), (5, 9), "{sms:?}");
        assert!((sms.delivered_per_s - 20.0).abs() < 1e-9);
        // Locks: 2 of 10 is not most of the work; 8 of 10 is (t = 7…10).
        assert_eq!(f.locks.bound, 4);
        assert!((f.cpu.busy.unwrap() - 1.5).abs() < 1e-9);
        assert!((f.cpu.stall_share.unwrap() - 0.7).abs() < 1e-9);
        assert!(f.cpu.contended());
        // And judged: the pool, held mostly by the SMS provider, comes before the rest.
        assert_eq!(judge(&f).resource, "provider latency (sms)");
    }

    #[test]
    fn a_pool_of_unknown_size_and_telemetry_without_a_window_give_no_figures() {
        let f = summarise(
            &StepInput {
                pool_size: 0,
                ..input()
            },
            &[sample(0), sample(1)],
        );
        assert_eq!(f.samples, 0);
        assert_eq!(f.pool, None);
        assert_eq!(f.hold, None);
        assert!(!f.cpu.contended());
        assert_eq!(judge(&f).resource, "unclear");
    }
}
