//! The open model on goose.
//!
//! goose launches the users and owns their HTTP client; the schedule, not goose, decides when each
//! request goes out. The whole load runs on one thread of its own, in a single-threaded tokio
//! runtime: a dispatcher task walks the schedule, sleeps on a high-resolution kernel timer
//! ([`PreciseTimer`]) until a slot falls due, and hands it to whichever user is free, which sends
//! it at once and records. No one spins, and on one thread handing a slot over or taking an answer
//! costs no thread wake-up: context switches, not HTTP, are what an open-model driver pays for on
//! a small virtual machine. The driver so uses at most one core, and leaves the rest to the
//! design it measures.
//!
//! When the dispatcher wakes it releases every slot already due, and it sleeps at least
//! [`QUANTUM`]: at high rates one wake-up sends several requests, each at most a quantum late, and
//! that lateness is measured (send lag) and counted in the latency, which runs from the intended
//! send time. There is no goose wait time, throttle or ramp-driven load: users only carry the
//! schedule's requests. If no user is free when a slot falls due, the slot waits, its send lag
//! grows, and the run says so.
//!
//! Recording takes no shared lock on the hot path: each recording thread has a recorder of its
//! own ([`Shards`]), read by the once-a-second progress line and merged when the run ends.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use goose::config::GooseConfiguration;
use goose::goose::{
    GooseMethod, GooseRequest, GooseUser, Scenario as GooseScenario, Transaction, TransactionError,
    TransactionFunction,
};
use goose::prelude::GooseAttack;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::progress::{Progress, Snapshot};
use crate::record::{Outcome, Recorder, Shards, Transport, classify_error};
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

/// What a run measured.
#[derive(Debug)]
pub struct Measurement {
    pub recorder: Recorder,
    /// Wall-clock time of the schedule's zero.
    pub started_at: SystemTime,
    /// From the schedule's zero to the last answer.
    pub elapsed: Duration,
    pub users: usize,
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

fn body_for(slot: &Slot, run_tag: &str) -> serde_json::Value {
    let mut body =
        json!({ "email": email_for(slot, run_tag), "name": format!("Load user {}", slot.seq) });
    if slot.phone {
        body["phone"] = json!(format!("+1555{:010}", slot.seq % 10_000_000_000));
    }
    if slot.device {
        body["device_token"] = json!(format!("device-{}-{}", run_tag, slot.seq));
    }
    body
}

struct Shared {
    recorder: Shards,
    slots: SlotQueue,
    t0: Instant,
    run_tag: String,
    cancel: CancellationToken,
}

/// The shortest sleep between two releases of due slots. It bounds the send lag the dispatcher
/// itself adds, and it batches: at 10,000 requests a second one wake-up releases about five, and
/// their answers tend to arrive in one wake-up too. Measured with `fanbench bench driver`
/// (docs/PERFORMANCE.md): against 250 µs it cut the CPU per request at 5,000/s from 70 to 47 µs
/// and raised send lag p99 from 0.31 to 0.55 ms.
pub const QUANTUM: Duration = Duration::from_micros(500);

/// The dispatcher: releases each slot when it falls due, and closes the queue when it ends (the
/// schedule is done, a stop, or an error), which is what ends the users.
async fn dispatch(schedule: Schedule, shared: Arc<Shared>) -> Result<(), DriverError> {
    let released = release(schedule, &shared).await;
    shared.slots.close();
    released
}

async fn release(schedule: Schedule, shared: &Shared) -> Result<(), DriverError> {
    let timer = PreciseTimer::new()
        .map_err(|e| DriverError::Goose(format!("could not create the dispatch timer: {e}")))?;
    let mut last_wake = Instant::now();
    for slot in schedule {
        let slot = slot?;
        let due = shared.t0 + slot.at;
        if due > Instant::now() {
            let until = due.max(last_wake + QUANTUM);
            tokio::select! {
                slept = timer.sleep_until(until) => slept.map_err(|e| {
                    DriverError::Goose(format!("the dispatch timer failed: {e}"))
                })?,
                _ = shared.cancel.cancelled() => return Ok(()),
            }
            last_wake = Instant::now();
        }
        shared.recorder.with(|r| r.offered(slot.at));
        // A full queue means every user has long been busy: the slot waits, and its send lag
        // says so.
        tokio::select! {
            _ = shared.slots.push(slot) => {}
            _ = shared.cancel.cancelled() => return Ok(()),
        }
    }
    Ok(())
}

/// One user: takes slots until the schedule ends or the run is cancelled.
async fn user_loop(user: &mut GooseUser, shared: Arc<Shared>) {
    // Parsed once per user: goose's post_json would build and parse the URL on every request.
    let url = user.base_url.join("/register").ok();
    loop {
        // The queue closes when the dispatcher ends: at the end of the schedule, or at once on a
        // stop. So a free user needs no second future to learn of a stop.
        let Some(slot) = shared.slots.pop().await else {
            return;
        };
        if shared.cancel.is_cancelled() {
            return;
        }
        let body = body_for(&slot, &shared.run_tag);
        let actual = shared.t0.elapsed();
        shared.recorder.with(|r| r.sent(slot.at, actual));
        let sent = match &url {
            Some(url) => {
                let request = user.client.post(url.clone()).json(&body);
                user.request(
                    GooseRequest::builder()
                        .method(GooseMethod::Post)
                        .path("/register")
                        .set_request_builder(request)
                        .build(),
                )
                .await
            }
            None => user.post_json("/register", &body).await,
        };
        let outcome = match sent {
            Ok(goose_response) => match goose_response.response {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // The answer is complete when its body has arrived.
                    match response.bytes().await {
                        Ok(_) => Outcome::Status(status),
                        Err(e) => classify_error(e.is_timeout(), e.is_connect(), true, &e),
                    }
                }
                Err(e) => classify_error(e.is_timeout(), e.is_connect(), e.is_body(), &e),
            },
            Err(e) => match *e {
                TransactionError::Reqwest(ref r) => {
                    classify_error(r.is_timeout(), r.is_connect(), r.is_body(), r)
                }
                _ => Outcome::ConnectionError(Transport::Other),
            },
        };
        let done = shared.t0.elapsed();
        shared
            .recorder
            .with(|r| r.completed(slot.seq, slot.at, actual, done, outcome));
    }
}

fn transaction(shared: Arc<Shared>) -> TransactionFunction {
    Arc::new(move |user: &mut GooseUser| {
        let shared = shared.clone();
        Box::pin(async move {
            user_loop(user, shared).await;
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
    // The schedule's zero leaves goose a moment to launch every user.
    let start_delay =
        Duration::from_millis(500) + Duration::from_secs_f64(options.users as f64 / 4000.0);
    let t0 = Instant::now() + start_delay;
    let started_at = SystemTime::now() + start_delay;
    let shared = Arc::new(Shared {
        recorder: Shards::with_window(options.measure_from),
        slots: SlotQueue::new(),
        t0,
        run_tag: options.run_tag.clone(),
        // A child: the run can stop its own dispatcher without cancelling the caller's token.
        cancel: options.cancel.child_token(),
    });

    if options.progress {
        eprintln!(
            "{}: {} users, all started at once, each sending when the schedule says (goose counts them as it launches them)",
            options.label, options.users
        );
    }
    let progress = options.progress.then(|| {
        let shared = shared.clone();
        Progress::start(&options.label, shape, move || snapshot(&shared))
    });

    // The load gets a thread and an event loop of its own (see the module's comment).
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let spawned = {
        let shared = shared.clone();
        let options = options.clone();
        std::thread::Builder::new()
            .name("fanbench-driver".into())
            .spawn(move || {
                let loaded = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        DriverError::Goose(format!("could not start the driver's runtime: {e}"))
                    })
                    .and_then(|rt| rt.block_on(load(schedule, shared, &options)));
                let _ = done_tx.send(loaded);
            })
    };
    let loaded = match spawned {
        Ok(thread) => {
            let loaded = done_rx.await.unwrap_or_else(|_| {
                Err(DriverError::Goose(
                    "the driver's thread ended without a result".into(),
                ))
            });
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            loaded
        }
        Err(e) => Err(DriverError::Goose(format!(
            "could not start the driver's thread: {e}"
        ))),
    };
    if let Some(p) = progress {
        p.finish();
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
        cancelled,
        trustworthy,
        warnings,
    })
}

/// The load itself, on the driver's own runtime: the dispatcher, goose's users, and a watch on
/// goose's Ctrl-C handler.
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
    let dispatcher = tokio::spawn(dispatch(schedule, shared.clone()));

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

    // The users are gone. The dispatcher has normally finished (the users end when it does); if
    // goose ended first (an error), stop it rather than let it wait for users that are not there.
    shared.cancel.cancel();
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
    fn users_follow_littles_law() {
        assert_eq!(users_for(100.0, Duration::from_secs(6)), 900);
        assert_eq!(users_for(1.0, Duration::from_millis(10)), 16);
    }

    #[test]
    fn bodies_are_valid_sign_ups() {
        for (phone, device) in [(true, true), (false, false), (true, false)] {
            let slot = Slot {
                seq: 7,
                at: Duration::ZERO,
                phone,
                device,
            };
            let registration: signup_core::Registration =
                serde_json::from_value(body_for(&slot, "tag")).unwrap();
            registration.validate().unwrap();
            assert_eq!(
                registration.channels().len(),
                1 + usize::from(phone) + usize::from(device)
            );
        }
    }
}
