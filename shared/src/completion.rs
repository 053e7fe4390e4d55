//! Completion: deciding that a job is done, the single-winner claim that moves it to FINALIZING, and the
//! failure-tolerance rule that picks its terminal status.

use crate::Deps;
use crate::error::PipelineError;
use crate::message::FinalizeMessage;
use crate::outcome::{ItemCounts, TerminalStatus, Tolerance};
use crate::ports::{
    JobRecord, JobStatus, OutgoingMessage, RecordOutcome, Recorded, require_job,
    send_all_with_retry,
};

/// What a completion check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Batches are still outstanding, or the listing is not complete.
    NotYet,
    /// This caller won the claim and triggered the finalizer.
    Claimed,
    /// Someone else won the claim (or the job is already finished).
    ClaimedElsewhere,
    /// The job was already FINALIZING and the finalizer was triggered again, in case its winner crashed
    /// between the claim and the trigger. The finalizer is idempotent.
    Retriggered,
}

/// Called by whoever may have moved last (a worker after recording a batch, the coordinator after recording
/// the listing totals). `retrigger` is set when the caller's own step was a duplicate: it may be the retry of
/// a winner that crashed before it could trigger the finalizer.
pub async fn complete_if_done(
    deps: &Deps,
    job_id: &str,
    retrigger: bool,
) -> Result<Completion, PipelineError> {
    // The job item alone first (one read unit); the group counters only once the listing is complete, which
    // for most batches of a large job it is not yet. Still exact: a worker records its batch before this read,
    // so if the read shows no listing totals, the coordinator records them later and its own check (the same
    // function, after its totals) sees this batch.
    let record = require_job(deps.jobs.as_ref(), job_id).await?;
    match record.status {
        JobStatus::Running if record.listing.is_none() => Ok(Completion::NotYet),
        JobStatus::Running => {
            let progress = deps.jobs.progress(job_id).await?;
            if progress.status != JobStatus::Running {
                return Ok(Completion::NotYet);
            }
            // Batches past the listing's total (an earlier pass of a listing that changed since) do not count
            // toward it: see `Progress::batches_done`.
            if !progress.is_complete() {
                return Ok(Completion::NotYet);
            }
            if deps.jobs.claim_finalization(job_id).await? {
                tracing::info!(job_id, "all batches done; claimed finalization");
                trigger_finalizer(deps, job_id).await?;
                Ok(Completion::Claimed)
            } else {
                Ok(Completion::ClaimedElsewhere)
            }
        }
        JobStatus::Finalizing if retrigger => {
            send_trigger(deps, job_id, true).await?;
            Ok(Completion::Retriggered)
        }
        _ => Ok(Completion::ClaimedElsewhere),
    }
}

/// The completion check after a batch was recorded. `job` is the job's record as read before the batch was
/// recorded. When the store counted the batch in a group that still lacks batches, the job cannot be complete
/// by this record: the recorder of the group's last batch checks (its count comes back with its write, so one
/// of the group's recorders always sees it full), and the full progress read is spared.
pub async fn complete_after_record(
    deps: &Deps,
    job: &JobRecord,
    recorded: &Recorded,
) -> Result<Completion, PipelineError> {
    let job_id = job.job.job_id.as_str();
    if let Some(group) = recorded.group {
        // Listing totals are set once: an earlier read that has them is current. Without them, read again: a
        // coordinator that records them after this read checks completion itself, and sees this batch.
        let totals = match job.listing {
            Some(totals) => Some(totals),
            None => require_job(deps.jobs.as_ref(), job_id).await?.listing,
        };
        match totals {
            None => return Ok(Completion::NotYet),
            Some(totals) if !group.is_full(totals.batches) => return Ok(Completion::NotYet),
            Some(_) => {}
        }
    }
    complete_if_done(deps, job_id, recorded.outcome == RecordOutcome::Duplicate).await
}

pub async fn trigger_finalizer(deps: &Deps, job_id: &str) -> Result<(), PipelineError> {
    send_trigger(deps, job_id, false).await
}

/// The finalizer's trigger; `resend`: for a job that seems stuck FINALIZING (see [`FinalizeMessage::resend`]).
async fn send_trigger(deps: &Deps, job_id: &str, resend: bool) -> Result<(), PipelineError> {
    let body = FinalizeMessage {
        job_id: job_id.to_owned(),
        range: None,
        resend,
    }
    .to_body();
    let message = OutgoingMessage {
        id: "finalize".into(),
        body,
        group: None,
    };
    send_all_with_retry(deps.finalize_queue.as_ref(), vec![message]).await?;
    Ok(())
}

/// Distributed Map's rule: FAILED when failed items exceed `tolerated_failure_count`, or their share of all
/// items exceeds `tolerated_failure_percentage`; with neither set, any failed item fails the job.
pub fn final_status(tolerance: Tolerance, items: ItemCounts) -> TerminalStatus {
    let over_count = tolerance.count.is_some_and(|max| items.failed > max);
    let over_percentage = tolerance.percentage.is_some_and(|pct| {
        items.total > 0 && (items.failed as f64) * 100.0 > pct * items.total as f64
    });
    let untolerated =
        tolerance.count.is_none() && tolerance.percentage.is_none() && items.failed > 0;
    if over_count || over_percentage || untolerated {
        TerminalStatus::Failed
    } else {
        TerminalStatus::Succeeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(count: Option<u64>, pct: Option<f64>, total: u64, failed: u64) -> TerminalStatus {
        let items = ItemCounts {
            total,
            succeeded: total - failed,
            failed,
        };
        let tolerance = Tolerance {
            count,
            percentage: pct,
        };
        final_status(tolerance, items)
    }

    #[test]
    fn tolerance_follows_distributed_map() {
        use TerminalStatus::*;
        assert_eq!(status(None, None, 10, 0), Succeeded);
        assert_eq!(status(None, None, 10, 1), Failed);
        assert_eq!(status(Some(2), None, 10, 2), Succeeded);
        assert_eq!(status(Some(2), None, 10, 3), Failed);
        assert_eq!(status(None, Some(20.0), 10, 2), Succeeded);
        assert_eq!(status(None, Some(20.0), 10, 3), Failed);
        assert_eq!(status(Some(5), Some(10.0), 10, 2), Failed);
        assert_eq!(status(Some(0), Some(0.0), 0, 0), Succeeded);
    }
}
