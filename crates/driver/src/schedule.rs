//! The arrival schedule: when each sign-up is meant to be sent, and what it carries.
//!
//! Arrival times are fixed by the scenario and its seed before the run and never depend on how the
//! server answers (an open model). They are generated lazily, in order, so memory stays constant
//! however many requests a run sends.
//!
//! Rates vary linearly within a segment, so the cumulative intensity Λ(t) is quadratic and can be
//! inverted exactly: an arrival happens each time Λ grows by one (uniform) or by an Exp(1) draw
//! (Poisson: the time-rescaling construction of an inhomogeneous Poisson process).
//!
//! A schedule can be split between several drivers ([`Shard`]): shard `i` of `n` keeps the
//! arrivals whose position is `i - 1` modulo `n`. Every shard still generates the whole schedule
//! and only skips what is not its own, so the `n` shards together send exactly the unsharded
//! schedule's arrivals, at the same intended times and with the same payloads.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1};

use crate::settings::{Arrivals, Payload, Phase, Process};

/// One scheduled sign-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// 0-based position in the schedule.
    pub seq: u64,
    /// When to send it, from the run's start.
    pub at: Duration,
    pub phone: bool,
    pub device: bool,
}

/// One driver's part of a schedule split between `count` drivers: the arrivals whose 0-based
/// position is `index - 1` modulo `count` (every `count`-th arrival, starting at the
/// `index`-th). Interleaving, rather than cutting the schedule into stretches of time, gives each
/// shard the same shape at `1/count` of the rate, so no driver carries the peak alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A shard that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not a shard: write it `i/n`, e.g. `1/4` for the first of four drivers")]
    Syntax(String),
    #[error("shard {index}/{count}: the count must be at least 1")]
    NoShards { index: u32, count: u32 },
    #[error("shard {index}/{count}: the index counts from 1 to the count ({count})")]
    OutOfRange { index: u32, count: u32 },
}

impl Shard {
    /// Shard `index` (from 1) of `count`.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards { index, count });
        }
        if index == 0 || index > count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// The whole schedule, as one shard of one.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// From 1 to [`Shard::count`].
    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the arrival at 0-based position `seq` is this shard's.
    pub fn owns(self, seq: u64) -> bool {
        seq % u64::from(self.count) == u64::from(self.index - 1)
    }

    /// Part `k` (from 0) of this shard split `parts` ways, interleaved in turn: every `parts`-th
    /// of this shard's arrivals, starting at its `k`-th. This shard's arrivals are at positions
    /// `index - 1 + count·j`; the part keeps those with `j ≡ k (mod parts)`, i.e. the positions
    /// `index - 1 + count·k` modulo `count·parts`: itself a shard of the whole schedule.
    pub fn part(self, k: u32, parts: u32) -> Self {
        debug_assert!(k < parts);
        Self {
            index: self.index + self.count * k,
            count: self.count * parts,
        }
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (index, count) = s.trim().split_once('/').ok_or_else(syntax)?;
        let number = |t: &str| t.trim().parse::<u32>().map_err(|_| syntax());
        Shard::new(number(index)?, number(count)?)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A stretch of constant or linearly changing rate: `rate(x) = a + b·x` for `x` in `[0, len)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start: f64,
    len: f64,
    a: f64,
    b: f64,
    phase: usize,
}

impl Segment {
    /// Λ over the whole segment.
    fn total(&self) -> f64 {
        self.a * self.len + self.b * self.len * self.len / 2.0
    }

    /// The `x` at which Λ(x) = `target` (assumes `target <= total()`).
    fn invert(&self, target: f64) -> f64 {
        if self.b.abs() < 1e-12 {
            return target / self.a;
        }
        let disc = (self.a * self.a + 2.0 * self.b * target).max(0.0);
        ((disc.sqrt() - self.a) / self.b).clamp(0.0, self.len)
    }
}

fn segments(phases: &[Phase]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = 0.0;
    for (i, phase) in phases.iter().enumerate() {
        let len = phase.duration().as_secs_f64();
        match *phase {
            Phase::Constant { rate, .. } => out.push(Segment {
                start,
                len,
                a: rate,
                b: 0.0,
                phase: i,
            }),
            Phase::Ramp { from, to, .. } => out.push(Segment {
                start,
                len,
                a: from,
                b: (to - from) / len,
                phase: i,
            }),
            Phase::Step {
                from, to, steps, ..
            } => {
                let step_len = len / f64::from(steps);
                for k in 0..steps {
                    let rate = if steps == 1 {
                        from
                    } else {
                        from + (to - from) * f64::from(k) / f64::from(steps - 1)
                    };
                    out.push(Segment {
                        start: start + step_len * f64::from(k),
                        len: step_len,
                        a: rate,
                        b: 0.0,
                        phase: i,
                    });
                }
            }
        }
        start += len;
    }
    out
}

/// What a schedule offers overall, known before the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The last arrival's offset (phases: their total length).
    pub duration: Duration,
    /// The highest rate over any second.
    pub peak_rps: f64,
    /// `(name, start, end)` of each phase, for progress and the report.
    pub phases: Vec<(String, Duration, Duration)>,
}

/// An error reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("could not read trace {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Row {
        path: String,
        line: u64,
        message: String,
    },
}

/// The arrivals, generated in order.
pub struct Schedule {
    source: Source,
    payload: Payload,
    rng: StdRng,
    seq: u64,
    shard: Shard,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("seq", &self.seq)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

enum Source {
    Phases {
        segments: Vec<Segment>,
        index: usize,
        process: Process,
        consumed: f64,
        target: f64,
    },
    Trace {
        rows: csv::DeserializeRecordsIntoIter<File, TraceRow>,
        speed: f64,
        path: String,
        last: f64,
    },
}

#[derive(Debug, serde::Deserialize)]
struct TraceRow {
    offset_ms: f64,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    device_token: Option<String>,
}

fn open_trace(path: &Path) -> Result<csv::DeserializeRecordsIntoIter<File, TraceRow>, TraceError> {
    let read_err = |message: String| TraceError::Read {
        path: path.display().to_string(),
        message,
    };
    let file = File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(file);
    let headers = reader.headers().map_err(|e| read_err(e.to_string()))?;
    if !headers.iter().any(|h| h == "offset_ms") {
        return Err(read_err(format!(
            "the header needs an `offset_ms` column; it has {:?}",
            headers.iter().collect::<Vec<_>>()
        )));
    }
    Ok(reader.into_deserialize())
}

impl Schedule {
    /// The schedule of `arrivals` carrying `payload`; `trace` is where the arrivals' trace file is
    /// (resolved by the caller against the scenario's folder).
    pub fn new(
        arrivals: &Arrivals,
        payload: &Payload,
        trace: Option<&Path>,
    ) -> Result<Self, TraceError> {
        let rng = StdRng::seed_from_u64(arrivals.seed);
        let source = match (&arrivals.trace, trace) {
            (Some(trace), Some(path)) => Source::Trace {
                rows: open_trace(path)?,
                speed: trace.speed,
                path: path.display().to_string(),
                last: 0.0,
            },
            _ => Source::Phases {
                segments: segments(&arrivals.phases),
                index: 0,
                process: arrivals.process,
                consumed: 0.0,
                target: 0.0,
            },
        };
        let mut schedule = Self {
            source,
            payload: payload.clone(),
            rng,
            seq: 0,
            shard: Shard::WHOLE,
        };
        if let Source::Phases {
            target, process, ..
        } = &mut schedule.source
        {
            *target = draw(*process, &mut schedule.rng);
        }
        Ok(schedule)
    }

    /// Only `shard`'s part of the schedule: its slots keep the positions (`seq`) and times they
    /// have in the whole one.
    pub fn sharded(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// This schedule split `parts` ways, interleaved ([`Shard::part`]), for as many load threads
    /// each keeping to its own part: together the parts are exactly this schedule, slot for slot,
    /// and each has its shape at `1/parts` of the rate. A trace is opened once more per part.
    pub fn split(self, parts: u32) -> Result<Vec<Schedule>, TraceError> {
        let parts = parts.max(1);
        let mut out = Vec::with_capacity(parts as usize);
        for k in 1..parts {
            let source = match &self.source {
                Source::Phases {
                    segments,
                    index,
                    process,
                    consumed,
                    target,
                } => Source::Phases {
                    segments: segments.clone(),
                    index: *index,
                    process: *process,
                    consumed: *consumed,
                    target: *target,
                },
                Source::Trace {
                    speed, path, last, ..
                } => {
                    let mut rows = open_trace(Path::new(path))?;
                    // Where this schedule is in the file (nowhere yet, unless it has been read).
                    for _ in 0..self.seq {
                        rows.next();
                    }
                    Source::Trace {
                        rows,
                        speed: *speed,
                        path: path.clone(),
                        last: *last,
                    }
                }
            };
            out.push(Schedule {
                source,
                payload: self.payload.clone(),
                rng: self.rng.clone(),
                seq: self.seq,
                shard: self.shard.part(k, parts),
            });
        }
        let shard = self.shard.part(0, parts);
        out.insert(0, self.sharded(shard));
        Ok(out)
    }

    /// The schedule's overall shape. For a trace this reads the whole file once (streaming).
    pub fn shape(arrivals: &Arrivals, trace: Option<&Path>) -> Result<Shape, TraceError> {
        match (&arrivals.trace, trace) {
            (Some(trace), Some(path)) => {
                let mut per_second: Vec<u64> = Vec::new();
                let mut last = 0.0_f64;
                for (line, row) in open_trace(path)?.enumerate() {
                    let row = row_ok(row, &path.display().to_string(), line as u64 + 2)?;
                    let at = row.offset_ms / 1000.0 / trace.speed;
                    let second = at as usize;
                    if per_second.len() <= second {
                        per_second.resize(second + 1, 0);
                    }
                    per_second[second] += 1;
                    last = last.max(at);
                }
                let duration = Duration::from_secs_f64(last);
                let peak = per_second.iter().copied().max().unwrap_or(0) as f64;
                Ok(Shape {
                    duration,
                    peak_rps: peak,
                    phases: vec![("trace".into(), Duration::ZERO, duration)],
                })
            }
            _ => {
                let segs = segments(&arrivals.phases);
                let peak = segs
                    .iter()
                    .map(|s| s.a.max(s.a + s.b * s.len))
                    .fold(0.0, f64::max);
                let mut start = Duration::ZERO;
                let phases = arrivals
                    .phases
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let name = if p.name().is_empty() {
                            format!("phase {}", i + 1)
                        } else {
                            p.name().to_string()
                        };
                        let end = start + p.duration();
                        let out = (name, start, end);
                        start = end;
                        out
                    })
                    .collect();
                Ok(Shape {
                    duration: start,
                    peak_rps: peak,
                    phases,
                })
            }
        }
    }
}

fn draw(process: Process, rng: &mut StdRng) -> f64 {
    match process {
        Process::Uniform => 1.0,
        Process::Poisson => Exp1.sample(rng),
    }
}

fn row_ok(
    row: Result<TraceRow, csv::Error>,
    path: &str,
    line: u64,
) -> Result<TraceRow, TraceError> {
    let row_err = |message: String| TraceError::Row {
        path: path.to_string(),
        line,
        message,
    };
    let row = row.map_err(|e| row_err(e.to_string()))?;
    if !(row.offset_ms.is_finite() && row.offset_ms >= 0.0) {
        return Err(row_err(format!(
            "offset_ms must be zero or more, not {}",
            row.offset_ms
        )));
    }
    Ok(row)
}

impl Iterator for Schedule {
    type Item = Result<Slot, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Another shard's slot is generated all the same (it draws from the seeded generator),
        // then skipped. An error is every shard's: a bad trace row stops them all.
        loop {
            match self.next_of_all()? {
                Ok(slot) if !self.shard.owns(slot.seq) => continue,
                other => return Some(other),
            }
        }
    }
}

impl Schedule {
    /// The next slot of the whole schedule, whichever shard it belongs to.
    fn next_of_all(&mut self) -> Option<Result<Slot, TraceError>> {
        let seq = self.seq;
        let slot = match &mut self.source {
            Source::Phases {
                segments,
                index,
                process,
                consumed,
                target,
            } => loop {
                let seg = segments.get(*index)?;
                let available = seg.total() - *consumed;
                if *target <= available {
                    *consumed += *target;
                    let x = seg.invert(*consumed);
                    let at = Duration::from_secs_f64(seg.start + x);
                    *target = draw(*process, &mut self.rng);
                    let phone = self.rng.random::<f64>() < self.payload.phone_share;
                    let device = self.rng.random::<f64>() < self.payload.device_share;
                    break Slot {
                        seq,
                        at,
                        phone,
                        device,
                    };
                }
                *target -= available.max(0.0);
                *consumed = 0.0;
                *index += 1;
            },
            Source::Trace {
                rows,
                speed,
                path,
                last,
            } => {
                let row = match row_ok(rows.next()?, path, seq + 2) {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                let at = row.offset_ms / 1000.0 / *speed;
                if at < *last {
                    return Some(Err(TraceError::Row {
                        path: path.clone(),
                        line: seq + 2,
                        message: format!(
                            "offsets must not go back in time ({} ms after {} ms)",
                            row.offset_ms,
                            *last * 1000.0 * *speed
                        ),
                    }));
                }
                *last = at;
                let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
                Slot {
                    seq,
                    at: Duration::from_secs_f64(at),
                    phone: present(&row.phone),
                    device: present(&row.device_token),
                }
            }
        };
        self.seq += 1;
        Some(Ok(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::Load;

    fn scenario(text: &str) -> Load {
        toml::from_str(text).unwrap()
    }

    fn schedule(s: &Load) -> Schedule {
        Schedule::new(&s.arrivals, &s.payload, None).unwrap()
    }

    fn offsets(s: &Load) -> Vec<f64> {
        schedule(s)
            .map(|slot| slot.unwrap().at.as_secs_f64())
            .collect()
    }

    #[test]
    fn uniform_constant_rate_is_evenly_spaced() {
        let s = scenario(
            "name='t'\n[arrivals]\nprocess='uniform'\nphases=[{kind='constant',duration='2s',rate=10}]\n",
        );
        let at = offsets(&s);
        assert_eq!(at.len(), 20);
        for (i, t) in at.iter().enumerate() {
            assert!((t - (i as f64 + 1.0) / 10.0).abs() < 1e-9, "{i}: {t}");
        }
    }

    #[test]
    fn poisson_rate_matches_on_average_and_is_seeded() {
        let text =
            "name='t'\n[arrivals]\nseed=7\nphases=[{kind='constant',duration='100s',rate=50}]\n";
        let s = scenario(text);
        let a = offsets(&s);
        // 5,000 expected; the standard deviation is ~71.
        assert!((4700..5300).contains(&a.len()), "{}", a.len());
        assert_eq!(a, offsets(&s), "the same seed gives the same schedule");
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "in order");
        let other = scenario(&text.replace("seed=7", "seed=8"));
        assert_ne!(a, offsets(&other));
    }

    #[test]
    fn ramps_and_steps_offer_the_integral_of_their_rate() {
        // Ramp 0 → 100 over 10 s offers 500; a step 10 → 30 in 3 steps over 3 s offers 10 + 20 + 30.
        let s = scenario(
            "name='t'\n[arrivals]\nprocess='uniform'\nphases=[\
             {kind='ramp',duration='10s',from=0,to=100},\
             {kind='step',duration='3s',from=10,to=30,steps=3}]\n",
        );
        let at = offsets(&s);
        let in_ramp = at.iter().filter(|t| **t < 10.0).count();
        assert!((499..=501).contains(&in_ramp), "{in_ramp}");
        let in_steps: Vec<usize> = (0..3)
            .map(|k| {
                at.iter()
                    .filter(|t| **t >= 10.0 + k as f64 && **t < 11.0 + k as f64)
                    .count()
            })
            .collect();
        for (got, want) in in_steps.iter().zip([10usize, 20, 30]) {
            assert!(got.abs_diff(want) <= 1, "{in_steps:?}");
        }
        // The ramp's arrivals crowd towards its end.
        let first_half = at.iter().filter(|t| **t < 5.0).count();
        assert!((124..=126).contains(&first_half), "{first_half}");
        let shape = Schedule::shape(&s.arrivals, None).unwrap();
        assert_eq!(shape.peak_rps, 100.0);
        assert_eq!(shape.duration, Duration::from_secs(13));
    }

    #[test]
    fn payload_shares_apply() {
        let s = scenario(
            "name='t'\n[arrivals]\nphases=[{kind='constant',duration='100s',rate=20}]\n[payload]\nphone_share=0.25\ndevice_share=0\n",
        );
        let slots: Vec<Slot> = schedule(&s).map(Result::unwrap).collect();
        let phones = slots.iter().filter(|s| s.phone).count() as f64 / slots.len() as f64;
        assert!((phones - 0.25).abs() < 0.04, "{phones}");
        assert!(slots.iter().all(|s| !s.device));
    }

    #[test]
    fn traces_replay_at_speed_and_bad_rows_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.csv"),
            "offset_ms,phone,device_token\n0,+441234567890,\n500,,tok\n1000,,\n",
        )
        .unwrap();
        let csv = dir.path().join("t.csv");
        let text = "name='t'\n[arrivals]\ntrace={file='t.csv',speed=2}\n";
        let s = scenario(text);
        let new = || Schedule::new(&s.arrivals, &s.payload, Some(&csv));
        let slots: Vec<Slot> = new().unwrap().map(Result::unwrap).collect();
        let at: Vec<f64> = slots.iter().map(|s| s.at.as_secs_f64()).collect();
        assert_eq!(at, vec![0.0, 0.25, 0.5]);
        assert_eq!(
            (
                slots[0].phone,
                slots[0].device,
                slots[1].device,
                slots[2].phone
            ),
            (true, false, true, false)
        );
        assert_eq!(
            Schedule::shape(&s.arrivals, Some(&csv)).unwrap().duration,
            Duration::from_millis(500)
        );

        std::fs::write(dir.path().join("t.csv"), "offset_ms\n0\n10\nsoon\n").unwrap();
        let errors: Vec<String> = new()
            .unwrap()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("t.csv:4:"), "{errors:?}");
        std::fs::write(dir.path().join("t.csv"), "when\n0\n").unwrap();
        let err = new().unwrap_err().to_string();
        assert!(err.contains("offset_ms"), "{err}");
    }

    /// Every slot of `s`'s schedule, or of one shard of it.
    fn slots(s: &Load, shard: Shard) -> Vec<Slot> {
        schedule(s).sharded(shard).map(Result::unwrap).collect()
    }

    #[test]
    fn shards_partition_the_schedule_exactly() {
        // A ramp, a step and a spike, Poisson: arrivals at uneven times with uneven payloads.
        let text = "name='t'\n[arrivals]\nseed=SEED\nphases=[\
                    {kind='ramp',duration='5s',from=5,to=200},\
                    {kind='step',duration='3s',from=50,to=10,steps=3},\
                    {kind='constant',duration='2s',rate=300}]\n\
                    [payload]\nphone_share=0.5\ndevice_share=0.3\n";
        for seed in [1u64, 7, 11, 12345] {
            let s = scenario(&text.replace("SEED", &seed.to_string()));
            let whole = slots(&s, Shard::WHOLE);
            assert!(whole.len() > 1000, "seed {seed}: {}", whole.len());
            for n in [1u32, 2, 3, 5, 8] {
                let parts: Vec<Vec<Slot>> = (1..=n)
                    .map(|i| slots(&s, Shard::new(i, n).unwrap()))
                    .collect();
                // Counts: every arrival in exactly one shard, the shards within one of each other.
                let counts: Vec<usize> = parts.iter().map(Vec::len).collect();
                assert_eq!(
                    counts.iter().sum::<usize>(),
                    whole.len(),
                    "seed {seed}, n {n}"
                );
                let (min, max) = (counts.iter().min(), counts.iter().max());
                assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{counts:?}");
                // Each shard keeps the whole schedule's positions, times and payloads.
                for (i, part) in parts.iter().enumerate() {
                    let shard = Shard::new(i as u32 + 1, n).unwrap();
                    for slot in part {
                        assert!(shard.owns(slot.seq), "shard {shard} got seq {}", slot.seq);
                        assert_eq!(
                            slot, &whole[slot.seq as usize],
                            "seed {seed}, shard {shard}"
                        );
                    }
                    assert!(part.windows(2).all(|w| w[0].at <= w[1].at), "in order");
                }
                // And together they are the whole schedule, slot for slot.
                let mut joined: Vec<Slot> = parts.into_iter().flatten().collect();
                joined.sort_by_key(|slot| slot.seq);
                assert_eq!(joined, whole, "seed {seed}, n {n}");
            }
        }
    }

    #[test]
    fn a_split_gives_each_slot_to_exactly_one_part_even_of_a_shard() {
        let text = "name='t'\n[arrivals]\nprocess='poisson'\nseed=3\nphases=[\
                    {kind='ramp',duration='4s',from=10,to=500}]\n\
                    [payload]\nphone_share=0.5\ndevice_share=0.3\n";
        let s = scenario(text);
        let whole = slots(&s, Shard::WHOLE);
        for shard in [Shard::WHOLE, Shard::new(2, 3).unwrap()] {
            let mine: Vec<Slot> = schedule(&s).sharded(shard).map(Result::unwrap).collect();
            for parts in [1u32, 2, 3, 4] {
                let split: Vec<Vec<Slot>> = schedule(&s)
                    .sharded(shard)
                    .split(parts)
                    .unwrap()
                    .into_iter()
                    .map(|p| p.map(Result::unwrap).collect())
                    .collect();
                assert_eq!(split.len(), parts as usize);
                // In turn: part k has the k-th, (k + parts)-th, … of the shard's slots.
                for (k, part) in split.iter().enumerate() {
                    let expected: Vec<Slot> = mine
                        .iter()
                        .skip(k)
                        .step_by(parts as usize)
                        .cloned()
                        .collect();
                    assert_eq!(part, &expected, "shard {shard}, part {k} of {parts}");
                    assert!(part.iter().all(|slot| slot == &whole[slot.seq as usize]));
                }
                let mut joined: Vec<Slot> = split.into_iter().flatten().collect();
                joined.sort_by_key(|slot| slot.seq);
                assert_eq!(joined, mine, "shard {shard}, {parts} parts");
            }
        }
    }

    #[test]
    fn shards_of_a_trace_partition_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let rows: String = (0..25).map(|k| format!("{},,\n", k * 40)).collect();
        std::fs::write(
            dir.path().join("t.csv"),
            format!("offset_ms,phone,device_token\n{rows}"),
        )
        .unwrap();
        let csv = dir.path().join("t.csv");
        let s = scenario("name='t'\n[arrivals]\ntrace={file='t.csv',speed=1}\n");
        let of = |shard: Shard| -> Vec<Slot> {
            Schedule::new(&s.arrivals, &s.payload, Some(&csv))
                .unwrap()
                .sharded(shard)
                .map(Result::unwrap)
                .collect()
        };
        let whole = of(Shard::WHOLE);
        let mut joined: Vec<Slot> = (1..=4)
            .flat_map(|i| of(Shard::new(i, 4).unwrap()))
            .collect();
        joined.sort_by_key(|slot| slot.seq);
        assert_eq!(joined, whole);
        // Split for load threads, each part reading the trace on its own.
        let split = Schedule::new(&s.arrivals, &s.payload, Some(&csv))
            .unwrap()
            .split(3)
            .unwrap();
        let mut joined: Vec<Slot> = split
            .into_iter()
            .flat_map(|p| p.map(Result::unwrap))
            .collect();
        joined.sort_by_key(|slot| slot.seq);
        assert_eq!(joined, whole);
    }

    #[test]
    fn shards_are_written_i_over_n_and_checked() {
        let shard: Shard = "2/3".parse().unwrap();
        assert_eq!((shard.index(), shard.count()), (2, 3));
        assert_eq!(shard.to_string(), "2/3");
        assert_eq!(" 1 / 1 ".parse::<Shard>(), Ok(Shard::WHOLE));
        for (bad, says) in [
            ("0/3", "counts from 1"),
            ("4/3", "counts from 1"),
            ("1/0", "at least 1"),
            ("2", "i/n"),
            ("a/b", "i/n"),
            ("-1/2", "i/n"),
            ("1/2/3", "i/n"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
