//! Command-line options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What happens to a notification service at a sign-up spike when the fan-out runs inside the
/// request, versus behind a queue?
///
/// fanbench builds both designs for real (axum, PostgreSQL), simulates the email, SMS and push
/// providers, and measures the two side by side.
///
/// Without --database-url or DATABASE_URL, every command that needs PostgreSQL starts a private,
/// throwaway cluster (initdb in a temp dir, a free loopback port) and removes it on exit.
#[derive(Debug, Parser)]
#[command(
    name = "fanbench",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); FANBENCH_LOG=<filter> overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: replay a sign-up spike against both designs and compare them side by side.
    ///
    /// Starts a throwaway PostgreSQL (or uses DATABASE_URL) and the provider simulator; for each
    /// design in turn, on a fresh database: starts its server, drives the scenario (open model:
    /// latency counts from each request's intended send time), waits for the async queue to
    /// drain, reconciles every accepted sign-up against the provider ledger, and stops the
    /// server. Writes results.json, HdrHistogram logs (.hlog) and percentile distributions
    /// (.hgrm) to the run folder and prints a side-by-side table.
    ///
    /// Example: fanbench compare --scenario scenarios/smoke.toml
    Compare(CompareArgs),
    /// Drive one design (`--design sync`), or any server already running that accepts
    /// POST /register (`--target URL`: no server started, no reconciliation).
    Run(RunArgs),
    /// Add up the run folders of `run --shard` drivers into one run folder that `report` and
    /// `gate` read like any other.
    ///
    /// The merge is exact: each shard saved its whole recording (RUN_DIR/<design>.histograms.json,
    /// HdrHistogram V2 encodings), and histograms add, so request counts, status classes, latency
    /// by class and the timeline are what one driver sending the whole schedule would have
    /// recorded. Send lag is the worst shard's. The merged results.json lists its shards under
    /// `merged`; it is invalid if any shard is, or if a shard is missing (merged anyway, and
    /// named). Shards of different scenarios or designs, split a different number of ways, or
    /// given twice are refused.
    ///
    /// Example: fanbench merge reports/runs/*-shard*of2 --out reports/runs/merged
    Merge(MergeArgs),
    /// Write the design-review report of one or more run folders: RUN_DIR/index.html (one
    /// self-contained page, charts inline, nothing fetched) and RUN_DIR/summary.md, and print the
    /// table. Several folders render one comparison page in the first folder (e.g. before and
    /// after a change). `compare` runs this at its end.
    Report(ReportArgs),
    /// Evaluate a run's gates (declared in its scenario's [gates]): exit 0 when all pass, 1 when
    /// any fails, 2 on an error. Prints each gate with its value, limit and margin; writes
    /// RUN_DIR/gates.json, RUN_DIR/gates.md (or --markdown) and, with --junit, JUnit XML.
    Gate(GateArgs),
    /// Manage the committed baseline that regression gates compare against.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Write the seeded launch-day trace (`scenarios/traces/launch-day.csv`) to standard output.
    Trace(TraceArgs),
    /// Run one piece of the system until Ctrl-C or SIGTERM.
    #[command(subcommand)]
    Serve(ServeCommand),
    /// Inspect and replay dead letters (the async design's, or with --design broker the broker
    /// design's).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Start the whole stack in this process, send one sign-up end to end, and show what each
    /// provider received. Takes a few seconds; leaves nothing running.
    Demo(DemoArgs),
    /// Measure fanbench and the async design against references, in one run each: the driver
    /// against wrk, the API against pgbench, the whole design end to end. Prints the figures side
    /// by side and writes them to OUT/bench-<what>.json. These measure; the tests do not.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Find each design's capacity: the highest offered rate that meets its objective (SLO), and
    /// what saturated first at the knee.
    ///
    /// For each design: steps of constant Poisson load (`run --design D`, each on a fresh
    /// throwaway cluster, so each starts drained) climb from --start-rate by --factor until one
    /// misses the objective, then bisect between the last pass and the first fail until they are
    /// within --resolution or --max-steps steps have run. A step's first seconds warm the design
    /// up (--warmup); it is judged on the requests scheduled after them, its measurement window.
    /// A step where the driver fell behind its schedule anywhere is DRIVER-LIMITED: it is
    /// inconclusive, never taken as the design's limit, and the search stops there.
    ///
    /// The objective is written in the gate language relative to the design
    /// (`latency_ms_by_class.2xx.p99 < 250`, `requests.share.503 < 0.01`). Every step must also
    /// keep up: requests waiting for a pooled connection must not grow through the load (by more
    /// than 5 % of the rate a second), or a short step would pass rates that a longer one
    /// refuses. Built in: sync,
    /// accepted p99 < 6000 ms and 503s < 1 %; async and broker, accepted p99 < 250 ms and 503s <
    /// 1 %, and for their end-to-end limit delivery must keep up (every channel's delivery p99
    /// under --delivery-p99, the backlog not growing, nothing lost or left queued).
    ///
    /// At the first failing step it names the saturated resource with its evidence (pool in use
    /// and waiters, a channel at its concurrency limit, provider 429s, lock waits, CPU, the
    /// driver's send lag); at the knee itself, the last step that passed, it names the resource
    /// closest to its limit. For the sync design it puts Little's law beside the measurement:
    /// pool size ÷ mean connection hold time, from the server's phase times.
    ///
    /// What-if: --set changes a design setting for the run; --sweep searches one design once per
    /// value of one setting and draws the limits and the hockey sticks on one chart each.
    ///
    /// Writes OUT/capacity.json (schema: crates/fanbench/capacity.schema.json), OUT/summary.md,
    /// OUT/index.html (the page `fanbench report OUT` draws), each step's run folder under
    /// OUT/<design>/, and prints a table.
    ///
    /// Examples: fanbench capacity --designs sync --step-duration 10s
    ///           fanbench capacity --sweep sync.pool_size=10,20,40
    Capacity(CapacityArgs),
    /// Plan a launch from a capacity folder: which designs and settings carry a peak with the
    /// headroom, and for the queue designs how big the backlog of a spike gets and how long it
    /// takes to drain.
    ///
    /// The spike: --peak sign-ups a second for --spike-duration, then --baseline-rate (0: no
    /// load) from then on. A design carries a rate when its measured limit is at least that rate
    /// (the sync design's limit; a queue design's ingest limit to take the sign-ups and its
    /// end-to-end limit to deliver them as they come); with the headroom the rate to carry is
    /// peak × (1 + headroom). A queue design that takes the peak but delivers at C' below it
    /// queues it: backlog peak = (peak − C') × spike-duration sign-ups, drained (peak − C') ×
    /// spike-duration ÷ (C' − baseline) seconds after the spike. C' is the rate the backlog fell
    /// at after the load in the capacity steps that fell behind on delivery (their median, from
    /// each step's telemetry); without those, the midpoint of the last rate that kept up with
    /// delivery and the first that did not.
    ///
    /// --verify replays the spike once against each design that queues it (`run --design D` on
    /// the scenario its capacity steps ran, under the spike's load) and compares the measured
    /// backlog peak (telemetry: the slowest channel's queue plus unpublished outbox rows) and
    /// drain time (results.json's drain, from the end of the load until the queue is empty; with
    /// a baseline, from the telemetry: until the backlog is back under 5 % of its peak) with the
    /// prediction: exit 1 when a drain time is off by more than 25 %.
    ///
    /// Writes OUT/plan.json and OUT/plan.md and prints a table.
    ///
    /// Examples: fanbench plan reports/capacity/20261129T180000Z --peak 800
    ///           fanbench plan CAPACITY_DIR --peak 40 --spike-duration 10s --verify
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The capacity folder to plan from (holding capacity.json, as `fanbench capacity` wrote it).
    #[arg(value_name = "CAPACITY_DIR")]
    pub capacity: PathBuf,

    /// The launch's peak, sign-ups a second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub peak: u32,

    /// Spare capacity to keep above the peak, as a share of it (0.3: carry 1.3 × the peak).
    #[arg(long, default_value_t = 0.3)]
    pub headroom: f64,

    /// How long the peak lasts.
    #[arg(long, default_value = "60s")]
    pub spike_duration: humantime::Duration,

    /// Sign-ups a second after the spike (the backlog drains at the end-to-end rate minus this).
    #[arg(long, default_value_t = 0)]
    pub baseline_rate: u32,

    /// Plan only these designs (and their sweep values) of the folder [default: all of them].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub designs: Vec<Design>,

    /// Replay the spike once against each design that queues it and check the predicted drain
    /// time (exit 1 when off by more than 25 %).
    #[arg(long)]
    pub verify: bool,

    /// Where plan.json, plan.md and the replays go. Default: CAPACITY_DIR/plan/
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No progress lines, only the table and the verdicts.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// The scenario whose payload, providers and server settings every step uses (its arrivals
    /// are replaced by each step's constant load); its `[capacity]` table sets the defaults
    /// below.
    #[arg(long, value_name = "FILE", default_value = "scenarios/capacity.toml")]
    pub scenario: PathBuf,

    /// The designs to search, in turn (`--designs sync,async,broker` for all three).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sync,async")]
    pub designs: Vec<Design>,

    /// Search a server that is already running instead of the designs (its base URL; sign-ups
    /// go to URL/register, loopback only, as `run --target`). Its objective's metrics are read
    /// from the results under `target`; there is no telemetry to attribute the knee from beyond
    /// the driver's own.
    #[arg(long, value_name = "URL", conflicts_with = "designs")]
    pub target: Option<String>,

    /// Let --target be a host outside the loopback range (127.0.0.0/8, ::1, localhost): a load
    /// test sent elsewhere by a typo is an attack on someone, so it takes saying on purpose.
    #[arg(long, requires = "target")]
    pub allow_remote: bool,

    /// An objective, relative to the design: `EXPR` for every design, or `DESIGN:EXPR` for one
    /// (`--slo "async:latency_ms_by_class.2xx.p99 < 100"`). Repeat it for several; any given for
    /// a design replaces that design's objectives from the scenario and the built-in ones.
    #[arg(long, value_name = "EXPR")]
    pub slo: Vec<String>,

    /// Stop bisecting when (first fail − last pass) ÷ last pass is at most this [default: 0.1].
    #[arg(long)]
    pub resolution: Option<f64>,

    /// The most load steps each search may run [default: 10]. The async design's two searches
    /// (end to end first, then ingest) share their steps: a step the first ran is free to the
    /// second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_steps: Option<u32>,

    /// Runs of each rate that decides a limit (its last pass and first fail; more when a repeat
    /// disagrees) [default: the scenario's `[capacity] repeat`, else 3]. Each limit then comes
    /// with an interval: at least the highest rate that passed every run, below the lowest that
    /// failed every run. Three runs show a rate that passes only by luck (one in two runs) as
    /// mixed 3 times in 4, and cost about four more steps per limit; 1 runs each rate once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub repeat: Option<u32>,

    /// How long each step's load lasts, warm-up included [default: 20s].
    #[arg(long)]
    pub step_duration: Option<humantime::Duration>,

    /// The first part of each step, left out of its judgement: connections open, caches and the
    /// pool fill, workers reach their pace [default: a quarter of the step, at most 5s; 0s
    /// judges the whole step].
    #[arg(long)]
    pub warmup: Option<humantime::Duration>,

    /// The first step's rate, sign-ups a second, for every design searched [default: the
    /// scenario's `[capacity] start_rate` (one rate, or one per design: `{ sync = 16, async =
    /// 400 }`), else 8 for sync and 200 for async].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub start_rate: Option<u32>,

    /// Each climbing step's rate is the last one's times this [default: 2].
    #[arg(long)]
    pub factor: Option<f64>,

    /// The async design's delivery p99 bound per channel, milliseconds, for "delivery keeps up".
    #[arg(long, default_value_t = 1000.0)]
    pub delivery_p99: f64,

    /// Change a design setting for this run only, to ask "what if": `--set sync.pool_size=20`,
    /// `--set async.max_concurrency=128`, `--set sync.acquire_timeout=2s` (repeatable). The keys
    /// are the scenario's `[servers.sync]` / `[servers.async]` / `[servers.broker]` keys; a wrong
    /// one is an error before any step runs. Each joins the scenario's `what_if` list, so a shared
    /// setting may differ from the other designs' for this run. Recorded in capacity.json
    /// (`overrides`) and on the page.
    #[arg(long = "set", value_name = "DESIGN.KEY=VALUE")]
    pub set: Vec<String>,

    /// Search one design once per value of one of its settings and draw the results on one
    /// chart: `--sweep sync.pool_size=10,20,40` shows whether a bigger pool moves the sync
    /// design's limit, `--sweep async.max_concurrency=16,64,256` whether send slots move the
    /// async one's. Searches only that design (whatever --designs says); each value's steps go
    /// under OUT/<KEY>=<VALUE>/, and capacity.json holds one search per value, keyed
    /// `DESIGN[KEY=VALUE]`. Combines with --set for other settings. The swept key is a what-if,
    /// as with --set.
    #[arg(long, value_name = "DESIGN.KEY=V1,V2,…", conflicts_with = "target")]
    pub sweep: Option<String>,

    /// A gate on what the search found, in the gate language over capacity.json (repeatable;
    /// added to the scenario's `[capacity] gates`): `--gate "async.capacity_rps /
    /// sync.capacity_rps > 10"`, `--gate "sync.capacity_rps > 25"`. Names: `<design>.capacity_rps`,
    /// `.first_fail_rps`, `.delivery_capacity_rps`, `.delivery_first_fail_rps`,
    /// `.prediction.predicted_rps`, `.prediction.ratio`. A limit the driver capped counts as its
    /// lower bound. Exit 1 when a gate fails; gates naming a design not searched are skipped.
    #[arg(long = "gate", value_name = "EXPR")]
    pub gates: Vec<String>,

    /// Where capacity.json, summary.md and the steps go. Default: reports/capacity/<UTC time>/
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No progress lines: only the table, the report's path and the gates.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The driver's cost and ceiling: drive a trivial endpoint (`serve null`) at each rate and
    /// print requests/s, CPU microseconds per request and send lag, beside wrk (closed loop, full
    /// speed) and oha (open model, the same rates) against the same endpoint, when installed.
    ///
    /// Example: fanbench bench driver --rates 5000,20000 --duration 10s
    Driver(BenchDriverArgs),
    /// The async design's ingest ceiling against PostgreSQL's own: pgbench runs the API's sign-up
    /// statement on a fresh database, then the API alone (`serve async --role api`) is driven at
    /// rising rates. Prints the highest rate held at p99 < --p99 with no 503, as a share of
    /// pgbench's rate.
    ///
    /// Example: fanbench bench ingest --rates 1000,2000,3000
    Ingest(BenchIngestArgs),
    /// The highest rate at which the async design keeps up end to end: every channel delivers,
    /// the queue does not grow, and delivery p99 stays under --delivery-p99. Runs the design
    /// (`run --design async`) at rising rates, stopping at the first that fails.
    ///
    /// Example: fanbench bench e2e --rates 500,1000,1500
    E2e(BenchE2eArgs),
}

#[derive(Debug, Args)]
pub struct BenchOutArgs {
    /// Where the figures and each step's run folder go. Default: reports/bench/<UTC time>-<what>/
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchDriverArgs {
    /// Offered rates, requests per second, one step each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,20000,40000", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rates: Vec<u32>,

    /// How long each step (and wrk) runs.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,

    /// wrk's and oha's connections (wrk on one thread).
    #[arg(long, default_value_t = 50)]
    pub wrk_connections: u32,

    /// Do not run wrk or oha even when they are installed.
    #[arg(long)]
    pub no_wrk: bool,

    /// The driver's load threads at every rate (the scenario's `[driver] threads`); by default
    /// each rate gets as many as it needs (`driver::threads_for`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: Option<u32>,

    #[command(flatten)]
    pub out: BenchOutArgs,
}

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// pgbench client counts, one pgbench run each; the reference is the one equal to the API's
    /// pool size (10), or the best when none is.
    #[arg(long, value_delimiter = ',', default_value = "1,4,10,16")]
    pub clients: Vec<u32>,

    /// Offered rates for the API alone, sign-ups per second, one step each (stops at the first
    /// that fails).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,3000,4000,5000,6000,7000", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rates: Vec<u32>,

    /// How long each pgbench run and each step lasts.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,

    /// The accepted-latency p99 a step must stay under, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99: f64,

    #[command(flatten)]
    pub out: BenchOutArgs,
}

#[derive(Debug, Args)]
pub struct BenchE2eArgs {
    /// Offered rates, sign-ups per second, one step each (stops at the first that fails).
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,1500,2000,2500,3000", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rates: Vec<u32>,

    /// How long each step offers load.
    #[arg(long, default_value = "30s")]
    pub duration: humantime::Duration,

    /// The delivery p99 every channel must stay under, in milliseconds.
    #[arg(long, default_value_t = 1000.0)]
    pub delivery_p99: f64,

    /// The accepted-latency p99 a step must stay under, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub p99: f64,

    #[command(flatten)]
    pub out: BenchOutArgs,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// The provider simulator: email, SMS and push endpoints with latency, errors, rate limits
    /// and outages, and a ledger of deliveries.
    ///
    /// Change behaviour at run time: curl -X PUT localhost:7001/admin/channels/sms -d
    /// '{"latency":{"dist":"fixed","value":"2s"},"error_rate":0.2}'
    Providers(ProvidersArgs),
    /// The naive synchronous design: each sign-up calls every provider inside its transaction.
    ///
    /// Example: fanbench serve sync --providers-url http://127.0.0.1:7001
    Sync(SyncArgs),
    /// The queue-backed design: a sign-up commits the user and an outbox row per channel and
    /// answers 202; per-channel workers deliver with retries.
    ///
    /// Example: fanbench serve async --providers-url http://127.0.0.1:7001
    Async(AsyncArgs),
    /// The broker design: a sign-up commits the user and an outbox row and answers 202; a relay
    /// publishes the outbox to NATS JetStream, and one durable pull consumer per channel delivers
    /// with retries and dead letters.
    ///
    /// Without --nats-url, a throwaway `nats-server -js` is started on a free loopback port with
    /// its store in a temp dir, and removed on exit.
    ///
    /// Example: fanbench serve broker --providers-url http://127.0.0.1:7001
    Broker(BrokerArgs),
    /// A trivial endpoint: answers every POST /register with 202 at once, touching nothing. What
    /// `fanbench bench driver` drives, so that only the driver's own cost is measured.
    Null(NullArgs),
}

#[derive(Debug, Args)]
pub struct NullArgs {
    /// Stop when standard input closes (set by `fanbench bench` for the servers it runs).
    #[arg(long, hide = true)]
    pub watch_stdin: bool,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7009")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// API and workers in one process.
    All,
    /// Only the API (POST /register).
    Api,
    /// Only the workers.
    Workers,
}

#[derive(Debug, Args)]
pub struct AsyncArgs {
    /// Stop when standard input closes (set by `fanbench compare` for the servers it runs).
    #[arg(long, hide = true)]
    pub watch_stdin: bool,

    /// Address to listen on (/register, /metrics, /healthz; only the last two with --role workers).
    #[arg(long, default_value = "127.0.0.1:7003")]
    pub listen: SocketAddr,

    /// Base URL of the providers.
    #[arg(long, value_name = "URL")]
    pub providers_url: String,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The dedicated notification-log store. Default: database `<primary>_logs` on the primary's
    /// server, created when missing.
    #[arg(long, env = "FANBENCH_LOG_DATABASE_URL", value_name = "URL")]
    pub log_database_url: Option<String>,

    /// Which halves to run, so either can be scaled or killed alone.
    #[arg(long, value_enum, default_value_t = RoleArg::All)]
    pub role: RoleArg,

    #[command(flatten)]
    pub pool: PoolArgs,

    /// How long one provider call may take before the attempt counts as failed.
    #[arg(long, default_value_t = async_server::Config::default().provider_timeout.into())]
    pub provider_timeout: humantime::Duration,

    #[command(flatten)]
    pub workers: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Stop when standard input closes (set by `fanbench compare` for the servers it runs).
    #[arg(long, hide = true)]
    pub watch_stdin: bool,

    /// Address to listen on (/register, /metrics, /healthz; only the last two with --role workers).
    #[arg(long, default_value = "127.0.0.1:7004")]
    pub listen: SocketAddr,

    /// Base URL of the providers.
    #[arg(long, value_name = "URL")]
    pub providers_url: String,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The dedicated notification-log store. Default: database `<primary>_logs` on the primary's
    /// server, created when missing.
    #[arg(long, env = "FANBENCH_LOG_DATABASE_URL", value_name = "URL")]
    pub log_database_url: Option<String>,

    /// The NATS server with JetStream (`nats://127.0.0.1:4222`). Without it, a throwaway
    /// `nats-server -js` is started and removed on exit.
    #[arg(long, env = "FANBENCH_NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,

    /// Which halves to run (the API with the relay, or the workers), so either can be scaled or
    /// killed alone.
    #[arg(long, value_enum, default_value_t = RoleArg::All)]
    pub role: RoleArg,

    /// Database connections in the request path's pool.
    #[arg(long, default_value_t = broker_server::Settings::default().pool_size, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long a request waits for a free connection before it is answered 503.
    #[arg(long, default_value_t = broker_server::Settings::default().acquire_timeout.into())]
    pub acquire_timeout: humantime::Duration,

    /// How long one provider call may take before the attempt counts as failed.
    #[arg(long, default_value_t = broker_server::Settings::default().provider_timeout.into())]
    pub provider_timeout: humantime::Duration,

    /// Provider calls in flight per channel to start with; the adaptive limit never goes below it.
    #[arg(long, default_value_t = broker_server::Settings::default().concurrency, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// The most provider calls in flight per channel: the limit grows towards it while a channel
    /// is saturated and its provider healthy (a value below --concurrency means --concurrency).
    #[arg(long, default_value_t = broker_server::Settings::default().max_concurrency, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrency: u32,

    /// Most messages one pull asks for, and most outbox rows one relay round publishes.
    #[arg(long, default_value_t = broker_server::Settings::default().batch, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,

    /// How long the relay waits before looking at the outbox again when it was empty.
    #[arg(long, default_value_t = broker_server::Settings::default().poll_interval.into())]
    pub poll_interval: humantime::Duration,

    /// The consumers' ack wait: how long a delivered message is a worker's before JetStream
    /// delivers it again (must be above --provider-timeout).
    #[arg(long, default_value_t = broker_server::Settings::default().lease.into())]
    pub lease: humantime::Duration,

    /// Attempts before a send is dead-lettered.
    #[arg(long, default_value_t = broker_server::Settings::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,

    /// On shutdown, how long in-flight sends may take to finish.
    #[arg(long, default_value_t = broker_server::Config::default().grace.into())]
    pub grace: humantime::Duration,

    /// How long published rows stay in the outbox before the relay deletes them.
    #[arg(long, default_value_t = broker_server::Config::default().prune_after.into())]
    pub prune_after: humantime::Duration,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Provider calls in flight per channel to start with; the adaptive limit never goes below it.
    #[arg(long, default_value_t = async_server::Settings::default().concurrency, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// The most provider calls in flight per channel: the limit grows towards it while a channel
    /// is saturated and its provider healthy (a value below --concurrency means --concurrency).
    #[arg(long, default_value_t = async_server::Settings::default().max_concurrency, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrency: u32,

    /// Most rows one claim takes.
    #[arg(long, default_value_t = async_server::Settings::default().batch, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,

    /// How long a worker waits before claiming again when it found less than a full batch.
    #[arg(long, default_value_t = async_server::WorkerConfig::default().poll_interval.into())]
    pub poll_interval: humantime::Duration,

    /// How long a claimed row is held before another worker may take it (keep it above
    /// --provider-timeout).
    #[arg(long, default_value_t = async_server::WorkerConfig::default().lease.into())]
    pub lease: humantime::Duration,

    /// Attempts before a delivery is dead-lettered.
    #[arg(long, default_value_t = async_server::WorkerConfig::default().max_attempts, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_attempts: i32,

    /// On shutdown, how long in-flight sends may take to finish.
    #[arg(long, default_value_t = async_server::WorkerConfig::default().grace.into())]
    pub grace: humantime::Duration,

    /// How long delivered rows stay in the outbox before the pruner deletes them.
    #[arg(long, default_value_t = async_server::WorkerConfig::default().prune_after.into())]
    pub prune_after: humantime::Duration,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first, as one JSON object a line.
    List(DlqListArgs),
    /// Put dead letters back in the queue with a fresh attempt budget.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub struct DlqTarget {
    /// The design's primary database.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: String,

    /// Whose dead letters: the async design's (its `deliveries` table) or the broker design's.
    #[arg(long, value_enum, default_value_t = Design::Async)]
    pub design: Design,

    /// Only this channel.
    #[arg(long, value_enum)]
    pub channel: Option<signup_core::Channel>,
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    pub target: DlqTarget,

    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub target: DlqTarget,

    /// Only these ids (repeatable); default: every dead letter (of --channel).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<i64>,
}

#[derive(Debug, Args)]
pub struct ProvidersArgs {
    /// Stop when standard input closes (set by `fanbench compare` for the servers it runs).
    #[arg(long, hide = true)]
    pub watch_stdin: bool,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,

    /// Provider behaviour as JSON or TOML (keys: email, sms, push; each with latency, error_rate,
    /// rate_limit, outages). Missing channels keep their defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL to use (migrated on start). Without it, a throwaway cluster is started and
    /// removed on exit.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

/// The database server a measured run creates its databases on.
#[derive(Debug, Args)]
pub struct RunDatabaseArgs {
    /// The PostgreSQL server to create each design's databases on (`fanbench_<design>_<time>` and
    /// its `_logs` store; the database part of the URL is replaced). Without it, a throwaway
    /// cluster is started and removed on exit.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// With --database-url: keep each design's databases after the run (they are dropped by
    /// default), e.g. to inspect the outbox or replay dead letters.
    #[arg(long)]
    pub keep_databases: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Stop when standard input closes (set by `fanbench compare` for the servers it runs).
    #[arg(long, hide = true)]
    pub watch_stdin: bool,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7002")]
    pub listen: SocketAddr,

    /// Base URL of the providers (the simulator, or anything speaking its API).
    #[arg(long, value_name = "URL")]
    pub providers_url: String,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub pool: PoolArgs,

    /// How long one provider call may take before the sign-up fails with 502.
    #[arg(long, default_value_t = sync_server::Config::default().provider_timeout.into())]
    pub provider_timeout: humantime::Duration,
}

#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Database connections in the pool.
    #[arg(long, default_value_t = sync_server::Config::default().pool_size, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long a request waits for a free connection before it is answered 503.
    #[arg(long, default_value_t = sync_server::Config::default().acquire_timeout.into())]
    pub acquire_timeout: humantime::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Design {
    /// The naive design: fan-out inside the request.
    Sync,
    /// The queue-backed design.
    Async,
    /// The broker design: an outbox relayed to NATS JetStream.
    Broker,
}

impl Design {
    pub fn name(self) -> &'static str {
        match self {
            Design::Sync => "sync",
            Design::Async => "async",
            Design::Broker => "broker",
        }
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The scenario file (TOML): arrivals, payload mix, provider behaviour, server settings.
    #[arg(
        long,
        default_value = "scenarios/peak-registration.toml",
        value_name = "PATH"
    )]
    pub scenario: PathBuf,

    /// The run folder. Default: reports/runs/<UTC time>-<scenario name>/
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No live progress (it is shown on a terminal, and every ten seconds in logs).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// The designs to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sync,async")]
    pub designs: Vec<Design>,

    /// Run every design this many times (into r1/, r2/, …); gates then decide on medians and the
    /// spread of the repeats.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,

    #[command(flatten)]
    pub gates: GateOutputArgs,

    #[command(flatten)]
    pub database: RunDatabaseArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["design", "target"])))]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// Start and drive this design (like compare, for one design).
    #[arg(long, value_enum)]
    pub design: Option<Design>,

    /// Drive a server that is already running (its base URL; sign-ups go to URL/register).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,

    /// Allow a --target outside the loopback range (127.0.0.0/8, ::1, localhost).
    #[arg(long)]
    pub allow_remote: bool,

    /// Drive only shard I of N of the schedule: every N-th arrival, starting at the I-th, each
    /// at the time the whole schedule gives it. Start N drivers (one per machine) at the same
    /// moment against the same --target, each with its own I, then add their run folders up
    /// with `fanbench merge`. Needs --target. Without --out the folder is
    /// reports/runs/<time>-<scenario>-shard<I>of<N>.
    ///
    /// Example: fanbench run --target http://lb:8080 --allow-remote --shard 2/4
    #[arg(long, value_name = "I/N")]
    pub shard: Option<driver::Shard>,

    #[command(flatten)]
    pub database: RunDatabaseArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard run folders (each written by `fanbench run --shard I/N`), in any order.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,

    /// The merged run folder (created; must not hold a results.json yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GateOutputArgs {
    /// Compare against this run folder for regression gates (e.g. the committed
    /// reports/baseline/<scenario name>, measured on the reference machine). Without it,
    /// regression gates are skipped.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<PathBuf>,

    /// Also write the gate results as JUnit XML (one test case per gate).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The run folder (with results.json, or repeats r1/, r2/, …).
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// The baseline run folder for regression gates.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<PathBuf>,

    /// Write JUnit XML here (one test case per gate).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Write the Markdown summary here (default RUN_DIR/gates.md).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Promote a run to reports/baseline/<scenario name>/ (results and histograms only).
    Update(BaselineUpdateArgs),
}

#[derive(Debug, Args)]
pub struct BaselineUpdateArgs {
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// Where baselines live.
    #[arg(long, default_value = "reports/baseline", value_name = "DIR")]
    pub root: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run folders (each with a results.json).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The seed; 7 made the committed launch-day trace.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Each default is written once, in the design crate; the flags and a scenario's
    /// `[servers.*]` both read it from there, and the two designs agree where they do not differ.
    #[test]
    fn the_flags_default_to_the_designs_own_settings() {
        let cli =
            Cli::try_parse_from(["fanbench", "serve", "async", "--providers-url", "http://x"])
                .unwrap();
        let Command::Serve(ServeCommand::Async(args)) = cli.command else {
            panic!("not async")
        };
        let settings = async_server::Settings::default();
        let worker = async_server::WorkerConfig::default();
        assert_eq!(args.pool.pool_size, settings.pool_size);
        assert_eq!(*args.pool.acquire_timeout, settings.acquire_timeout);
        assert_eq!(*args.provider_timeout, settings.provider_timeout);
        assert_eq!(args.workers.concurrency, settings.concurrency);
        assert_eq!(args.workers.max_concurrency, settings.max_concurrency);
        assert_eq!(args.workers.batch, settings.batch);
        assert_eq!(*args.workers.poll_interval, settings.poll_interval);
        assert_eq!(*args.workers.lease, settings.lease);
        assert_eq!(args.workers.max_attempts, worker.max_attempts);
        assert_eq!(*args.workers.prune_after, worker.prune_after);
        let sync = sync_server::Config::default();
        assert_eq!(
            (sync.pool_size, sync.acquire_timeout, sync.provider_timeout),
            (
                settings.pool_size,
                settings.acquire_timeout,
                settings.provider_timeout
            ),
            "the designs share pool size and timeouts"
        );
    }

    #[test]
    fn the_broker_flags_default_to_its_settings() {
        let cli =
            Cli::try_parse_from(["fanbench", "serve", "broker", "--providers-url", "http://x"])
                .unwrap();
        let Command::Serve(ServeCommand::Broker(args)) = cli.command else {
            panic!("not broker")
        };
        let s = broker_server::Settings::default();
        assert_eq!(
            (
                args.pool_size,
                *args.acquire_timeout,
                *args.provider_timeout,
                args.concurrency,
                args.max_concurrency,
                args.batch,
                *args.poll_interval,
                *args.lease,
                args.max_attempts,
                *args.grace,
                *args.prune_after,
            ),
            (
                s.pool_size,
                s.acquire_timeout,
                s.provider_timeout,
                s.concurrency,
                s.max_concurrency,
                s.batch,
                s.poll_interval,
                s.lease,
                s.max_attempts,
                broker_server::Config::default().grace,
                broker_server::Config::default().prune_after,
            )
        );
        assert_eq!(args.nats_url, None);
    }

    #[test]
    fn durations_parse_humanly() {
        let cli = Cli::try_parse_from([
            "fanbench",
            "serve",
            "sync",
            "--providers-url",
            "http://x",
            "--acquire-timeout",
            "250ms",
        ])
        .unwrap();
        let Command::Serve(ServeCommand::Sync(args)) = cli.command else {
            panic!("not sync")
        };
        assert_eq!(
            *args.pool.acquire_timeout,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(args.pool.pool_size, 10);
        assert!(
            Cli::try_parse_from([
                "fanbench",
                "serve",
                "sync",
                "--providers-url",
                "x",
                "--pool-size",
                "0"
            ])
            .is_err()
        );
    }
}
