//! The coordinator: validates and creates the job, then reads its items page by page ([`crate::reader`]), cuts
//! batches and sends them, checkpointing after every page so that a crash or a hand-over resumes instead of
//! starting over.
//!
//! Resuming reads again from the position after the last item of the last sent batch, and batching is
//! deterministic, so the batches re-sent after a crash carry the same sequence numbers: the workers'
//! exactly-once record absorbs them.
//!
//! An `s3_list` listing may be split after its first page into key ranges listed at once
//! ([`crate::parallel_listing`]; `list_split` here): pages are then numbered in the order they arrive, so
//! each group is saved as numbered pages, under the listing's lease, and logged before it is sent, and a
//! resumed or repairing run cuts them again from those pages instead of from the listing's order.

use std::collections::HashSet;

use futures::future::OptionFuture;

use crate::Deps;
use crate::batching::{Batch, BatchLimits, Batcher};
use crate::clock::now_ms;
use crate::completion::{Completion, complete_if_done};
use crate::error::PipelineError;
use crate::finalizer::standing_failures;
use crate::layout::OutputLocation;
use crate::message::BatchMessage;
use crate::parallel_listing;
use crate::ports::{
    Checkpoint, CreateOutcome, Cut, JobRecord, JobStore, JobStoreError, ListingTotals, LoggedPage,
    OutgoingMessage, StoreError, send_all_with_retry,
};
use crate::reader::{self, Position, ReadPage};
use crate::spec::{ItemReader, Job, JobSpec, S3ListReader};
use crate::usage::Usage;

/// How a listing run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingOutcome {
    /// Every batch was sent and the totals recorded.
    Complete {
        totals: ListingTotals,
        completion: Completion,
    },
    /// Stopped early at the caller's request; resume from this checkpoint.
    Paused(Checkpoint),
    /// Stopped because the job was aborted: nothing more is listed.
    Aborted,
    /// Stopped because another coordinator took the split listing ([`JobStore::take_listing`]: a duplicate
    /// invocation of the same hop); it goes on from what this one saved.
    TakenOver,
}

/// Checks what can be checked before anything is written: the reader's input is there ([`reader::preflight`]),
/// the result bucket exists and the job's output folder is empty.
pub async fn preflight(deps: &Deps, job: &Job) -> Result<(), PipelineError> {
    reader::preflight(deps, job).await?;
    let missing = |field: &str, bucket: &str| {
        PipelineError::Refused(format!("{field}: no bucket \"{bucket}\""))
    };
    let out = OutputLocation::for_job(job);
    match deps
        .objects
        .list_page(&out.bucket, &out.dir, None, None)
        .await
    {
        Err(StoreError::NoSuchBucket { bucket }) => Err(missing("result_writer.bucket", &bucket)),
        Ok(page) if !page.objects.is_empty() => Err(PipelineError::Refused(format!(
            "results for job \"{}\" already exist under s3://{}/{}; delete them or choose another job_id",
            job.job_id, out.bucket, out.dir
        ))),
        other => other.map(drop).map_err(Into::into),
    }
}

/// What starting a job whose id already has a job of the same spec does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// Resume it: a duplicated S3 event or a retried invoke continues the same job (the Lambda coordinator).
    Resume,
    /// Resume it if it is not finished (`dmap run` again after an interrupted run, on a persistent job
    /// store); otherwise refuse it, and check before anything else that a new job's outputs are absent (a
    /// user rerunning a spec would otherwise get the old results back).
    RefuseIfOutputsExist,
}

/// Starts a job, or resumes the job of the same id and spec. A job id already used by another spec is refused;
/// a new job is [`preflight`]ed before its record is created (a conditional create: of two racing starts, one
/// creates and the other resumes). A record the job store rejects for good (too large) is a refusal.
pub async fn start_or_resume(
    deps: &Deps,
    job: Job,
    rerun: Rerun,
) -> Result<JobRecord, PipelineError> {
    let job_id = job.job_id.clone();
    match rerun {
        Rerun::Resume => match deps.jobs.get_job(&job_id).await? {
            Some(existing) if existing.spec_digest == job.spec.digest() => return Ok(existing),
            Some(_) => return Err(id_reused(&job_id)),
            None => preflight(deps, &job).await?,
        },
        Rerun::RefuseIfOutputsExist => match deps.jobs.get_job(&job_id).await? {
            Some(existing) if existing.spec_digest != job.spec.digest() => {
                return Err(id_reused(&job_id));
            }
            Some(existing) if existing.status.is_terminal() => {
                let out = OutputLocation::for_job(&job);
                return Err(PipelineError::Refused(format!(
                    "job \"{job_id}\" already ran to its end ({}; its results are under s3://{}/{}): choose \
                     another job_id",
                    existing.status.as_str(),
                    out.bucket,
                    out.dir
                )));
            }
            Some(existing) => {
                tracing::info!(job_id, "job exists and is not finished; resuming");
                return Ok(existing);
            }
            None => preflight(deps, &job).await?,
        },
    }
    let record = JobRecord::new(job, now_ms());
    let created = deps.jobs.create_job(&record).await.map_err(|e| match e {
        JobStoreError::Rejected(reason) => {
            PipelineError::Refused(format!("job \"{job_id}\" cannot be recorded: {reason}"))
        }
        e => e.into(),
    })?;
    match created {
        CreateOutcome::Created => {
            tracing::info!(job_id, "job created");
            Ok(record)
        }
        CreateOutcome::Exists(existing) if existing.spec_digest == record.spec_digest => {
            tracing::info!(job_id, "job exists; resuming");
            Ok(*existing)
        }
        CreateOutcome::Exists(_) => Err(id_reused(&job_id)),
    }
}

/// The unfinished job that `spec` (a spec without a `job_id`, which gets a fresh id each time it is run)
/// started before, if there is one: running such a spec again resumes that job rather than starting another.
/// The newest such job when there are several.
pub async fn unfinished_job_of(
    jobs: &dyn JobStore,
    spec: &JobSpec,
) -> Result<Option<JobRecord>, JobStoreError> {
    let anonymous = |spec: &JobSpec| JobSpec {
        job_id: None,
        ..spec.clone()
    };
    let wanted = anonymous(spec).digest();
    let mut found: Option<JobRecord> = None;
    for job_id in jobs.active_jobs().await? {
        let Some(record) = jobs.get_job(&job_id).await? else {
            continue;
        };
        if !record.status.is_terminal()
            && anonymous(&record.job.spec).digest() == wanted
            && found
                .as_ref()
                .is_none_or(|f| f.created_at_ms < record.created_at_ms)
        {
            found = Some(record);
        }
    }
    Ok(found)
}

/// How a checkpoint save went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saved {
    Yes,
    /// The job was aborted, which the store's refusal says at no extra request per page: the listing stops.
    Aborted,
    /// Another coordinator holds the listing's lease: this one stops without sending what it numbered.
    TakenOver,
}

/// Saves the checkpoint, carrying the usage this process has for the job.
async fn save_unless_aborted(
    deps: &Deps,
    job_id: &str,
    checkpoint: &mut Checkpoint,
) -> Result<Saved, PipelineError> {
    let carried = carry_usage(deps, job_id, checkpoint);
    match deps.jobs.save_checkpoint(job_id, checkpoint).await {
        Ok(()) => Ok(Saved::Yes),
        Err(e @ JobStoreError::Conflict { .. }) => {
            let record = crate::ports::require_job(deps.jobs.as_ref(), job_id).await?;
            if record.abort_requested() {
                // Saved all the same, usage and all.
                tracing::info!(job_id, "job aborted; listing stopped");
                Ok(Saved::Aborted)
            } else if checkpoint.lease.is_some() && record.checkpoint.lease != checkpoint.lease {
                deps.usage.put_back(job_id, carried);
                tracing::info!(job_id, "another coordinator took the listing; stopped");
                Ok(Saved::TakenOver)
            } else {
                deps.usage.put_back(job_id, carried);
                Err(e.into())
            }
        }
        Err(e) => {
            // The listing ends here, and this checkpoint with it: its usage goes back for another write.
            deps.usage.put_back(job_id, carried);
            Err(e.into())
        }
    }
}

/// Adds what this process sent for the job to the checkpoint's usage, the sum the next save carries; returns
/// what it added, for the caller to [`crate::usage::Meter::put_back`] should the save fail.
pub fn carry_usage(deps: &Deps, job_id: &str, checkpoint: &mut Checkpoint) -> Usage {
    let taken = deps.usage.take(job_id);
    checkpoint.usage.add(&taken);
    taken
}

fn id_reused(job_id: &str) -> PipelineError {
    PipelineError::Refused(format!(
        "job id \"{job_id}\" is already used by a different job spec; choose another job_id"
    ))
}

/// Lists, batches and sends from the record's checkpoint to the end of the listing, then records the totals
/// and checks for completion. `keep_going` is asked after each page; when it says no, the run stops at a
/// checkpoint (a Lambda coordinator running out of time hands over to its continuation).
///
/// A redriven job's listing has a second pass (see [`crate::redrive`]): once every item is listed, the items
/// read again from the start, and those whose failures still stand are sent as redo batches, numbered on.
pub async fn run_listing(
    deps: &Deps,
    record: &JobRecord,
    keep_going: &(dyn Fn() -> bool + Sync),
) -> Result<ListingOutcome, PipelineError> {
    run_listing_with(deps, record, keep_going, ListParallelism::IN_PROCESS).await
}

/// How many key ranges of an `s3_list` listing a deployment lists at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListParallelism {
    /// For a spec without `item_reader.list_parallelism`.
    pub default: u32,
    /// The most, whatever a spec asks.
    pub max: u32,
}

impl ListParallelism {
    /// In one process (`dmap run`): one stream unless the spec asks for more. One stream numbers batches in
    /// key order, so a job's `outputs/` parts and the order of `failed.jsonl` are the same run after run; a
    /// split listing numbers them in the order its pages arrive.
    pub const IN_PROCESS: Self = Self {
        default: 1,
        max: S3ListReader::MAX_LIST_PARALLELISM,
    };

    /// The ranges a reader gets.
    pub fn of(self, reader: &S3ListReader) -> usize {
        reader
            .list_parallelism
            .unwrap_or(self.default)
            .min(self.max)
            .max(1) as usize
    }
}

/// [`run_listing`], with a deployment's [`ListParallelism`].
pub async fn run_listing_with(
    deps: &Deps,
    record: &JobRecord,
    keep_going: &(dyn Fn() -> bool + Sync),
    parallelism: ListParallelism,
) -> Result<ListingOutcome, PipelineError> {
    let job_id = record.job.job_id.as_str();
    let parallelism = match &record.job.spec.item_reader {
        ItemReader::S3List(reader) => parallelism.of(reader),
        _ => 1,
    };
    if let Some(totals) = record.listing {
        let completion = complete_if_done(deps, job_id, true).await?;
        return Ok(ListingOutcome::Complete { totals, completion });
    }
    let mut checkpoint = record.checkpoint.clone();
    loop {
        let redo = match checkpoint.redo_from {
            Some(from) => Some(standing_failures(deps, record, from).await?.into_keys()),
            None => None,
        };
        let pass = if checkpoint.ranges.is_empty() || redo.is_some() {
            list_pass(deps, record, &mut checkpoint, redo, parallelism, keep_going).await?
        } else {
            list_split(deps, record, &mut checkpoint, parallelism, keep_going).await?
        };
        match pass {
            Pass::Ended if record.redrives > 0 && checkpoint.redo_from.is_none() => {
                // Every item is listed: the redo pass reads them again from the start.
                checkpoint = Checkpoint {
                    start_after: None,
                    cut: None,
                    redo_from: Some(checkpoint.next_seq),
                    ..checkpoint
                };
                match save_unless_aborted(deps, job_id, &mut checkpoint).await? {
                    Saved::Yes => {}
                    Saved::Aborted => return Ok(ListingOutcome::Aborted),
                    Saved::TakenOver => return Ok(ListingOutcome::TakenOver),
                }
            }
            Pass::Ended => break,
            Pass::Split => {}
            Pass::Paused => return Ok(ListingOutcome::Paused(checkpoint)),
            Pass::Aborted => return Ok(ListingOutcome::Aborted),
            Pass::TakenOver => return Ok(ListingOutcome::TakenOver),
        }
    }
    let totals = ListingTotals {
        batches: checkpoint.next_seq,
        items: checkpoint.items_sent,
    };
    deps.jobs.complete_listing(job_id, totals).await?;
    tracing::info!(
        job_id,
        batches = totals.batches,
        items = totals.items,
        "listing complete"
    );
    let completion = complete_if_done(deps, job_id, false).await?;
    Ok(ListingOutcome::Complete { totals, completion })
}

/// How one pass of a listing ended.
enum Pass {
    Ended,
    /// Split into key ranges, which go on from the checkpoint ([`list_split`]).
    Split,
    Paused,
    Aborted,
    TakenOver,
}

impl From<Saved> for Option<Pass> {
    /// The pass's end when a save says the listing must stop.
    fn from(saved: Saved) -> Self {
        match saved {
            Saved::Yes => None,
            Saved::Aborted => Some(Pass::Aborted),
            Saved::TakenOver => Some(Pass::TakenOver),
        }
    }
}

/// One pass over the items from `checkpoint`, which it moves. With `redo`, only the items of those keys are
/// batched, as redo batches (they were listed before: `items_sent` stays).
///
/// An `s3_list` listing read from its start, with more than one page and a `parallelism` above 1, is split
/// after its first page
/// ([`crate::parallel_listing::split`]): what that page's full batches sent stays sent, and the ranges start
/// after the last of them (the partial batch's items are listed again by the first range).
async fn list_pass(
    deps: &Deps,
    record: &JobRecord,
    checkpoint: &mut Checkpoint,
    redo: Option<HashSet<String>>,
    parallelism: usize,
    keep_going: &(dyn Fn() -> bool + Sync),
) -> Result<Pass, PipelineError> {
    let job = &record.job;
    let job_id = job.job_id.as_str();
    let sending = Sending {
        generation: record.redrives,
        redo: redo.is_some(),
    };
    let mut saved = checkpoint.clone();
    let mut batcher = Batcher::new(BatchLimits::for_job(&job.spec), checkpoint.next_seq);
    if let Some(cut) = checkpoint.cut.clone() {
        batcher.cut_after(cut);
    }
    let mut source = reader::open(deps, job, checkpoint.start_after.as_deref()).await?;
    let bucket = source.objects_bucket().map(str::to_owned);
    let mut page: ReadPage = source.next_page().await?;
    // Only a listing read from its start splits, after its first page: the batches below the split are then
    // that page's, which a read from the start cuts again the same way (see `sweeper::resend_missing`).
    let fresh = checkpoint.start_after.is_none() && checkpoint.next_seq == 0 && checkpoint.hop == 0;
    let split_reader = match &job.spec.item_reader {
        ItemReader::S3List(reader) if parallelism > 1 && redo.is_none() && fresh => Some(reader),
        _ => None,
    };
    loop {
        if let Some(keys) = &redo {
            page.items.retain(|(item, _)| keys.contains(item.key()));
        }
        let (end, last_page) = (page.end.take(), page.last);
        // A replayed cut pins the next batch's items: only split once it is spent.
        let split_now = split_reader.is_some() && !last_page && checkpoint.cut.is_none();
        let batches = batch_page(&mut batcher, page, last_page);
        // Read the next page while this one's batches are sent: enqueueing keeps pace with reading.
        let next: OptionFuture<_> = (!last_page && !split_now)
            .then(|| source.next_page())
            .into();
        let (next, sent) = tokio::join!(
            next,
            send_batches(deps, job, bucket.as_deref(), &batches, sending)
        );
        sent?;
        if let Some(last) = batches.last() {
            checkpoint.start_after = Some(last.after.encode());
            checkpoint.next_seq = last.seq + 1;
            if !sending.redo {
                checkpoint.items_sent += batches.iter().map(|b| b.items.len() as u64).sum::<u64>();
            }
            // A replayed cut is spent once its batch is sent.
            checkpoint.cut = checkpoint.cut.take().filter(|c| c.seq > last.seq);
        }
        // With nothing pending, the whole page is done: the position moves past it even when it held no
        // item (a sparse suffix), so a resumed read does not read it again.
        if batcher.is_empty() {
            checkpoint.start_after = end
                .as_ref()
                .map(Position::encode)
                .or(checkpoint.start_after.take());
        }
        if let Some(reader) = split_reader.filter(|_| split_now) {
            let after = checkpoint.start_after.clone().unwrap_or_default();
            let ranges =
                crate::parallel_listing::split(deps.objects.as_ref(), reader, &after, parallelism)
                    .await?;
            if !ranges.is_empty() {
                tracing::info!(job_id, ranges = ranges.len(), after, "listing split");
                checkpoint.ranges = ranges;
                let saved = save_unless_aborted(deps, job_id, checkpoint).await?;
                return Ok(Option::<Pass>::from(saved).unwrap_or(Pass::Split));
            }
            // Nothing to split: one stream to the end, on from the last batch sent (the partial one's items are
            // read again), in this run or, out of time, in the next hop.
            if !keep_going() {
                if *checkpoint != saved
                    && let Some(end) = save_unless_aborted(deps, job_id, checkpoint).await?.into()
                {
                    return Ok(end);
                }
                tracing::info!(job_id, next_seq = checkpoint.next_seq, "listing paused");
                return Ok(Pass::Paused);
            }
            return Box::pin(list_pass(deps, record, checkpoint, redo, 1, keep_going)).await;
        }
        if *checkpoint != saved {
            if let Some(end) = save_unless_aborted(deps, job_id, checkpoint).await?.into() {
                return Ok(end);
            }
            saved = checkpoint.clone();
        }
        match next {
            None => return Ok(Pass::Ended),
            Some(next) => page = next?,
        }
        if !keep_going() {
            let bucket = bucket.as_deref();
            cut_at_hand_over(deps, job, bucket, &mut batcher, checkpoint, sending).await?;
            // The page just read is wholly sent: the next hop starts after it.
            checkpoint.start_after = end
                .as_ref()
                .map(Position::encode)
                .or(checkpoint.start_after.take());
            if *checkpoint != saved
                && let Some(end) = save_unless_aborted(deps, job_id, checkpoint).await?.into()
            {
                return Ok(end);
            }
            tracing::info!(job_id, next_seq = checkpoint.next_seq, "listing paused");
            return Ok(Pass::Paused);
        }
    }
}

/// Lists a split listing's key ranges from the checkpoint ([`crate::parallel_listing`]), `parallelism` at
/// once, until every range is done. Each group of pages that arrived together is numbered on from
/// `next_seq`, saved (each range's page as its [`NumberedPage`], one write for the group), then sent; a range
/// moves past its page once the page is sent. Pages saved by an earlier run that may not have been sent are
/// read again and sent first, cut into the same batches with the same numbers.
async fn list_split(
    deps: &Deps,
    record: &JobRecord,
    checkpoint: &mut Checkpoint,
    parallelism: usize,
    keep_going: &(dyn Fn() -> bool + Sync),
) -> Result<Pass, PipelineError> {
    let job = &record.job;
    let job_id = job.job_id.as_str();
    let ItemReader::S3List(reader) = &job.spec.item_reader else {
        return Err(PipelineError::Inconsistent {
            job_id: job_id.to_owned(),
            message: "the checkpoint has key ranges but the reader is not s3_list".into(),
        });
    };
    let entries = job.spec.processor.wants_listing_entries();
    let limits = BatchLimits::for_job(&job.spec);
    let sending = Sending {
        generation: record.redrives,
        redo: false,
    };
    // Numbering depends on the order pages arrive: only the lease holder numbers, from what the store holds
    // now (a coordinator that held the listing before this one may have saved since this one read it).
    let lease = uuid::Uuid::new_v4().to_string();
    let Some(taken) = deps
        .jobs
        .take_listing(job_id, checkpoint.hop, &lease)
        .await?
    else {
        tracing::info!(
            job_id,
            hop = checkpoint.hop,
            "the listing was handed on past this hop"
        );
        return Ok(Pass::TakenOver);
    };
    *checkpoint = taken.checkpoint;
    if checkpoint.ranges.is_empty() || checkpoint.redo_from.is_some() {
        // No save removes a split listing's ranges (`Checkpoint::refused_over`).
        return Err(PipelineError::Inconsistent {
            job_id: job_id.to_owned(),
            message: "the listing's key ranges are gone from its checkpoint".into(),
        });
    }
    let objects = deps.objects.as_ref();
    for range in &mut checkpoint.ranges {
        let Some(page) = range.sending.clone() else {
            continue;
        };
        let items =
            parallel_listing::read_through(objects, reader, entries, &range.after, &page.through)
                .await?;
        let (batches, changed) = parallel_listing::recut(limits, &page, items);
        if changed {
            // The job cannot be exact any more, and ends FAILED saying so.
            tracing::warn!(job_id, seq = page.seq, "a numbered page's keys changed");
            deps.jobs.flag_input_changed(job_id, page.seq).await?;
        }
        // Logged again: a run that saved the page may have stopped before it logged it.
        let logged = LoggedPage {
            after: range.after.clone(),
            page: page.clone(),
        };
        deps.jobs
            .log_pages(job_id, std::slice::from_ref(&logged))
            .await?;
        send_batches(deps, job, None, &batches, sending).await?;
        range.after = page.through;
        range.done = page.last;
        range.sending = None;
    }
    let mut saved = checkpoint.clone();
    let ranges = checkpoint.ranges.clone();
    parallel_listing::list_ranges(
        objects,
        reader,
        entries,
        &ranges,
        parallelism,
        |mut feed| async move {
            while let Some(group) = feed.next_group().await {
                let mut batches = Vec::new();
                let mut pages = Vec::new();
                for page in group? {
                    let cut = parallel_listing::cut(limits, checkpoint.next_seq, page.items);
                    let range = &mut checkpoint.ranges[page.range];
                    match parallel_listing::numbered(&cut, &page.through, page.last) {
                        Some(numbered) => {
                            checkpoint.next_seq += numbered.batches;
                            checkpoint.items_sent +=
                                cut.iter().map(|b| b.items.len() as u64).sum::<u64>();
                            range.sending = Some(numbered);
                            batches.extend(cut);
                            pages.push(page.range);
                        }
                        // Nothing selected: the range moves past the page at once.
                        None => {
                            range.after = page.through;
                            range.done = page.last;
                        }
                    }
                }
                if *checkpoint != saved {
                    if let Some(end) = save_unless_aborted(deps, job_id, checkpoint).await?.into() {
                        return Ok(end);
                    }
                    saved = checkpoint.clone();
                }
                // Logged once saved (a coordinator that lost the lease never gets here) and before anything
                // is sent: every batch sent is in the log, for the sweeper and a resumed run to re-send.
                let logged: Vec<LoggedPage> = pages
                    .iter()
                    .map(|&i| {
                        let range = &checkpoint.ranges[i];
                        LoggedPage {
                            after: range.after.clone(),
                            page: range.sending.clone().expect("numbered above"),
                        }
                    })
                    .collect();
                if !logged.is_empty() {
                    deps.jobs.log_pages(job_id, &logged).await?;
                }
                send_batches(deps, job, None, &batches, sending).await?;
                for i in pages {
                    let range = &mut checkpoint.ranges[i];
                    let page = range.sending.take().expect("numbered above");
                    range.after = page.through;
                    range.done = page.last;
                }
                if checkpoint.ranges.iter().all(|r| r.done) {
                    break;
                }
                if !keep_going() {
                    if *checkpoint != saved
                        && let Some(end) =
                            save_unless_aborted(deps, job_id, checkpoint).await?.into()
                    {
                        return Ok(end);
                    }
                    tracing::info!(job_id, next_seq = checkpoint.next_seq, "listing paused");
                    return Ok(Pass::Paused);
                }
            }
            if *checkpoint != saved
                && let Some(end) = save_unless_aborted(deps, job_id, checkpoint).await?.into()
            {
                return Ok(end);
            }
            Ok(Pass::Ended)
        },
    )
    .await
}

/// What the batches a coordinator sends say of the run they belong to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sending {
    /// The job's redrive count.
    pub generation: u32,
    /// Redo batches of a redrive.
    pub redo: bool,
}

/// The batches one page of items completes (and the partial batch too, after the last page).
pub(crate) fn batch_page(batcher: &mut Batcher, page: ReadPage, last_page: bool) -> Vec<Batch> {
    let mut batches = Vec::new();
    for (item, after) in page.items {
        batcher.push(item, after, &mut batches);
    }
    if last_page {
        batches.extend(batcher.flush());
    }
    batches
}

/// Before a hand-over, the partial batch is cut into a batch of its own and sent, so that the next hop starts
/// after the page this one listed last: a listing whose suffix matches few keys still advances every hop
/// (otherwise every hop would list the same pages again). The cut is saved before the batch is sent: a
/// listing replayed from the saved checkpoint after a crash cuts the same batch at the same key.
async fn cut_at_hand_over(
    deps: &Deps,
    job: &Job,
    bucket: Option<&str>,
    batcher: &mut Batcher,
    checkpoint: &mut Checkpoint,
    sending: Sending,
) -> Result<(), PipelineError> {
    let Some(partial) = batcher.flush() else {
        return Ok(());
    };
    let last_key = partial
        .items
        .last()
        .map(|item| item.key().to_owned())
        .expect("a batch has items");
    checkpoint.cut = Some(Cut {
        seq: partial.seq,
        last_key,
    });
    let carried = carry_usage(deps, &job.job_id, checkpoint);
    if let Err(e) = deps.jobs.save_checkpoint(&job.job_id, checkpoint).await {
        deps.usage.put_back(&job.job_id, carried);
        return Err(e.into());
    }
    send_batches(deps, job, bucket, std::slice::from_ref(&partial), sending).await?;
    checkpoint.cut = None;
    checkpoint.next_seq = partial.seq + 1;
    if !sending.redo {
        checkpoint.items_sent += partial.items.len() as u64;
    }
    checkpoint.start_after = Some(partial.after.encode());
    Ok(())
}

/// Sends batches as messages; `bucket` is where their objects are when it is not the reader's own.
pub(crate) async fn send_batches(
    deps: &Deps,
    job: &Job,
    bucket: Option<&str>,
    batches: &[Batch],
    sending: Sending,
) -> Result<(), PipelineError> {
    if batches.is_empty() {
        return Ok(());
    }
    send_all_with_retry(
        deps.work_queue.as_ref(),
        batch_messages(job, bucket, batches, sending),
    )
    .await?;
    Ok(())
}

/// The work queue messages of `batches`.
pub(crate) fn batch_messages(
    job: &Job,
    bucket: Option<&str>,
    batches: &[Batch],
    sending: Sending,
) -> Vec<OutgoingMessage> {
    batches
        .iter()
        .map(|b| OutgoingMessage {
            id: format!("b{}", b.seq),
            group: Some(job.job_id.clone()),
            body: {
                let mut message = BatchMessage::new(job, b.seq, b.items.clone());
                message.generation = sending.generation;
                message.redo = sending.redo;
                if let Some(bucket) = bucket {
                    message.bucket = bucket.to_owned();
                }
                message.to_body()
            },
        })
        .collect()
}
