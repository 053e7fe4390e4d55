//! The sweeper: no job may stay RUNNING or FINALIZING forever. Run on a schedule (the coordinator's, on AWS)
//! and by the in-process runner when its queues fall idle, it reads every unfinished job, notes its progress,
//! and for a job whose progress has not moved for longer than a bound, reports why and repairs what it can:
//!
//! - every batch recorded but the completion claim never made (the claimant died): claim it now;
//! - FINALIZING with no finalizer running (the trigger was lost): trigger the finalizer again;
//! - aborted and still RUNNING (the abort's delayed trigger was lost): claim the abort and trigger the finalizer
//!   (its progress has not moved for longer than a worker can run, so no batch is in flight);
//! - batches whose marker was written but never counted (a recorder died between its two steps, and the
//!   batch's message is gone): record them again, which counts each once;
//! - the listing complete, some batches never recorded and nothing left to deliver them (messages expired or
//!   lost): list again and send just the batches with no record. Batching is deterministic, so a re-sent
//!   batch carries the items it first had; a listing split into key ranges re-reads the logged pages of the
//!   missing batches instead; a listing cut at hand-overs cannot be cut the same way again, so there it only
//!   reports;
//! - the listing not complete and its chain of hand-overs broken: send the owning hop's continuation again
//!   (when a continuation queue is at hand), which resumes from the stored checkpoint.
//!
//! Every repair is idempotent: it only re-sends what the pipeline already absorbs when it arrives twice.

use std::collections::HashSet;

use std::time::Duration;

use crate::Deps;
use crate::batching::{BatchLimits, Batcher};
use crate::completion::{Completion, complete_if_done, trigger_finalizer};
use crate::coordinator::{Sending, batch_page, send_batches};
use crate::error::PipelineError;
use crate::finalizer::standing_failures;
use crate::message::ContinueListing;
use crate::outcome::JobStatus;
use crate::parallel_listing;
use crate::ports::LoggedPage;
use crate::ports::{
    BatchQueue, JobRecord, OutgoingMessage, Progress, RecordOutcome, send_all_with_retry,
};
use crate::reader;
use crate::spec::ItemReader;
use crate::usage::Usage;

/// What the sweeper found wrong with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Every batch is recorded, the job still RUNNING.
    Unclaimed,
    /// FINALIZING, and not finished.
    FinalizeLost,
    /// The listing is complete; these many batches have no record.
    BatchesMissing(u64),
    /// These many batches have a marker that was not counted.
    Uncounted(u64),
    /// The listing stopped before its end.
    ListingStalled { hop: u32 },
    /// An abort was requested and the job never left RUNNING.
    AbortUnfinished,
}

/// What the sweeper did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    Claimed,
    FinalizerTriggered,
    /// These batches were sent again.
    BatchesResent(u64),
    /// These batches were counted.
    Recounted(u64),
    ContinuationResent,
    /// Nothing this sweeper can do: reported for an operator.
    Reported,
}

/// One stuck job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub job_id: String,
    pub status: JobStatus,
    pub finding: Finding,
    pub repair: Repair,
}

/// How a job's progress looks to the sweeper: it moved if any of these changed. A split listing also moves
/// when a range moves past keys its filters leave out, which numbers nothing: a digest of where the ranges
/// stand counts too.
fn fingerprint(record: &JobRecord, progress: &Progress) -> String {
    let ranges = record.checkpoint.ranges.iter().fold(0, |crc, range| {
        crc32c::crc32c_append(crc32c::crc32c_append(crc, range.after.as_bytes()), b"\n")
    });
    format!(
        "{}/{}/{}/{}/{}/{ranges:08x}",
        progress.status.as_str(),
        record.checkpoint.hop,
        record.checkpoint.next_seq,
        progress.listing.map_or(0, |l| l.batches),
        progress.batches_done
    )
}

/// Sweeps every unfinished job once. A job whose progress has not moved for `stale_after` (at `now_ms`) is
/// reported and, where it can be, repaired. `continuation` is the coordinator's continuation queue, to restart
/// a broken chain of hand-overs (the in-process runner lists in one go and has none).
pub async fn sweep(
    deps: &Deps,
    continuation: Option<&dyn BatchQueue>,
    now_ms: u64,
    stale_after: Duration,
) -> Result<Vec<Stuck>, PipelineError> {
    let mut stuck = Vec::new();
    for job_id in deps.jobs.active_jobs().await? {
        stuck.extend(sweep_job(deps, continuation, &job_id, now_ms, stale_after).await?);
    }
    Ok(stuck)
}

/// Sweeps one job: `Some` when it is stuck (with what was done about it).
pub async fn sweep_job(
    deps: &Deps,
    continuation: Option<&dyn BatchQueue>,
    job_id: &str,
    now_ms: u64,
    stale_after: Duration,
) -> Result<Option<Stuck>, PipelineError> {
    let Some(record) = deps.jobs.get_job(job_id).await? else {
        deps.jobs.forget_active(job_id).await?;
        return Ok(None);
    };
    if record.status.is_terminal() {
        deps.jobs.forget_active(job_id).await?;
        return Ok(None);
    }
    let progress = deps.jobs.progress(job_id).await?;
    let since = deps
        .jobs
        .note_progress(job_id, &fingerprint(&record, &progress), now_ms)
        .await?;
    if now_ms.saturating_sub(since) < stale_after.as_millis() as u64 {
        return Ok(None);
    }
    let (finding, repair) = repair(deps, continuation, &record, &progress).await?;
    tracing::warn!(job_id, ?finding, ?repair, "stuck job");
    Ok(Some(Stuck {
        job_id: job_id.to_owned(),
        status: progress.status,
        finding,
        repair,
    }))
}

async fn repair(
    deps: &Deps,
    continuation: Option<&dyn BatchQueue>,
    record: &JobRecord,
    progress: &Progress,
) -> Result<(Finding, Repair), PipelineError> {
    let job_id = record.job.job_id.as_str();
    if record.abort_requested() && progress.status == JobStatus::Running {
        if deps.jobs.claim_abort(job_id).await? {
            trigger_finalizer(deps, job_id).await?;
        }
        return Ok((Finding::AbortUnfinished, Repair::FinalizerTriggered));
    }
    if progress.status == JobStatus::Finalizing {
        complete_if_done(deps, job_id, true).await?;
        return Ok((Finding::FinalizeLost, Repair::FinalizerTriggered));
    }
    let Some(totals) = progress.listing else {
        let hop = record.checkpoint.hop;
        return Ok(match continuation {
            Some(queue) => {
                let body = ContinueListing {
                    continue_listing: job_id.to_owned(),
                    next_seq: record.checkpoint.next_seq,
                    hop,
                }
                .to_body();
                let message = OutgoingMessage {
                    id: "continue".into(),
                    body,
                    group: None,
                };
                send_all_with_retry(queue, vec![message]).await?;
                (Finding::ListingStalled { hop }, Repair::ContinuationResent)
            }
            None => (Finding::ListingStalled { hop }, Repair::Reported),
        });
    };
    if progress.batches_done >= totals.batches {
        match complete_if_done(deps, job_id, true).await? {
            // Batches past the total were counted, and some below it have no record: re-send those.
            Completion::NotYet => {}
            _ => return Ok((Finding::Unclaimed, Repair::Claimed)),
        }
    }
    let recounted = recount(deps, job_id, totals.batches, progress.batches_done).await?;
    if recounted > 0 {
        complete_if_done(deps, job_id, true).await?;
        return Ok((Finding::Uncounted(recounted), Repair::Recounted(recounted)));
    }
    let missing = totals.batches.saturating_sub(progress.batches_done);
    if record.checkpoint.hop > 0 && record.checkpoint.ranges.is_empty() {
        // Cut at hand-overs: listing again would cut other batches.
        return Ok((Finding::BatchesMissing(missing), Repair::Reported));
    }
    let resent = resend_missing(deps, record, totals.batches).await?;
    if resent == 0 {
        // Nothing to re-send, yet not complete: the listing no longer yields the batches that are missing.
        return Ok((Finding::BatchesMissing(missing), Repair::Reported));
    }
    Ok((
        Finding::BatchesMissing(resent),
        Repair::BatchesResent(resent),
    ))
}

/// Counts the markers (below `total`) that were written but not counted, when there are more of them than
/// `batches_done`: recording a batch again counts an uncounted marker once and leaves a counted one alone.
/// Returns how many were counted now.
async fn recount(
    deps: &Deps,
    job_id: &str,
    total: u64,
    batches_done: u64,
) -> Result<u64, PipelineError> {
    const PAGE: u64 = 1000;
    let mut markers = 0;
    for from in (0..total).step_by(PAGE as usize) {
        let to = (from + PAGE).min(total);
        markers += deps.jobs.batch_records(job_id, from, to).await?.len() as u64;
    }
    if markers <= batches_done {
        return Ok(0);
    }
    let mut recounted = 0;
    for from in (0..total).step_by(PAGE as usize) {
        let to = (from + PAGE).min(total);
        for (seq, record) in deps.jobs.batch_records(job_id, from, to).await? {
            let recorded = deps
                .jobs
                .record_batch(job_id, seq, &record, &Usage::NONE)
                .await?;
            if recorded.outcome == RecordOutcome::Recorded {
                tracing::warn!(
                    job_id,
                    seq,
                    "counted a batch whose marker was left uncounted"
                );
                recounted += 1;
            }
        }
    }
    Ok(recounted)
}

/// Sends again every batch the job's listing has sent so far that has no record: for a run resumed in a new
/// process, whose queues (and the batches in them) were lost with the old one. Returns how many were sent.
/// A listing cut at hand-overs cannot be cut the same way again (the in-process runner never hands over); a
/// split listing's can, from its logged pages.
pub async fn resend_unrecorded(deps: &Deps, record: &JobRecord) -> Result<u64, PipelineError> {
    let sent = record
        .listing
        .map_or(record.checkpoint.next_seq, |totals| totals.batches);
    if sent == 0 || (record.checkpoint.hop > 0 && record.checkpoint.ranges.is_empty()) {
        return Ok(0);
    }
    resend_missing(deps, record, sent).await
}

/// How many of batches `0..below` have a record (a Query per thousand on DynamoDB).
pub(crate) async fn recorded_below(
    deps: &Deps,
    job_id: &str,
    below: u64,
) -> Result<u64, PipelineError> {
    let mut recorded = 0;
    for from in (0..below).step_by(RECORDS_PER_PAGE) {
        let to = (from + RECORDS_PER_PAGE as u64).min(below);
        recorded += deps.jobs.batch_records(job_id, from, to).await?.len() as u64;
    }
    Ok(recorded)
}

/// Records read per request.
const RECORDS_PER_PAGE: usize = 1000;

/// Reads the job's items again and sends the batches (below `total`) that have no record: the listing's batches
/// from 0, and in a redrive's redo pass, the redo batches from `redo_from` (the same standing failures, read
/// again from the records of the earlier runs, batch the same way).
pub(crate) async fn resend_missing(
    deps: &Deps,
    record: &JobRecord,
    total: u64,
) -> Result<u64, PipelineError> {
    let first = record.checkpoint.redo_from.map_or(total, |r| total.min(r));
    let mut resent = if record.checkpoint.ranges.is_empty() {
        replay(deps, record, 0, first, None).await?
    } else {
        resend_split(deps, record, first).await?
    };
    // A redo pass is one stream, cut at hand-overs when it had any (a split job's hops may all be its main
    // pass's: it cannot be told, so none is replayed).
    if let Some(redo_from) = record.checkpoint.redo_from
        && total > redo_from
        && record.checkpoint.hop == 0
    {
        let keys = standing_failures(deps, record, redo_from)
            .await?
            .into_keys();
        resent += replay(deps, record, redo_from, total, Some(keys)).await?;
    }
    Ok(resent)
}

/// Sends the batches below `total` of a split listing that have no record: those of its first page (read from
/// the start, where nothing is cut differently), then those of each logged page (or page saved as numbered
/// and not yet logged), read again from its range position and cut the same way.
async fn resend_split(deps: &Deps, record: &JobRecord, total: u64) -> Result<u64, PipelineError> {
    let job = &record.job;
    let job_id = job.job_id.as_str();
    let ItemReader::S3List(reader) = &job.spec.item_reader else {
        return Ok(0);
    };
    let mut pages = deps.jobs.logged_pages(job_id).await?;
    pages.extend(record.checkpoint.ranges.iter().filter_map(|range| {
        let page = range.sending.clone()?;
        Some(LoggedPage {
            after: range.after.clone(),
            page,
        })
    }));
    pages.sort_by_key(|p| p.page.seq);
    pages.dedup_by_key(|p| p.page.seq);
    let split_at = pages.first().map_or(total, |p| p.page.seq).min(total);
    let mut resent = replay(deps, record, 0, split_at, None).await?;
    let sending = Sending {
        generation: record.redrives,
        redo: false,
    };
    let limits = BatchLimits::for_job(&job.spec);
    let entries = job.spec.processor.wants_listing_entries();
    for logged in pages.iter().filter(|p| p.page.seq < total) {
        let page = &logged.page;
        let mut missing = Vec::new();
        for seq in page.seq..(page.seq + page.batches).min(total) {
            if deps.jobs.batch_record(job_id, seq).await?.is_none() {
                missing.push(seq);
            }
        }
        if missing.is_empty() {
            continue;
        }
        let items = parallel_listing::read_through(
            deps.objects.as_ref(),
            reader,
            entries,
            &logged.after,
            &page.through,
        )
        .await?;
        let (batches, changed) = parallel_listing::recut(limits, page, items);
        if changed {
            // Sent all the same, so that the job ends (FAILED, saying its input changed).
            deps.jobs.flag_input_changed(job_id, page.seq).await?;
        }
        let missing: Vec<_> = batches
            .into_iter()
            .filter(|b| missing.contains(&b.seq))
            .collect();
        resent += missing.len() as u64;
        send_batches(deps, job, None, &missing, sending).await?;
    }
    Ok(resent)
}

/// One pass of the listing, batched from seq `from` (with `redo`, only the items of those keys, as redo
/// batches): sends the batches below `total` that have no record. Stops reading at the first batch at or past
/// `total`.
async fn replay(
    deps: &Deps,
    record: &JobRecord,
    from: u64,
    total: u64,
    redo: Option<HashSet<String>>,
) -> Result<u64, PipelineError> {
    if total <= from {
        return Ok(0);
    }
    let sending = Sending {
        generation: record.redrives,
        redo: redo.is_some(),
    };
    let job = &record.job;
    let mut batcher = Batcher::new(BatchLimits::for_job(&job.spec), from);
    let mut source = reader::open(deps, job, None).await?;
    let mut resent = 0;
    loop {
        let mut page = source.next_page().await?;
        if let Some(keys) = &redo {
            page.items.retain(|(item, _)| keys.contains(item.key()));
        }
        let last_page = page.last;
        let batches = batch_page(&mut batcher, page, last_page);
        let past_total = batches.iter().any(|b| b.seq >= total);
        let mut missing = Vec::new();
        for batch in batches.into_iter().filter(|b| b.seq < total) {
            if deps
                .jobs
                .batch_record(&job.job_id, batch.seq)
                .await?
                .is_none()
            {
                missing.push(batch);
            }
        }
        resent += missing.len() as u64;
        send_batches(deps, job, source.objects_bucket(), &missing, sending).await?;
        if last_page || past_total {
            return Ok(resent);
        }
    }
}
