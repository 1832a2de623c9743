//! The open model on goose.
//!
//! goose launches the users; the schedule, not goose, decides when each request goes out. The
//! load runs on load threads of its own, each a single-threaded tokio runtime with a dispatcher
//! and its share of the users: the dispatcher walks the thread's part of the schedule, sleeps on a
//! high-resolution kernel timer ([`PreciseTimer`]) until a slot falls due, and hands it to
//! whichever of the thread's users is free, which sends it at once and records. No one spins, and
//! on one thread handing a slot over or taking an answer costs no thread wake-up: context
//! switches, not HTTP, are what an open-model driver pays for on a small virtual machine.
//!
//! Each user sends on a keep-alive HTTP/1.1 connection of its own ([`Connection`]), opened
//! before the schedule starts, with a body written into a reused buffer: goose's `user.request`
//! (reqwest's pool and middleware, goose's per-request metrics, a `serde_json::Value` per body)
//! was most of the driver's own CPU, and goose's metrics were never read (the driver times each
//! request itself, in microseconds).
//!
//! A lane's connections are read through its [`Inbox`], not the thread's event loop: the
//! dispatcher collects the answers that arrived whenever it wakes for the next slots, and watches
//! for them only when the next slot is more than [`WATCH_AFTER`] away, so answers cost no thread
//! wake-ups of their own; each is timed by the kernel's receive timestamp, so reading it later
//! changes no latency.
//!
//! One load thread holds [`RATE_PER_THREAD`] requests a second on schedule; above it the schedule
//! is split ([`Schedule::split`]: interleaved, each thread every `n`-th slot) between
//! [`threads_for`] threads, whose recorders are merged at the end. goose runs on the first load
//! thread and launches every user there; a user whose turn puts it on another thread runs its
//! loop on that thread's runtime.
//!
//! When a dispatcher wakes it releases every slot already due, and it sleeps at least
//! [`QUANTUM`]: at high rates one wake-up sends several requests, each at most a quantum late, and
//! that lateness is measured (send lag) and counted in the latency, which runs from the intended
//! send time. There is no goose wait time, throttle or ramp-driven load: users only carry the
//! schedule's requests. If no user is free when a slot falls due, the slot waits, its send lag
//! grows, and the run says so (`slots_waited_for_user`).
//!
//! Recording takes no shared lock on the hot path: each load thread has a recorder of its own
//! ([`Shards`]), read by the once-a-second progress line and merged when the run ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use goose::config::GooseConfiguration;
use goose::goose::{GooseUser, Scenario as GooseScenario, Transaction, TransactionFunction};
use goose::prelude::GooseAttack;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::http::{Connection, Endpoint, EndpointError};
use crate::inbox::Inbox;
use crate::progress::{Progress, Snapshot};
use crate::record::{Recorder, Shards};
use crate::schedule::{Schedule, Shape, Slot, TraceError};
use crate::slots::SlotQueue;
use crate::timer::PreciseTimer;

/// How one run is driven.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Base URL; sign-ups go to `{target}/register`.
    pub target: String,
    /// Concurrent users (each carries one request at a time).
    pub users: usize,
    /// Load threads ([`threads_for`]), at least 1; the users are dealt out between them.
    pub threads: usize,
    pub request_timeout: Duration,
    /// Send lag p99 past which the run is marked untrustworthy.
    pub lag_threshold: Duration,
    /// Makes this run's emails unique (`s<seq>.<tag>@load.fanbench.test`).
    pub run_tag: String,
    /// A name for progress lines (the design).
    pub label: String,
    /// Show live progress on stderr.
    pub progress: bool,
    /// Stops the run early (Ctrl-C); what was measured is kept.
    pub cancel: CancellationToken,
    /// The warm-up's end: requests scheduled from then on are also recorded apart, as the
    /// measurement window ([`Recorder::window`]). `None`: the run is one window.
    pub measure_from: Option<Duration>,
}

/// Users needed to keep to a schedule: Little's law (rate × latency) with 50 % margin, at least 16.
pub fn users_for(peak_rps: f64, max_latency: Duration) -> usize {
    ((peak_rps * max_latency.as_secs_f64() * 1.5).ceil() as usize).max(16)
}

/// The rate one load thread is given before the schedule is split. Measured with `fanbench bench
/// driver` (docs/PERFORMANCE.md, quiet machine, 2026-12-05): a thread spends 14 µs of CPU a
/// request at 5,000/s and less as the rate grows (9 µs at 20,000/s on two threads), so 10,000 a
/// second is about a tenth of a core, and one wake-up's batch (rate × [`QUANTUM`], 7–8 requests
/// at a few µs each) goes out within about 100 µs, inside the quarter of the 1 ms of send lag a
/// run on schedule allows that the quantum leaves. At 20,000/s one thread's batch doubles and
/// its requests queue behind one another within it, so the schedule is split instead.
pub const RATE_PER_THREAD: f64 = 10_000.0;

/// Load threads for a peak rate on this machine: one per [`RATE_PER_THREAD`] requests a second,
/// at least one, and no more than its cores ([`threads_for_cores`]).
pub fn threads_for(peak_rps: f64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads_for_cores(peak_rps, cores)
}

/// One load thread per [`RATE_PER_THREAD`] requests a second, at least one, at most `cores`:
/// a load thread more than there are cores only adds wake-ups (each thread sleeps and wakes on
/// its own timer), and the server being measured needs a core too.
pub fn threads_for_cores(peak_rps: f64, cores: usize) -> usize {
    ((peak_rps / RATE_PER_THREAD).ceil() as usize).clamp(1, cores.max(1))
}

/// What a run measured.
#[derive(Debug)]
pub struct Measurement {
    pub recorder: Recorder,
    /// Wall-clock time of the schedule's zero.
    pub started_at: SystemTime,
    /// From the schedule's zero to the last answer.
    pub elapsed: Duration,
    pub users: usize,
    /// Load threads the schedule was split between.
    pub threads: usize,
    pub cancelled: bool,
    /// False when the driver, not the server, limited the run.
    pub trustworthy: bool,
    pub warnings: Vec<String>,
}

/// What can stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("goose could not run the load: {0}")]
    Goose(String),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("a load thread could not read its answers: {0}")]
    Inbox(#[from] std::io::Error),
}

/// The email of a scheduled sign-up: unique per run, and it carries its sequence number and its
/// intended send time (microseconds from the run's zero), so deliveries can be timed from it later
/// without the driver keeping anything per request.
pub fn email_for(slot: &Slot, run_tag: &str) -> String {
    format!(
        "s{}-t{}.{run_tag}@load.fanbench.test",
        slot.seq,
        slot.at.as_micros()
    )
}

/// The sequence number and intended send time back from an email made by [`email_for`].
pub fn parse_email(email: &str) -> Option<(u64, Duration)> {
    let local = email.strip_prefix('s')?.split('.').next()?;
    let (seq, at) = local.split_once("-t")?;
    Some((seq.parse().ok()?, Duration::from_micros(at.parse().ok()?)))
}

/// A run tag as it goes inside a JSON string: escaped once per run, not once per request.
fn json_escaped(text: &str) -> String {
    let quoted = serde_json::Value::from(text).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Writes the sign-up of `slot` as JSON into `out` (emptied first): the fields a `serde_json`
/// value would hold, written straight into a buffer the user reuses, with `tag` already escaped
/// ([`json_escaped`]). Everything else written is digits and fixed text.
fn write_body(out: &mut Vec<u8>, slot: &Slot, tag: &str) {
    // Digits by `itoa`, not `fmt`: its machinery was a tenth of a user's CPU in `perf`.
    let (mut seq_digits, mut at_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let seq = seq_digits.format(slot.seq);
    let at = at_digits.format(slot.at.as_micros());
    out.clear();
    for part in [
        "{\"email\":\"s",
        seq,
        "-t",
        at,
        ".",
        tag,
        "@load.fanbench.test\",\"name\":\"Load user ",
        seq,
        "\"",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    if slot.phone {
        // Ten digits, zero-padded.
        let mut digits = itoa::Buffer::new();
        let phone = digits.format(slot.seq % 10_000_000_000);
        out.extend_from_slice(b",\"phone\":\"+1555");
        out.resize(out.len() + 10 - phone.len(), b'0');
        out.extend_from_slice(phone.as_bytes());
        out.push(b'"');
    }
    if slot.device {
        for part in [",\"device_token\":\"device-", tag, "-", seq, "\""] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.push(b'}');
}

/// One load thread's part of the run: its due slots, waiting for its users, and its users'
/// sockets.
#[derive(Debug)]
struct Lane {
    slots: SlotQueue,
    inbox: Arc<Inbox>,
}

struct Shared {
    recorder: Shards,
    lanes: Vec<Lane>,
    /// The load threads' runtimes, by lane (the first is goose's own).
    handles: Vec<Handle>,
    /// Deals users out to lanes in turn, as goose launches them.
    next_user: AtomicUsize,
    endpoint: Endpoint,
    request_timeout: Duration,
    t0: Instant,
    /// The run tag, escaped for JSON.
    tag: String,
    cancel: CancellationToken,
    /// Fired when goose has ended every user: the other load threads may then stop.
    finished: CancellationToken,
}

/// The shortest sleep between two releases of due slots. It bounds the send lag the dispatcher
/// itself adds, and it batches: once answers are collected at these wake-ups ([`Inbox`]), a
/// wake-up is what a request costs beyond its own `send` and `recvmsg` (a context switch out of
/// and back into the thread: a quarter of the driver's CPU at 5,000/s in `perf`), so the quantum
/// sets how many requests share one. Its ceiling is the send lag a run on schedule may show:
/// 1 ms at the 99th percentile (issue #18), of which the quantum takes 0.75 ms and leaves a
/// quarter for the thread's own wake-up latency (about 0.05 ms on a quiet machine, send lag p99
/// minus the quantum). Measured with `fanbench bench driver` (docs/PERFORMANCE.md, quiet
/// machine, same build otherwise): 750 µs against 500 µs took the CPU per request at 5,000/s
/// from 16.7 to 13.7 µs and send lag p99 at 20,000/s from 0.57 to 0.79 ms.
pub const QUANTUM: Duration = Duration::from_micros(750);

/// A dispatcher that will sleep longer than this watches its inbox meanwhile; a shorter sleep
/// leaves the answers that arrive during it to be collected when it wakes. An answer so left
/// waits at most this long to be read (its latency is the kernel's stamp, not the read), and
/// holds its user that much longer: two quanta at 20,000 requests a second is 20 users, which the
/// users' margin over Little's law ([`users_for`]) covers many times at the latencies where such
/// rates are offered. Longer sleeps are rare where the wake-ups would cost most: at 5,000
/// requests a second, a slot falls due every 200 µs.
pub const WATCH_AFTER: Duration = Duration::from_micros(1000);

/// A lane's dispatcher: releases each of its slots when it falls due, and closes the lane's queue
/// when it ends (the schedule is done, a stop, or an error), which is what ends its users.
async fn dispatch(schedule: Schedule, shared: Arc<Shared>, lane: usize) -> Result<(), DriverError> {
    let released = release(schedule, &shared, lane).await;
    let lane = &shared.lanes[lane];
    lane.slots.close();
    // The users' last answers: nobody else reads them. A user starts its exchange as it takes
    // a slot, with no wait in between, so on this thread a slot is always counted in one place.
    let settled = lane.inbox.settle(|| lane.slots.is_empty()).await;
    released.and(settled.map_err(DriverError::from))
}

async fn release(schedule: Schedule, shared: &Shared, lane: usize) -> Result<(), DriverError> {
    let slots = &shared.lanes[lane].slots;
    let inbox = &shared.lanes[lane].inbox;
    let timer = PreciseTimer::new()
        .map_err(|e| DriverError::Goose(format!("could not create the dispatch timer: {e}")))?;
    let mut last_wake = Instant::now();
    for slot in schedule {
        let slot = slot?;
        let due = shared.t0 + slot.at;
        let now = Instant::now();
        if due > now {
            let until = due.max(last_wake + QUANTUM);
            let long = until - now > WATCH_AFTER;
            tokio::select! {
                slept = timer.sleep_until(until) => slept.map_err(|e| {
                    DriverError::Goose(format!("the dispatch timer failed: {e}"))
                })?,
                watched = inbox.watch(), if long => match watched? {},
                _ = shared.cancel.cancelled() => return Ok(()),
            }
            last_wake = Instant::now();
            // The answers that arrived while it slept: their users run when it next waits.
            inbox.harvest()?;
        }
        let at = slot.at;
        // A full queue means every user has long been busy: the slot waits, and its send lag
        // says so. Meanwhile the answers that will free them are watched for.
        let waits = tokio::select! {
            biased;
            waits = slots.push(slot) => waits,
            watched = inbox.watch() => match watched? {},
            _ = shared.cancel.cancelled() => return Ok(()),
        };
        shared.recorder.with(|r| {
            r.offered(at);
            if waits {
                r.waited_for_user();
            }
        });
    }
    Ok(())
}

/// One user: opens its connection, then takes its lane's slots until the lane's schedule ends or
/// the run is cancelled.
async fn user_loop(shared: Arc<Shared>, lane: usize) {
    let slots = &shared.lanes[lane].slots;
    let mut connection = Connection::new(shared.lanes[lane].inbox.clone());
    connection.open(&shared.endpoint).await;
    let mut body = Vec::with_capacity(256);
    loop {
        // The queue closes when the dispatcher ends: at the end of the schedule, or at once on a
        // stop. So a free user needs no second future to learn of a stop.
        let Some(slot) = slots.pop().await else {
            return;
        };
        if shared.cancel.is_cancelled() {
            return;
        }
        write_body(&mut body, &slot, &shared.tag);
        let actual = shared.t0.elapsed();
        shared.recorder.with(|r| r.sent(slot.at, actual));
        let (outcome, answered) = connection
            .post(&shared.endpoint, &body, shared.request_timeout)
            .await;
        // When the answer reached the socket, not when this user got round to it.
        let done = answered.saturating_duration_since(shared.t0).max(actual);
        shared
            .recorder
            .with(|r| r.completed(slot.seq, slot.at, actual, done, outcome));
    }
}

/// A user goose launched: it joins the lane whose turn it is, on that lane's thread.
async fn run_user(shared: Arc<Shared>) {
    let lane = shared.next_user.fetch_add(1, Ordering::Relaxed) % shared.lanes.len();
    if lane == 0 {
        user_loop(shared, 0).await;
    } else {
        let handle = shared.handles[lane].clone();
        // The lane's thread keeps running until goose has ended every user, so this ends only
        // when the user does.
        let _ = handle.spawn(user_loop(shared, lane)).await;
    }
}

fn transaction(shared: Arc<Shared>) -> TransactionFunction {
    Arc::new(move |_user: &mut GooseUser| {
        let shared = shared.clone();
        Box::pin(async move {
            run_user(shared).await;
            Ok(())
        })
    })
}

/// Runs `schedule` against `options.target` and returns what was measured. Ends when every
/// scheduled request has been answered (or has timed out), or when `options.cancel` fires.
pub async fn drive(
    schedule: Schedule,
    shape: &Shape,
    options: &DriveOptions,
) -> Result<Measurement, DriverError> {
    let endpoint = Endpoint::resolve(&options.target).await?;
    let threads = options.threads.max(1);
    let parts = schedule.split(threads as u32)?;
    let lanes = (0..threads)
        .map(|_| {
            Ok(Lane {
                slots: SlotQueue::new(),
                inbox: Inbox::new()?,
            })
        })
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    // Every load thread's runtime exists before any user does: goose's users, launched on the
    // first, join the others through their handles.
    let mut runtimes = Vec::with_capacity(threads);
    for lane in 0..threads {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => runtimes.push(rt),
            Err(e) => {
                // Dropping a runtime inside this one's context would panic.
                runtimes.into_iter().for_each(|rt| rt.shutdown_background());
                return Err(DriverError::Goose(format!(
                    "could not start load thread {}'s runtime: {e}",
                    lane + 1
                )));
            }
        }
    }

    // The schedule's zero leaves goose a moment to launch every user and each user a moment to
    // connect.
    let start_delay =
        Duration::from_millis(500) + Duration::from_secs_f64(options.users as f64 / 4000.0);
    let t0 = Instant::now() + start_delay;
    let started_at = SystemTime::now() + start_delay;
    let shared = Arc::new(Shared {
        recorder: Shards::with_window(options.measure_from),
        lanes,
        handles: runtimes.iter().map(|rt| rt.handle().clone()).collect(),
        next_user: AtomicUsize::new(0),
        endpoint,
        request_timeout: options.request_timeout,
        t0,
        tag: json_escaped(&options.run_tag),
        // A child: the run can stop its own dispatchers without cancelling the caller's token.
        cancel: options.cancel.child_token(),
        finished: CancellationToken::new(),
    });

    if options.progress {
        eprintln!(
            "{}: {} users on {threads} load thread(s), all started at once, each sending when the schedule says (goose counts them as it launches them)",
            options.label, options.users
        );
    }
    let progress = options.progress.then(|| {
        let shared = shared.clone();
        Progress::start(&options.label, shape, move || snapshot(&shared))
    });

    // The load gets threads and event loops of its own (see the module's comment).
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut spawned = Vec::with_capacity(threads);
    let mut failed_to_start = None;
    for (lane, (rt, part)) in runtimes.into_iter().zip(parts).enumerate() {
        let shared_here = shared.clone();
        let done = done_tx.clone();
        let options = options.clone();
        let thread = std::thread::Builder::new()
            .name(if lane == 0 {
                "fanbench-driver".into()
            } else {
                format!("fanbench-driver-{}", lane + 1)
            })
            .spawn(move || {
                let shared = shared_here;
                // However this thread ends, the run must not wait for it: the first lane's end
                // (goose's) releases the other threads, and a lane's end closes its queue.
                let _finish = (lane == 0).then(|| shared.finished.clone().drop_guard());
                let _close = CloseOnDrop(&shared.lanes[lane].slots);
                let result = if lane == 0 {
                    rt.block_on(load(part, shared.clone(), &options))
                } else {
                    rt.block_on(async {
                        let dispatched = dispatch(part, shared.clone(), lane).await;
                        shared.finished.cancelled().await;
                        dispatched
                    })
                };
                let _ = done.send(result);
            });
        match spawned_ok(thread, lane) {
            Ok(thread) => spawned.push(thread),
            Err(e) => {
                failed_to_start = Some(e);
                break;
            }
        }
    }
    drop(done_tx);
    if failed_to_start.is_some() {
        // Whatever did start stops at once.
        shared.cancel.cancel();
        shared.finished.cancel();
        for lane in &shared.lanes {
            lane.slots.close();
        }
    }
    // Every thread reports once; a thread that panicked reports nothing, and its sender's drop
    // ends the wait.
    let mut loaded: Result<(), DriverError> = Ok(());
    while let Some(result) = done_rx.recv().await {
        if loaded.is_ok() {
            loaded = result;
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in spawned {
            let _ = thread.join();
        }
    })
    .await;
    if let Some(p) = progress {
        p.finish();
    }
    if let Some(e) = failed_to_start {
        return Err(e);
    }
    loaded?;
    let cancelled = options.cancel.is_cancelled();

    let elapsed = t0.elapsed();
    let recorder = shared.recorder.merged();
    let (trustworthy, warnings) = judge(&recorder, options, cancelled);
    Ok(Measurement {
        recorder,
        started_at,
        elapsed,
        users: options.users,
        threads,
        cancelled,
        trustworthy,
        warnings,
    })
}

fn spawned_ok(
    thread: std::io::Result<std::thread::JoinHandle<()>>,
    lane: usize,
) -> Result<std::thread::JoinHandle<()>, DriverError> {
    thread.map_err(|e| DriverError::Goose(format!("could not start load thread {}: {e}", lane + 1)))
}

/// Closes a lane's queue when its thread ends, however it ends, so its users never wait for a
/// dispatcher that is gone.
struct CloseOnDrop<'a>(&'a SlotQueue);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The first load thread's work: its dispatcher, goose and its users, and a watch on goose's
/// Ctrl-C handler.
async fn load(
    schedule: Schedule,
    shared: Arc<Shared>,
    options: &DriveOptions,
) -> Result<(), DriverError> {
    // Goose's own Ctrl-C handler sets its killswitch; treat it as ours.
    let watch = {
        let cancel = options.cancel.clone();
        tokio::spawn(async move {
            loop {
                if goose::is_killswitch_triggered() {
                    cancel.cancel();
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };
    let dispatcher = tokio::spawn(dispatch(schedule, shared.clone(), 0));

    let mut config = GooseConfiguration::default();
    config.host = Some(options.target.clone());
    config.users = Some(options.users);
    config.increase_rate = Some((options.users * 4).to_string());
    config.iterations = Some(1);
    config.quiet = 1;
    config.no_print_metrics = true;
    config.no_error_summary = true;
    config.no_metrics = true;
    config.no_telnet = true;
    config.no_gzip = true;
    config.timeout = Some(format!("{}", options.request_timeout.as_secs_f64()));
    // goose gives each user a reqwest client the driver does not use (users send on their own
    // connections): without cookies it builds one, shared, rather than one per user.
    let attack = GooseAttack::initialize_with_config(config)
        .and_then(|a| {
            a.set_client_builder_without_cookies(
                goose::client::GooseClientBuilder::new()
                    .without_cookies()
                    .timeout(options.request_timeout),
            )
        })
        .map(|a| {
            a.register_scenario(
                GooseScenario::new("sign-up")
                    .register_transaction(Transaction::new(transaction(shared.clone()))),
            )
        })
        .map_err(|e| DriverError::Goose(e.to_string()));
    let executed = match attack {
        Ok(attack) => attack
            .execute()
            .await
            .map(drop)
            .map_err(|e| DriverError::Goose(e.to_string())),
        Err(e) => Err(e),
    };

    // The users are gone. The dispatchers have normally finished (the users end when they do);
    // if goose ended first (an error), stop them rather than let them wait for users that are
    // not there, and let the other load threads end.
    shared.cancel.cancel();
    shared.finished.cancel();
    let dispatched = dispatcher.await;
    watch.abort();
    executed?;
    match dispatched {
        Ok(result) => result,
        Err(e) => Err(DriverError::Goose(format!("the dispatcher failed: {e}"))),
    }
}

fn snapshot(shared: &Shared) -> Snapshot {
    let elapsed = shared.t0.elapsed();
    let last = elapsed.as_secs().saturating_sub(1) as usize;
    let mut snap = Snapshot {
        elapsed,
        offered_rps: 0,
        ok_rps: 0,
        sent: 0,
        p99_ms: 0.0,
        status_503: 0,
        lag_p99_ms: 0.0,
    };
    let mut latency: Option<hdrhistogram::Histogram<u64>> = None;
    let mut lag: Option<hdrhistogram::Histogram<u64>> = None;
    shared.recorder.each(|r| {
        let (offered, ok) = r.second_counts(last);
        snap.offered_rps += offered;
        snap.ok_rps += ok;
        snap.sent += r.sent_count();
        snap.status_503 += r.status_503();
        for (sum, h) in [(&mut latency, r.latency()), (&mut lag, r.lag())] {
            match sum {
                Some(sum) => {
                    let _ = sum.add(h);
                }
                None => *sum = Some(h.clone()),
            }
        }
    });
    let p99 = |h: Option<hdrhistogram::Histogram<u64>>| {
        h.map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0)
    };
    snap.p99_ms = p99(latency);
    snap.lag_p99_ms = p99(lag);
    snap
}

/// Whether the driver kept to its schedule, and what to warn about.
fn judge(recorder: &Recorder, options: &DriveOptions, cancelled: bool) -> (bool, Vec<String>) {
    let mut warnings = Vec::new();
    let mut trustworthy = true;
    let lag = recorder.send_lag_ms();
    let threshold_ms = options.lag_threshold.as_secs_f64() * 1000.0;
    if lag.p99 > threshold_ms {
        trustworthy = false;
        warnings.push(format!(
            "THE DRIVER WAS THE BOTTLENECK: send lag p99 {:.1} ms (max {:.1} ms) is over the {:.1} ms threshold; \
             requests left later than scheduled and the latencies understate the server's. \
             Use more users (now {}), fewer other processes, or a lower rate.",
            lag.p99, lag.max, threshold_ms, options.users
        ));
    }
    if cancelled {
        warnings.push("stopped early (Ctrl-C): only part of the schedule ran".into());
    } else if recorder.sent_count() < recorder.intended() {
        trustworthy = false;
        warnings.push(format!(
            "only {} of {} scheduled requests were sent: the target rate was not reached",
            recorder.sent_count(),
            recorder.intended()
        ));
    }
    // One line per kind of transport error, never one per request.
    for (kind, n) in recorder.requests().transport_errors {
        warnings.push(format!("{n} request(s) got no answer: {kind}"));
    }
    if recorder.completed_count() < recorder.sent_count() && !cancelled {
        warnings.push(format!(
            "{} requests never completed before the run ended",
            recorder.sent_count() - recorder.completed_count()
        ));
    }
    (trustworthy, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_carry_their_sequence_number_and_intended_time() {
        let slot = Slot {
            seq: 42,
            at: Duration::from_micros(1_234_567),
            phone: false,
            device: false,
        };
        let email = email_for(&slot, "r1-sync");
        assert_eq!(email, "s42-t1234567.r1-sync@load.fanbench.test");
        assert_eq!(
            parse_email(&email),
            Some((42, Duration::from_micros(1_234_567)))
        );
        assert_eq!(parse_email("someone@example.com"), None);
        assert_eq!(parse_email("s1.x@example.com"), None);
    }

    #[test]
    fn bodies_hold_what_a_json_value_would() {
        let mut buffer = Vec::new();
        for (seq, phone, device) in [(0, false, false), (12_345_678_901_234, true, true)] {
            let slot = Slot {
                seq,
                at: Duration::from_micros(98_765),
                phone,
                device,
            };
            // A tag that needs escaping is escaped, once.
            let tag = "r1-\"odd\\tag\"";
            write_body(&mut buffer, &slot, &json_escaped(tag));
            let mut expected = serde_json::json!({
                "email": email_for(&slot, tag),
                "name": format!("Load user {seq}"),
            });
            if phone {
                expected["phone"] = format!("+1555{:010}", seq % 10_000_000_000).into();
            }
            if device {
                expected["device_token"] = format!("device-{tag}-{seq}").into();
            }
            let written: serde_json::Value = serde_json::from_slice(&buffer).unwrap();
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn threads_follow_the_rate() {
        assert_eq!(threads_for_cores(0.0, 2), 1);
        assert_eq!(threads_for_cores(RATE_PER_THREAD, 2), 1);
        assert_eq!(threads_for_cores(RATE_PER_THREAD + 1.0, 2), 2);
        assert_eq!(
            threads_for_cores(4.0 * RATE_PER_THREAD, 2),
            2,
            "no more than the cores"
        );
        assert_eq!(threads_for_cores(4.0 * RATE_PER_THREAD, 8), 4);
        assert_eq!(threads_for_cores(4.0 * RATE_PER_THREAD, 0), 1);
        assert!(threads_for(1.0) == 1);
    }

    #[test]
    fn users_follow_littles_law() {
        assert_eq!(users_for(100.0, Duration::from_secs(6)), 900);
        assert_eq!(users_for(1.0, Duration::from_millis(10)), 16);
    }

    #[test]
    fn bodies_are_valid_sign_ups() {
        let mut buffer = Vec::new();
        for (phone, device) in [(true, true), (false, false), (true, false)] {
            let slot = Slot {
                seq: 7,
                at: Duration::ZERO,
                phone,
                device,
            };
            write_body(&mut buffer, &slot, &json_escaped("tag"));
            let registration: signup_core::Registration = serde_json::from_slice(&buffer).unwrap();
            registration.validate().unwrap();
            assert_eq!(
                registration.channels().len(),
                1 + usize::from(phone) + usize::from(device)
            );
        }
    }
}
