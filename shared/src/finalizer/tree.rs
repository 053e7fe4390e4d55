//! The tree-shaped finalize: a job of more than [`FinalizerConfig::range_batches`] batches is merged in
//! ranges of that many batches, each by a message of its own on the finalize queue (so by as many finalizer
//! invocations at once as the queue's mapping scales to), then the ranges' results in order, by the trigger
//! the last range sends. A 1M-part job is 100 merges of ~20 s and a root that reads 100 small results and
//! copies the failure and output lines once, at S3's stream rate: inside the finalizer's 5 minutes for jobs of
//! up to a few GB of lines, where one process reading every part would not be.
//!
//! - **A range's merge** reads its batches' records and parts, and writes under `finalize/` (named by its
//!   first batch): its failure lines, its output lines, both streamed in chunks, and last a small result (the
//!   counts, the processor's partial result, and each batch's share of the output lines). Written from the
//!   records alone, so a merge run twice (a redelivered message) writes the same bytes. It names its run, so
//!   that one an earlier run of the job id left is merged again, never joined. A result of many groups is
//!   spilled in shards as it goes (`groups`), and the small result names the spills instead of holding them.
//! - **The root** sends the merges not written yet (once: a marker holds when, and they are sent again only if
//!   they have not all ended 35 minutes later, or at once for a trigger sent again because the job seems
//!   stuck: a merge's message may have been lost), or, once every range is merged, merges their results in
//!   order: `failed.jsonl` is the ranges' failure lines one after the other, streamed, and `outputs/` is cut
//!   from their output lines exactly as one process cuts it, so the files are byte for byte the same.
//!
//! A job an abort ended, a redriven job (a redone item drops its failure from an earlier range) and the
//! `lambda` processor's (`map-results/` is cut across batches too) are finalized in one process.

use std::collections::BTreeSet;
use std::io::Read;

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::groups::Spill;
use super::{
    FinalizerConfig, Groups, Merged, OutputFiles, RECORDS_PER_PAGE, STREAM_CHUNK_BYTES, read_parts,
};
use crate::Deps;
use crate::clock::now_ms;
use crate::completion::trigger_finalizer;
use crate::error::PipelineError;
use crate::layout::OutputLocation;
use crate::message::FinalizeMessage;
use crate::outcome::{ItemCounts, json_lines};
use crate::ports::{
    JobRecord, JobStatus, ObjectReader, ObjectStore, ObjectWriter, OutgoingMessage, StoreError,
    read_all, require_job, send_all_with_retry,
};
use crate::processor::Aggregate;
use crate::spec::Job;

/// How long the merges sent are left to end before a trigger sends those not written again: past the finalize
/// queue's visibility timeout (30 minutes), so that a merge that failed is retried by its queue first, and
/// one still running is not doubled.
const RESEND_AFTER_MS: u64 = 35 * 60 * 1000;
/// The bytes a root reads of a range's lines at a time.
const READ_BLOCK_BYTES: u64 = 1 << 20;

/// A job finalized as a tree: its batches, in ranges of `range_batches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tree {
    batches: u64,
    range_batches: u64,
}

impl Tree {
    /// The tree of a job to finalize, if it is finalized as one.
    pub(super) fn of(record: &JobRecord, config: &FinalizerConfig) -> Option<Self> {
        let totals = record.listing?;
        let one_process =
            record.abort_requested() || record.redrives > 0 || record.input_changed.is_some();
        ranges(&record.job, totals.batches, config.range_batches)
            .filter(|_| !one_process)
            .map(|_| Self {
                batches: totals.batches,
                range_batches: config.range_batches.max(1),
            })
    }

    pub(super) fn ranges(&self) -> u64 {
        self.batches.div_ceil(self.range_batches)
    }

    /// The batches `from..to` of range `range`.
    fn bounds(&self, range: u64) -> (u64, u64) {
        let from = range * self.range_batches;
        (from, (from + self.range_batches).min(self.batches))
    }
}

/// The ranges in which a run of `job` that sent `batches` batches is finalized as a tree, or `None` when one
/// process finalizes it (a small job, or the `lambda` processor's).
pub(crate) fn ranges(job: &Job, batches: u64, range_batches: u64) -> Option<u64> {
    let range_batches = range_batches.max(1);
    (job.spec.processor.lambda().is_none() && batches > range_batches)
        .then(|| batches.div_ceil(range_batches))
}

/// What one range's merge found: the small object the root reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RangeMerge {
    /// The run it is of ([`JobRecord::created_at_ms`]): a merge an earlier run of the job id left is stale.
    run: u64,
    from: u64,
    to: u64,
    succeeded: u64,
    /// Its failure lines.
    failed: u64,
    /// The groups of the processor's result it holds (all of them, unless it spilled some).
    result: Aggregate,
    /// The spills of groups it wrote (`finalize/groups/`): part of its result too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    spills: Vec<Spill>,
    /// Each batch with output lines, and the bytes of its lines, in batch order: where the root cuts files.
    outputs: Vec<(u64, u64)>,
}

/// Sends the merges of the ranges not merged yet, unless they were sent less than [`RESEND_AFTER_MS`] ago.
/// `true` when every range is merged: the root can merge them.
pub(super) async fn fan_out(
    deps: &Deps,
    record: &JobRecord,
    out: &OutputLocation,
    tree: &Tree,
    resend: bool,
) -> Result<bool, PipelineError> {
    let job_id = record.job.job_id.as_str();
    let (merged, sent_at) = merged_ranges(deps.objects.as_ref(), out, tree).await?;
    let missing: Vec<u64> = (0..tree.ranges()).filter(|r| !merged.contains(r)).collect();
    if missing.is_empty() {
        return Ok(true);
    }
    if let Some(at) = sent_at
        && !resend
        && now_ms().saturating_sub(at) < RESEND_AFTER_MS
    {
        tracing::info!(
            job_id,
            missing = missing.len(),
            "range merges under way; the last triggers the finalizer"
        );
        return Ok(false);
    }
    let messages = missing
        .iter()
        .map(|&range| OutgoingMessage {
            id: format!("range-{range}"),
            body: FinalizeMessage {
                job_id: job_id.to_owned(),
                range: Some(range),
                resend: false,
            }
            .to_body(),
            group: None,
        })
        .collect();
    send_all_with_retry(deps.finalize_queue.as_ref(), messages).await?;
    // After the sends: a crash between them sends them again, where the other way round would leave them
    // unsent for RESEND_AFTER_MS.
    let marker = serde_json::json!({ "ranges": tree.ranges(), "sent": missing.len() });
    deps.objects
        .put(
            &out.bucket,
            &out.finalize_fan_out_key(),
            marker.to_string().into_bytes(),
        )
        .await?;
    tracing::info!(
        job_id,
        ranges = tree.ranges(),
        sent = missing.len(),
        "finalizing as a tree: range merges sent"
    );
    Ok(false)
}

/// A range's message: merges the range, and triggers the finalizer once every range is merged (each range
/// checks after writing its own, so the last to write sees them all; two may both trigger it, which is
/// harmless).
pub(super) async fn merge_range_message(
    deps: &Deps,
    config: FinalizerConfig,
    job_id: &str,
    range: u64,
) -> Result<(), PipelineError> {
    let record = require_job(deps.jobs.as_ref(), job_id).await?;
    if record.status != JobStatus::Finalizing {
        tracing::info!(
            job_id,
            range,
            status = record.status.as_str(),
            "range merge dropped: the job is not finalizing"
        );
        return Ok(());
    }
    let Some(tree) = Tree::of(&record, &config).filter(|t| range < t.ranges()) else {
        // A message of another shape of the job's tree (its range size changed while it finalized): the
        // root merges what its own shape needs.
        tracing::warn!(
            job_id,
            range,
            "range merge dropped: the job has no such range"
        );
        return Ok(());
    };
    let out = OutputLocation::for_job(&record.job);
    let objects = deps.objects.as_ref();
    let (from, to) = tree.bounds(range);
    let (merged, _) = merged_ranges(objects, &out, &tree).await?;
    // A redelivery of a merge that ended: nothing to do but the check below.
    let done = merged.contains(&range)
        && read_merge(objects, &out, &record, from, to)
            .await?
            .is_some();
    if !done && let Err(e) = merge_range(deps, config, &record, &out, &tree, range).await {
        if e.is_transient() {
            return Err(e);
        }
        // Retrying cannot help: the job ends FAILED now, as one process's finalizing would; the other
        // ranges' messages are then dropped.
        deps.usage.reopen(job_id);
        super::finish(deps, &record, &out, Err(e)).await?;
        return Ok(());
    }
    let (merged, _) = merged_ranges(objects, &out, &tree).await?;
    if merged.len() as u64 == tree.ranges() {
        trigger_finalizer(deps, job_id).await?;
    }
    Ok(())
}

/// Merges every range into the job's `failed.jsonl` and `outputs/` (merging here those not merged yet).
pub(super) async fn merge_ranges(
    deps: &Deps,
    config: FinalizerConfig,
    record: &JobRecord,
    out: &OutputLocation,
    tree: &Tree,
) -> Result<Merged<'static>, PipelineError> {
    let objects = deps.objects.as_ref();
    let (merged, _) = merged_ranges(objects, out, tree).await?;
    for range in (0..tree.ranges()).filter(|r| !merged.contains(r)) {
        merge_range(deps, config, record, out, tree, range).await?;
    }
    // The root's own spills are numbered past every batch, where no range's are.
    let mut result = Groups::of_job(record, &config, tree.batches, u64::MAX);
    let mut items = ItemCounts::default();
    let mut failures = ObjectWriter::new(
        deps.objects.clone(),
        &out.bucket,
        out.failures_key(),
        STREAM_CHUNK_BYTES,
    );
    let mut files = OutputFiles::new(out, config.output_file_bytes);
    for range in 0..tree.ranges() {
        let (from, to) = tree.bounds(range);
        let key = out.finalize_range_key(from);
        let merge = match read_merge(objects, out, record, from, to).await? {
            Some(merge) => merge,
            // Another run's (the job id used before): merged again, here.
            None => {
                merge_range(deps, config, record, out, tree, range).await?;
                read_merge(objects, out, record, from, to)
                    .await?
                    .ok_or_else(|| {
                        inconsistent(record, format!("{key} is not the merge of {from}..{to}"))
                    })?
            }
        };
        items.succeeded += merge.succeeded;
        items.failed += merge.failed;
        result.adopt(&merge.spills);
        result.merge(objects, out, merge.result).await?;
        if merge.failed > 0 {
            let key = out.finalize_failures_key(from);
            let mut lines = Lines::open(objects, &out.bucket, &key).await?;
            while let Some(block) = lines.next_block().await? {
                failures.write(&block).await?;
            }
        }
        if !merge.outputs.is_empty() {
            let key = out.finalize_outputs_key(from);
            let mut lines = Lines::open(objects, &out.bucket, &key).await?;
            for (seq, bytes) in merge.outputs {
                let batch = lines.take(bytes as usize).await?.ok_or_else(|| {
                    inconsistent(record, format!("{key} ends before batch {seq}"))
                })?;
                files.add_bytes(objects, seq, &batch).await?;
            }
        }
    }
    failures.finish().await?;
    items.total = items.succeeded + items.failed;
    Ok(Merged {
        items,
        result,
        outputs: files.finish(objects).await?,
        recorded: tree.batches,
        map_results: None,
    })
}

/// The merge of `from..to` written by this run of the job, if it is (it exists: the listing showed it).
async fn read_merge(
    objects: &dyn ObjectStore,
    out: &OutputLocation,
    record: &JobRecord,
    from: u64,
    to: u64,
) -> Result<Option<RangeMerge>, PipelineError> {
    let body = read_all(objects, &out.bucket, &out.finalize_range_key(from)).await?;
    Ok(serde_json::from_slice(&body)
        .ok()
        .filter(|m: &RangeMerge| (m.run, m.from, m.to) == (record.created_at_ms, from, to)))
}

/// Merges range `range`: its failure and output lines, then what it found.
async fn merge_range(
    deps: &Deps,
    config: FinalizerConfig,
    record: &JobRecord,
    out: &OutputLocation,
    tree: &Tree,
    range: u64,
) -> Result<(), PipelineError> {
    let job = &record.job;
    let job_id = job.job_id.as_str();
    let (from, to) = tree.bounds(range);
    let writer =
        |key: String| ObjectWriter::new(deps.objects.clone(), &out.bucket, key, STREAM_CHUNK_BYTES);
    let mut failures = writer(out.finalize_failures_key(from));
    let mut outputs = writer(out.finalize_outputs_key(from));
    let (mut succeeded, mut failed, mut batch_lines) = (0, 0, Vec::new());
    let mut result = Groups::of_job(record, &config, from, to);
    for page in (from..to).step_by(RECORDS_PER_PAGE) {
        let page_to = (page + RECORDS_PER_PAGE as u64).min(to);
        let records = deps.jobs.batch_records(job_id, page, page_to).await?;
        if let Some(missing) = (page..page_to)
            .zip(
                records
                    .iter()
                    .map(|(seq, _)| Some(*seq))
                    .chain(std::iter::repeat(None)),
            )
            .find(|(expected, seq)| *seq != Some(*expected))
        {
            return Err(inconsistent(
                record,
                format!("batch {} has no record", missing.0),
            ));
        }
        let mut parts = read_parts(deps, out, job_id, records);
        while let Some(part) = parts.try_next().await? {
            succeeded += part.succeeded;
            failed += part.failures.len() as u64;
            failures.write(&json_lines(&part.failures)).await?;
            result
                .merge(deps.objects.as_ref(), out, part.result)
                .await?;
            let lines = json_lines(&part.outputs);
            if !lines.is_empty() {
                outputs.write(&lines).await?;
                batch_lines.push((part.seq, lines.len() as u64));
            }
        }
    }
    let (result, spills) = result.into_parts();
    let merge = RangeMerge {
        run: record.created_at_ms,
        from,
        to,
        succeeded,
        failed,
        result,
        spills,
        outputs: batch_lines,
    };
    // An empty file is not written: the merge says there is none.
    for writer in [failures, outputs] {
        if !writer.is_empty() {
            writer.finish().await?;
        }
    }
    let body = serde_json::to_vec(&merge).expect("a range merge serializes");
    deps.objects
        .put(&out.bucket, &out.finalize_range_key(from), body)
        .await?;
    tracing::info!(
        job_id,
        range,
        from,
        to,
        failed = merge.failed,
        "range merged"
    );
    Ok(())
}

/// The ranges whose merge is written, and when their merges were last sent (milliseconds since the epoch), if
/// ever: one listing of `finalize/` (S3's listings are strongly consistent).
async fn merged_ranges(
    objects: &dyn ObjectStore,
    out: &OutputLocation,
    tree: &Tree,
) -> Result<(BTreeSet<u64>, Option<u64>), PipelineError> {
    let dir = out.finalize_dir();
    let fan_out = out.finalize_fan_out_key();
    // Keys come in order, and the spills of groups (`finalize/groups/`, perhaps thousands) after every
    // range's result and the marker: the listing stops at them.
    let groups = format!("{dir}groups/");
    let (mut merged, mut sent_at) = (BTreeSet::new(), None);
    let mut next = None;
    loop {
        let page = objects
            .list_page(&out.bucket, &dir, None, next.as_deref())
            .await?;
        let mut reached_groups = false;
        for object in &page.objects {
            if object.key.starts_with(&groups) {
                reached_groups = true;
                break;
            }
            if object.key == fan_out {
                sent_at = Some(object.last_modified_ms.max(0) as u64);
            } else if let Some(first) = object
                .key
                .strip_prefix(&dir)
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|seq| seq.parse::<u64>().ok())
                && first % tree.range_batches == 0
                && first < tree.batches
            {
                merged.insert(first / tree.range_batches);
            }
        }
        match page.next {
            Some(token) if !reached_groups => next = Some(token),
            _ => break,
        }
    }
    Ok((merged, sent_at))
}

fn inconsistent(record: &JobRecord, message: String) -> PipelineError {
    PipelineError::Inconsistent {
        job_id: record.job.job_id.clone(),
        message,
    }
}

/// A range's lines, read a block at a time off the async runtime.
struct Lines {
    reader: Option<ObjectReader>,
    buffer: Vec<u8>,
    /// Where the unread bytes of `buffer` start.
    start: usize,
}

impl Lines {
    async fn open(objects: &dyn ObjectStore, bucket: &str, key: &str) -> Result<Self, StoreError> {
        Ok(Self {
            reader: Some(objects.get(bucket, key).await?),
            buffer: Vec::new(),
            start: 0,
        })
    }

    /// Reads the next block into the buffer; `false` at the end.
    async fn fill(&mut self) -> Result<bool, PipelineError> {
        let Some(reader) = self.reader.take() else {
            return Ok(false);
        };
        let (reader, block) = tokio::task::spawn_blocking(move || {
            let mut block = Vec::new();
            let mut limited = reader.take(READ_BLOCK_BYTES);
            limited.read_to_end(&mut block)?;
            Ok::<_, std::io::Error>((limited.into_inner(), block))
        })
        .await?
        .map_err(StoreError::from)?;
        if block.is_empty() {
            return Ok(false);
        }
        self.reader = Some(reader);
        self.buffer.drain(..self.start);
        self.start = 0;
        self.buffer.extend_from_slice(&block);
        Ok(true)
    }

    /// The next `n` bytes; `None` if the object ends first.
    async fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, PipelineError> {
        while self.buffer.len() - self.start < n {
            if !self.fill().await? {
                return Ok(None);
            }
        }
        let bytes = self.buffer[self.start..self.start + n].to_vec();
        self.start += n;
        Ok(Some(bytes))
    }

    /// The next bytes, whatever their number; `None` at the end.
    async fn next_block(&mut self) -> Result<Option<Vec<u8>>, PipelineError> {
        if self.start == self.buffer.len() && !self.fill().await? {
            return Ok(None);
        }
        let bytes = self.buffer[self.start..].to_vec();
        self.start = self.buffer.len();
        Ok(Some(bytes))
    }
}
