//! How each simulated provider behaves. The same types are read from scenario files (TOML) and from
//! the admin endpoint (JSON), so unknown keys are rejected in both.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};
use signup_core::Channel;

/// The standard normal quantile at 0.99: a log-normal's p99 is `median * exp(sigma * Z99)`.
const Z99: f64 = 2.326_347_874_040_841;

/// The time a provider takes to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum Latency {
    /// Always the same: `{ dist = "fixed", value = "50ms" }`.
    Fixed {
        #[serde(with = "humantime_serde")]
        value: Duration,
    },
    /// Log-normal, given by its median and 99th percentile: the long right tail real providers show.
    /// `{ dist = "lognormal", median = "80ms", p99 = "400ms" }`.
    Lognormal {
        #[serde(with = "humantime_serde")]
        median: Duration,
        #[serde(with = "humantime_serde")]
        p99: Duration,
    },
}

impl Latency {
    /// Checks that the distribution can be sampled.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Latency::Fixed { .. } => Ok(()),
            Latency::Lognormal { median, p99 } if median.is_zero() => {
                Err(format!("lognormal median must be above zero (p99 {p99:?})"))
            }
            Latency::Lognormal { median, p99 } if p99 < median => Err(format!(
                "lognormal p99 ({p99:?}) must not be below the median ({median:?})"
            )),
            Latency::Lognormal { .. } => Ok(()),
        }
    }

    /// A sampler for this distribution.
    pub fn sampler(&self) -> Result<LatencySampler, String> {
        self.validate()?;
        Ok(match *self {
            Latency::Fixed { value } => LatencySampler::Fixed(value),
            Latency::Lognormal { median, p99 } => {
                let mu = median.as_secs_f64().ln();
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99;
                match LogNormal::new(mu, sigma) {
                    Ok(d) => LatencySampler::LogNormal(d),
                    Err(e) => return Err(format!("lognormal({median:?}, {p99:?}): {e}")),
                }
            }
        })
    }
}

/// Draws latencies from a [`Latency`].
#[derive(Debug, Clone, Copy)]
pub enum LatencySampler {
    Fixed(Duration),
    LogNormal(LogNormal<f64>),
}

impl LatencySampler {
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match self {
            LatencySampler::Fixed(d) => *d,
            // Capped at ten minutes so a pathological sigma cannot park a request forever.
            LatencySampler::LogNormal(d) => Duration::from_secs_f64(d.sample(rng).min(600.0)),
        }
    }
}

/// A window in which the provider answers every send with 503, measured from when the
/// configuration was applied (the simulator's start, or the admin call that set it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl Outage {
    /// The time left in this outage at `elapsed` since the configuration was applied, if inside it.
    pub fn remaining_at(&self, elapsed: Duration) -> Option<Duration> {
        let end = self.start + self.duration;
        (elapsed >= self.start && elapsed < end).then(|| end - elapsed)
    }
}

/// One provider's behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBehaviour {
    pub latency: Latency,
    /// The share of sends (0 to 1) answered with a server error (500 or 503), after the latency.
    #[serde(default)]
    pub error_rate: f64,
    /// Sends per second the provider accepts; past that it answers 429 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Scheduled outages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outages: Vec<Outage>,
}

impl ChannelBehaviour {
    pub fn validate(&self) -> Result<(), String> {
        self.latency.validate()?;
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error_rate must be between 0 and 1, not {}",
                self.error_rate
            ));
        }
        if let Some(r) = self.rate_limit {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!(
                    "rate_limit must be a positive number of sends per second, not {r}"
                ));
            }
        }
        Ok(())
    }

    fn with_latency(median_ms: u64, p99_ms: u64) -> Self {
        Self {
            latency: Latency::Lognormal {
                median: Duration::from_millis(median_ms),
                p99: Duration::from_millis(p99_ms),
            },
            error_rate: 0.0,
            rate_limit: None,
            outages: Vec::new(),
        }
    }
}

/// All three providers. The defaults are in the range public status pages and SDK docs show for
/// transactional email, SMS and push APIs: tens to a few hundred milliseconds, with a long tail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default = "default_email")]
    pub email: ChannelBehaviour,
    #[serde(default = "default_sms")]
    pub sms: ChannelBehaviour,
    #[serde(default = "default_push")]
    pub push: ChannelBehaviour,
}

fn default_email() -> ChannelBehaviour {
    ChannelBehaviour::with_latency(80, 400)
}
fn default_sms() -> ChannelBehaviour {
    ChannelBehaviour::with_latency(120, 600)
}
fn default_push() -> ChannelBehaviour {
    ChannelBehaviour::with_latency(40, 200)
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            email: default_email(),
            sms: default_sms(),
            push: default_push(),
        }
    }
}

impl SimConfig {
    pub fn channel(&self, channel: Channel) -> &ChannelBehaviour {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
            Channel::Push => &self.push,
        }
    }

    pub fn channel_mut(&mut self, channel: Channel) -> &mut ChannelBehaviour {
        match channel {
            Channel::Email => &mut self.email,
            Channel::Sms => &mut self.sms,
            Channel::Push => &mut self.push,
        }
    }

    /// Checks every channel; the error names the channel.
    pub fn validate(&self) -> Result<(), String> {
        for c in Channel::ALL {
            self.channel(c)
                .validate()
                .map_err(|e| format!("{c}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn quantile(sorted: &[Duration], q: f64) -> Duration {
        sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
    }

    #[test]
    fn lognormal_matches_its_median_and_p99() {
        let latency = Latency::Lognormal {
            median: Duration::from_millis(80),
            p99: Duration::from_millis(400),
        };
        let sampler = latency.sampler().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut samples: Vec<Duration> = (0..5000).map(|_| sampler.sample(&mut rng)).collect();
        samples.sort();
        let median = quantile(&samples, 0.5).as_secs_f64() * 1000.0;
        let p99 = quantile(&samples, 0.99).as_secs_f64() * 1000.0;
        assert!((median - 80.0).abs() < 80.0 * 0.05, "median {median} ms");
        // The p99 of 5,000 samples rests on ~50 points; 15 % is several standard errors wide.
        assert!((p99 - 400.0).abs() < 400.0 * 0.15, "p99 {p99} ms");
    }

    #[test]
    fn fixed_is_fixed() {
        let sampler = Latency::Fixed {
            value: Duration::from_millis(3),
        }
        .sampler()
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| sampler.sample(&mut rng) == Duration::from_millis(3)));
    }

    #[test]
    fn bad_behaviours_are_rejected() {
        let mut b = default_email();
        b.error_rate = 1.5;
        assert!(b.validate().is_err());
        b.error_rate = 0.1;
        b.rate_limit = Some(0.0);
        assert!(b.validate().is_err());
        b.rate_limit = None;
        b.latency = Latency::Lognormal {
            median: Duration::from_millis(50),
            p99: Duration::from_millis(10),
        };
        assert!(b.validate().is_err());
    }

    #[test]
    fn outage_windows() {
        let o = Outage {
            start: Duration::from_secs(10),
            duration: Duration::from_secs(5),
        };
        assert_eq!(o.remaining_at(Duration::from_secs(9)), None);
        assert_eq!(
            o.remaining_at(Duration::from_secs(10)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            o.remaining_at(Duration::from_secs(14)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(o.remaining_at(Duration::from_secs(15)), None);
    }

    #[test]
    fn config_reads_from_json_and_rejects_typos() {
        let json = r#"{"sms": {"latency": {"dist": "fixed", "value": "5ms"}, "error_rate": 0.5}}"#;
        let cfg: SimConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.sms.error_rate, 0.5);
        assert_eq!(cfg.email, default_email());
        let typo = r#"{"sms": {"latency": {"dist": "fixed", "value": "5ms"}, "eror_rate": 0.5}}"#;
        assert!(serde_json::from_str::<SimConfig>(typo).is_err());
    }
}
