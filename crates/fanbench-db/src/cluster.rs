//! A private PostgreSQL cluster in a temporary directory, on a free loopback port.
//!
//! Cleanup must survive every way the owner can end, including SIGKILL, where no destructor runs. So
//! the cluster is watched by a small guard process started before `initdb`: it blocks reading a pipe
//! whose write end only the owner holds. When the owner closes it (drop) or dies (the kernel closes
//! it), the guard stops the server and deletes the directory. The guard and the server run in their
//! own process group, so a terminal's Ctrl-C reaches the owner, which shuts down in order, and never
//! kills the server behind its back.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::DbError;

/// How the throwaway cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `fsync` and `synchronous_commit`: on by default, so commit latency is what a real, durable
    /// server would show. Turning it off is for people who know they are measuring something else.
    pub durable: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            durable: true,
            max_connections: 300,
        }
    }
}

/// A running throwaway cluster. Dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: RunAs,
    guard: Option<Child>,
    guard_stdin: Option<ChildStdin>,
}

/// The superuser initdb creates; the cluster trusts loopback connections, so it needs no password.
const SUPERUSER: &str = "postgres";

impl Cluster {
    /// Starts a cluster: finds the binaries, runs initdb in a temp dir and starts the server on a free
    /// loopback port. Blocking; it takes a second or two.
    pub fn start(options: &ClusterOptions) -> Result<Self, DbError> {
        let bin = find_pg_bin()?;
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("fanbench-pg-")
            .tempdir()
            .map_err(|source| {
                io_err(
                    "could not create a temp dir under",
                    std::env::temp_dir(),
                    source,
                )
            })?
            .keep();
        if let Some(user) = &run_as.user {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).map_err(|source| {
                io_err("could not hand to the postgres user:", dir.clone(), source)
            })?;
        }

        // The guard comes first, so that every later failure is cleaned up too.
        let (guard, guard_stdin) = spawn_guard(&run_as, &bin, &dir)?;
        let mut cluster = Cluster {
            dir,
            port: 0,
            bin,
            run_as,
            guard: Some(guard),
            guard_stdin: Some(guard_stdin),
        };

        let data = cluster.data_dir();
        let mut initdb = cluster.run_as.command(cluster.bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ])
            // Only initdb's own fsync of the fresh files is skipped; the running server stays durable.
            .arg("--no-sync");
        run(&mut initdb, "initdb")?;

        // A port found free can be taken before the server binds it; try a few times.
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()
                .map_err(|source| io_err("could not find a free port", PathBuf::new(), source))?;
            match cluster.start_server(port, options) {
                Ok(()) => {
                    cluster.port = port;
                    tracing::info!(port, dir = %cluster.dir.display(), "throwaway PostgreSQL started");
                    return Ok(cluster);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(DbError::Command {
            program: "pg_ctl".into(),
            output: "did not start".into(),
        }))
    }

    fn start_server(&self, port: u16, options: &ClusterOptions) -> Result<(), DbError> {
        let durable = if options.durable { "on" } else { "off" };
        let server_opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{sock}' \
             -c max_connections={max} -c fsync={durable} -c synchronous_commit={durable} \
             -c full_page_writes={durable}",
            sock = self.dir.display(),
            max = options.max_connections,
        );
        let mut pg_ctl = self.run_as.command(self.bin.join("pg_ctl"));
        pg_ctl
            .arg("start")
            .arg("--pgdata")
            .arg(self.data_dir())
            .arg("--log")
            .arg(self.dir.join("postgres.log"))
            .args(["--wait", "--timeout", "30", "--options", &server_opts]);
        run(&mut pg_ctl, "pg_ctl start").map_err(|e| self.with_log(e))
    }

    /// Restarts the server in immediate mode, as a crash and restart would: every connection is cut
    /// at once, nothing is checkpointed, and the server replays its WAL before it accepts
    /// connections again. Returns when it does. On the same port and with the same settings
    /// (`pg_ctl` keeps them in `postmaster.opts`). Blocking. For tests of how clients survive
    /// their database going away.
    pub fn restart_immediate(&self) -> Result<(), DbError> {
        let mut pg_ctl = self.run_as.command(self.bin.join("pg_ctl"));
        pg_ctl
            .arg("restart")
            .arg("--pgdata")
            .arg(self.data_dir())
            .arg("--log")
            .arg(self.dir.join("postgres.log"))
            .args(["--mode", "immediate", "--wait", "--timeout", "60"]);
        run(&mut pg_ctl, "pg_ctl restart").map_err(|e| self.with_log(e))
    }

    /// Adds the end of the server log to an error, since pg_ctl itself says little.
    fn with_log(&self, e: DbError) -> DbError {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        match e {
            DbError::Command { program, output } if !tail.is_empty() => DbError::Command {
                program,
                output: format!(
                    "{output}\nserver log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            },
            other => other,
        }
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temp directory (data directory, socket and log live below it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory the server runs from (`postmaster.pid` is in it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The PID of the server's postmaster, read from its pid file.
    pub fn server_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// Stops the server and deletes the directory, and waits until both are done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing the pipe is the guard's signal; a written line would do too, but EOF is what a
        // dead owner sends, so the normal path exercises the same code as the crash path.
        if let Some(mut stdin) = self.guard_stdin.take() {
            let _ = stdin.flush();
            drop(stdin);
        }
        if let Some(mut guard) = self.guard.take() {
            let _ = guard.wait();
            tracing::info!(dir = %self.dir.display(), "throwaway PostgreSQL stopped and removed");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: `FANBENCH_PG_BIN`, then `PATH`,
/// then the newest `/usr/lib/postgresql/*/bin` (where Debian and Ubuntu put them).
pub fn find_pg_bin() -> Result<PathBuf, DbError> {
    find_pg_bin_in(
        std::env::var_os("FANBENCH_PG_BIN").map(PathBuf::from),
        std::env::var_os("PATH"),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_pg_bin_in(
    explicit: Option<PathBuf>,
    path: Option<std::ffi::OsString>,
    versions_root: &Path,
) -> Result<PathBuf, DbError> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = explicit {
        return if has_all(&dir) {
            Ok(dir)
        } else {
            Err(DbError::BinariesNotFound)
        };
    }
    if let Some(dir) = path.and_then(|p| std::env::split_paths(&p).find(|d| has_all(d))) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(DbError::BinariesNotFound)
}

#[derive(Debug, Clone, Copy)]
struct User {
    uid: u32,
    gid: u32,
}

/// Whom the server's programs run as: ourselves, or the `postgres` user when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    user: Option<User>,
}

impl RunAs {
    fn detect() -> Result<Self, DbError> {
        // /proc/self belongs to the process's effective user.
        let euid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if euid != 0 {
            return Ok(Self { user: None });
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, SUPERUSER]).output().ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Ok(Self {
                user: Some(User { uid, gid }),
            }),
            _ => Err(DbError::NoPostgresUser),
        }
    }

    /// A command for `program`, run through `runuser` when we are root so that the supplementary
    /// groups are dropped too.
    fn command(&self, program: PathBuf) -> Command {
        match self.user {
            None => Command::new(program),
            Some(_) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", SUPERUSER, "--"]).arg(program);
                cmd
            }
        }
    }
}

/// The guard: waits for EOF on stdin, then stops the server (if one started) and deletes the dir.
/// It ignores SIGINT/SIGTERM/SIGHUP and sits in its own process group, so only the pipe ends it.
const GUARD_SCRIPT: &str = r#"
trap '' INT TERM HUP
while read -r _; do :; done
if [ -f "$1/data/postmaster.pid" ]; then
  "$2/pg_ctl" stop --pgdata "$1/data" --mode immediate --wait --timeout 30 >/dev/null 2>&1
fi
rm -rf "$1"
"#;

fn spawn_guard(run_as: &RunAs, bin: &Path, dir: &Path) -> Result<(Child, ChildStdin), DbError> {
    let mut cmd = run_as.command(PathBuf::from("/bin/sh"));
    cmd.args(["-c", GUARD_SCRIPT, "fanbench-pg-guard"])
        .arg(dir)
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| DbError::Spawn {
        program: "/bin/sh (cluster guard)".into(),
        source,
    })?;
    let stdin = child.stdin.take().ok_or_else(|| DbError::Command {
        program: "cluster guard".into(),
        output: "no stdin pipe".into(),
    })?;
    Ok((child, stdin))
}

fn run(cmd: &mut Command, program: &str) -> Result<(), DbError> {
    // The server inherits pg_ctl's process group; keep it out of the terminal's so a Ctrl-C reaches
    // only the owner.
    cmd.process_group(0).stdin(Stdio::null());
    let out = cmd.output().map_err(|source| DbError::Spawn {
        program: program.into(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if output.is_empty() {
        output = stdout.trim().to_string();
    }
    Err(DbError::Command {
        program: program.into(),
        output,
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn io_err(what: &'static str, path: PathBuf, source: std::io::Error) -> DbError {
    DbError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(root: &Path, version: &str) -> PathBuf {
        let bin = root.join(version).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for b in ["initdb", "pg_ctl", "postgres"] {
            std::fs::write(bin.join(b), "").unwrap();
        }
        bin
    }

    #[test]
    fn finds_the_newest_installed_version() {
        let root = tempfile::tempdir().unwrap();
        fake_install(root.path(), "13");
        let newest = fake_install(root.path(), "15");
        std::fs::create_dir_all(root.path().join("16/bin")).unwrap(); // incomplete: skipped
        assert_eq!(find_pg_bin_in(None, None, root.path()).unwrap(), newest);
    }

    #[test]
    fn path_wins_over_the_versions_dir_and_explicit_wins_over_both() {
        let root = tempfile::tempdir().unwrap();
        fake_install(root.path(), "15");
        let on_path = fake_install(root.path(), "path");
        let path = std::env::join_paths([Path::new("/nonexistent"), &on_path]).unwrap();
        assert_eq!(
            find_pg_bin_in(None, Some(path.clone()), root.path()).unwrap(),
            on_path
        );
        let explicit = fake_install(root.path(), "mine");
        assert_eq!(
            find_pg_bin_in(Some(explicit.clone()), Some(path), root.path()).unwrap(),
            explicit
        );
    }

    #[test]
    fn missing_binaries_say_how_to_install_them() {
        let root = tempfile::tempdir().unwrap();
        let err = find_pg_bin_in(None, None, root.path()).unwrap_err();
        assert!(matches!(err, DbError::BinariesNotFound));
        assert!(
            err.to_string().contains("apt-get install -y postgresql"),
            "{err}"
        );
        let err = find_pg_bin_in(Some(root.path().into()), None, root.path()).unwrap_err();
        assert!(matches!(err, DbError::BinariesNotFound));
    }
}
