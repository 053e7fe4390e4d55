//! A job described as Step Functions' `DescribeMapRun` describes a Map Run: its status, its item and batch
//! counts, its times, its rate and, while it runs, when it should end. Read from the job store alone (one
//! job read and one progress read), so `dmap status` and `dmap ls` can ask it of any backend, from any
//! process, while the job runs.

use serde::Serialize;

use crate::ports::{JobRecord, JobStatus, JobStore, JobStoreError, Progress};
use crate::usage::{PricedUsage, Prices};

/// Items of the job, as far as they are known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ItemsView {
    /// Items sent in batches so far (all of them once the listing is complete).
    pub listed: u64,
    /// Every item of the job, once the listing is complete.
    pub total: Option<u64>,
    pub succeeded: u64,
    pub failed: u64,
    /// Listed and not yet succeeded or failed.
    pub pending: u64,
}

/// Batches of the job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatchesView {
    /// Batches sent so far.
    pub sent: u64,
    /// Every batch of the job, once the listing is complete.
    pub total: Option<u64>,
    /// Batches recorded.
    pub done: u64,
}

/// One job as `dmap status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDescription {
    pub job_id: String,
    pub status: JobStatus,
    pub listing_complete: bool,
    pub items: ItemsView,
    pub batches: BatchesView,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// From the start to the end, or to now while the job runs.
    pub elapsed_seconds: f64,
    /// Items done (succeeded or failed) per second of `elapsed_seconds`.
    pub items_per_second: f64,
    /// While the job runs and its total is known: the seconds left at the rate so far.
    pub eta_seconds: Option<f64>,
    /// The settings in force (the spec's, or as `dmap update` changed them), as DescribeMapRun shows them.
    pub max_concurrency: Option<u32>,
    pub tolerated_failure_count: Option<u64>,
    pub tolerated_failure_percentage: Option<f64>,
    /// `dmap abort` was acknowledged (the job ends ABORTED once its batches in flight are done).
    pub abort_requested: bool,
    /// How many times the job was redriven.
    pub redrives: u32,
    /// Its AWS requests and their estimated cost so far, as far as they were carried to the job store (see
    /// [`crate::usage`]); absent for a job that sent none.
    pub usage: Option<PricedUsage>,
}

impl JobDescription {
    /// The description of a job from its record and a progress read taken at `now_ms`.
    pub fn new(record: &JobRecord, progress: &Progress, now_ms: u64) -> Self {
        let done = progress.succeeded + progress.failed;
        // Workers may count a batch before the coordinator checkpoints the page that sent it: never show fewer
        // listed than done.
        let listed = progress
            .listing
            .map_or(progress.items_sent, |l| l.items)
            .max(done);
        let ended_at_ms = record
            .finished_at_ms
            .filter(|_| progress.status.is_terminal());
        let end = ended_at_ms.unwrap_or(now_ms);
        let elapsed_seconds = end.saturating_sub(record.created_at_ms) as f64 / 1000.0;
        let items_per_second = if elapsed_seconds > 0.0 {
            done as f64 / elapsed_seconds
        } else {
            0.0
        };
        let total = progress.listing.map(|l| l.items);
        let eta_seconds = match (progress.status, total) {
            (JobStatus::Running, Some(total)) if items_per_second > 0.0 => {
                Some(total.saturating_sub(done) as f64 / items_per_second)
            }
            _ => None,
        };
        Self {
            job_id: record.job.job_id.clone(),
            status: progress.status,
            listing_complete: progress.listing.is_some(),
            items: ItemsView {
                listed,
                total,
                succeeded: progress.succeeded,
                failed: progress.failed,
                pending: listed - done,
            },
            batches: BatchesView {
                sent: progress
                    .listing
                    .map_or(record.checkpoint.next_seq, |l| l.batches)
                    .max(progress.batches_done),
                total: progress.listing.map(|l| l.batches),
                done: progress.batches_done,
            },
            started_at_ms: record.created_at_ms,
            ended_at_ms,
            elapsed_seconds,
            items_per_second,
            eta_seconds,
            max_concurrency: record.max_concurrency(),
            tolerated_failure_count: record.tolerance().count,
            tolerated_failure_percentage: record.tolerance().percentage,
            abort_requested: record.abort_requested(),
            redrives: record.redrives,
            usage: (!progress.usage.is_empty()).then(|| progress.usage.priced(&Prices::from_env())),
        }
    }
}

/// Describes job `job_id` as it stands: `None` if there is no such job.
pub async fn describe(
    jobs: &dyn JobStore,
    job_id: &str,
    now_ms: u64,
) -> Result<Option<JobDescription>, JobStoreError> {
    let progress = match jobs.progress(job_id).await {
        Ok(progress) => progress,
        Err(JobStoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(record) = jobs.peek_job(job_id).await? else {
        return Ok(None);
    };
    Ok(Some(JobDescription::new(&record, &progress, now_ms)))
}
