//! Launching a design's server: its typed settings become the command line here, and only here.

use std::path::PathBuf;
use std::time::Duration;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use scenario::Scenario;

use crate::cli::Design;

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

    /// The server's process id, for reading its CPU time and memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        // Already gone (and reaped by `exited`): its pid may be someone else's by now.
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
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

pub async fn spawn(name: &str, args: Vec<String>, log: PathBuf) -> Result<ChildServer> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || ChildServer::spawn(&name, &args, &log))
        .await
        .context("spawning a server")?
}

/// A duration as the flags take it (humantime, exact to the nanosecond).
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `fanbench serve sync`'s flags for `config`: the one place a sync server's settings become a
/// command line.
pub fn sync_flags(config: &sync_server::Config) -> Vec<String> {
    vec![
        "--pool-size".into(),
        config.pool_size.to_string(),
        "--acquire-timeout".into(),
        duration(config.acquire_timeout),
        "--provider-timeout".into(),
        duration(config.provider_timeout),
    ]
}

/// `fanbench serve async`'s flags for `settings` (its drain timeout is the harness's, not the
/// server's): the one place an async server's settings become a command line.
pub fn async_flags(settings: &async_server::Settings) -> Vec<String> {
    vec![
        "--pool-size".into(),
        settings.pool_size.to_string(),
        "--acquire-timeout".into(),
        duration(settings.acquire_timeout),
        "--provider-timeout".into(),
        duration(settings.provider_timeout),
        "--concurrency".into(),
        settings.concurrency.to_string(),
        "--max-concurrency".into(),
        settings.max_concurrency.to_string(),
        "--batch".into(),
        settings.batch.to_string(),
        "--poll-interval".into(),
        duration(settings.poll_interval),
        "--lease".into(),
        duration(settings.lease),
        "--max-attempts".into(),
        settings.max_attempts.to_string(),
    ]
}

/// `fanbench serve broker`'s flags for `settings` (its drain timeout is the harness's): the one
/// place a broker server's settings become a command line.
pub fn broker_flags(settings: &broker_server::Settings) -> Vec<String> {
    vec![
        "--pool-size".into(),
        settings.pool_size.to_string(),
        "--acquire-timeout".into(),
        duration(settings.acquire_timeout),
        "--provider-timeout".into(),
        duration(settings.provider_timeout),
        "--concurrency".into(),
        settings.concurrency.to_string(),
        "--max-concurrency".into(),
        settings.max_concurrency.to_string(),
        "--batch".into(),
        settings.batch.to_string(),
        "--poll-interval".into(),
        duration(settings.poll_interval),
        "--lease".into(),
        duration(settings.lease),
        "--max-attempts".into(),
        settings.max_attempts.to_string(),
    ]
}

/// The server command line of a design, and the settings it ran with. `nats_url` is the broker
/// design's NATS server (the harness starts it, so that it can read the consumers to drain).
pub async fn server_args(
    scenario: &Scenario,
    design: Design,
    database_url: &str,
    db_name: &str,
    providers_url: &str,
    nats_url: Option<&str>,
) -> Result<(Vec<String>, serde_json::Value)> {
    let mut args: Vec<String> = vec!["serve".into(), design.name().into()];
    args.extend([
        "--providers-url".into(),
        providers_url.into(),
        "--database-url".into(),
        database_url.into(),
    ]);
    let settings = match design {
        Design::Sync => {
            let s = &scenario.servers.sync;
            args.extend(sync_flags(s));
            serde_json::to_value(s)?
        }
        Design::Async => {
            let s = &scenario.servers.async_;
            // The log store is `<design database>_logs` beside it (dropped with it afterwards).
            let log_url =
                fanbench_db::database_url_with_name(database_url, &format!("{db_name}_logs"))?;
            fanbench_db::ensure_database(&log_url).await?;
            args.extend(["--log-database-url".into(), log_url]);
            args.extend(async_flags(s));
            // Reconciliation reads the outbox after the run: keep finished rows until then.
            args.extend([
                "--prune-after".into(),
                duration(scenario_span(scenario) + s.drain_timeout + Duration::from_secs(600)),
            ]);
            serde_json::to_value(s)?
        }
        Design::Broker => {
            let s = &scenario.servers.broker;
            let log_url =
                fanbench_db::database_url_with_name(database_url, &format!("{db_name}_logs"))?;
            fanbench_db::ensure_database(&log_url).await?;
            args.extend(["--log-database-url".into(), log_url]);
            if let Some(url) = nats_url {
                args.extend(["--nats-url".into(), url.into()]);
            }
            args.extend(broker_flags(s));
            // Reconciliation reads the outbox after the run: keep published rows until then.
            args.extend([
                "--prune-after".into(),
                duration(scenario_span(scenario) + s.drain_timeout + Duration::from_secs(600)),
            ]);
            serde_json::to_value(s)?
        }
    };
    Ok((args, settings))
}

/// How long a design's run can last: the schedule plus the longest a request may take.
pub fn scenario_span(scenario: &Scenario) -> Duration {
    let shape = scenario
        .shape()
        .map(|s| s.duration)
        .unwrap_or(Duration::from_secs(3600));
    shape + scenario.driver.request_timeout
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, ServeCommand};

    fn parse(design: &str, flags: Vec<String>) -> Command {
        let mut argv: Vec<String> = ["fanbench", "serve", design, "--providers-url", "http://x"]
            .map(String::from)
            .to_vec();
        argv.extend(flags);
        Cli::try_parse_from(argv).unwrap().command
    }

    /// The flags a server is started with say exactly what its typed settings say.
    #[test]
    fn typed_settings_survive_the_command_line() {
        let sync = sync_server::Config {
            pool_size: 7,
            acquire_timeout: Duration::from_micros(1_500_250),
            provider_timeout: Duration::from_secs(3),
        };
        let Command::Serve(ServeCommand::Sync(args)) = parse("sync", sync_flags(&sync)) else {
            panic!("not sync")
        };
        assert_eq!(
            (
                args.pool.pool_size,
                *args.pool.acquire_timeout,
                *args.provider_timeout
            ),
            (sync.pool_size, sync.acquire_timeout, sync.provider_timeout)
        );

        let settings = async_server::Settings {
            pool_size: 4,
            acquire_timeout: Duration::from_millis(700),
            provider_timeout: Duration::from_secs(2),
            concurrency: 9,
            max_concurrency: 99,
            batch: 5,
            poll_interval: Duration::from_millis(20),
            lease: Duration::from_secs(40),
            max_attempts: 3,
            drain_timeout: Duration::from_secs(1),
        };
        let Command::Serve(ServeCommand::Async(args)) = parse("async", async_flags(&settings))
        else {
            panic!("not async")
        };
        let w = &args.workers;
        assert_eq!(
            (
                args.pool.pool_size,
                *args.pool.acquire_timeout,
                *args.provider_timeout,
                w.concurrency,
                w.max_concurrency,
                w.batch,
                *w.poll_interval,
                *w.lease,
                w.max_attempts,
            ),
            (
                settings.pool_size,
                settings.acquire_timeout,
                settings.provider_timeout,
                settings.concurrency,
                settings.max_concurrency,
                settings.batch,
                settings.poll_interval,
                settings.lease,
                i32::try_from(settings.max_attempts).unwrap(),
            )
        );

        let settings = broker_server::Settings {
            pool_size: 3,
            acquire_timeout: Duration::from_millis(900),
            provider_timeout: Duration::from_secs(4),
            concurrency: 7,
            max_concurrency: 70,
            batch: 11,
            poll_interval: Duration::from_millis(15),
            lease: Duration::from_secs(12),
            max_attempts: 5,
            drain_timeout: Duration::from_secs(1),
        };
        let Command::Serve(ServeCommand::Broker(args)) = parse("broker", broker_flags(&settings))
        else {
            panic!("not broker")
        };
        let parsed = broker_server::Settings {
            pool_size: args.pool_size,
            acquire_timeout: *args.acquire_timeout,
            provider_timeout: *args.provider_timeout,
            concurrency: args.concurrency,
            max_concurrency: args.max_concurrency,
            batch: args.batch,
            poll_interval: *args.poll_interval,
            lease: *args.lease,
            max_attempts: args.max_attempts,
            drain_timeout: settings.drain_timeout,
        };
        assert_eq!(parsed, settings);
    }
}
