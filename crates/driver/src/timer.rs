//! A sleep that ends on time, inside the driver's event loop.
//!
//! tokio's timer wakes on millisecond ticks, so a request scheduled between two ticks would leave
//! up to a millisecond late. A Linux timerfd is a high-resolution kernel timer whose expiry the
//! event loop sees as a readable file descriptor: the same `epoll_wait` that waits for answers
//! wakes when the next request falls due, tens of microseconds after, with no extra thread and no
//! spinning.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// Owns the timerfd (tokio's `AsyncFd` wants `AsRawFd`).
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One precise timer; [`PreciseTimer::sleep_until`] rearms it.
pub struct PreciseTimer {
    fd: AsyncFd<Fd>,
}

impl std::fmt::Debug for PreciseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreciseTimer")
    }
}

impl PreciseTimer {
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated because a borrowed raw fd could be closed under it; its
        // replacement, `register`, is `unsafe`, which this workspace forbids. Here the `AsyncFd`
        // owns the `TimerFd` (an `OwnedFd`), so the descriptor lives exactly as long as it does.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Fd(fd))?;
        Ok(Self { fd })
    }

    /// Returns at `deadline` (at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        let wait = TimeSpec::from_duration(deadline - now);
        self.fd
            .get_ref()
            .0
            .set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())?;
        loop {
            // Every expiry wakes the event loop (it registered the timer edge-triggered), and
            // rearming resets the expiry count, so the count is never read: the readiness is
            // cleared by hand, and a wake-up left over from a sleep given up early (a timer that
            // expired after its sleep was dropped) is told apart by the clock.
            let mut ready = self.fd.readable().await?;
            ready.clear_ready();
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn sleeps_until_the_deadline_and_never_returns_early() {
        let timer = PreciseTimer::new().unwrap();
        for micros in [0, 50, 300, 2_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline, "woke before {micros} µs");
        }
        // A deadline in the past returns at once, and the timer stays usable.
        timer
            .sleep_until(Instant::now() - Duration::from_millis(5))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_micros(100);
        timer.sleep_until(deadline).await.unwrap();
        assert!(Instant::now() >= deadline);
    }
}
