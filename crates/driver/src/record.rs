//! Recording: HdrHistograms and counters, constant in the number of requests (memory grows only
//! with the run's length in seconds, for the timeline).
//!
//! A recording can be written whole and read back ([`Recorder::write_recording`],
//! [`Recorder::read_recording`]): the histograms as HdrHistogram V2 encodings, which are exact, so
//! the recordings of drivers on several machines add up to what one driver would have recorded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use results::{
    ClassLatency, LATENCY_CLASSES, Lag, Percentiles, Requests, STATUS_CLASSES, Second,
    new_histogram,
};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Timeout,
    ConnectionError(Transport),
}

/// What kind of connection error ended a request without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Nothing listens there.
    Refused,
    /// The server closed or reset the connection.
    Reset,
    /// Any other failure to connect.
    Connect,
    /// The answer started but did not arrive whole.
    CutOff,
    Other,
}

impl Transport {
    /// How a summary names it.
    pub fn describe(self) -> &'static str {
        match self {
            Transport::Refused => "connection refused",
            Transport::Reset => "connection closed or reset by the server",
            Transport::Connect => "could not connect",
            Transport::CutOff => "answer cut off",
            Transport::Other => "other transport error",
        }
    }

    const ALL: [Transport; 5] = [
        Transport::Refused,
        Transport::Reset,
        Transport::Connect,
        Transport::CutOff,
        Transport::Other,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of an HTTP client error, from what the client says of it (`timeout`, `connect`,
/// `body`) and its chain of causes.
pub fn classify_error(
    timeout: bool,
    connect: bool,
    body: bool,
    error: &(dyn std::error::Error + 'static),
) -> Outcome {
    if timeout {
        return Outcome::Timeout;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Outcome::ConnectionError(Transport::Refused),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return Outcome::ConnectionError(Transport::Reset);
                }
                TimedOut => return Outcome::Timeout,
                _ => {}
            }
        }
        cause = e.source();
    }
    Outcome::ConnectionError(if connect {
        Transport::Connect
    } else if body {
        Transport::CutOff
    } else {
        // hyper's "connection closed before message completed" has no io::Error beneath it.
        let text = error.to_string()
            + &std::iter::successors(error.source(), |e| e.source())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": ");
        if text.contains("closed") {
            Transport::Reset
        } else {
            Transport::Other
        }
    })
}

impl Outcome {
    /// The index into [`STATUS_CLASSES`].
    pub fn class(self) -> usize {
        match self {
            Outcome::Status(200..=299) => 0,
            Outcome::Status(409) => 1,
            Outcome::Status(503) => 3,
            Outcome::Status(400..=499) => 2,
            Outcome::Status(_) => 4,
            Outcome::Timeout => 5,
            Outcome::ConnectionError(_) => 6,
        }
    }

    /// The index into [`LATENCY_CLASSES`].
    pub fn latency_class(self) -> usize {
        match self.class() {
            0 => 0,
            3 => 1,
            1 | 2 => 2,
            4 => 3,
            _ => 4,
        }
    }

    pub fn is_ok(self) -> bool {
        self.class() == 0
    }
}

/// The sequence numbers of the sign-ups answered 2xx, one bit per scheduled request (125 KB per
/// million): the one thing kept per request, so reconciliation can tell an accepted sign-up the
/// database lost from a refused one that committed anyway, instead of letting the two net out.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    pub fn insert(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) == 0 {
            self.words[word] |= 1 << bit;
            self.len += 1;
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds every member of `other`.
    pub fn union(&mut self, other: &SeqSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        self.len = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }
}

/// Per-second histograms keep two significant digits: enough for a timeline's p50/p99, a tenth of
/// the memory of the run-wide ones.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, results::HISTOGRAM_MAX_US, 2)
        .expect("constant histogram bounds are valid")
}

#[derive(Debug)]
struct SecondBucket {
    offered: u64,
    sent: u64,
    completed: u64,
    ok: u64,
    s503: u64,
    errors: u64,
    /// Corrected latency of requests *scheduled* in this second.
    latency: Histogram<u64>,
}

impl SecondBucket {
    fn add(&mut self, other: &SecondBucket) {
        self.offered += other.offered;
        self.sent += other.sent;
        self.completed += other.completed;
        self.ok += other.ok;
        self.s503 += other.s503;
        self.errors += other.errors;
        add(&mut self.latency, &other.latency);
    }

    fn new() -> Self {
        Self {
            offered: 0,
            sent: 0,
            completed: 0,
            ok: 0,
            s503: 0,
            errors: 0,
            latency: second_histogram(),
        }
    }
}

/// Everything one run records.
#[derive(Debug)]
pub struct Recorder {
    latency: Histogram<u64>,
    /// The same latency by [`LATENCY_CLASSES`].
    by_class: [Histogram<u64>; 5],
    service: Histogram<u64>,
    lag: Histogram<u64>,
    status: [u64; 7],
    /// Connection errors by [`Transport`].
    transport: [u64; 5],
    accepted: SeqSet,
    intended: u64,
    sent: u64,
    completed: u64,
    /// Slots that fell due when no user was free, and waited for one to finish its request.
    waited_for_user: u64,
    seconds: Vec<SecondBucket>,
    /// After a warm-up: the requests scheduled from `.0` on, recorded again on their own (the
    /// measurement window). The record above stays whole.
    window: Option<(Duration, Box<Recorder>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds histograms made by this module: their bounds are equal, so no value can fall outside.
fn add(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    if let Err(e) = into.add(other) {
        // Unreachable with equal bounds; losing counts silently would be worse than saying so.
        tracing::error!(error = %e, "could not merge two latency histograms");
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            latency: new_histogram(),
            by_class: std::array::from_fn(|_| new_histogram()),
            service: new_histogram(),
            lag: new_histogram(),
            status: [0; 7],
            transport: [0; 5],
            accepted: SeqSet::default(),
            intended: 0,
            sent: 0,
            completed: 0,
            waited_for_user: 0,
            seconds: Vec::new(),
            window: None,
        }
    }

    /// A recorder that also records the requests scheduled from `from` on apart ([`window`]),
    /// so a warm-up's seconds can be left out of a judgement; `None` records the run whole only.
    ///
    /// [`window`]: Recorder::window
    pub fn with_window(from: Option<Duration>) -> Self {
        Self {
            window: from.map(|f| (f, Box::new(Self::new()))),
            ..Self::new()
        }
    }

    /// The measurement window's start and its record: the requests scheduled from then on, their
    /// counts and histograms (no per-second timeline, no set of accepted requests).
    pub fn window(&self) -> Option<(Duration, &Recorder)> {
        self.window.as_ref().map(|(from, w)| (*from, w.as_ref()))
    }

    /// The window's record when `intended` falls in it.
    fn in_window(&mut self, intended: Duration) -> Option<&mut Recorder> {
        match &mut self.window {
            Some((from, w)) if intended >= *from => Some(w),
            _ => None,
        }
    }

    fn second(&mut self, at: Duration) -> &mut SecondBucket {
        let i = at.as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, SecondBucket::new);
        }
        &mut self.seconds[i]
    }

    /// Adds everything `other` recorded (the shards of one run become one record).
    pub fn merge(&mut self, other: &Recorder) {
        add(&mut self.latency, &other.latency);
        for (h, o) in self.by_class.iter_mut().zip(&other.by_class) {
            add(h, o);
        }
        add(&mut self.service, &other.service);
        add(&mut self.lag, &other.lag);
        for (s, o) in self.status.iter_mut().zip(other.status) {
            *s += o;
        }
        for (t, o) in self.transport.iter_mut().zip(other.transport) {
            *t += o;
        }
        self.accepted.union(&other.accepted);
        self.intended += other.intended;
        self.sent += other.sent;
        self.completed += other.completed;
        self.waited_for_user += other.waited_for_user;
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), SecondBucket::new);
        }
        for (b, o) in self.seconds.iter_mut().zip(&other.seconds) {
            b.add(o);
        }
        if let Some((from, other)) = &other.window {
            let (_, mine) = self
                .window
                .get_or_insert_with(|| (*from, Box::new(Recorder::new())));
            mine.merge(other);
        }
    }

    /// A request was scheduled for `intended` (from the run's start).
    pub fn offered(&mut self, intended: Duration) {
        self.intended += 1;
        self.second(intended).offered += 1;
        if let Some(w) = self.in_window(intended) {
            w.intended += 1;
        }
    }

    /// The slot just offered fell due when no user was free: it waits for one to finish.
    pub fn waited_for_user(&mut self) {
        self.waited_for_user += 1;
    }

    /// A request went out at `actual`, `actual - intended` late.
    pub fn sent(&mut self, intended: Duration, actual: Duration) {
        self.tally_sent(intended, actual);
        self.second(actual).sent += 1;
        if let Some(w) = self.in_window(intended) {
            w.tally_sent(intended, actual);
        }
    }

    /// Request `seq` ended at `done`: latency from `intended`, service time from `actual`.
    pub fn completed(
        &mut self,
        seq: u64,
        intended: Duration,
        actual: Duration,
        done: Duration,
        outcome: Outcome,
    ) {
        let latency = self.tally_completed(intended, actual, done, outcome);
        if outcome.is_ok() {
            self.accepted.insert(seq);
        }
        self.second(intended).latency.saturating_record(latency);
        let bucket = self.second(done);
        bucket.completed += 1;
        match outcome.class() {
            0 => bucket.ok += 1,
            3 => bucket.s503 += 1,
            _ => bucket.errors += 1,
        }
        if let Some(w) = self.in_window(intended) {
            w.tally_completed(intended, actual, done, outcome);
        }
    }

    // The run's summaries of a send and of an answer. The measurement window records these only:
    // nothing reads a window's timeline or its set of accepted requests, so it keeps neither.
    fn tally_sent(&mut self, intended: Duration, actual: Duration) {
        self.sent += 1;
        self.lag
            .saturating_record(us(actual.saturating_sub(intended)));
    }

    /// Returns the latency recorded, in microseconds.
    fn tally_completed(
        &mut self,
        intended: Duration,
        actual: Duration,
        done: Duration,
        outcome: Outcome,
    ) -> u64 {
        self.completed += 1;
        self.status[outcome.class()] += 1;
        if let Outcome::ConnectionError(kind) = outcome {
            self.transport[kind.index()] += 1;
        }
        let latency = us(done.saturating_sub(intended));
        self.latency.saturating_record(latency);
        self.by_class[outcome.latency_class()].saturating_record(latency);
        self.service
            .saturating_record(us(done.saturating_sub(actual)));
        latency
    }

    /// Requests offered and answered 2xx in second `t`.
    pub fn second_counts(&self, t: usize) -> (u64, u64) {
        self.seconds.get(t).map_or((0, 0), |b| (b.offered, b.ok))
    }

    pub fn intended(&self) -> u64 {
        self.intended
    }
    pub fn sent_count(&self) -> u64 {
        self.sent
    }
    pub fn completed_count(&self) -> u64 {
        self.completed
    }
    /// Slots that fell due when every user was busy ([`Recorder::waited_for_user`]): the server
    /// (or too few users) kept every user busy, as opposed to the driver's CPU falling behind.
    pub fn slots_waited_for_user(&self) -> u64 {
        self.waited_for_user
    }
    pub fn ok(&self) -> u64 {
        self.status[0]
    }
    pub fn status_503(&self) -> u64 {
        self.status[3]
    }
    pub fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }
    /// The sequence numbers answered 2xx.
    pub fn accepted(&self) -> &SeqSet {
        &self.accepted
    }
    pub fn service(&self) -> &Histogram<u64> {
        &self.service
    }
    pub fn lag(&self) -> &Histogram<u64> {
        &self.lag
    }

    pub fn requests(&self) -> Requests {
        let status = STATUS_CLASSES
            .iter()
            .zip(self.status)
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut transport_errors: std::collections::BTreeMap<String, u64> = Transport::ALL
            .iter()
            .zip(self.transport)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.describe().to_string(), n))
            .collect();
        if self.status[5] > 0 {
            transport_errors.insert("timeout".into(), self.status[5]);
        }
        Requests {
            intended: self.intended,
            sent: self.sent,
            completed: self.completed,
            share: Requests::shares(&status, self.sent),
            status,
            transport_errors,
        }
    }

    pub fn latency_ms(&self) -> Percentiles {
        Percentiles::from_histogram(&self.latency)
    }

    /// Latency by outcome class; empty classes left out.
    pub fn latency_ms_by_class(&self) -> std::collections::BTreeMap<String, ClassLatency> {
        LATENCY_CLASSES
            .iter()
            .zip(&self.by_class)
            .filter(|(_, h)| !h.is_empty())
            .map(|(k, h)| {
                (
                    k.to_string(),
                    ClassLatency {
                        count: h.len(),
                        latency: Percentiles::from_histogram(h),
                    },
                )
            })
            .collect()
    }

    /// The corrected latency of the requests of one [`LATENCY_CLASSES`] class.
    pub fn class_latency(&self, class: usize) -> &Histogram<u64> {
        &self.by_class[class]
    }
    pub fn service_time_ms(&self) -> Percentiles {
        Percentiles::from_histogram(&self.service)
    }
    pub fn send_lag_ms(&self) -> Lag {
        Lag::from_histogram(&self.lag)
    }

    pub fn timeline(&self) -> Vec<Second> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(t, b)| {
                let p = Percentiles::from_histogram(&b.latency);
                Second {
                    t: t as u32,
                    offered: b.offered,
                    sent: b.sent,
                    completed: b.completed,
                    ok: b.ok,
                    status_503: b.s503,
                    errors: b.errors,
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                    max_ms: p.max,
                }
            })
            .collect()
    }

    /// Writes the per-second corrected-latency histograms as an HdrHistogram V2 interval log (the
    /// format HdrHistogram's HistogramLogProcessor reads). Values are microseconds.
    pub fn write_hlog<W: Write>(
        &self,
        out: &mut W,
        start: SystemTime,
        tag: &str,
    ) -> std::io::Result<()> {
        // The header lines HdrHistogram's Java HistogramLogWriter writes; the Rust writer leaves out
        // the version and the column legend, so they are written here.
        let secs = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        writeln!(
            out,
            "#[fanbench {tag}: corrected latency per second of intended send time, in microseconds]"
        )?;
        writeln!(out, "#[Histogram log format version 1.3]")?;
        writeln!(out, "#[StartTime: {secs:.3} (seconds since epoch)]")?;
        writeln!(out, "#[BaseTime: {secs:.3} (seconds since epoch)]")?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(1000.0)
            .begin_log_with(out, &mut serializer)?;
        let tag = hdrhistogram::serialization::interval_log::Tag::new(tag);
        for (t, bucket) in self.seconds.iter().enumerate() {
            log.write_histogram(
                &bucket.latency,
                Duration::from_secs(t as u64),
                Duration::from_secs(1),
                tag,
            )
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        Ok(())
    }

    /// Writes the corrected latency as a percentile distribution (`.hgrm`), in milliseconds, in the
    /// layout HdrHistogram's `outputPercentileDistribution` and wrk2 print.
    pub fn write_hgrm<W: Write>(&self, out: &mut W) -> std::io::Result<()> {
        write_hgrm(&self.latency, out)
    }
}

/// A percentile distribution of a histogram of microseconds, printed in milliseconds.
pub fn write_hgrm<W: Write>(h: &Histogram<u64>, out: &mut W) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            writeln!(
                out,
                "{value:>12.3} {q:>14.12} {:>10} {:>14.2}",
                v.count_since_last_iteration(),
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(
                out,
                "{value:>12.3} {q:>14.12} {:>10}",
                v.count_since_last_iteration()
            )?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    )?;
    Ok(())
}

/// The first line of a saved recording's JSON (its `format` field), so another file is refused by
/// name rather than by a missing field.
pub const RECORDING_FORMAT: &str = "fanbench-recording";
/// Bumped when a saved recording changes in a way an older reader would misread.
pub const RECORDING_VERSION: u32 = 1;

/// A saved recording that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("not JSON, or not a fanbench recording: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "a {found:?} file (version {version}), not a {RECORDING_FORMAT:?} of version {RECORDING_VERSION}"
    )]
    Format { found: String, version: u32 },
    #[error("histogram {name:?}: {message}")]
    Histogram { name: String, message: String },
    #[error("could not write the recording: {0}")]
    Write(String),
}

/// What [`Recorder::write_recording`] writes. Counts are plain numbers; each histogram is its
/// HdrHistogram V2 deflate encoding (what the `.hlog` interval log holds, base64 there) in
/// lowercase hex, so the file needs no encoder beyond this one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    format: String,
    version: u32,
    intended: u64,
    sent: u64,
    completed: u64,
    /// Absent from recordings written before it was counted (read as 0).
    #[serde(default)]
    slots_waited_for_user: u64,
    /// By [`STATUS_CLASSES`].
    status: BTreeMap<String, u64>,
    /// Connection errors by kind ([`Transport::describe`]).
    transport: BTreeMap<String, u64>,
    latency: String,
    /// By [`LATENCY_CLASSES`].
    latency_by_class: BTreeMap<String, String>,
    service: String,
    lag: String,
    /// The sequence numbers answered 2xx: the set's 64-bit words, little-endian, in hex.
    accepted: String,
    /// By second of the run, from 0.
    seconds: Vec<SavedSecond>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedSecond {
    offered: u64,
    sent: u64,
    completed: u64,
    ok: u64,
    status_503: u64,
    errors: u64,
    latency: String,
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn encode(h: &Histogram<u64>, name: &str) -> Result<String, RecordingError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| RecordingError::Histogram {
            name: name.to_string(),
            message: format!("could not encode it: {e:?}"),
        })?;
    Ok(to_hex(&bytes))
}

/// Decodes a histogram and checks it has the bounds `like` has: only then do histograms add
/// exactly.
fn decode(text: &str, name: &str, like: &Histogram<u64>) -> Result<Histogram<u64>, RecordingError> {
    let err = |message: String| RecordingError::Histogram {
        name: name.to_string(),
        message,
    };
    let bytes = from_hex(text).ok_or_else(|| err("not hexadecimal".into()))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| err(format!("not an HdrHistogram V2 encoding: {e:?}")))?;
    if (h.low(), h.high(), h.sigfig()) != (like.low(), like.high(), like.sigfig()) {
        return Err(err(format!(
            "its bounds ({}..{} at {} digits) are not fanbench's ({}..{} at {} digits)",
            h.low(),
            h.high(),
            h.sigfig(),
            like.low(),
            like.high(),
            like.sigfig()
        )));
    }
    Ok(h)
}

impl Recorder {
    /// Writes everything recorded, exactly, as JSON (`<design>.histograms.json` in a run folder).
    pub fn write_recording<W: Write>(&self, out: W) -> Result<(), RecordingError> {
        let mut latency_by_class = BTreeMap::new();
        for (name, h) in LATENCY_CLASSES.iter().zip(&self.by_class) {
            latency_by_class.insert(name.to_string(), encode(h, name)?);
        }
        let accepted: Vec<u8> = self
            .accepted
            .words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let seconds = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, b)| {
                Ok(SavedSecond {
                    offered: b.offered,
                    sent: b.sent,
                    completed: b.completed,
                    ok: b.ok,
                    status_503: b.s503,
                    errors: b.errors,
                    latency: encode(&b.latency, &format!("second {t}"))?,
                })
            })
            .collect::<Result<_, RecordingError>>()?;
        let saved = Saved {
            format: RECORDING_FORMAT.into(),
            version: RECORDING_VERSION,
            intended: self.intended,
            sent: self.sent,
            completed: self.completed,
            slots_waited_for_user: self.waited_for_user,
            status: STATUS_CLASSES
                .iter()
                .zip(self.status)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            transport: Transport::ALL
                .iter()
                .zip(self.transport)
                .map(|(k, v)| (k.describe().to_string(), v))
                .collect(),
            latency: encode(&self.latency, "latency")?,
            latency_by_class,
            service: encode(&self.service, "service")?,
            lag: encode(&self.lag, "lag")?,
            accepted: to_hex(&accepted),
            seconds,
        };
        serde_json::to_writer(out, &saved).map_err(|e| RecordingError::Write(e.to_string()))
    }

    /// Reads back what [`Recorder::write_recording`] wrote.
    pub fn read_recording<R: Read>(input: R) -> Result<Recorder, RecordingError> {
        // The format is checked before the fields, so another file is named as such.
        let value: serde_json::Value = serde_json::from_reader(input)?;
        let format = value["format"].as_str().unwrap_or_default();
        let version = value["version"].as_u64().unwrap_or(0);
        if format != RECORDING_FORMAT || version != u64::from(RECORDING_VERSION) {
            return Err(RecordingError::Format {
                found: format.to_string(),
                version: u32::try_from(version).unwrap_or(u32::MAX),
            });
        }
        let saved: Saved = serde_json::from_value(value)?;
        let run_wide = new_histogram();
        let per_second = second_histogram();
        let missing = |name: &str| RecordingError::Histogram {
            name: name.to_string(),
            message: "missing".into(),
        };
        let mut by_class = std::array::from_fn(|_| new_histogram());
        for (h, name) in by_class.iter_mut().zip(LATENCY_CLASSES) {
            let text = saved
                .latency_by_class
                .get(name)
                .ok_or_else(|| missing(name))?;
            *h = decode(text, name, &run_wide)?;
        }
        let count = |map: &BTreeMap<String, u64>, key: &str| map.get(key).copied().unwrap_or(0);
        let bytes = from_hex(&saved.accepted).ok_or_else(|| RecordingError::Histogram {
            name: "accepted".into(),
            message: "not hexadecimal".into(),
        })?;
        let words: Vec<u64> = bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        let mut accepted = SeqSet::default();
        accepted.union(&SeqSet { words, len: 0 });
        let seconds = saved
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                Ok(SecondBucket {
                    offered: s.offered,
                    sent: s.sent,
                    completed: s.completed,
                    ok: s.ok,
                    s503: s.status_503,
                    errors: s.errors,
                    latency: decode(&s.latency, &format!("second {t}"), &per_second)?,
                })
            })
            .collect::<Result<_, RecordingError>>()?;
        Ok(Recorder {
            latency: decode(&saved.latency, "latency", &run_wide)?,
            by_class,
            service: decode(&saved.service, "service", &run_wide)?,
            lag: decode(&saved.lag, "lag", &run_wide)?,
            status: STATUS_CLASSES.map(|k| count(&saved.status, k)),
            transport: Transport::ALL.map(|k| count(&saved.transport, k.describe())),
            accepted,
            intended: saved.intended,
            sent: saved.sent,
            completed: saved.completed,
            waited_for_user: saved.slots_waited_for_user,
            seconds,
            // The saved recording is the whole run's: a measurement window after a warm-up is
            // not kept, so a merged run has none.
            window: None,
        })
    }
}

/// One run's recording, split by thread: each thread that records (the users' runtime workers, the
/// dispatcher) has a recorder of its own, made on first use, so users never wait on one another's
/// lock. Only the once-a-second progress reader and the final merge visit them all.
#[derive(Debug)]
pub struct Shards {
    shards: Box<[OnceLock<Mutex<Recorder>>]>,
    /// Each recorder's measurement window ([`Recorder::with_window`]).
    window: Option<Duration>,
}

/// Threads get consecutive numbers on their first record; 64 shards keep two threads from sharing
/// one until 64 recording threads have existed in this process.
const SHARDS: usize = 64;
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

fn lock(m: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Shards {
    fn default() -> Self {
        Self::new()
    }
}

impl Shards {
    pub fn new() -> Self {
        Self::with_window(None)
    }

    /// Shards whose recorders also record the requests scheduled from `from` on apart.
    pub fn with_window(from: Option<Duration>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| OnceLock::new()).collect(),
            window: from,
        }
    }

    /// Records into this thread's recorder.
    pub fn with<T>(&self, f: impl FnOnce(&mut Recorder) -> T) -> T {
        let i = THREAD.with(|t| *t) % SHARDS;
        let shard = self.shards[i].get_or_init(|| Mutex::new(Recorder::with_window(self.window)));
        f(&mut lock(shard))
    }

    /// Visits every recorder made so far, one lock at a time.
    pub fn each(&self, mut f: impl FnMut(&Recorder)) {
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            f(&lock(shard));
        }
    }

    /// Everything recorded, as one recorder.
    pub fn merged(&self) -> Recorder {
        let mut all = Recorder::with_window(self.window);
        self.each(|r| all.merge(r));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_window_holds_exactly_the_requests_scheduled_after_the_warm_up() {
        let shards = Shards::with_window(Some(ms(2000)));
        // One request in the warm-up, answered late; two after it, answered fast.
        for (seq, at, took) in [(0, 500, 900), (1, 2000, 10), (2, 2500, 20)] {
            shards.with(|r| {
                r.offered(ms(at));
                r.sent(ms(at), ms(at));
                r.completed(seq, ms(at), ms(at), ms(at + took), Outcome::Status(202));
            });
        }
        let r = shards.merged();
        assert_eq!(r.intended(), 3);
        assert!((r.latency_ms().max - 900.0).abs() < 1.0);
        let (from, w) = r.window().expect("a window was asked for");
        assert_eq!(from, ms(2000));
        assert_eq!((w.intended(), w.sent_count(), w.ok()), (2, 2, 2));
        assert!(
            (w.latency_ms().max - 20.0).abs() < 0.1,
            "{:?}",
            w.latency_ms()
        );
        assert!(
            w.timeline().is_empty(),
            "a window keeps no timeline of its own"
        );
        // Without a window, none is recorded.
        assert!(Recorder::new().window().is_none());
    }

    #[test]
    fn latency_counts_from_the_intended_time_and_service_time_from_the_send() {
        let mut r = Recorder::new();
        r.offered(ms(1000));
        r.sent(ms(1000), ms(1300)); // the driver was 300 ms late
        r.completed(0, ms(1000), ms(1300), ms(1400), Outcome::Status(201));
        assert!((r.latency_ms().max - 400.0).abs() < 1.0);
        assert!((r.service_time_ms().max - 100.0).abs() < 0.5);
        assert!((r.send_lag_ms().max - 300.0).abs() < 1.0);
        let t = r.timeline();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[1].offered, t[1].sent, t[1].completed, t[1].ok),
            (1, 1, 1, 1)
        );
    }

    /// Feeds request `seq` through `r` with an outcome and timing that depend on `seq`.
    fn record_one(r: &mut Recorder, seq: u64) {
        let at = ms(seq * 7);
        if seq % 5 == 0 {
            r.waited_for_user();
        }
        let outcome = match seq % 4 {
            0 => Outcome::Status(202),
            1 => Outcome::Status(503),
            2 => Outcome::Timeout,
            _ => Outcome::ConnectionError(Transport::Reset),
        };
        r.offered(at);
        r.sent(at, at + ms(seq % 3));
        r.completed(seq, at, at + ms(seq % 3), at + ms(20 + seq % 50), outcome);
    }

    #[test]
    fn shards_merge_to_what_one_recorder_would_have_recorded() {
        let mut one = Recorder::new();
        for seq in 0..2_000 {
            record_one(&mut one, seq);
        }
        // The same requests recorded by four threads, each into its own shard.
        let shards = Shards::new();
        std::thread::scope(|scope| {
            for part in 0..4u64 {
                let shards = &shards;
                scope.spawn(move || {
                    for seq in (part..2_000).step_by(4) {
                        shards.with(|r| record_one(r, seq));
                    }
                });
            }
        });
        let merged = shards.merged();
        assert_eq!(merged.requests(), one.requests());
        assert_eq!(merged.slots_waited_for_user(), 400);
        assert_eq!(merged.latency_ms(), one.latency_ms());
        assert_eq!(merged.latency_ms_by_class(), one.latency_ms_by_class());
        assert_eq!(merged.send_lag_ms(), one.send_lag_ms());
        assert_eq!(merged.service_time_ms(), one.service_time_ms());
        assert_eq!(merged.timeline(), one.timeline());
        assert_eq!(merged.accepted().len(), one.accepted().len());
        assert!(
            (0..2_000).all(|seq| merged.accepted().contains(seq) == one.accepted().contains(seq))
        );
        let mut visited = 0;
        shards.each(|_| visited += 1);
        assert_eq!(visited, 4, "one recorder per recording thread");
    }

    #[test]
    fn outcomes_fall_into_their_classes() {
        let mut r = Recorder::new();
        let outcomes = [
            Outcome::Status(202),
            Outcome::Status(201),
            Outcome::Status(409),
            Outcome::Status(422),
            Outcome::Status(503),
            Outcome::Status(502),
            Outcome::Timeout,
            Outcome::ConnectionError(Transport::Refused),
        ];
        for o in outcomes {
            r.offered(ms(10));
            r.sent(ms(10), ms(10));
            r.completed(0, ms(10), ms(10), ms(20), o);
        }
        let s = r.requests().status;
        let got: Vec<u64> = STATUS_CLASSES.iter().map(|k| s[*k]).collect();
        assert_eq!(got, vec![2, 1, 1, 1, 1, 1, 1]);
        let second = &r.timeline()[0];
        assert_eq!((second.ok, second.status_503, second.errors), (2, 1, 5));
        let requests = r.requests();
        assert_eq!(requests.share["2xx"], 0.25);
        assert_eq!(
            requests.transport_errors,
            [
                ("connection refused".to_string(), 1),
                ("timeout".to_string(), 1)
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn latency_is_also_kept_by_outcome() {
        let mut r = Recorder::new();
        let mut seq = 0;
        let mut answer = |latency_ms: u64, outcome: Outcome| {
            r.offered(ms(0));
            r.sent(ms(0), ms(0));
            r.completed(seq, ms(0), ms(0), ms(latency_ms), outcome);
            seq += 1;
        };
        for _ in 0..9 {
            answer(5, Outcome::Status(201));
        }
        for _ in 0..3 {
            answer(5000, Outcome::Status(503));
        }
        answer(40, Outcome::Status(409));
        answer(15000, Outcome::Timeout);
        let by_class = r.latency_ms_by_class();
        assert_eq!(
            by_class.keys().collect::<Vec<_>>(),
            vec!["2xx", "4xx", "503", "error"],
            "empty classes are left out"
        );
        assert_eq!(by_class["2xx"].count, 9);
        assert!((by_class["2xx"].latency.p99 - 5.0).abs() < 0.01);
        assert_eq!(by_class["503"].count, 3);
        assert!((by_class["503"].latency.p50 - 5000.0).abs() < 5.0);
        assert!((by_class["error"].latency.max - 15000.0).abs() < 15.0);
        // All answers together still mix them.
        assert!(r.latency_ms().p90 >= 5000.0 - 5.0);
        // Which ones were accepted is kept by sequence number.
        let accepted = r.accepted();
        assert_eq!(accepted.len(), 9);
        assert!((0..9).all(|s| accepted.contains(s)));
        assert!(!accepted.contains(9) && !accepted.contains(13) && !accepted.contains(1_000_000));
    }

    #[test]
    fn connection_errors_are_classified_by_their_cause() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_error(false, true, false, &refused),
            Outcome::ConnectionError(Transport::Refused)
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            classify_error(false, false, true, &reset),
            Outcome::ConnectionError(Transport::Reset)
        );
        let other = std::io::Error::other("tls handshake");
        assert_eq!(
            classify_error(false, true, false, &other),
            Outcome::ConnectionError(Transport::Connect)
        );
        assert_eq!(
            classify_error(false, false, true, &other),
            Outcome::ConnectionError(Transport::CutOff)
        );
        assert_eq!(classify_error(true, true, false, &other), Outcome::Timeout);
    }

    #[test]
    fn the_hlog_and_hgrm_are_in_the_standard_formats() {
        let mut r = Recorder::new();
        for i in 0..3000u64 {
            let at = ms(i);
            r.offered(at);
            r.sent(at, at);
            r.completed(i, at, at, at + ms(5 + i % 10), Outcome::Status(202));
        }
        let mut hlog = Vec::new();
        r.write_hlog(
            &mut hlog,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            "async",
        )
        .unwrap();
        let text = String::from_utf8(hlog.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000"), "{text}");
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""));
        // Read it back with hdrhistogram's own parser: one interval per second of the timeline,
        // the last holding only completions of requests scheduled earlier.
        let intervals: Vec<_> =
            hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&hlog)
                .filter_map(|e| match e {
                    Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(h)) => Some(h),
                    _ => None,
                })
                .collect();
        assert_eq!(intervals.len(), 4);
        assert_eq!(intervals[0].tag().map(|t| t.as_str()), Some("async"));

        let mut hgrm = Vec::new();
        r.write_hgrm(&mut hgrm).unwrap();
        let text = String::from_utf8(hgrm).unwrap();
        assert!(
            text.contains("Percentile") && text.contains("#[Max     ="),
            "{text}"
        );
        assert!(text.contains("Total count    =         3000"), "{text}");
    }

    #[test]
    fn a_saved_recording_reads_back_exactly() {
        let mut r = Recorder::new();
        for seq in 0..3_000 {
            record_one(&mut r, seq);
        }
        r.completed(70_000, ms(5), ms(5), ms(9), Outcome::Status(409));
        r.waited_for_user();
        let mut saved = Vec::new();
        r.write_recording(&mut saved).unwrap();
        let back = Recorder::read_recording(saved.as_slice()).unwrap();
        assert_eq!(back.requests(), r.requests());
        assert_eq!(back.slots_waited_for_user(), 601);
        assert_eq!(back.latency(), r.latency());
        assert_eq!(back.lag(), r.lag());
        assert_eq!(back.service(), r.service());
        for class in 0..LATENCY_CLASSES.len() {
            assert_eq!(back.class_latency(class), r.class_latency(class), "{class}");
        }
        assert_eq!(back.timeline(), r.timeline());
        assert_eq!(back.accepted().len(), r.accepted().len());
        assert!((0..3_000).all(|seq| back.accepted().contains(seq) == r.accepted().contains(seq)));
        // Written again, it is the same file.
        let mut again = Vec::new();
        back.write_recording(&mut again).unwrap();
        assert_eq!(again, saved);

        // Other files are refused by what is wrong with them.
        let e = Recorder::read_recording(&b"{\"format\":\"x\",\"version\":1}"[..]).unwrap_err();
        assert!(e.to_string().contains("fanbench-recording"), "{e}");
        let mut doc: serde_json::Value = serde_json::from_slice(&saved).unwrap();
        doc["lag"] = "zz".into();
        let e = Recorder::read_recording(doc.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("\"lag\""), "{e}");
        let mut coarse = Histogram::<u64>::new_with_bounds(1, 1000, 1).unwrap();
        coarse.record(5).unwrap();
        doc["lag"] = encode(&coarse, "lag").unwrap().into();
        let e = Recorder::read_recording(doc.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("bounds"), "{e}");

        // A recording written before slots waiting for a user were counted still reads, as 0.
        let mut old: serde_json::Value = serde_json::from_slice(&saved).unwrap();
        old.as_object_mut().unwrap().remove("slots_waited_for_user");
        let back = Recorder::read_recording(old.to_string().as_bytes()).unwrap();
        assert_eq!(back.slots_waited_for_user(), 0);
        assert_eq!(back.requests(), r.requests());
    }
}
