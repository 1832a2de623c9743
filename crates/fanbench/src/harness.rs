//! The pieces `compare` and `run` put together: child server processes, the database server,
//! the provider simulator's admin and ledger, and reconciliation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use results::{ChannelDelivery, Reconciliation};
use sqlx::PgPool;

/// A fanbench server running as a child process of this one. It stops when dropped (and, because
/// it watches its stdin, when this process dies).
#[derive(Debug)]
pub struct ChildServer {
    pub name: String,
    pub url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Kept open: a server that prints again must not meet a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    /// Runs `fanbench <args> --listen 127.0.0.1:0 --watch-stdin`, logging to `log`, and waits for
    /// the line that says where it listens.
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the fanbench executable")?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("could not create {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--watch-stdin"])
            .env(
                "FANBENCH_LOG",
                std::env::var("FANBENCH_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("could not start the {name} server"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout from the child")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("reading the child's address")?;
        let url = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        if !url.starts_with("http://") {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "the {name} server did not start; its log ({}) ends:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        Ok(Self {
            name: name.to_string(),
            url,
            child,
            stdin,
            _stdout: stdout,
        })
    }

    /// How the server ended, if it has ended: a server that exits while it is being measured
    /// makes the run invalid.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("its state could not be read: {e}")),
        }
    }

    /// Asks the server to stop (SIGTERM), waits up to `grace`, then kills it.
    pub fn stop(mut self, grace: Duration) -> Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    tracing::warn!(server = %self.name, %status, "server exited with an error");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(server = %self.name, "server did not stop within {grace:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The provider simulator's admin and ledger, over HTTP.
#[derive(Debug, Clone)]
pub struct Providers {
    pub url: String,
    http: reqwest::Client,
}

#[derive(Debug, serde::Deserialize)]
struct LedgerLine {
    key: String,
    received_at: DateTime<Utc>,
}

impl Providers {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Clears the ledger and applies `config` (outage windows count from now).
    pub async fn prepare(&self, config: &provider_sim::SimConfig) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/admin/reset", self.url))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("provider reset answered {}", r.status());
        }
        let r = self
            .http
            .put(format!("{}/admin/config", self.url))
            .json(config)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "provider config answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn summary(&self) -> Result<provider_sim::Summary> {
        Ok(self
            .http
            .get(format!("{}/ledger/summary", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn ledger(&self) -> Result<Vec<LedgerLine>> {
        let text = self
            .http
            .get(format!("{}/ledger", self.url))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .map(|l| serde_json::from_str(l).context("a ledger line is not valid"))
            .collect()
    }
}

/// How the designs name a sign-up's notifications in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// `<user id>:<channel>`, for every committed user (sync).
    Users,
    /// `<event id>:<channel>`, from each user's outbox rows (async).
    Outbox,
}

const CHANNELS: [&str; 3] = ["email", "sms", "push"];

/// Where an owed notification stands in the design's own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Nothing would deliver it any more: a sync sign-up's send (made inside its request or never),
    /// an outbox row marked done, or no outbox row at all.
    Nowhere,
    /// Still queued (pending) when the drain deadline passed.
    Queued,
    /// Dead-lettered.
    Dead,
}

/// One owed notification: its channel, its sign-up's intended send time, where it stands.
#[derive(Debug, Clone, Copy)]
struct Owed {
    channel: usize,
    at: Duration,
    held: Held,
}

/// A committed user's id and email, a channel its sign-up asked for, and that channel's outbox
/// row's event id and state (async; absent when the row is missing, and always for sync).
type OwedRow = (
    uuid::Uuid,
    String,
    String,
    Option<uuid::Uuid>,
    Option<String>,
);

/// What the driver saw of the sign-ups, for reconciliation.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// Answered 2xx.
    pub accepted: u64,
    /// Refused (503, other 5xx) or unanswered (timeouts, connection errors).
    pub refused: u64,
}

/// Reconciles what the database committed against what the providers received: set arithmetic
/// over idempotency keys. Every owed notification ends up in exactly one of delivered, lost, dead
/// or undelivered. Delivery latency runs from each sign-up's intended send time (read back from
/// its email) to the provider's receipt.
pub async fn reconcile(
    pool: &PgPool,
    keys: Keys,
    providers: &Providers,
    started_at: SystemTime,
    answered: Answered,
) -> Result<(
    Reconciliation,
    std::collections::BTreeMap<String, ChannelDelivery>,
)> {
    // Each committed user and the channels its sign-up asked for; for the async design, the outbox
    // row of each (absent when the outbox lost it).
    let rows: Vec<OwedRow> = match keys {
        Keys::Users => {
            sqlx::query_as(
                "SELECT u.id, u.email, c.channel, NULL::uuid, NULL::text
                 FROM users u
                 CROSS JOIN LATERAL (VALUES ('email', true), ('sms', u.phone IS NOT NULL),
                                            ('push', u.device_token IS NOT NULL)) AS c(channel, wanted)
                 WHERE c.wanted",
            )
            .fetch_all(pool)
            .await?
        }
        Keys::Outbox => {
            sqlx::query_as(
                "SELECT u.id, u.email, c.channel, d.event_id, d.state
                 FROM users u
                 CROSS JOIN LATERAL (VALUES ('email', true), ('sms', u.phone IS NOT NULL),
                                            ('push', u.device_token IS NOT NULL)) AS c(channel, wanted)
                 LEFT JOIN deliveries d ON d.user_id = u.id AND d.channel = c.channel
                 WHERE c.wanted",
            )
            .fetch_all(pool)
            .await?
        }
    };
    let committed: u64 = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
        .fetch_one(pool)
        .await?
        .try_into()
        .unwrap_or(0);

    // key → what is owed. A notification with no outbox row is owed all the same; it cannot be
    // delivered under any key the providers would see, so it is keyed by its user.
    let mut owed: HashMap<String, Owed> = HashMap::with_capacity(rows.len());
    for (user, email, channel, event, state) in rows {
        let at = driver::parse_email(&email)
            .map(|(_, at)| at)
            .unwrap_or_default();
        let i = CHANNELS.iter().position(|c| *c == channel).unwrap_or(0);
        let (key, held) = match (keys, event) {
            (Keys::Users, _) => (format!("{user}:{channel}"), Held::Nowhere),
            (Keys::Outbox, None) => (
                format!("missing-outbox-row:{user}:{channel}"),
                Held::Nowhere,
            ),
            (Keys::Outbox, Some(event)) => (
                format!("{event}:{channel}"),
                match state.as_deref() {
                    Some("pending") => Held::Queued,
                    Some("dead") => Held::Dead,
                    _ => Held::Nowhere,
                },
            ),
        };
        owed.insert(
            key,
            Owed {
                channel: i,
                at,
                held,
            },
        );
    }

    let mut latency: [Histogram<u64>; 3] = std::array::from_fn(|_| results::new_histogram());
    let mut delivered = 0u64;
    let mut unexpected = 0u64;
    let zero: DateTime<Utc> = started_at.into();
    for line in providers.ledger().await? {
        match owed.remove(&line.key) {
            Some(o) => {
                delivered += 1;
                let intended = zero + chrono::Duration::from_std(o.at).unwrap_or_default();
                let us = (line.received_at - intended)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(1) as u64;
                latency[o.channel].saturating_record(us);
            }
            None => unexpected += 1,
        }
    }
    // What is left was not delivered: where does it stand?
    let (mut lost, mut dead, mut undelivered) = (0u64, 0u64, 0u64);
    for o in owed.values() {
        match o.held {
            Held::Nowhere => lost += 1,
            Held::Queued => undelivered += 1,
            Held::Dead => dead += 1,
        }
    }
    // Accepted sign-ups the database does not hold were lost with everything they were owed; the
    // driver keeps nothing per request, so each is counted as its one certain notification (email).
    let missing = answered.accepted.saturating_sub(committed);
    lost += missing;
    // Sign-ups that committed without a 2xx (the driver gave up first, or the answer was lost) are
    // owed like any other; the rest of the refused ones never got in.
    let committed_unanswered = committed.saturating_sub(answered.accepted);
    let summary = providers.summary().await?;
    let duplicates = summary.email.duplicates + summary.sms.duplicates + summary.push.duplicates;
    let reconciliation = Reconciliation {
        accepted: answered.accepted,
        committed,
        expected: delivered + lost + dead + undelivered,
        delivered,
        lost,
        dead,
        undelivered,
        duplicates,
        unexpected,
        never_notified: answered.refused.saturating_sub(committed_unanswered),
    };
    let delivery = CHANNELS
        .iter()
        .zip(latency.iter())
        .map(|(name, h)| {
            let p = results::Percentiles::from_histogram(h);
            (
                name.to_string(),
                ChannelDelivery {
                    delivered: h.len(),
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                    max_ms: p.max,
                    spectrum: results::spectrum(h),
                },
            )
        })
        .collect();
    Ok((reconciliation, delivery))
}

/// Waits until the async design has no pending deliveries, or `timeout`; returns whether it drained
/// and how long it took.
pub async fn wait_for_drain(
    pool: &PgPool,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(bool, Duration)> {
    let started = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'pending'")
                .fetch_one(pool)
                .await?;
        if pending == 0 {
            return Ok((true, started.elapsed()));
        }
        if started.elapsed() >= timeout || cancel.is_cancelled() {
            tracing::warn!(pending, "the queue did not drain within {timeout:?}");
            return Ok((false, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
