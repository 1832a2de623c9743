//! The `fanbench` command: thin glue over the library crates. Errors become exit codes here and
//! nowhere else: 0 success, 1 "the answer is no" (a failed gate), 2 an error (an invalid run among them).

mod attribution;
mod bench;
mod capacity;
mod cli;
mod compare;
mod demo;
mod dlq;
mod environment;
mod gating;
mod harness;
mod launch;
mod merge;
mod output;
mod plan;
mod planning;
mod repeats;
mod serve;
mod shutdown;
mod steps;
mod telemetry;
mod usage;
mod usl;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(serve) => serve::run(serve).await,
            Command::Demo(demo) => demo::run(demo).await,
            Command::Bench(bench) => bench::run(bench).await,
            Command::Capacity(args) => capacity::run(args).await,
            Command::Plan(args) => planning::run(args).await,
            Command::Dlq(dlq) => dlq::run(dlq).await,
            Command::Compare(args) => compare::compare(args).await,
            Command::Run(args) => compare::run(args).await,
            Command::Merge(args) => merge::merge(&args),
            Command::Report(args) => output::report(&args.runs),
            Command::Gate(args) => gating::gate(
                &args.run,
                args.baseline.as_deref(),
                &gating::Outputs {
                    junit: args.junit,
                    markdown: args.markdown,
                },
            ),
            Command::Baseline(cli::BaselineCommand::Update(args)) => {
                let target = gating::update_baseline(&args.run, &args.root)?;
                println!("baseline: {} (commit it)", target.display());
                Ok(())
            }
            Command::Trace(args) => {
                let mut out = std::io::stdout().lock();
                driver::trace::write_launch_day(args.seed, &mut out).map_err(anyhow::Error::from)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<gating::GatesFailed>().is_some()
                || e.downcast_ref::<planning::OffPrediction>().is_some() =>
        {
            eprintln!("fanbench: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // goose logs a warning for every request that fails to connect; the driver counts them by kind
    // and says so once per kind instead.
    let default = match verbose {
        0 => "info,sqlx=warn,goose=error",
        1 => "debug,sqlx=warn,hyper=info,reqwest=info,goose=error",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("FANBENCH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
