//! `dmap run`: assembles the backends (embedded, or S3/SQS/DynamoDB), runs the job with a progress bar, prints
//! the summary.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dmap_core::Deps;
use dmap_core::aws::resources::DEFAULT_TTL;
use dmap_core::aws::{AwsClients, AwsResources, LambdaInvoker, SqsQueue};
use dmap_core::coordinator::unfinished_job_of;
use dmap_core::embedded::{EmbeddedQueues, LocalDirStore};
use dmap_core::outcome::TerminalStatus;
use dmap_core::ports::Progress;
use dmap_core::redrive;
use dmap_core::runner::{self, Chaos, RunReport, RunnerConfig};
use dmap_core::spec::{Job, JobSpec};
use dmap_core::usage::{Meter, PricedUsage, Prices};
use dmap_core::worker::WorkerConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::json;

use crate::backend::{AwsArgs, embedded_job_store};
use crate::{PoolArgs, RunArgs};

/// Receives' worth of batches per worker held in the embedded work queue before the coordinator waits: enough
/// to keep every worker busy, and it keeps memory flat however many objects the job lists.
const BACKLOG_PER_WORKER: usize = 4;

/// Exit code of a job that ran and FAILED (by the failure tolerance rule).
const EXIT_JOB_FAILED: u8 = 3;

/// Exit code of a job that was aborted (`dmap abort`).
const EXIT_JOB_ABORTED: u8 = 4;

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// An SQS long poll: an idle worker waits this long per ReceiveMessage instead of polling in a loop.
const SQS_RECEIVE_WAIT: Duration = Duration::from_secs(1);

/// Where a run's outputs are, for the summary.
pub enum Outputs<'a> {
    Dir(&'a Path),
    S3,
}

impl Outputs<'_> {
    fn locate(&self, bucket: &str, key: &str) -> String {
        match self {
            Self::Dir(dir) => dir.join(bucket).join(key).display().to_string(),
            Self::S3 => format!("s3://{bucket}/{key}"),
        }
    }
}

/// Reads and validates the spec, runs it, prints the summary; the exit code follows the job's status.
pub async fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let job = read_spec(&args.spec)?;
    let (report, outputs, requests) = match &args.backend.data_dir {
        Some(dir) => {
            let job = match job {
                SpecJob::Named(job) => job,
                SpecJob::Anonymous(job) => resume_anonymous(job, dir).await?,
            };
            (
                run_job(job, dir, &args.pool, Begin::Start).await?,
                Outputs::Dir(dir),
                None,
            )
        }
        None => {
            let (report, requests) =
                run_job_aws(job.into_job(), &args.backend.aws, &args.pool, Begin::Start).await?;
            (report, Outputs::S3, args.stats.then_some(requests))
        }
    };
    print_summary(&report, &outputs, args.pool.json, requests.as_ref());
    Ok(exit_code(report.manifest.status))
}

/// The exit code of a job that ran to its end in `status`.
pub fn exit_code(status: TerminalStatus) -> ExitCode {
    match status {
        TerminalStatus::Succeeded => ExitCode::SUCCESS,
        TerminalStatus::Failed => ExitCode::from(EXIT_JOB_FAILED),
        TerminalStatus::Aborted => ExitCode::from(EXIT_JOB_ABORTED),
    }
}

/// A parsed spec, and whether it named its job.
pub enum SpecJob {
    Named(Job),
    /// The spec has no `job_id`; the job got a fresh one.
    Anonymous(Job),
}

impl SpecJob {
    pub fn into_job(self) -> Job {
        match self {
            Self::Named(job) | Self::Anonymous(job) => job,
        }
    }
}

/// Reads and validates a spec file.
pub fn read_spec(path: &Path) -> anyhow::Result<SpecJob> {
    let json = std::fs::read(path)
        .with_context(|| format!("cannot read the job spec {}", path.display()))?;
    let mut fresh = false;
    let job = JobSpec::parse_with_id(&json, || {
        fresh = true;
        dmap_core::job::fresh_job_id()
    })?;
    Ok(if fresh {
        SpecJob::Anonymous(job)
    } else {
        SpecJob::Named(job)
    })
}

/// For a spec without a `job_id`: the newest unfinished job of the same spec under `data_dir` if there is one
/// (an interrupted run of it, resumed), else `job`.
async fn resume_anonymous(job: Job, data_dir: &Path) -> anyhow::Result<Job> {
    let jobs = embedded_job_store(data_dir)?;
    Ok(match unfinished_job_of(&jobs, &job.spec).await? {
        Some(record) if jobs.held_elsewhere(&record.job.job_id)? => bail!(
            "job {id}, an unfinished run of the same spec, is running in another process (dmap status {id} \
             --data-dir {dir} --watch)",
            id = record.job.job_id,
            dir = data_dir.display()
        ),
        Some(record) => {
            eprintln!(
                "resuming job {}, an unfinished run of the same spec",
                record.job.job_id
            );
            record.job
        }
        None => job,
    })
}

fn runner_config(
    pool: &PoolArgs,
    visibility_timeout: Duration,
    max_receive_count: u32,
) -> RunnerConfig {
    RunnerConfig {
        concurrency: pool.concurrency.into(),
        visibility_timeout,
        max_receive_count,
        // A crashed delivery comes back after a visibility timeout; only an idle well past that is stuck.
        idle_before_sweep: (visibility_timeout * 3).max(Duration::from_secs(3)),
        worker: WorkerConfig {
            item_concurrency: pool.item_concurrency.into(),
            ..WorkerConfig::default()
        },
        chaos: pool.chaos.map(|rate| Chaos {
            rate,
            seed: pool.seed,
        }),
        ..RunnerConfig::default()
    }
}

/// How a run begins: a job started (or resumed), or a FAILED or ABORTED job redriven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    Start,
    Redrive,
}

/// Runs a validated job on the embedded backends over `data_dir`.
pub async fn run_job(
    job: Job,
    data_dir: &Path,
    pool: &PoolArgs,
    begin: Begin,
) -> anyhow::Result<RunReport> {
    let jobs = embedded_job_store(data_dir)?;
    if jobs.held_elsewhere(&job.job_id)? {
        bail!(
            "job {id} is running in another process (dmap status {id} --data-dir {dir} --watch)",
            id = job.job_id,
            dir = data_dir.display()
        );
    }
    let visibility_timeout = Duration::from_secs_f64(pool.visibility_timeout);
    let config = runner_config(pool, visibility_timeout, pool.max_receive_count);
    let mut deps = Deps::embedded(
        Arc::new(LocalDirStore::new(data_dir)),
        EmbeddedQueues {
            visibility_timeout,
            max_receive_count: pool.max_receive_count,
            backlog_limit: Some(
                config.concurrency * config.receive_batch_size * BACKLOG_PER_WORKER,
            ),
        },
    );
    deps.jobs = Arc::new(jobs);
    if job.spec.processor.lambda().is_some() {
        // The user's functions are wherever the SDK's standard configuration says: Lambda, or a local Invoke API
        // named by AWS_ENDPOINT_URL_LAMBDA (`cargo lambda watch`).
        let clients = AwsClients::from_env(None).await;
        deps.functions = Some(Arc::new(LambdaInvoker::new(clients.lambda)));
        // Its Invoke requests are the job's usage.
        deps.usage = clients.usage;
    }
    if begin == Begin::Redrive {
        // The runner sends again what an earlier process left unrecorded, as for any resumed job.
        redrive::reopen(&deps, &job.job_id, false).await?;
    }
    run_with_progress(&deps, job, &config, pool.json).await
}

/// Runs a validated job through S3, SQS and DynamoDB; returns the report and the meter that counted the
/// requests this process made.
pub async fn run_job_aws(
    job: Job,
    aws: &AwsArgs,
    pool: &PoolArgs,
    begin: Begin,
) -> anyhow::Result<(RunReport, Meter)> {
    let clients = aws.clients().await;
    // Every request of this process is the job's, from the first.
    clients.usage.run_job(&job.job_id);
    let (deps, work) = aws_deps(aws, &clients).await?;
    // The heartbeat and the chaos rule follow the queue's own attributes.
    let (visibility_timeout, max_receives) = work.visibility_and_max_receives().await?;
    let mut config = runner_config(pool, visibility_timeout, max_receives.unwrap_or(u32::MAX));
    config.receive_wait = SQS_RECEIVE_WAIT;
    config.queues_die_with_process = false;
    // Progress reads cost read units: the job item once a second (status), the counters (a Query per shard)
    // every tenth.
    config.poll_interval = Duration::from_secs(1);
    config.count_every = 10;
    if begin == Begin::Redrive {
        redrive::reopen(&deps, &job.job_id, true).await?;
    }
    let report = run_with_progress(&deps, job, &config, pool.json).await?;
    Ok((report, clients.usage))
}

/// The pipeline's ports on the stack's S3, SQS and DynamoDB, and its work queue.
pub async fn aws_deps(aws: &AwsArgs, clients: &AwsClients) -> anyhow::Result<(Deps, SqsQueue)> {
    let names = aws.names()?;
    let queue = |name: &str| {
        let sqs = clients.sqs.clone();
        let name = name.to_owned();
        async move {
            SqsQueue::by_name(sqs, &name).await.with_context(|| {
                format!(
                    "queue \"{name}\" (create it with `dmap local up`, or name it with the flag)"
                )
            })
        }
    };
    let work = queue(&names.work_queue).await?;
    let resources = AwsResources {
        table: names.table.clone(),
        counter_shards: aws.counter_shards,
        work_queue_url: work.url().to_owned(),
        dead_letter_queue_url: Some(queue(&names.dead_letter_queue).await?.url().to_owned()),
        finalize_queue_url: queue(&names.finalize_queue).await?.url().to_owned(),
        expected_bucket_owner: aws.expected_bucket_owner.clone(),
        ttl: DEFAULT_TTL,
    };
    Ok((Deps::aws(clients, &resources), work))
}

async fn run_with_progress(
    deps: &Deps,
    job: Job,
    config: &RunnerConfig,
    quiet: bool,
) -> anyhow::Result<RunReport> {
    if !quiet {
        eprintln!("job {}", job.job_id);
    }
    let job_id = job.job_id.clone();
    let bar = progress_bar();
    let on_progress = |p: &Progress| update(&bar, p);
    let report = tokio::select! {
        report = runner::run(deps, job, config, &on_progress) => report,
        // The job's state is kept as it goes (a persistent job store, or the AWS services), so stopping here
        // loses nothing that a run of the same spec does not resume.
        _ = tokio::signal::ctrl_c() => {
            bar.abandon();
            eprintln!("interrupted: job {job_id} is unfinished; run the same command again to resume it");
            std::process::exit(EXIT_INTERRUPTED.into());
        }
    };
    bar.finish_and_clear();
    Ok(report?)
}

pub fn progress_bar() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} items ({rate}) {msg}",
        )
        .expect("the template is valid")
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} items/s", state.per_sec());
            },
        )
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

pub fn update(bar: &ProgressBar, p: &Progress) {
    let done = p.succeeded + p.failed;
    // Until the listing is complete the total is what has been sent so far; workers can finish batches of a
    // page before the coordinator checkpoints it, so never less than what is done.
    bar.set_length(p.listing.map_or(p.items_sent.max(done), |l| l.items));
    bar.set_position(done);
    bar.set_message(match p.listing {
        Some(_) => format!("{} failed, {}", p.failed, p.status.as_str()),
        None => format!("{} failed, listing…", p.failed),
    });
}

/// Peak resident memory of this process, where the OS reports it.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A job's usage in one line, priced as its manifest says.
pub fn usage_line(usage: Option<&PricedUsage>) -> String {
    match usage {
        Some(priced) => priced.usage.line(&Prices::for_region(&priced.prices)),
        None => "no AWS requests".into(),
    }
}

/// Prints the summary, its usage line included (or JSON on stdout with `--json`), and with `meter` (`--stats`)
/// every request this process made, by operation: the manifest's usage, and those it sent after the manifest
/// was written (the manifest's own write, the job's final status, reading the manifest back).
pub fn print_summary(report: &RunReport, outputs: &Outputs, as_json: bool, meter: Option<&Meter>) {
    let m = &report.manifest;
    let secs = report.elapsed.as_secs_f64();
    let rate = m.items.total as f64 / secs.max(1e-9);
    let manifest = outputs.locate(&m.bucket, &m.result.replace("result.json", "manifest.json"));
    let requests = meter.map(Meter::requests);
    let requests = requests.as_ref();
    let after_manifest = meter.map(|meter| meter.after(&m.job_id).requests);
    let total_requests: u64 = requests.map_or(0, |r| r.values().sum());
    let per_thousand = total_requests as f64 * 1000.0 / (m.items.total.max(1) as f64);
    let s = &report.stats;
    if as_json {
        let mut summary = json!({
            "job_id": m.job_id,
            "status": m.status,
            "items": m.items,
            "batches": m.batches,
            "elapsed_seconds": secs,
            "items_per_second": rate,
            "manifest": manifest,
            "result": outputs.locate(&m.bucket, &m.result),
            "failures": outputs.locate(&m.bucket, &m.failures),
            "outputs": m.outputs.iter().map(|key| outputs.locate(&m.bucket, key)).collect::<Vec<_>>(),
            "map_results": m.map_results.as_ref().map(|key| outputs.locate(&m.bucket, key)),
            "deliveries": s.deliveries,
            "faults": {
                "duplicates": s.duplicates,
                "crashes_before_ack": s.crashes_before_ack,
                "crashes_before_record": s.crashes_before_record,
                "function_faults": s.function_faults,
            },
            "dead_lettered_batches": s.dead_lettered_batches,
            "peak_memory_bytes": peak_memory_bytes(),
            "usage": m.usage,
        });
        if let Some(requests) = requests {
            summary["requests"] = json!(requests);
            summary["requests_after_manifest"] = json!(after_manifest);
            summary["requests_total"] = json!(total_requests);
            summary["requests_per_1000_items"] = json!(per_thousand);
        }
        println!("{summary}");
        return;
    }
    let faults = s.duplicates + s.crashes_before_ack + s.crashes_before_record + s.function_faults;
    let chaos = if faults > 0 {
        format!(
            "; {faults} faults injected ({} duplicates, {} crashes before ack, {} before record, {} function calls \
             throttled or cut)",
            s.duplicates, s.crashes_before_ack, s.crashes_before_record, s.function_faults
        )
    } else {
        String::new()
    };
    println!(
        "{} {}: {} items ({} succeeded, {} failed) in {} batches, {secs:.2} s, {rate:.0} items/s{chaos}; usage: {}; \
         manifest: {manifest}",
        m.job_id,
        m.status.as_str(),
        m.items.total,
        m.items.succeeded,
        m.items.failed,
        m.batches.total,
        usage_line(m.usage.as_ref()),
    );
    if let Some(requests) = requests {
        let by_operation: Vec<String> =
            requests.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!(
            "AWS requests: {total_requests} ({per_thousand:.1} per 1,000 items): {}",
            by_operation.join(", ")
        );
    }
}
