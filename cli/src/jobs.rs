//! The commands that operate jobs on any backend, as Step Functions operates Map Runs: `submit` (start without
//! waiting), `status` (DescribeMapRun, with `--watch` for a progress bar), `ls` (ListMapRuns), `abort` and
//! `update` (UpdateMapRun), `redrive` (a map run's redrive).

use std::fs::File;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use dmap_core::aws::SqsQueue;
use dmap_core::clock::now_ms;
use dmap_core::describe::{JobDescription, describe};
use dmap_core::embedded::MemoryJobStore;
use dmap_core::finalizer::{FinalizerConfig, finalize};
use dmap_core::message::{ContinueListing, FinalizeMessage};
use dmap_core::outcome::{JobStatus, TerminalStatus};
use dmap_core::ports::{ControlChange, JobStore, Progress, SettingsUpdate};
use dmap_core::spec::Job;
use serde_json::json;

use crate::backend::{AwsArgs, embedded_deps, embedded_job_store, embedded_jobs_dir};
use crate::run::{
    Begin, Outputs, SpecJob, aws_deps, exit_code, print_summary, progress_bar, read_spec, run_job,
    run_job_aws, update as show_progress, usage_line,
};
use crate::{AbortArgs, LsArgs, PoolArgs, RedriveArgs, StatusArgs, SubmitArgs, UpdateArgs};

/// How long `submit` waits for an embedded job's process to create the job (or to refuse its spec).
const SUBMIT_WAIT: Duration = Duration::from_secs(60);

pub async fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let job = match read_spec(&args.spec)? {
        SpecJob::Named(job) | SpecJob::Anonymous(job) => job,
    };
    match &args.backend.data_dir {
        Some(dir) => submit_embedded(&job, dir, &args.pool).await?,
        None => submit_aws(&job, &args.backend.aws).await?,
    }
    println!("{}", job.job_id);
    Ok(ExitCode::SUCCESS)
}

/// Starts `dmap run` on the job in a process of its own (its own process group, so that a Ctrl-C meant for
/// the terminal's foreground does not stop it), and waits until the job exists in the store, or the process
/// has refused it.
async fn submit_embedded(job: &Job, data_dir: &Path, pool: &PoolArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;

    let state = embedded_jobs_dir(data_dir);
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    // The spec with its id resolved: the process must run this job, not one with a fresh id.
    let spec_path = state.join(format!("{}.spec.json", job.job_id));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&job.spec)?)
        .with_context(|| format!("cannot write {}", spec_path.display()))?;
    let log_path = state.join(format!("{}.log", job.job_id));
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("run")
        .arg(&spec_path)
        .arg("--data-dir")
        .arg(data_dir)
        .args(pool_flags(pool))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let mut child = command.spawn().context("cannot start the job's process")?;
    let jobs = embedded_job_store(data_dir)?;
    let deadline = tokio::time::Instant::now() + SUBMIT_WAIT;
    loop {
        if jobs.get_job(&job.job_id).await?.is_some() {
            eprintln!(
                "job {} started in process {}; its log is {}",
                job.job_id,
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "the job's process ended ({status}) before the job started:\n{}",
                log.trim_end()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the job's process (pid {}) has not created job {} after {} s; see {}",
                child.id(),
                job.job_id,
                SUBMIT_WAIT.as_secs(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pool's flags, for `dmap run` in the submitted job's process.
fn pool_flags(pool: &PoolArgs) -> Vec<String> {
    let mut flags = vec![
        "--json".to_owned(),
        format!("--concurrency={}", pool.concurrency),
        format!("--item-concurrency={}", pool.item_concurrency),
        format!("--visibility-timeout={}", pool.visibility_timeout),
        format!("--max-receive-count={}", pool.max_receive_count),
    ];
    if let Some(rate) = pool.chaos {
        flags.push(format!("--chaos={rate}"));
        flags.push(format!("--seed={}", pool.seed));
    }
    flags
}

/// Hands the spec to the stack's coordinator in an asynchronous invocation (Lambda queues it and retries it;
/// the coordinator's conditional create makes a retry resume the same job).
async fn submit_aws(job: &Job, aws: &AwsArgs) -> anyhow::Result<()> {
    let coordinator = invoke_coordinator(aws, serde_json::to_vec(&job.spec)?).await?;
    eprintln!("job {} submitted to {coordinator}", job.job_id);
    Ok(())
}

/// Invokes the stack's coordinator asynchronously with `payload`; returns the function's name.
async fn invoke_coordinator(aws: &AwsArgs, payload: Vec<u8>) -> anyhow::Result<String> {
    let names = aws.names()?;
    let clients = aws.clients().await;
    clients
        .lambda
        .invoke()
        .function_name(&names.coordinator)
        .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
        .payload(aws_smithy_types::Blob::new(payload))
        .send()
        .await
        .map_err(aws_sdk_lambda::Error::from)
        .with_context(|| format!("invoking {}", names.coordinator))?;
    Ok(names.coordinator)
}

/// `dmap redrive`: a FAILED or ABORTED job runs again over its failed and unprocessed items, as `run` runs a
/// job (progress bar, summary, exit code); with `--detach` on AWS, the stack's coordinator runs its listing.
pub async fn redrive(args: &RedriveArgs) -> anyhow::Result<ExitCode> {
    let job_id = args.job_id.as_str();
    let record = args
        .backend
        .job_store()
        .await?
        .get_job(job_id)
        .await?
        .with_context(|| format!("no job \"{job_id}\""))?;
    // Refused here, before a runner starts.
    if let Err(why) = record.redrivable() {
        bail!("job \"{job_id}\" cannot be redriven: {why}");
    }
    let job = record.job;
    let aws = &args.backend.aws;
    match &args.backend.data_dir {
        Some(dir) => {
            let report = run_job(job, dir, &args.pool, Begin::Redrive).await?;
            print_summary(&report, &Outputs::Dir(dir), args.pool.json, None);
            Ok(exit_code(report.manifest.status))
        }
        None if args.detach => {
            let clients = aws.clients().await;
            let (deps, _) = aws_deps(aws, &clients).await?;
            let record = dmap_core::redrive::reopen(&deps, job_id, true).await?;
            // The coordinator resumes the job's listing as it resumes a handed-over one.
            let resume = ContinueListing {
                continue_listing: job_id.to_owned(),
                next_seq: record.checkpoint.next_seq,
                hop: record.checkpoint.hop,
            };
            let coordinator = invoke_coordinator(aws, resume.to_body().into_bytes()).await?;
            println!(
                "job {job_id}: redrive {} started by {coordinator} (dmap status {job_id} --watch)",
                record.redrives
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let (report, meter) = run_job_aws(job, aws, &args.pool, Begin::Redrive).await?;
            print_summary(
                &report,
                &Outputs::S3,
                args.pool.json,
                args.stats.then_some(&meter),
            );
            Ok(exit_code(report.manifest.status))
        }
    }
}

pub async fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let jobs = args.backend.job_store().await?;
    let job_id = args.job_id.as_str();
    let Some(mut description) = describe(jobs.as_ref(), job_id, now_ms()).await? else {
        bail!("no job \"{job_id}\"");
    };
    if args.watch && !description.status.is_terminal() {
        let embedded = match &args.backend.data_dir {
            Some(dir) => Some(embedded_job_store(dir)?),
            None => None,
        };
        description = watch(jobs.as_ref(), job_id, embedded.as_ref()).await?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&description)?);
    } else {
        print!("{}", describe_text(&description));
    }
    Ok(match description.status {
        JobStatus::Succeeded if args.watch => exit_code(TerminalStatus::Succeeded),
        JobStatus::Failed if args.watch => exit_code(TerminalStatus::Failed),
        JobStatus::Aborted if args.watch => exit_code(TerminalStatus::Aborted),
        _ => ExitCode::SUCCESS,
    })
}

/// How long an embedded job may show no progress before `status --watch` checks that a process runs it.
const STILL_FOR: Duration = Duration::from_secs(5);

/// Shows the job's progress until it ends; returns its final description. `embedded`: the data dir's job store,
/// to tell a job no process runs any more (an interrupted run) from a slow one.
async fn watch(
    jobs: &dyn JobStore,
    job_id: &str,
    embedded: Option<&MemoryJobStore>,
) -> anyhow::Result<JobDescription> {
    // On DynamoDB a read costs a GetItem and a Query per counter shard: every two seconds, not every tenth.
    let interval = if embedded.is_some() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    };
    let bar = progress_bar();
    let mut last: Option<(JobDescription, tokio::time::Instant)> = None;
    loop {
        let Some(d) = describe(jobs, job_id, now_ms()).await? else {
            bail!("job \"{job_id}\" is gone");
        };
        let moved = last.as_ref().is_none_or(|(seen, _)| {
            (seen.status, seen.items, seen.batches) != (d.status, d.items, d.batches)
        });
        if moved {
            last = Some((d.clone(), tokio::time::Instant::now()));
        } else if let (Some(store), Some((_, since))) = (embedded, &last)
            && since.elapsed() > STILL_FOR
            && !d.status.is_terminal()
            && !store.held_elsewhere(job_id)?
        {
            bar.abandon();
            bail!(
                "no process is running job {job_id} (its run was interrupted): run its spec again with \
                 `dmap run` to resume it, or `dmap abort` it"
            );
        }
        show_progress(
            &bar,
            &Progress {
                status: d.status,
                listing: d
                    .items
                    .total
                    .zip(d.batches.total)
                    .map(|(items, batches)| dmap_core::ports::ListingTotals { batches, items }),
                items_sent: d.items.listed,
                batches_done: d.batches.done,
                succeeded: d.items.succeeded,
                failed: d.items.failed,
                usage: Default::default(),
            },
        );
        if d.status.is_terminal() {
            bar.finish_and_clear();
            return Ok(d);
        }
        tokio::time::sleep(interval).await;
    }
}

/// An instant of a job record, as RFC 3339 in UTC.
fn timestamp(ms: u64) -> String {
    DateTime::from_millis(ms as i64)
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| ms.to_string())
}

fn describe_text(d: &JobDescription) -> String {
    let total = |t: Option<u64>| t.map_or_else(|| "? (listing)".to_owned(), |t| t.to_string());
    let mut text = format!(
        "job {}: {}\n\
         items:    {} listed of {}; {} succeeded, {} failed, {} pending\n\
         batches:  {} done of {} ({} sent)\n\
         started:  {}\n",
        d.job_id,
        d.status.as_str(),
        d.items.listed,
        total(d.items.total),
        d.items.succeeded,
        d.items.failed,
        d.items.pending,
        d.batches.done,
        total(d.batches.total),
        d.batches.sent,
        timestamp(d.started_at_ms),
    );
    if let Some(ended) = d.ended_at_ms {
        text.push_str(&format!("ended:    {}\n", timestamp(ended)));
    }
    text.push_str(&format!(
        "elapsed:  {:.1} s, {:.0} items/s",
        d.elapsed_seconds, d.items_per_second
    ));
    if let Some(eta) = d.eta_seconds {
        text.push_str(&format!(", about {eta:.0} s to go"));
    }
    text.push('\n');
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    text.push_str(&format!(
        "settings: max concurrency {}, tolerated failures {} items / {}%\n",
        or_none(d.max_concurrency.map(|n| n.to_string())),
        or_none(d.tolerated_failure_count.map(|n| n.to_string())),
        or_none(d.tolerated_failure_percentage.map(|p| p.to_string())),
    ));
    if d.redrives > 0 {
        text.push_str(&format!("redrives: {}\n", d.redrives));
    }
    // While the job runs: what the job's writes have carried to the store so far (a Lambda worker's last
    // requests for the job after its last write are not in it).
    let label = if d.status.is_terminal() {
        "usage:   "
    } else {
        "so far:  "
    };
    text.push_str(&format!("{label} {}\n", usage_line(d.usage.as_ref())));
    if d.abort_requested && !d.status.is_terminal() {
        text.push_str("aborting: it ends ABORTED once its batches in flight are done\n");
    }
    text
}

/// Extra time an aborted job's finalizer waits past the worker function's timeout, for the batches in flight
/// at the abort to be recorded.
const ABORT_GRACE_SECS: u32 = 30;

pub async fn abort(args: &AbortArgs) -> anyhow::Result<ExitCode> {
    let job_id = args.job_id.as_str();
    let change = ControlChange::Abort { at_ms: now_ms() };
    match &args.backend.data_dir {
        Some(dir) => {
            let jobs = Arc::new(embedded_job_store(dir)?);
            jobs.control(job_id, &change).await?;
            if jobs.running_elsewhere(job_id)? {
                // Its process takes the abort from the job's inbox, lets its batches in flight end, and
                // finalizes it.
                println!(
                    "job {job_id}: abort requested; the process running it ends it ABORTED once its batches in \
                     flight are done (dmap status {job_id} --watch)"
                );
                return Ok(ExitCode::SUCCESS);
            }
            // No process runs it (an interrupted run): nothing is in flight, so it ends now.
            let mut deps = embedded_deps(dir);
            deps.jobs = jobs;
            let finalized = finalize(&deps, FinalizerConfig::default(), job_id).await?;
            let m = &finalized.manifest;
            println!(
                "job {job_id}: {} with {} items done ({} succeeded, {} failed)",
                m.status.as_str(),
                m.items.total,
                m.items.succeeded,
                m.items.failed
            );
        }
        None => {
            let names = args.backend.aws.names()?;
            let jobs = args.backend.job_store().await?;
            jobs.control(job_id, &change).await?;
            // The finalizer ends the job once the workers' batches in flight at the abort are done: the
            // longest a worker runs is its function's timeout.
            let clients = args.backend.aws.clients().await;
            let delay = args.finalize_after.unwrap_or_else(|| {
                names
                    .worker_timeout_secs
                    .saturating_add(ABORT_GRACE_SECS)
                    .min(900)
            });
            let queue = SqsQueue::by_name(clients.sqs.clone(), &names.finalize_queue)
                .await
                .with_context(|| format!("queue \"{}\"", names.finalize_queue))?;
            clients
                .sqs
                .send_message()
                .queue_url(queue.url())
                .message_body(
                    FinalizeMessage {
                        job_id: job_id.to_owned(),
                        range: None,
                        resend: false,
                    }
                    .to_body(),
                )
                .delay_seconds(delay as i32)
                .send()
                .await
                .map_err(aws_sdk_sqs::Error::from)
                .context("sending the aborted job's finalize trigger")?;
            println!(
                "job {job_id}: abort acknowledged; it ends ABORTED in about {delay} s, once its batches in flight \
                 are done (dmap status {job_id} --watch)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn update(args: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let jobs = args.backend.job_store().await?;
    let change = ControlChange::Update(SettingsUpdate {
        max_concurrency: args.max_concurrency,
        tolerated_failure_count: args.tolerated_failure_count,
        tolerated_failure_percentage: args.tolerated_failure_percentage,
    });
    let record = jobs.control(&args.job_id, &change).await?;
    let tolerance = record.tolerance();
    println!(
        "job {}: max concurrency {}, tolerated failures {} items / {}%",
        args.job_id,
        record
            .max_concurrency()
            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        tolerance
            .count
            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        tolerance
            .percentage
            .map_or_else(|| "none".to_owned(), |p| p.to_string()),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn ls(args: &LsArgs) -> anyhow::Result<ExitCode> {
    let jobs = args.backend.job_store().await?;
    let limit = args.limit as usize;
    // A status filter reads further back, to still find `limit` jobs in that status.
    let candidates = if args.status.is_some() { 1000 } else { limit };
    let now = now_ms();
    let mut found: Vec<JobDescription> = Vec::new();
    for job_id in jobs.recent_jobs(candidates).await? {
        if found.len() == limit {
            break;
        }
        if let Some(wanted) = args.status {
            // The job item alone first: no counter read for a job the filter drops.
            match jobs.peek_job(&job_id).await? {
                Some(record) if record.status == wanted => {}
                _ => continue,
            }
        }
        if let Some(d) = describe(jobs.as_ref(), &job_id, now).await?
            && args.status.is_none_or(|s| s == d.status)
        {
            found.push(d);
        }
    }
    if args.json {
        println!("{}", json!(found));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<34} {:<10} {:>12} {:>12} {:>10} {:<24} {:>10}",
        "JOB", "STATUS", "DONE", "OF", "FAILED", "STARTED", "ELAPSED"
    );
    for d in &found {
        println!(
            "{:<34} {:<10} {:>12} {:>12} {:>10} {:<24} {:>9.1}s",
            d.job_id,
            d.status.as_str(),
            d.items.succeeded + d.items.failed,
            d.items
                .total
                .map_or_else(|| format!("{}+", d.items.listed), |t| t.to_string()),
            d.items.failed,
            timestamp(d.started_at_ms),
            d.elapsed_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
