//! A private `nats-server -js` in a temporary directory, on a free loopback port: the broker
//! design's counterpart of fanbench-db's throwaway PostgreSQL cluster.
//!
//! Cleanup must survive every way the owner can end, SIGKILL included. So, as for the cluster, a
//! small guard process started first blocks reading a pipe only the owner holds; when the owner
//! closes it (drop) or dies (the kernel closes it), the guard kills the server named in the pid
//! file and deletes the directory. The server writes its pid file itself, so a server restarted on
//! the same port and store (a fault test's kill -9 and restart) is the one the guard stops.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What can stop the throwaway server from starting.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "nats-server was not found (looked at $FANBENCH_NATS_SERVER, then PATH); install it with \
         `apt-get install nats-server` (scripts/ensure-deps.sh does), or pass --nats-url"
    )]
    NotFound,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "nats-server did not accept connections on port {port} within {waited:?}; its log ends:\n{log}"
    )]
    NotReady {
        port: u16,
        waited: Duration,
        log: String,
    },
}

/// A running throwaway nats-server with JetStream. Dropping it stops the server and deletes its
/// store.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    server: Option<Child>,
    guard: Option<Child>,
    guard_stdin: Option<ChildStdin>,
}

/// How long a starting server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

impl NatsServer {
    /// Starts `nats-server -js` on a free loopback port with its store in a new temp dir. Blocking;
    /// it takes a fraction of a second.
    pub fn start() -> Result<Self, NatsError> {
        let bin = find_nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("fanbench-nats-")
            .tempdir()
            .map_err(|source| NatsError::Io {
                what: "could not create a temp dir under",
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        let (guard, guard_stdin) = spawn_guard(&dir)?;
        let mut server = Self {
            bin,
            dir,
            port: 0,
            server: None,
            guard: Some(guard),
            guard_stdin: Some(guard_stdin),
        };
        // A port found free can be taken before the server binds it; try a few times.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port().map_err(|source| NatsError::Io {
                what: "could not find a free port",
                path: PathBuf::new(),
                source,
            })?;
            server.port = port;
            match server.launch() {
                Ok(()) => {
                    tracing::info!(port, dir = %server.dir.display(), "throwaway nats-server started");
                    return Ok(server);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(NatsError::NotFound))
    }

    fn launch(&mut self) -> Result<(), NatsError> {
        let log = self.dir.join("nats.log");
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("-P")
            .arg(self.dir.join("nats.pid"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the terminal's process group: a Ctrl-C reaches the owner, which stops in order.
            .process_group(0)
            .spawn()
            .map_err(|source| NatsError::Io {
                what: "could not start",
                path: self.bin.clone(),
                source,
            })?;
        self.server = Some(child);
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        Err(NatsError::NotReady {
            port: self.port,
            waited: started.elapsed(),
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to be gone. The store
    /// stays. For fault tests.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (after [`Self::kill`]), and waits
    /// until it accepts connections.
    pub fn restart(&mut self) -> Result<(), NatsError> {
        self.kill();
        self.launch()
    }

    /// Stops the server and deletes its store, and waits until both are done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // SIGTERM lets the server close its store cleanly; the guard then removes the directory.
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut stdin) = self.guard_stdin.take() {
            let _ = stdin.flush();
        }
        if let Some(mut guard) = self.guard.take() {
            let _ = guard.wait();
            tracing::info!(dir = %self.dir.display(), "throwaway nats-server stopped and removed");
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The guard: waits for EOF on stdin, then kills the server of the pid file (if it still runs)
/// and deletes the directory. It ignores SIGINT/SIGTERM/SIGHUP and sits in its own process group,
/// so only the pipe ends it.
const GUARD_SCRIPT: &str = r#"
trap '' INT TERM HUP
while read -r _; do :; done
if [ -f "$1/nats.pid" ]; then
  pid=$(cat "$1/nats.pid")
  if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = nats-server ]; then
    kill -KILL "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
fi
rm -rf "$1"
"#;

fn spawn_guard(dir: &Path) -> Result<(Child, ChildStdin), NatsError> {
    let mut child = Command::new("/bin/sh")
        .args(["-c", GUARD_SCRIPT, "fanbench-nats-guard"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| NatsError::Io {
            what: "could not start the guard",
            path: PathBuf::from("/bin/sh"),
            source,
        })?;
    let stdin = child.stdin.take().ok_or_else(|| NatsError::Io {
        what: "no stdin pipe to the guard of",
        path: dir.to_path_buf(),
        source: std::io::Error::other("no pipe"),
    })?;
    Ok((child, stdin))
}

/// Finds `nats-server`: `FANBENCH_NATS_SERVER`, then `PATH`.
pub fn find_nats_server() -> Result<PathBuf, NatsError> {
    if let Some(explicit) = std::env::var_os("FANBENCH_NATS_SERVER") {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(NatsError::NotFound)
        };
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .find(|b| b.is_file())
        })
        .ok_or(NatsError::NotFound)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
