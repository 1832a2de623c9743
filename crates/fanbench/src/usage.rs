//! Who used the machine: the CPU time and peak memory of each process a run started (the
//! fanbench process itself, the design's server, the simulator, PostgreSQL), over one design's
//! window, read from Linux's `/proc`. A figure that cannot be read — not Linux, permission denied,
//! the process gone, a process fanbench did not start — is recorded as absent with the reason,
//! never as 0.
//!
//! - **CPU** is the difference of two readings of `/proc/<pid>/stat`'s `utime + stime` (clock
//!   ticks; the tick rate is the kernel's `AT_CLKTCK` from `/proc/self/auxv`, which is what
//!   `sysconf(_SC_CLK_TCK)` returns). A single process counts its own threads only: the fanbench
//!   process reaps the servers it started, so its `cutime` would count them twice. A tree
//!   (PostgreSQL) counts `utime + stime + cutime + cstime` of every live member: a backend that
//!   exits in the window moves its time into the postmaster's `cutime` when it is reaped, so it
//!   is neither lost nor counted twice. A start time (`stat`'s `starttime`) that changed between
//!   the readings means the pid is someone else's now: the process is reported gone.
//! - **Memory** of a single process is `VmHWM` from `/proc/<pid>/status`, the kernel's exact
//!   high-water mark of its resident set, reset at the window's start by writing `5` to
//!   `/proc/<pid>/clear_refs`, so the fanbench process and the simulator, which outlive a design,
//!   report that design's peak. PostgreSQL's is the largest per-second sample of `Pss` summed over
//!   its tree (`/proc/<pid>/smaps_rollup`): shared buffers are mapped by every backend, so summing
//!   their resident sets would count them once per backend; proportional sizes add up to the
//!   tree's real footprint. A peak between two samples is missed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use results::{MemoryMeasure, ProcessUsage, Processes};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where one role's figures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One process (its threads included, its children not).
    Process(u32),
    /// A process and all its descendants, sampled for memory every second.
    Tree(u32),
    /// Nothing fanbench may read, and why (a sentence).
    Unavailable(String),
}

impl Source {
    /// The fanbench process itself.
    pub fn this_process() -> Self {
        Self::Process(std::process::id())
    }
}

/// The fields of `/proc/<pid>/stat` used here; times in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    /// Ticks after boot when the process started: with the pid, what names a process.
    pub starttime: u64,
}

/// Parses a `/proc/<pid>/stat` line. The second field is the command name in parentheses, which
/// may itself hold spaces and parentheses, so the fields after it are counted from its *last*
/// closing parenthesis.
pub fn parse_stat(line: &str) -> Result<Stat, String> {
    let bad = |what: &str| format!("unexpected /proc stat line ({what}): {line:?}");
    let (_, rest) = line
        .rsplit_once(')')
        .ok_or_else(|| bad("no command name"))?;
    // Fields from the third (state) on: index 0 is field 3 of proc(5).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<&str, String> {
        fields
            .get(n - 3)
            .copied()
            .ok_or_else(|| bad(&format!("no field {n}")))
    };
    let unsigned = |n: usize| -> Result<u64, String> {
        field(n)?
            .parse::<u64>()
            .map_err(|_| bad(&format!("field {n}")))
    };
    // cutime and cstime are signed in proc(5); a negative value would be a kernel oddity.
    let signed = |n: usize| -> Result<u64, String> {
        field(n)?
            .parse::<i64>()
            .map(|v| v.max(0) as u64)
            .map_err(|_| bad(&format!("field {n}")))
    };
    Ok(Stat {
        ppid: field(4)?.parse().map_err(|_| bad("field 4"))?,
        utime: unsigned(14)?,
        stime: unsigned(15)?,
        cutime: signed(16)?,
        cstime: signed(17)?,
        starttime: unsigned(22)?,
    })
}

/// A `Key:  1234 kB` line of `/proc/<pid>/status` or `smaps_rollup`, in bytes.
pub fn parse_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = value.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(n * 1024)
    })
}

/// The clock tick rate from an auxiliary vector (`/proc/self/auxv`: pairs of native-endian
/// machine words, type then value), whose `AT_CLKTCK` entry is what `sysconf(_SC_CLK_TCK)`
/// returns.
pub fn parse_auxv_clock_ticks(auxv: &[u8]) -> Option<u64> {
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |chunk: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = chunk.try_into().ok()?;
        Some(usize::from_ne_bytes(bytes) as u64)
    };
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let (kind, value) = pair.split_at(WORD);
        (word(kind)? == AT_CLKTCK).then(|| word(value)).flatten()
    })
}

/// Clock ticks per second, read once.
pub(crate) fn clock_ticks() -> Result<u64, String> {
    static TICKS: OnceLock<Result<u64, String>> = OnceLock::new();
    TICKS
        .get_or_init(|| {
            let auxv = std::fs::read("/proc/self/auxv")
                .map_err(|e| format!("the clock tick rate could not be read: {e}"))?;
            parse_auxv_clock_ticks(&auxv)
                .filter(|t| *t > 0)
                .ok_or_else(|| "the clock tick rate is not in /proc/self/auxv".to_string())
        })
        .clone()
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

fn read(pid: u32, file: &str) -> Result<String, std::io::Error> {
    std::fs::read_to_string(proc_path(pid, file))
}

fn stat(pid: u32) -> Result<Stat, String> {
    let text = read(pid, "stat").map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    parse_stat(&text)
}

/// A CPU reading: ticks so far, and which process they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    ticks: u64,
    starttime: u64,
}

/// The CPU ticks of `source` so far.
fn cpu(source: &Source) -> Result<Reading, String> {
    match source {
        Source::Process(pid) => {
            let s = stat(*pid)?;
            Ok(Reading {
                ticks: s.utime + s.stime,
                starttime: s.starttime,
            })
        }
        Source::Tree(root) => {
            let root_stat = stat(*root)?;
            let ticks = tree(*root)?
                .iter()
                .map(|(_, s)| s.utime + s.stime + s.cutime + s.cstime)
                .sum();
            Ok(Reading {
                ticks,
                starttime: root_stat.starttime,
            })
        }
        Source::Unavailable(why) => Err(why.clone()),
    }
}

/// A running process's user + system CPU time so far (its threads, not its children); `None`
/// when it cannot be read. `fanbench bench` reads its endpoint's with it, before and after a step.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let reading = cpu(&Source::Process(pid)).ok()?;
    let ticks = clock_ticks().ok()?;
    Some(Duration::from_secs_f64(reading.ticks as f64 / ticks as f64))
}

/// `root` and its descendants with their stats; processes that exit while `/proc` is read are
/// left out.
fn tree(root: u32) -> Result<Vec<(u32, Stat)>, String> {
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut by_parent: HashMap<u32, Vec<(u32, Stat)>> = HashMap::new();
    let mut members = vec![(root, stat(root)?)];
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(s) = stat(pid) {
            by_parent.entry(s.ppid).or_default().push((pid, s));
        }
    }
    let mut next = 0;
    while next < members.len() {
        let pid = members[next].0;
        if let Some(children) = by_parent.remove(&pid) {
            members.extend(children);
        }
        next += 1;
    }
    Ok(members)
}

/// `Pss` summed over `root`'s tree, in bytes.
fn tree_pss(root: u32) -> Result<u64, String> {
    let mut total = 0;
    for (pid, _) in tree(root)? {
        match read(pid, "smaps_rollup") {
            // A zombie's rollup is empty: it holds no memory.
            Ok(text) => total += parse_kib(&text, "Pss").unwrap_or(0),
            // Gone since the tree was read: it holds no memory either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && pid != root => {}
            Err(e) => return Err(format!("/proc/{pid}/smaps_rollup: {e}")),
        }
    }
    Ok(total)
}

/// Starts a process's high-water mark afresh.
fn reset_peak(pid: u32) -> Result<(), String> {
    std::fs::write(proc_path(pid, "clear_refs"), "5")
        .map_err(|e| format!("its peak could not be reset (/proc/{pid}/clear_refs: {e})"))
}

/// One role being watched.
#[derive(Debug)]
struct Role {
    source: Source,
    cpu_start: Result<Reading, String>,
    /// For a single process: whether its high-water mark now counts from the window's start.
    reset: Result<(), String>,
}

impl Role {
    fn start(source: Source) -> Self {
        let reset = match &source {
            Source::Process(pid) => reset_peak(*pid),
            Source::Tree(_) => Ok(()),
            Source::Unavailable(why) => Err(why.clone()),
        };
        Self {
            cpu_start: cpu(&source),
            source,
            reset,
        }
    }

    /// The role's figures at the window's end; `tree_peak` is a tree's sampled peak.
    fn finish(self, tree_peak: TreePeak) -> ProcessUsage {
        let mut missing = Vec::new();
        if let Source::Unavailable(why) = &self.source {
            return ProcessUsage {
                cpu_seconds: None,
                peak_rss_bytes: None,
                memory: MemoryMeasure::VmHwm,
                missing: vec![why.clone()],
            };
        }
        // Both readings, of the same process.
        let readings = match (self.cpu_start, cpu(&self.source)) {
            (Ok(start), Ok(end)) if start.starttime == end.starttime => Ok((start, end)),
            (Ok(_), Ok(_)) => {
                Err("the process exited during the window (its pid is another's now)".to_string())
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let cpu_seconds = match (readings.clone(), clock_ticks()) {
            (Ok((start, end)), Ok(hz)) => {
                Some(end.ticks.saturating_sub(start.ticks) as f64 / hz as f64)
            }
            (Err(e), _) | (_, Err(e)) => {
                missing.push(format!("CPU time: {e}"));
                None
            }
        };
        let (peak, memory) = match (&self.source, tree_peak) {
            (Source::Tree(_), peak) => (
                peak.unwrap_or_else(|| Err("no sample was taken".to_string())),
                MemoryMeasure::PssSumSampled,
            ),
            (source, _) => {
                let peak = readings.and(self.reset).and_then(|()| match source {
                    Source::Process(pid) => {
                        let status =
                            read(*pid, "status").map_err(|e| format!("/proc/{pid}/status: {e}"))?;
                        parse_kib(&status, "VmHWM")
                            .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))
                    }
                    _ => Err("nothing to read".to_string()),
                });
                (peak, MemoryMeasure::VmHwm)
            }
        };
        let peak_rss_bytes = match peak {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                missing.push(format!("peak memory: {e}"));
                None
            }
        };
        ProcessUsage {
            cpu_seconds,
            peak_rss_bytes,
            memory,
            missing,
        }
    }
}

/// A tree's sampled peak memory: `None` before the first sample, else the peak or why there is
/// none.
type TreePeak = Option<Result<u64, String>>;

/// One design's window: started just before its load, finished at the end of its drain.
#[derive(Debug)]
pub struct Window {
    started: Instant,
    driver: Role,
    server: Role,
    simulator: Role,
    postgres: Role,
    /// The broker design's message broker, when the design has one.
    broker: Option<Role>,
    /// Samples a tree's memory every second until stopped.
    sampler: Option<(CancellationToken, JoinHandle<TreePeak>)>,
}

/// The sources of a run's roles other than the design's server.
#[derive(Debug, Clone)]
pub struct Sources {
    pub driver: Source,
    pub simulator: Source,
    pub postgres: Source,
}

impl Sources {
    /// Every role unavailable for the same reason (not Linux, or nothing started).
    pub fn unavailable(why: &str) -> Self {
        Self {
            driver: Source::Unavailable(why.into()),
            simulator: Source::Unavailable(why.into()),
            postgres: Source::Unavailable(why.into()),
        }
    }
}

/// Why nothing can be read on this system, if so.
pub fn unsupported() -> Option<&'static str> {
    (!cfg!(target_os = "linux")).then_some("not measured: these figures come from Linux's /proc")
}

impl Window {
    /// Takes the starting readings and resets the single processes' peaks. Needs a Tokio runtime
    /// when a source is a tree (its memory is sampled in the background).
    pub fn start(server: Source, sources: Sources) -> Self {
        Self::start_with_broker(server, sources, None)
    }

    /// The same, for a design with a message broker of its own (`broker`: its process).
    pub fn start_with_broker(server: Source, sources: Sources, broker: Option<Source>) -> Self {
        let (server, sources, broker) = match unsupported() {
            Some(why) => (
                Source::Unavailable(why.into()),
                Sources::unavailable(why),
                broker.map(|_| Source::Unavailable(why.into())),
            ),
            None => (server, sources, broker),
        };
        let sampler = match &sources.postgres {
            Source::Tree(root) => {
                let root = *root;
                let stop = CancellationToken::new();
                let until = stop.clone();
                let task = tokio::spawn(async move { sample_tree(root, until).await });
                Some((stop, task))
            }
            _ => None,
        };
        Self {
            started: Instant::now(),
            driver: Role::start(sources.driver),
            server: Role::start(server),
            simulator: Role::start(sources.simulator),
            postgres: Role::start(sources.postgres),
            broker: broker.map(Role::start),
            sampler,
        }
    }

    /// Takes the closing readings.
    pub async fn finish(self) -> Processes {
        let window_s = self.started.elapsed().as_secs_f64();
        let tree_peak = match self.sampler {
            Some((stop, task)) => {
                stop.cancel();
                task.await
                    .unwrap_or_else(|e| Some(Err(format!("the sampler failed: {e}"))))
            }
            None => None,
        };
        Processes {
            window_s,
            driver: self.driver.finish(None),
            server: self.server.finish(None),
            simulator: self.simulator.finish(None),
            postgres: self.postgres.finish(tree_peak),
            broker: self.broker.map(|b| b.finish(None)),
        }
    }
}

/// The largest tree `Pss` of samples taken every second and once more at the end; the last error
/// when no sample could be taken.
async fn sample_tree(root: u32, stop: CancellationToken) -> TreePeak {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut peak: TreePeak = None;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let sample = tokio::task::spawn_blocking(move || tree_pss(root))
            .await
            .unwrap_or_else(|e| Err(format!("sampling failed: {e}")));
        peak = match (peak, sample) {
            (Some(Ok(a)), Ok(b)) => Some(Ok(a.max(b))),
            (Some(Ok(a)), Err(_)) => Some(Ok(a)),
            (_, sample) => Some(sample),
        };
        if stopping {
            return peak;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (from PostgreSQL's checkpointer) with its name made as awkward as a name can be.
    const STAT: &str = "4242 (postgres: a) (b) c) S 4200 4200 4200 0 -1 4194624 1187 0 0 0 \
                        123 45 67 8 20 0 1 0 98765 223399936 3021 18446744073709551615 1 1 0 0 0 0 \
                        0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            Stat {
                ppid: 4200,
                utime: 123,
                stime: 45,
                cutime: 67,
                cstime: 8,
                starttime: 98765,
            }
        );
        let plain = parse_stat("1 (init) S 0 1 1 0 -1 0 0 0 0 0 5 6 7 8 20 0 1 0 9 0 0").unwrap();
        assert_eq!((plain.utime, plain.stime, plain.starttime), (5, 6, 9));
    }

    #[test]
    fn a_short_or_garbled_stat_line_is_an_error() {
        for bad in [
            "",
            "12 (x",
            "12 (x) S 1 2 3",
            "12 (x) S one 1 1 0 -1 0 0 0 0 0 a b c d 20 0 1 0 9",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_and_smaps_rollup_lines_are_read_in_bytes() {
        let status =
            "Name:\tpostgres\nVmPeak:\t  226560 kB\nVmHWM:\t   12084 kB\nVmRSS:\t   12000 kB\n";
        assert_eq!(parse_kib(status, "VmHWM"), Some(12084 * 1024));
        assert_eq!(parse_kib(status, "VmSwap"), None);
        let rollup = "55e1005d9000-7ffcd9599000 ---p 00000000 00:00 0    [rollup]\n\
                      Rss:                1612 kB\nPss:                 465 kB\n\
                      Pss_Dirty:           112 kB\nPss_Anon:            112 kB\n";
        assert_eq!(
            parse_kib(rollup, "Pss"),
            Some(465 * 1024),
            "Pss, not Pss_Dirty"
        );
        assert_eq!(parse_kib("Pss: lots\n", "Pss"), None);
    }

    #[test]
    fn the_clock_tick_rate_is_the_auxv_entry_seventeen() {
        let words: Vec<usize> = vec![6, 4096, 17, 100, 3, 0x4000, 0, 0];
        let auxv: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(parse_auxv_clock_ticks(&auxv), Some(100));
        assert_eq!(
            parse_auxv_clock_ticks(&auxv[..2 * std::mem::size_of::<usize>()]),
            None
        );
    }

    /// Spins long enough for the kernel to charge some ticks, and holds memory while it does.
    fn burn() -> Vec<u8> {
        let started = Instant::now();
        let mut v = vec![1u8; 32 << 20];
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            for b in v.iter_mut().step_by(4096) {
                x = x.wrapping_add(u64::from(*b));
                *b = b.wrapping_add(1);
            }
        }
        v[0] = x as u8;
        v
    }

    #[tokio::test]
    async fn this_process_shows_cpu_time_and_memory() {
        if unsupported().is_some() {
            return;
        }
        let me = std::process::id();
        let window = Window::start(
            Source::this_process(),
            Sources {
                driver: Source::this_process(),
                simulator: Source::Unavailable("no simulator here".into()),
                postgres: Source::Tree(me),
            },
        );
        let held = burn();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = window.finish().await;
        drop(held);
        for (role, u) in [("driver", &p.driver), ("server", &p.server)] {
            assert!(u.missing.is_empty(), "{role}: {:?}", u.missing);
            assert!(u.cpu_seconds.unwrap() > 0.0, "{role}: {u:?}");
            assert!(u.peak_rss_bytes.unwrap() >= 32 << 20, "{role}: {u:?}");
            assert_eq!(u.memory, MemoryMeasure::VmHwm);
        }
        assert!(p.postgres.cpu_seconds.unwrap() > 0.0, "{:?}", p.postgres);
        assert!(p.postgres.peak_rss_bytes.unwrap() > 0, "{:?}", p.postgres);
        assert_eq!(p.postgres.memory, MemoryMeasure::PssSumSampled);
        assert_eq!(p.simulator.cpu_seconds, None);
        assert_eq!(p.simulator.peak_rss_bytes, None);
        assert_eq!(p.simulator.missing, ["no simulator here"]);
        assert!(p.window_s >= 0.3, "{}", p.window_s);
    }

    #[test]
    fn a_gone_process_is_absent_with_the_reason() {
        if unsupported().is_some() {
            return;
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let role = Role::start(Source::Process(pid));
        let u = role.finish(None);
        assert_eq!((u.cpu_seconds, u.peak_rss_bytes), (None, None));
        assert_eq!(u.missing.len(), 2, "{:?}", u.missing);
        assert!(u.missing[0].starts_with("CPU time"), "{:?}", u.missing);
    }
}
