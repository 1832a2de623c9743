//! The driver against small real HTTP servers whose behaviour is known, so the numbers it reports
//! can be checked: a fixed latency, a periodic stall (wrk2's coordinated-omission demonstration),
//! and a schedule it cannot keep.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic, loudly

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use driver::{DriveOptions, Load, Schedule, drive};
use tokio_util::sync::CancellationToken;

/// goose keeps process-wide state (its killswitch); one load run at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn scenario(rate: u32, seconds: u32) -> Load {
    let text = format!(
        "name = 't'\n[arrivals]\nprocess = 'uniform'\nphases = [{{ kind = 'constant', duration = '{seconds}s', rate = {rate} }}]\n"
    );
    toml::from_str(&text).unwrap()
}

fn options(target: &str, users: usize) -> DriveOptions {
    DriveOptions {
        target: target.to_string(),
        users,
        threads: 1,
        request_timeout: Duration::from_secs(10),
        lag_threshold: Duration::from_millis(10),
        run_tag: "test".into(),
        label: "test".into(),
        progress: false,
        cancel: CancellationToken::new(),
        measure_from: None,
    }
}

async fn run(scenario: &Load, options: &DriveOptions) -> driver::Measurement {
    let shape = Schedule::shape(&scenario.arrivals, None).unwrap();
    let schedule = Schedule::new(&scenario.arrivals, &scenario.payload, None).unwrap();
    drive(schedule, &shape, options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_latency_is_reported_within_tolerance() {
    let _one = ONE_AT_A_TIME.lock().await;
    let url = serve(Router::new().route(
        "/register",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            StatusCode::CREATED
        }),
    ))
    .await;
    let m = run(&scenario(100, 3), &options(&url, 32)).await;
    let r = &m.recorder;
    assert_eq!(
        (r.intended(), r.sent_count(), r.completed_count(), r.ok()),
        (300, 300, 300, 300)
    );
    let latency = r.latency_ms();
    let service = r.service_time_ms();
    // 20 ms of sleep, plus the timer's millisecond granularity and a loopback round trip.
    assert!(latency.p50 >= 20.0 && latency.p50 < 26.0, "{latency:?}");
    assert!(service.p50 >= 20.0 && service.p50 < 26.0, "{service:?}");
    assert!(latency.p99 < 60.0, "{latency:?}");
    assert!(m.trustworthy, "{:?}", m.warnings);
    assert!(r.send_lag_ms().p99 < 10.0);
    assert_eq!(
        r.slots_waited_for_user(),
        0,
        "32 users for 2 requests in flight: a free user was always waiting"
    );
    let timeline = r.timeline();
    assert_eq!(timeline.iter().map(|s| s.offered).sum::<u64>(), 300);
    // Evenly spaced at 10 ms from 10 ms: each second offers 100, give or take the one on its edge.
    assert!(
        timeline
            .iter()
            .take(3)
            .all(|s| s.offered.abs_diff(100) <= 1),
        "{timeline:?}"
    );
}

/// A server that answers at once except for one second, starting one second after its first
/// request, during which it answers nothing.
fn stalling_server() -> Router {
    let first: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    Router::new().route(
        "/register",
        post(move || {
            let first = first.clone();
            async move {
                let start = *first.lock().unwrap().get_or_insert_with(Instant::now);
                let stall = (
                    start + Duration::from_secs(1),
                    start + Duration::from_secs(2),
                );
                let now = Instant::now();
                if now >= stall.0 && now < stall.1 {
                    tokio::time::sleep_until(stall.1.into()).await;
                }
                StatusCode::ACCEPTED
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_corrected_percentiles() {
    let _one = ONE_AT_A_TIME.lock().await;
    let url = serve(stalling_server()).await;
    let m = run(&scenario(100, 4), &options(&url, 200)).await;
    let latency = m.recorder.latency_ms();
    // A quarter of the requests were scheduled into the stall and waited up to its end.
    assert!(latency.p90 > 500.0, "{latency:?}");
    assert!(latency.max > 900.0 && latency.max < 1200.0, "{latency:?}");
    assert!(latency.p50 < 20.0, "{latency:?}");
    assert!(
        m.trustworthy,
        "users enough to keep the schedule: {:?}",
        m.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_user_the_stall_hides_from_service_time_but_not_from_latency_and_the_run_is_flagged()
 {
    let _one = ONE_AT_A_TIME.lock().await;
    // One user is a closed loop: during the stall it cannot send, so the requests scheduled then
    // go out late, back to back, and are answered at once. Service time misses the stall;
    // latency from the intended send time does not; and the run says the driver fell behind.
    let url = serve(stalling_server()).await;
    let m = run(&scenario(100, 4), &options(&url, 1)).await;
    let latency = m.recorder.latency_ms();
    let service = m.recorder.service_time_ms();
    assert!(latency.p90 > 500.0, "{latency:?}");
    assert!(
        service.p90 < 20.0,
        "the closed loop hides the stall: {service:?}"
    );
    assert!(!m.trustworthy);
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("THE DRIVER WAS THE BOTTLENECK")),
        "{:?}",
        m.warnings
    );
    // The slots scheduled into the stall (a second at 100/s) found their one user busy: the lag
    // is the server's doing, not the driver's CPU.
    let waited = m.recorder.slots_waited_for_user();
    assert!((90..=400).contains(&waited), "{waited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_threads_send_each_slot_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The server notes the sequence number each sign-up's email carries.
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let noted = seen.clone();
    let url = serve(Router::new().route(
        "/register",
        post(move |body: String| {
            let noted = noted.clone();
            async move {
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                let email = body["email"].as_str().unwrap();
                let (seq, _) = driver::parse_email(email).unwrap();
                noted.lock().unwrap().push(seq);
                StatusCode::ACCEPTED
            }
        }),
    ))
    .await;
    let mut options = options(&url, 48);
    options.threads = 3;
    let m = run(&scenario(600, 2), &options).await;
    assert_eq!(m.threads, 3);
    let r = &m.recorder;
    assert_eq!(
        (r.intended(), r.sent_count(), r.completed_count(), r.ok()),
        (1200, 1200, 1200, 1200)
    );
    assert!(m.trustworthy, "{:?}", m.warnings);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..1200).collect::<Vec<u64>>(), "every slot once");
    // Each thread recorded its own part; merged, they are one timeline of the whole schedule.
    let timeline = r.timeline();
    assert_eq!(timeline.iter().map(|s| s.offered).sum::<u64>(), 1200);
    assert_eq!(timeline.iter().map(|s| s.ok).sum::<u64>(), 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_the_run_and_keeps_what_was_measured() {
    let _one = ONE_AT_A_TIME.lock().await;
    let url = serve(Router::new().route("/register", post(|| async { StatusCode::CREATED }))).await;
    let options = options(&url, 16);
    let cancel = options.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let m = run(&scenario(50, 30), &options).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly: {:?}",
        started.elapsed()
    );
    assert!(m.cancelled);
    let sent = m.recorder.sent_count();
    assert!(sent > 10 && sent < 200, "{sent}");
    assert_eq!(m.recorder.completed_count(), sent);
    assert!(
        m.warnings.iter().any(|w| w.contains("stopped early")),
        "{:?}",
        m.warnings
    );
}
