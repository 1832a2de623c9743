//! Live progress on stderr: a bar on a terminal, a line every ten seconds elsewhere (CI logs).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::schedule::Shape;

/// What progress shows, read from the recorder.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub elapsed: Duration,
    /// Offered and achieved (2xx) in the last full second.
    pub offered_rps: u64,
    pub ok_rps: u64,
    pub sent: u64,
    pub p99_ms: f64,
    pub status_503: u64,
    pub lag_p99_ms: f64,
}

/// A running progress display; ends with [`Progress::finish`].
#[derive(Debug)]
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: ProgressBar,
}

impl Progress {
    pub fn start(
        label: &str,
        shape: &Shape,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> Self {
        let total = shape.duration.as_secs().max(1);
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos:>3}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        let phases = shape.phases.clone();
        let label = label.to_string();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut last_line = Duration::ZERO;
            loop {
                tick.tick().await;
                let s = snapshot();
                let phase = phases
                    .iter()
                    .find(|(_, start, end)| s.elapsed >= *start && s.elapsed < *end)
                    .map_or("drain", |(name, _, _)| name.as_str());
                let msg = format!(
                    "{phase:<10} offered {:>4}/s  2xx {:>4}/s  p99 {:>8.1} ms  503s {:>6}  send lag p99 {:.1} ms",
                    s.offered_rps, s.ok_rps, s.p99_ms, s.status_503, s.lag_p99_ms
                );
                shown.set_position(s.elapsed.as_secs().min(total));
                shown.set_message(msg.clone());
                if !terminal && s.elapsed >= last_line + Duration::from_secs(10) {
                    last_line = s.elapsed;
                    eprintln!("{label} {:>4}s {msg}", s.elapsed.as_secs());
                }
            }
        });
        Self { task, bar }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
