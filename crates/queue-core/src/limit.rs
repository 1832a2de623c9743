//! Adaptive concurrency per channel: how many provider calls a channel may have in flight.
//!
//! A fixed bound caps a channel at bound ÷ provider latency (64 ÷ ~0.15 s ≈ 420 SMS a second), so a
//! healthy but slow provider leaves a backlog that never drains. [`Aimd`] grows the bound while the
//! channel is saturated (every slot busy and the queue had more: a claim or a pull came back full)
//! and the provider is healthy, and shrinks it when the provider pushes back, never below the
//! configured floor nor above the cap. [`Gate`] applies the bound to a semaphore, including
//! shrinking below the slots in use. Both queue designs use it, fed the same [`Signal`]s, so their
//! send slots behave alike and a comparison of the two measures their architectures.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What one finished provider call says about the provider's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Acknowledged after this long.
    Ok(Duration),
    /// 429 or a timeout: the provider says, or shows, that it has had enough.
    Backpressure,
    /// A 5xx or a connection failure: load, or bad luck; counted against a tolerance.
    Failed,
    /// Another 4xx: the request itself was wrong, which says nothing about load.
    Neutral,
}

impl Signal {
    /// What a provider call's result, which took `took`, says: the one classification both queue
    /// designs use.
    pub fn of<T>(sent: &Result<T, signup_core::ProviderError>, took: Duration) -> Self {
        use signup_core::ProviderError;
        match sent {
            Ok(_) => Signal::Ok(took),
            Err(ProviderError::Timeout { .. }) => Signal::Backpressure,
            Err(ProviderError::Transport { .. }) => Signal::Failed,
            Err(ProviderError::Status { status, .. }) => {
                if status.as_u16() == 429 {
                    Signal::Backpressure
                } else if status.is_server_error() {
                    Signal::Failed
                } else {
                    Signal::Neutral
                }
            }
        }
    }
}

/// Additive-increase/multiplicative-decrease, decided once per window of `limit` finished calls
/// (about one round trip of every slot), so one burst of refusals shrinks the limit once.
///
/// - **Shrink** to 70 % (not below the floor) when the window saw any [`Signal::Backpressure`], or
///   more than [`Aimd::FAILURE_TOLERANCE`] of it failed.
/// - **Grow** by a quarter (at least one; not above the cap) when the window was saturated, had
///   successes, and their mean latency stayed within twice the baseline: growing only helps while
///   the provider's latency does not grow with it. The quarter makes 64 → 1,024 about a dozen
///   windows, a couple of seconds at SMS latency, rather than the hundreds one slot at a time takes.
/// - Otherwise hold.
///
/// The latency baseline is the lowest healthy window mean, allowed to drift up 10 % a window, so a
/// provider that became lastingly slower is the new normal after a few windows.
#[derive(Debug, Clone)]
pub struct Aimd {
    floor: usize,
    cap: usize,
    limit: usize,
    window: Window,
    /// Seconds.
    baseline: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Window {
    seen: usize,
    ok: usize,
    ok_latency: Duration,
    backpressure: usize,
    failed: usize,
    saturated: bool,
}

impl Aimd {
    /// The share of a window's calls that may fail (5xx, connection) without a shrink: a provider
    /// with a low, steady error rate is not overloaded.
    pub const FAILURE_TOLERANCE: f64 = 0.05;

    /// Starts at `floor` (at least 1); `cap` below the floor means the floor.
    pub fn new(floor: usize, cap: usize) -> Self {
        let floor = floor.max(1);
        Self {
            floor,
            cap: cap.max(floor),
            limit: floor,
            window: Window::default(),
            baseline: None,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The channel used every slot and the queue had more due (a claim or a pull came back
    /// full): more slots would be used.
    pub fn saturated(&mut self) {
        self.window.saturated = true;
    }

    /// Counts one finished call; at the end of a window decides, and returns the new limit when it
    /// changed.
    pub fn observe(&mut self, signal: Signal) -> Option<usize> {
        let w = &mut self.window;
        w.seen += 1;
        match signal {
            Signal::Ok(latency) => {
                w.ok += 1;
                w.ok_latency += latency;
            }
            Signal::Backpressure => w.backpressure += 1,
            Signal::Failed => w.failed += 1,
            Signal::Neutral => {}
        }
        if w.seen < self.limit {
            return None;
        }
        let w = std::mem::take(&mut self.window);
        let before = self.limit;
        let mean = (w.ok > 0).then(|| w.ok_latency.as_secs_f64() / w.ok as f64);
        let failing =
            w.backpressure > 0 || w.failed as f64 > Self::FAILURE_TOLERANCE * w.seen as f64;
        if failing {
            self.limit = (self.limit * 7 / 10).max(self.floor);
        } else if let Some(mean) = mean {
            let baseline = *self.baseline.get_or_insert(mean);
            if w.saturated && mean <= 2.0 * baseline {
                self.limit = (self.limit + (self.limit / 4).max(1)).min(self.cap);
            }
            self.baseline = Some(mean.min(baseline * 1.1));
        }
        (self.limit != before).then_some(self.limit)
    }
}

/// A channel's send slots: a semaphore whose size follows an [`Aimd`]. Shrinking below the slots in
/// use forgets the free ones now and the rest as they come back, so at every moment the slots
/// handed out plus the free ones, less those still owed, equal the limit.
#[derive(Debug)]
pub struct Gate {
    slots: std::sync::Arc<Semaphore>,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    aimd: Aimd,
    /// Slots to forget as they come back.
    owed: usize,
}

impl Gate {
    pub fn new(aimd: Aimd) -> Self {
        Self {
            slots: std::sync::Arc::new(Semaphore::new(aimd.limit())),
            state: Mutex::new(GateState { aimd, owed: 0 }),
        }
    }

    /// The semaphore to take slots from.
    pub fn slots(&self) -> &std::sync::Arc<Semaphore> {
        &self.slots
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().aimd.limit()
    }

    /// See [`Aimd::saturated`].
    pub fn saturated(&self) {
        self.lock().aimd.saturated();
    }

    /// A call finished: gives its slot back (or forgets it, if the limit shrank) and counts its
    /// signal. Returns the new limit when it changed.
    pub fn finished(&self, slot: OwnedSemaphorePermit, signal: Signal) -> Option<usize> {
        let mut state = self.lock();
        let before = state.aimd.limit();
        let changed = state.aimd.observe(signal);
        if let Some(after) = changed {
            if after > before {
                let grow = after - before;
                let repaid = grow.min(state.owed);
                state.owed -= repaid;
                self.slots.add_permits(grow - repaid);
            } else {
                let shrink = before - after;
                let forgotten = self.slots.forget_permits(shrink);
                state.owed += shrink - forgotten;
            }
        }
        Self::give_back(&mut state, slot);
        changed
    }

    /// A slot given back with no provider call made (the broker design's worker takes a slot for
    /// each message it pulls, and some ask nothing of its channel): nothing to observe.
    pub fn unused(&self, slot: OwnedSemaphorePermit) {
        Self::give_back(&mut self.lock(), slot);
    }

    fn give_back(state: &mut GateState, slot: OwnedSemaphorePermit) {
        if state.owed > 0 {
            state.owed -= 1;
            slot.forget();
        } else {
            drop(slot);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // The state is plain counters, consistent after every statement: a panic elsewhere while
        // the lock was held leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMS: Duration = Duration::from_millis(150);

    /// A window of `limit` calls answered by `signal`, saturated or not; returns the limit after.
    fn window(aimd: &mut Aimd, saturated: bool, signal: impl Fn(usize) -> Signal) -> usize {
        if saturated {
            aimd.saturated();
        }
        for i in 0..aimd.limit() {
            aimd.observe(signal(i));
        }
        aimd.limit()
    }

    #[test]
    fn a_providers_answer_says_what_it_says_about_load() {
        use signup_core::{Channel, ProviderError};
        let status = |code: u16| -> Result<(), ProviderError> {
            Err(ProviderError::Status {
                channel: Channel::Sms,
                status: reqwest::StatusCode::from_u16(code).unwrap(),
                retry_after: None,
            })
        };
        let cases = [
            (Ok(()), Signal::Ok(SMS)),
            (status(429), Signal::Backpressure),
            (
                Err(ProviderError::Timeout {
                    channel: Channel::Sms,
                    timeout: SMS,
                }),
                Signal::Backpressure,
            ),
            (status(500), Signal::Failed),
            (status(503), Signal::Failed),
            (status(400), Signal::Neutral),
            (status(422), Signal::Neutral),
        ];
        for (sent, expected) in cases {
            assert_eq!(Signal::of(&sent, SMS), expected, "{sent:?}");
        }
    }

    #[test]
    fn a_saturated_slow_but_healthy_channel_grows_to_the_cap() {
        let mut aimd = Aimd::new(64, 1024);
        let mut limits = vec![aimd.limit()];
        for _ in 0..40 {
            limits.push(window(&mut aimd, true, |_| Signal::Ok(SMS)));
        }
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "{limits:?}");
        assert_eq!(limits[1], 80, "a quarter more per window");
        assert_eq!(aimd.limit(), 1024, "{limits:?}");
    }

    #[test]
    fn a_cap_at_the_floor_is_a_fixed_bound() {
        let mut aimd = Aimd::new(64, 64);
        for _ in 0..10 {
            assert_eq!(window(&mut aimd, true, |_| Signal::Ok(SMS)), 64);
            assert_eq!(window(&mut aimd, true, |_| Signal::Backpressure), 64);
        }
        // A cap below the floor means the floor.
        assert_eq!(window(&mut Aimd::new(8, 2), true, |_| Signal::Ok(SMS)), 8);
    }

    #[test]
    fn an_idle_or_unsaturated_channel_holds() {
        let mut aimd = Aimd::new(64, 1024);
        for _ in 0..10 {
            assert_eq!(window(&mut aimd, false, |_| Signal::Ok(SMS)), 64);
        }
        // Mid-window nothing is decided.
        let mut aimd = Aimd::new(64, 1024);
        aimd.saturated();
        for _ in 0..63 {
            assert_eq!(aimd.observe(Signal::Ok(SMS)), None);
        }
        assert_eq!(aimd.observe(Signal::Ok(SMS)), Some(80));
    }

    #[test]
    fn rate_limits_and_timeouts_shrink_it_to_the_floor_and_no_further() {
        let mut aimd = Aimd::new(64, 1024);
        for _ in 0..12 {
            window(&mut aimd, true, |_| Signal::Ok(SMS));
        }
        let grown = aimd.limit();
        assert!(grown > 400, "{grown}");
        // One 429 in a window is enough, even while saturated.
        let after = window(&mut aimd, true, |i| {
            if i == 3 {
                Signal::Backpressure
            } else {
                Signal::Ok(SMS)
            }
        });
        assert_eq!(after, grown * 7 / 10);
        let mut limits = vec![after];
        for _ in 0..20 {
            limits.push(window(&mut aimd, true, |_| Signal::Backpressure));
        }
        assert!(limits.windows(2).all(|w| w[1] <= w[0]), "{limits:?}");
        assert_eq!(aimd.limit(), 64, "never below the floor: {limits:?}");
    }

    #[test]
    fn failures_shrink_only_beyond_the_tolerance() {
        let mut aimd = Aimd::new(10, 100);
        for _ in 0..20 {
            window(&mut aimd, true, |_| Signal::Ok(SMS));
        }
        let grown = aimd.limit();
        assert_eq!(grown, 100);
        // 2 % failing: a steady error rate, not overload; still saturated, so it stays at the cap.
        let after = window(&mut aimd, true, |i| {
            if i % 50 == 0 {
                Signal::Failed
            } else {
                Signal::Ok(SMS)
            }
        });
        assert_eq!(after, 100);
        // Half failing (an outage's 503s, say): shrink.
        let after = window(&mut aimd, true, |i| {
            if i % 2 == 0 {
                Signal::Failed
            } else {
                Signal::Ok(SMS)
            }
        });
        assert_eq!(after, 70);
        // Requests the provider refused as wrong (4xx) say nothing about load.
        let after = window(&mut aimd, false, |_| Signal::Neutral);
        assert_eq!(after, 70);
    }

    #[test]
    fn latency_growing_with_load_stops_the_growth() {
        let mut aimd = Aimd::new(64, 1024);
        window(&mut aimd, true, |_| Signal::Ok(SMS));
        let before = aimd.limit();
        // The provider is queueing: three times slower, so more slots would only wait longer.
        for _ in 0..3 {
            assert_eq!(window(&mut aimd, true, |_| Signal::Ok(SMS * 3)), before);
        }
        // A lasting change becomes the new baseline, a few windows later, and growth resumes.
        let mut grew = false;
        for _ in 0..20 {
            grew |= window(&mut aimd, true, |_| Signal::Ok(SMS * 3)) > before;
        }
        assert!(grew);
    }

    #[test]
    fn the_gate_forgets_slots_in_use_as_they_come_back_when_the_limit_shrinks() {
        let gate = Gate::new(Aimd::new(2, 64));
        let take = |n: usize| -> Vec<OwnedSemaphorePermit> {
            (0..n)
                .map(|_| gate.slots().clone().try_acquire_owned().unwrap())
                .collect()
        };
        // Saturated healthy windows: 2 → 3 → 4 → 5 → 6, the free slots following.
        for expected in 3..=6 {
            gate.saturated();
            for p in take(gate.limit()) {
                gate.finished(p, Signal::Ok(SMS));
            }
            assert_eq!(
                (gate.limit(), gate.slots().available_permits()),
                (expected, expected)
            );
        }
        // Six in use; five come back refused and are taken again at once, so when the sixth
        // closes the window (shrinking 6 → 4) every slot is in use and none can be forgotten now.
        let mut first = take(6);
        let last = first.pop().unwrap();
        for p in first {
            assert_eq!(gate.finished(p, Signal::Backpressure), None);
        }
        let mut held = take(5);
        assert_eq!(gate.finished(last, Signal::Backpressure), Some(4));
        assert_eq!(
            gate.slots().available_permits(),
            0,
            "the sixth was forgotten"
        );
        // Five in use for a limit of four: the next one back is forgotten too, then they count.
        gate.finished(held.pop().unwrap(), Signal::Ok(SMS));
        assert_eq!(gate.slots().available_permits(), 0);
        gate.finished(held.pop().unwrap(), Signal::Ok(SMS));
        assert_eq!(gate.slots().available_permits(), 1);
        assert_eq!(held.len() + gate.slots().available_permits(), gate.limit());
    }

    /// Whatever happens, slots in use plus free slots less those owed equal the limit.
    #[test]
    fn the_gate_keeps_slots_equal_to_the_limit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let gate = Gate::new(Aimd::new(3, 40));
        let mut held: Vec<OwnedSemaphorePermit> = Vec::new();
        for _ in 0..20_000 {
            if rng.random_bool(0.5) {
                if let Ok(p) = gate.slots().clone().try_acquire_owned() {
                    held.push(p);
                } else {
                    gate.saturated();
                }
            } else if !held.is_empty() {
                let p = held.swap_remove(rng.random_range(0..held.len()));
                // One in ten comes back unused (a message with nothing for this channel).
                let signal = match rng.random_range(0..10) {
                    0 => Some(Signal::Backpressure),
                    1 => Some(Signal::Failed),
                    2 => None,
                    _ => Some(Signal::Ok(SMS)),
                };
                match signal {
                    Some(signal) => {
                        gate.finished(p, signal);
                    }
                    None => gate.unused(p),
                }
            }
            let owed = gate.lock().owed;
            assert_eq!(
                held.len() + gate.slots().available_permits() - owed,
                gate.limit()
            );
            assert!((3..=40).contains(&gate.limit()));
        }
    }
}
