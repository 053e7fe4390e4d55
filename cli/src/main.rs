//! `dmap`: run a distributed map job on this machine (embedded backends) and try it on synthetic data.

mod backend;
mod demo;
mod jobs;
mod local_up;
mod plan;
mod pump;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::backend::BackendArgs;

/// A distributed map over S3 objects: list, batch, process in parallel, aggregate once.
#[derive(Debug, Parser)]
#[command(name = "dmap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job spec to its end: on the embedded backends with --data-dir (a local directory as S3, in-process
    /// queue and store), otherwise through S3, SQS and DynamoDB (an emulator with --endpoint-url, or the AWS
    /// account of the environment's credentials).
    Run(RunArgs),
    /// Start a job and return at once, printing its id: on the embedded backends, in a process of its own
    /// that outlives this one (its log is under DIR/.dmap/); on AWS, by invoking the stack's coordinator.
    Submit(SubmitArgs),
    /// Describe a job, as Step Functions' DescribeMapRun does: status, items listed, succeeded, failed and
    /// pending, batches, times, rate and ETA. With --watch, a progress bar until the job ends (exit code as
    /// `run`'s).
    Status(StatusArgs),
    /// List the most recent jobs, newest first.
    Ls(LsArgs),
    /// Stop a running job: no new batch of it is processed, its listing stops, and once the batches in flight
    /// are done it ends ABORTED with the outputs of what was done.
    Abort(AbortArgs),
    /// Change a running job's settings, as Step Functions' UpdateMapRun: they take effect at once.
    Update(UpdateArgs),
    /// Run a FAILED or ABORTED job again over only its failed and unprocessed items, as the same job (its
    /// redrive count goes up); its outputs are rewritten as if those items had succeeded or failed on their
    /// own. Runs as `run` does, or with --detach through the stack's coordinator.
    Redrive(RedriveArgs),
    /// Predict a job before it runs: count its items and batches as the coordinator would (a very long
    /// listing is extrapolated, and says so), then print the AWS requests by operation, the cost at list
    /// prices and the time end to end on the stack's settings, with the phase that bounds it. Writes nothing,
    /// sends nothing.
    Plan(PlanArgs),
    /// Generate a synthetic dataset in the schema of NOAA's daily weather summaries (GSOD), run a monthly_high job
    /// over it (each month's hottest station-day), show what it found.
    Demo(DemoArgs),
    /// Local AWS: set up an emulator (or an account) for `dmap run --endpoint-url`.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Create a stack's queues, table and data bucket from the SAM template's own definitions and print their
    /// names as environment variables for `dmap run`.
    Up(UpArgs),
    /// Play the SQS event source mappings and the S3 notification for functions served by `cargo lambda
    /// watch`: poll the queues and the jobs prefix, invoke the functions, honour `batchItemFailures`.
    Pump(PumpArgs),
}

/// Which stack, as the template resolves it (shared by `local up` and `local pump`).
#[derive(Debug, Args)]
struct StackArgs {
    /// The stack's name: every resource is named from it, as on AWS (`<stack>-work`, `<stack>-jobs`...).
    #[arg(long, default_value = "dmap")]
    stack_name: String,
    /// The SAM template to read (default: the template.yaml this binary was built with).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Template parameter values, as `sam deploy --parameter-overrides` takes them: `Key=Value`.
    #[arg(long = "parameter-overrides", num_args = 1.., value_name = "KEY=VALUE")]
    parameter_overrides: Vec<String>,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Create them here (an emulator such as moto's server) instead of the environment's AWS account.
    #[arg(long)]
    endpoint_url: Option<String>,
    #[command(flatten)]
    stack: StackArgs,
    /// Also create this bucket, for inputs (repeatable).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
    /// Also write the Lambda functions' environment, as the template sets it (queue URLs, table, allowed
    /// buckets) plus the endpoint, to this file for `cargo lambda watch --env-file`.
    #[arg(long)]
    functions_env: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PumpArgs {
    /// The emulator (or AWS when left out) holding the queues and the bucket.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// The local Lambda Invoke API (`cargo lambda watch`).
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    lambda_url: String,
    #[command(flatten)]
    stack: StackArgs,
    /// Worker invocations at once (the template's MaximumConcurrency is sized for Lambda, not a laptop).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
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
    /// Embedded runs: the work queue's visibility timeout, in seconds (a crashed worker's batch reappears after
    /// it). Runs through SQS use the queue's own.
    #[arg(long, default_value_t = 2.0, value_parser = parse_positive_seconds)]
    visibility_timeout: f64,
    /// Embedded runs: receives of a batch before it goes to the dead-letter queue. Runs through SQS use the
    /// queue's redrive policy.
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
    /// The job spec (JSON). Run again after an interrupted run (Ctrl-C, a crash), it resumes the unfinished
    /// job: by its `job_id`, or for a spec without one, the newest unfinished job of the same spec.
    spec: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
    /// Count the AWS requests the run made, by operation (the basis of its cost).
    #[arg(long, conflicts_with = "data_dir")]
    stats: bool,
    #[command(flatten)]
    pool: PoolArgs,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The job spec (JSON).
    spec: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
    /// Process the first batches holding this many items, for real (nothing is stored), to time a batch;
    /// without it the model's latencies stand in for the work.
    #[arg(long, default_value_t = 0)]
    sample: u64,
    /// Listing pages read before the rest is extrapolated from the key span.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pages: u64,
    /// The stack's parameters, as `sam deploy --parameter-overrides` takes them (`WorkerMaxConcurrency=1000`);
    /// the template's defaults otherwise.
    #[arg(long = "parameter-overrides", num_args = 1.., value_name = "KEY=VALUE")]
    parameter_overrides: Vec<String>,
    /// The SAM template whose parameters apply (default: the template.yaml this binary was built with).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// The job spec (JSON).
    spec: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
    /// Embedded jobs: how their process runs.
    #[command(flatten)]
    pool: PoolArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The job's id.
    job_id: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// Follow the job with a progress bar until it ends; exit 0 if it SUCCEEDED, 3 if it FAILED.
    #[arg(long)]
    watch: bool,
    /// Print the description as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct AbortArgs {
    /// The job's id.
    job_id: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// On AWS: finalize the aborted job this many seconds after the abort, when every batch in flight has
    /// ended (default: the worker function's timeout plus 30 s, at most 900, SQS's longest delay: a worker
    /// timeout above 870 s leaves the last batches in flight to the sweeper's 30 minutes).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=900))]
    finalize_after: Option<u32>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("settings").required(true).multiple(true)))]
struct UpdateArgs {
    /// The job's id.
    job_id: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// The most batches of the job in flight at once (0: no limit).
    #[arg(long, group = "settings")]
    max_concurrency: Option<u32>,
    /// Failed items the job tolerates and still succeeds.
    #[arg(long, group = "settings")]
    tolerated_failure_count: Option<u64>,
    /// The share of failed items, in percent, the job tolerates and still succeeds.
    #[arg(long, group = "settings", value_parser = parse_percentage)]
    tolerated_failure_percentage: Option<f64>,
}

#[derive(Debug, Args)]
struct RedriveArgs {
    /// The job's id.
    job_id: String,
    #[command(flatten)]
    backend: BackendArgs,
    /// On AWS: start the redrive and return, the stack's coordinator listing (as `submit`).
    #[arg(long, conflicts_with = "data_dir")]
    detach: bool,
    /// Count the AWS requests the redrive made, by operation.
    #[arg(long, conflicts_with_all = ["data_dir", "detach"])]
    stats: bool,
    #[command(flatten)]
    pool: PoolArgs,
}

#[derive(Debug, Args)]
struct LsArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Only jobs in this status (RUNNING, FINALIZING, SUCCEEDED, FAILED, ABORTED).
    #[arg(long, value_parser = parse_status)]
    status: Option<dmap_core::outcome::JobStatus>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Print the jobs as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Files (objects) to generate, one per station and year as in GSOD: file i is station i / 4's for year
    /// 2021 + i % 4, so 2,000 files are 500 stations over 2021-2024. One file in 500 is broken on purpose.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    objects: u32,
    /// Rows per file: the days of its year the station reported, spread over the year (365 or more: every day).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
    /// Where to generate the dataset and write the results.
    #[arg(long, default_value = "dmap-demo")]
    data_dir: PathBuf,
    #[command(flatten)]
    pool: PoolArgs,
}

fn parse_status(s: &str) -> Result<dmap_core::outcome::JobStatus, String> {
    dmap_core::outcome::JobStatus::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<&str> = dmap_core::outcome::JobStatus::ALL
            .iter()
            .map(|(_, name)| *name)
            .collect();
        format!("\"{s}\" is not a status: one of {}", names.join(", "))
    })
}

fn parse_percentage(s: &str) -> Result<f64, String> {
    let pct: f64 = s.parse().map_err(|_| format!("\"{s}\" is not a number"))?;
    if (0.0..=100.0).contains(&pct) {
        Ok(pct)
    } else {
        Err(format!("{pct} is outside 0 to 100"))
    }
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

/// mimalloc rather than glibc's malloc: a run allocates and frees a few small buffers per object (its key, its
/// body, its result) across many threads, and glibc's arenas spent a fifth of an embedded run's CPU there,
/// partly waiting on each other's locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v3), which the Rust bindings do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Hands memory freed back to the system at once rather than after mimalloc's default delay (a second in v3):
/// with the default, freed pages across the blocking threads piled up with a run's length (a peak of 37 MiB at
/// 10,000 objects, 63 at 100,000); at once, it stays near 20 to 30 at the same speed. A default, so that
/// `MIMALLOC_PURGE_DELAY` still overrides it.
fn purge_freed_memory_at_once() {
    // SAFETY: sets one of mimalloc's tunables, which it reads as it purges.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0) };
}

impl Command {
    /// The threads the runtime may start for blocking work, when the default (512) does not suit. On the
    /// embedded backends that work is reading local files and running processors, which keep a core busy
    /// each: a few per core keep every core busy, while the default let bursts of short reads start hundreds
    /// of threads (each start, and each thread's memory, a cost) that could only take turns on the cores.
    /// Through AWS, a blocking thread also waits on the network as it reads an object, so there it stays.
    fn blocking_threads(&self) -> Option<usize> {
        let embedded = match self {
            Command::Run(args) => args.backend.data_dir.is_some(),
            Command::Redrive(args) => args.backend.data_dir.is_some(),
            Command::Demo(_) => true,
            Command::Plan(args) => args.backend.data_dir.is_some(),
            Command::Submit(_)
            | Command::Status(_)
            | Command::Ls(_)
            | Command::Abort(_)
            | Command::Update(_)
            | Command::Local { .. } => false,
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        embedded.then(|| (cores * 4).max(8))
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.command.blocking_threads() {
        runtime.max_blocking_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dmap: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(&args).await,
            Command::Plan(args) => plan::plan(&args).await,
            Command::Submit(args) => jobs::submit(&args).await,
            Command::Status(args) => jobs::status(&args).await,
            Command::Ls(args) => jobs::ls(&args).await,
            Command::Abort(args) => jobs::abort(&args).await,
            Command::Update(args) => jobs::update(&args).await,
            Command::Redrive(args) => jobs::redrive(&args).await,
            Command::Demo(args) => demo::demo(&args).await,
            Command::Local {
                command: LocalCommand::Up(args),
            } => local_up::up(&args).await,
            Command::Local {
                command: LocalCommand::Pump(args),
            } => pump::pump(&args).await,
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
