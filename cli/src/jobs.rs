//! The commands that operate jobs on any backend, as Step Functions operates Map Runs: `submit` (start without
//! waiting), `status` (DescribeMapRun, with `--watch` for a progress bar) and `ls` (ListMapRuns).

use std::fs::File;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use dmap_core::clock::now_ms;
use dmap_core::describe::{JobDescription, describe};
use dmap_core::outcome::{JobStatus, TerminalStatus};
use dmap_core::ports::{JobStore, Progress};
use dmap_core::spec::Job;
use serde_json::json;

use crate::backend::{AwsArgs, embedded_jobs_dir};
use crate::run::{SpecJob, exit_code, progress_bar, read_spec, update};
use crate::{LsArgs, PoolArgs, StatusArgs, SubmitArgs};

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
    let jobs = crate::backend::embedded_job_store(data_dir)?;
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
    let names = aws.names()?;
    let clients = aws.clients().await;
    let payload = serde_json::to_vec(&job.spec)?;
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
    eprintln!("job {} submitted to {}", job.job_id, names.coordinator);
    Ok(())
}

pub async fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let jobs = args.backend.job_store().await?;
    let job_id = args.job_id.as_str();
    let Some(mut description) = describe(jobs.as_ref(), job_id, now_ms()).await? else {
        bail!("no job \"{job_id}\"");
    };
    if args.watch && !description.status.is_terminal() {
        description = watch(jobs.as_ref(), job_id, args.backend.data_dir.is_some()).await?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&description)?);
    } else {
        print!("{}", describe_text(&description));
    }
    Ok(match description.status {
        JobStatus::Succeeded if args.watch => exit_code(TerminalStatus::Succeeded),
        JobStatus::Failed if args.watch => exit_code(TerminalStatus::Failed),
        _ => ExitCode::SUCCESS,
    })
}

/// Shows the job's progress until it ends; returns its final description.
async fn watch(jobs: &dyn JobStore, job_id: &str, local: bool) -> anyhow::Result<JobDescription> {
    // On DynamoDB a read costs a GetItem and a Query per counter shard: every two seconds, not every tenth.
    let interval = if local {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    };
    let bar = progress_bar();
    loop {
        let Some(d) = describe(jobs, job_id, now_ms()).await? else {
            bail!("job \"{job_id}\" is gone");
        };
        update(
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
    text
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
