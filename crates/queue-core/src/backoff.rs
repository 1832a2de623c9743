//! Retry timing of a failed send.

use std::time::Duration;

use rand::Rng;

/// Retry timing: exponential backoff with full jitter, and never sooner than the provider's
/// `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// 250 ms doubling to 30 s: a few quick retries for a blip, then a slow pace through an outage
    /// of minutes, well inside a budget of eight attempts.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before the attempt after `attempt` (1-based): uniform in `[0, min(cap, base·2^(attempt-1))]`,
    /// raised to `retry_after` when the provider asked for more.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        attempt: i32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let jittered = ceiling.mul_f64(rng.random::<f64>());
        jittered.max(retry_after.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_is_capped_and_respects_retry_after() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for attempt in 1..=12 {
            let ceiling =
                Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(2));
            for _ in 0..200 {
                let d = b.delay(attempt, None, &mut rng);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} over {ceiling:?}");
            }
        }
        // Full jitter spreads retries out rather than stacking them at the ceiling.
        let spread: Vec<Duration> = (0..200).map(|_| b.delay(5, None, &mut rng)).collect();
        assert!(spread.iter().any(|d| *d < Duration::from_millis(400)));
        assert!(spread.iter().any(|d| *d > Duration::from_millis(1200)));
        let d = b.delay(1, Some(Duration::from_secs(3)), &mut rng);
        assert!(d >= Duration::from_secs(3), "Retry-After wins: {d:?}");
        assert!(b.delay(i32::MAX, None, &mut rng) <= Duration::from_secs(2));
    }
}
