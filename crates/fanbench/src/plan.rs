//! The plan of a run: the scenario, its shape, where the run goes, and what the gates compare.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use driver::{DriveOptions, Shape};
use scenario::Scenario;
use tokio_util::sync::CancellationToken;

use crate::cli::LoadArgs;

/// A loaded scenario and where its run goes.
#[derive(Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub shape: Shape,
    pub run_id: String,
    /// A short, unique tag for database names and emails.
    pub tag: String,
    pub out: PathBuf,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub quiet: bool,
}

impl Plan {
    pub fn new(load: &LoadArgs) -> Result<Self> {
        let scenario = Scenario::load(&load.scenario)?;
        let shape = scenario.shape()?;
        let started_at = chrono::Utc::now();
        let stamp = started_at.format("%Y%m%dT%H%M%SZ").to_string();
        let run_id = format!("{stamp}-{}", scenario.name);
        let out = load
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports/runs").join(&run_id));
        std::fs::create_dir_all(&out)
            .with_context(|| format!("could not create the run folder {}", out.display()))?;
        let tag = started_at.format("%H%M%S").to_string()
            + &format!("{:03}", started_at.timestamp_subsec_millis());
        Ok(Self {
            scenario,
            shape,
            run_id,
            tag,
            out,
            started_at,
            quiet: load.quiet,
        })
    }

    /// The plan of repeat `k` of `n`: its own subfolder, databases and emails.
    pub fn repeat(&self, k: u32, n: u32) -> Self {
        if n == 1 {
            return self.clone();
        }
        Self {
            out: self.out.join(format!("r{k}")),
            tag: format!("{}r{k}", self.tag),
            run_id: format!("{}-r{k}", self.run_id),
            ..self.clone()
        }
    }

    pub fn users(&self) -> usize {
        let d = &self.scenario.driver;
        d.users
            .unwrap_or_else(|| driver::users_for(self.shape.peak_rps, d.max_latency))
    }

    /// Load threads for a driver carrying `share` of the schedule (1 unless it is a shard): the
    /// scenario's `[driver] threads`, else as many as that share of the peak rate needs.
    pub fn threads(&self, share: f64) -> usize {
        self.scenario
            .driver
            .threads
            .unwrap_or_else(|| driver::threads_for(self.shape.peak_rps * share))
    }

    pub fn drive_options(
        &self,
        target: &str,
        label: &str,
        cancel: &CancellationToken,
    ) -> DriveOptions {
        let d = &self.scenario.driver;
        DriveOptions {
            target: target.to_string(),
            users: self.users(),
            threads: self.threads(1.0),
            request_timeout: d.request_timeout,
            lag_threshold: d.lag_threshold,
            run_tag: format!("{}-{label}", self.tag),
            label: label.to_string(),
            progress: !self.quiet,
            cancel: cancel.clone(),
            measure_from: d.warmup,
        }
    }
}

/// How many times, and what the gates compare against.
pub struct Gating {
    pub repeat: u32,
    pub baseline: Option<PathBuf>,
    pub junit: Option<PathBuf>,
}

/// Refuses targets outside the loopback range unless allowed: a load test sent somewhere by a typo
/// is an attack on someone.
pub fn check_loopback(target: &str, allow_remote: bool) -> Result<()> {
    // reqwest's URL parser (the WHATWG one) is what the driver's client will use on it.
    let url = reqwest::Url::parse(target)
        .ok()
        .filter(|u| u.has_host())
        .with_context(|| format!("`{target}` is not a URL like http://127.0.0.1:7002"))?;
    // An IPv6 host comes back in brackets, as it is written in a URL.
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        bail!(
            "refusing to send load to {}: not a loopback address; pass --allow-remote if you mean it",
            host
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_without_allow_remote() {
        for ok in [
            "http://127.0.0.1:7002",
            "http://localhost:80/",
            "http://[::1]:7002",
            "http://127.8.9.10",
        ] {
            assert!(check_loopback(ok, false).is_ok(), "{ok}");
        }
        for remote in [
            "http://10.0.0.1:80",
            "http://example.com",
            "https://192.168.1.2:443/x",
        ] {
            let err = check_loopback(remote, false).unwrap_err().to_string();
            assert!(err.contains("--allow-remote"), "{err}");
            assert!(check_loopback(remote, true).is_ok());
        }
        assert!(
            check_loopback("127.0.0.1:7002", false).is_err(),
            "a URL needs a scheme"
        );
    }
}
