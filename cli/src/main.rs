//! `dmap`: run a distributed map job on this machine (embedded backends) and try it on synthetic data.

mod demo;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A distributed map over S3 objects: list, batch, process in parallel, aggregate once.
#[derive(Debug, Parser)]
#[command(name = "dmap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job spec to its end on the embedded backends (a local directory as S3, in-process queue and store).
    Run(RunArgs),
    /// Generate a synthetic NOAA-style daily-weather dataset, run a csv_aggregate job over it, show what it found.
    Demo(DemoArgs),
}

/// How the in-process pool runs (shared by `run` and `demo`).
#[derive(Debug, Clone, Args)]
struct PoolArgs {
    /// Worker invocations at once (the SQS event source mapping's MaximumConcurrency).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    concurrency: u16,
    /// Objects read at once within one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    item_concurrency: u16,
    /// Visibility timeout of the work queue, in seconds (a crashed worker's batch reappears after it).
    #[arg(long, default_value_t = 2.0, value_parser = parse_positive_seconds)]
    visibility_timeout: f64,
    /// Receives of a batch before it goes to the dead-letter queue (the redrive policy's maxReceiveCount).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_receive_count: u32,
    /// Inject one fault (duplicate delivery, crash before ack, crash before record) into this share of
    /// deliveries, in [0, 1).
    #[arg(long, value_parser = parse_rate)]
    chaos: Option<f64>,
    /// Seed of the fault injection.
    #[arg(long, default_value_t = 0, requires = "chaos")]
    seed: u64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The job spec (JSON).
    spec: PathBuf,
    /// The directory that plays S3: bucket `b`, key `k` is the file `DIR/b/k`.
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    pool: PoolArgs,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Weather stations to generate (one CSV object each).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    objects: u32,
    /// Days (rows) per station.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_600))]
    days: u32,
    /// Where to generate the dataset and write the results.
    #[arg(long, default_value = "dmap-demo")]
    data_dir: PathBuf,
    #[command(flatten)]
    pool: PoolArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("\"{s}\" is not a number"))?;
    if (0.0..1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside [0, 1)"))
    }
}

fn parse_positive_seconds(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|_| format!("\"{s}\" is not a number"))?;
    if (0.01..=43_200.0).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("{secs} is outside 0.01 to 43200 seconds"))
    }
}

/// glibc gives each thread that allocates its own malloc arena; across the blocking pool's threads, the
/// fragmentation of many arenas made peak memory creep with a run's length (26 MiB at 20,000 objects, 45 MiB at
/// 200,000). Four arenas keep it flat (27 and 30 MiB) at the same speed.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dmap: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(&args.spec, &args.data_dir, &args.pool).await,
            Command::Demo(args) => demo::demo(&args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmap: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
