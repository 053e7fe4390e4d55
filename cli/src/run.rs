//! `dmap run`: assembles the embedded backends, runs the job with a progress bar, prints the summary.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dmap_core::Deps;
use dmap_core::embedded::{EmbeddedQueue, LocalDirStore, MemoryJobStore, QueueConfig};
use dmap_core::layout::TerminalStatus;
use dmap_core::local::{self, Chaos, LocalConfig, RunReport};
use dmap_core::ports::Progress;
use dmap_core::spec::{Job, JobSpec};
use dmap_core::worker::WorkerConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::PoolArgs;

/// Receives' worth of batches per worker held in the embedded work queue before the coordinator waits: enough
/// to keep every worker busy, and it keeps memory flat however many objects the job lists.
const BACKLOG_PER_WORKER: usize = 4;

/// Exit code of a job that ran and FAILED (by the failure tolerance rule).
const EXIT_JOB_FAILED: u8 = 3;

/// Reads and validates the spec, runs it, prints the summary; the exit code follows the job's status.
pub async fn run(spec_path: &Path, data_dir: &Path, pool: &PoolArgs) -> anyhow::Result<ExitCode> {
    let json = std::fs::read(spec_path)
        .with_context(|| format!("cannot read the job spec {}", spec_path.display()))?;
    let job = JobSpec::parse(&json)?;
    let report = run_job(job, data_dir, pool).await?;
    print_summary(&report, data_dir, pool.json);
    Ok(match report.manifest.status {
        TerminalStatus::Succeeded => ExitCode::SUCCESS,
        TerminalStatus::Failed => ExitCode::from(EXIT_JOB_FAILED),
    })
}

/// Runs a validated job on the embedded backends over `data_dir`.
pub async fn run_job(job: Job, data_dir: &Path, pool: &PoolArgs) -> anyhow::Result<RunReport> {
    if !data_dir.is_dir() {
        bail!("--data-dir {} is not a directory", data_dir.display());
    }
    if job.spec.job_id.is_some() && !pool.json {
        eprintln!("job {}", job.job_id);
    }
    let visibility_timeout = Duration::from_secs_f64(pool.visibility_timeout);
    let dead_letter = EmbeddedQueue::new(QueueConfig::new("work-dlq", visibility_timeout));
    let mut work = QueueConfig::new("work", visibility_timeout);
    work.dead_letter = Some((pool.max_receive_count, dead_letter.clone()));
    let config = LocalConfig {
        concurrency: pool.concurrency.into(),
        visibility_timeout,
        max_receive_count: pool.max_receive_count,
        worker: WorkerConfig {
            item_concurrency: pool.item_concurrency.into(),
        },
        chaos: pool.chaos.map(|rate| Chaos {
            rate,
            seed: pool.seed,
        }),
        ..LocalConfig::default()
    };
    work.backlog_limit = Some(config.concurrency * config.receive_batch_size * BACKLOG_PER_WORKER);
    let deps = Deps {
        objects: Arc::new(LocalDirStore::new(data_dir)),
        work_queue: EmbeddedQueue::new(work),
        finalize_queue: EmbeddedQueue::new(QueueConfig::new("finalize", visibility_timeout)),
        jobs: Arc::new(MemoryJobStore::new()),
    };
    let bar = progress_bar();
    let report = local::run(&deps, dead_letter, job, &config, &|p| update(&bar, p)).await;
    bar.finish_and_clear();
    Ok(report?)
}

fn progress_bar() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} items ({per_sec}) {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn update(bar: &ProgressBar, p: &Progress) {
    // Until the listing is complete the total is what has been sent so far.
    bar.set_length(p.listing.map_or(p.items_sent, |l| l.items));
    bar.set_position(p.succeeded + p.failed);
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

/// Prints the one-line summary (or JSON on stdout with `--json`).
pub fn print_summary(report: &RunReport, data_dir: &Path, as_json: bool) {
    let m = &report.manifest;
    let secs = report.elapsed.as_secs_f64();
    let rate = m.items.total as f64 / secs.max(1e-9);
    let manifest_path = data_dir
        .join(&m.bucket)
        .join(m.result.replace("result.json", "manifest.json"));
    let s = &report.stats;
    if as_json {
        let summary = json!({
            "job_id": m.job_id,
            "status": m.status,
            "items": m.items,
            "batches": m.batches,
            "elapsed_seconds": secs,
            "items_per_second": rate,
            "manifest": manifest_path,
            "result": data_dir.join(&m.bucket).join(&m.result),
            "failures": data_dir.join(&m.bucket).join(&m.failures),
            "deliveries": s.deliveries,
            "faults": {
                "duplicates": s.duplicates,
                "crashes_before_ack": s.crashes_before_ack,
                "crashes_before_record": s.crashes_before_record,
            },
            "dead_lettered_batches": s.dead_lettered_batches,
            "peak_memory_bytes": peak_memory_bytes(),
        });
        println!("{summary}");
        return;
    }
    let faults = s.duplicates + s.crashes_before_ack + s.crashes_before_record;
    let chaos = if faults > 0 {
        format!(
            "; {faults} faults injected ({} duplicates, {} crashes before ack, {} before record)",
            s.duplicates, s.crashes_before_ack, s.crashes_before_record
        )
    } else {
        String::new()
    };
    println!(
        "{} {}: {} items ({} succeeded, {} failed) in {} batches, {secs:.2} s, {rate:.0} items/s{chaos}; manifest: {}",
        m.job_id,
        m.status.as_str(),
        m.items.total,
        m.items.succeeded,
        m.items.failed,
        m.batches.total,
        manifest_path.display()
    );
}
