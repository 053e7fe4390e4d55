//! Redrive: a FAILED or ABORTED job runs again, as the same job, over only its failed and unprocessed items
//! (Step Functions' map run redrive). The succeeded items are never processed again.
//!
//! How, on the same pipeline:
//! 1. [`reopen`] moves the job back to RUNNING with one more redrive ([`JobRecord::redriven`]). Batches sent
//!    from then on carry the redrive's number (`generation`), and workers drop an older one still queued (an
//!    abort leaves batches in the queue): the redrive sends those again itself.
//! 2. Unprocessed items: batches an abort left without a record are sent again with their own seqs (the
//!    listing is deterministic: see [`crate::sweeper`]), and a listing the abort stopped goes on.
//! 3. Failed items: once every item is listed, the listing is read again from the start and the items whose
//!    failure still stands ([`crate::outcome::LiveFailures`], over the records of the earlier runs) are sent as
//!    *redo* batches, numbered on after the last batch. A redo batch's part names its items as `redone`;
//!    counting its record takes their earlier failures back (`failed` adds `failed - redone`), so the counters
//!    stay exact. The standing failures do not change while the pass runs (a batch of an earlier run is
//!    dropped, never recorded), so a pass resumed, or replayed to send again what a lost queue held
//!    ([`crate::sweeper`]), batches the same items under the same seqs.
//! 4. The finalizer merges every part as always; a failure stands unless a later batch redid its item, so
//!    `failed.jsonl` lists each item's last failure, in its first failure's place. The outputs equal those of a
//!    run in which every item succeeded or failed on its own, and the manifest counts the redrives.
//!
//! An item that failed and is no longer listed (its object was deleted since) keeps its failure. Refused: a job
//! aborted during a redo pass (its redo batches left unrecorded cannot be made again: the standing failures
//! they were cut from have changed), and an aborted job whose listing was handed over between Lambda
//! invocations with batches left unrecorded (the hand-overs' cuts are not replayed).

use crate::Deps;
use crate::error::PipelineError;
use crate::ports::{JobRecord, JobStatus, JobStoreError};
use crate::sweeper::{recorded_below, resend_missing};

/// Redrives job `job_id`: refuses (saying why) a job that is not FAILED or ABORTED, whose items changed while
/// they were listed, or whose unprocessed batches cannot be found again; else reopens it and returns its
/// record. With `resend`, the batches an abort left without a record are sent again here (a runner whose
/// queues died with an earlier process sends them itself, as for any resumed job).
pub async fn reopen(deps: &Deps, job_id: &str, resend: bool) -> Result<JobRecord, PipelineError> {
    let refused =
        |why: String| PipelineError::Refused(format!("job \"{job_id}\" cannot be redriven: {why}"));
    let record = deps
        .jobs
        .get_job(job_id)
        .await?
        .ok_or_else(|| PipelineError::Refused(format!("no job \"{job_id}\"")))?;
    record.redrivable().map_err(refused)?;
    let sent = record
        .listing
        .map_or(record.checkpoint.next_seq, |totals| totals.batches);
    // A FAILED job ended with every batch recorded; an aborted one may have left some without a record.
    let unprocessed = match record.status {
        JobStatus::Aborted => sent - recorded_below(deps, job_id, sent).await?,
        _ => 0,
    };
    if unprocessed > 0 && record.checkpoint.hop > 0 && record.checkpoint.ranges.is_empty() {
        return Err(refused(format!(
            "{unprocessed} of its {sent} batches sent have no record, and its listing was handed over \
             between invocations, so they cannot be cut again the same way; start a new job"
        )));
    }
    let record = deps.jobs.redrive(&record).await.map_err(|e| match e {
        JobStoreError::Conflict { message, .. } => refused(message),
        e => e.into(),
    })?;
    tracing::info!(job_id, redrives = record.redrives, "job redriven");
    if resend && unprocessed > 0 {
        let resent = resend_missing(deps, &record, sent).await?;
        tracing::info!(job_id, resent, "batches left unprocessed sent again");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use crate::ports::{JobRecord, JobStatus, ListingTotals};
    use crate::spec::JobSpec;

    #[test]
    fn only_an_ended_job_outside_a_redo_pass_is_redriven() {
        let job = JobSpec::parse(
            br#"{"job_id": "j", "item_reader": {"bucket": "data", "prefix": "p/"}, "processor": {"kind": "count"},
                "result_writer": {"bucket": "data", "prefix": "r/"}}"#,
        )
        .unwrap();
        let mut failed = JobRecord::new(job, 0);
        assert!(failed.redrivable().unwrap_err().contains("it is RUNNING"));
        failed.status = JobStatus::Failed;
        failed.listing = Some(ListingTotals {
            batches: 5,
            items: 9,
        });
        failed.finished_at_ms = Some(7);
        assert_eq!(failed.redrivable(), Ok(()));
        let next = failed.redriven();
        assert_eq!(
            (
                next.status,
                next.redrives,
                next.listing,
                next.finished_at_ms
            ),
            (JobStatus::Running, 1, None, None)
        );
        let cp = &next.checkpoint;
        assert_eq!(
            (
                cp.start_after.as_deref(),
                cp.next_seq,
                cp.items_sent,
                cp.redo_from
            ),
            (None, 5, 9, Some(5))
        );

        // Aborted in its redo pass: refused.
        let mut aborted = next.clone();
        aborted.status = JobStatus::Aborted;
        aborted.control.aborted_at_ms = Some(8);
        assert!(aborted.redrivable().unwrap_err().contains("second pass"));
        // Aborted while listing: redriven, the listing goes on from where it stopped.
        aborted.checkpoint.redo_from = None;
        aborted.checkpoint.start_after = Some("p/k7".into());
        let next = aborted.redriven();
        assert_eq!(
            (
                next.redrives,
                next.abort_requested(),
                next.checkpoint.start_after.as_deref()
            ),
            (2, false, Some("p/k7"))
        );

        failed.input_changed = Some(3);
        assert!(failed.redrivable().unwrap_err().contains("changed"));
    }
}
