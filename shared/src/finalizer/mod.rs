//! The finalizer: merges the batch parts in sequence order, writes the per-item output lines under `outputs/`,
//! the executions under `map-results/` (the `lambda` processor's, then invokes its reducer), `result.json`,
//! `failed.jsonl` and `manifest.json` (last), and moves the job to its terminal status.
//!
//! An aborted job (`dmap abort`) is finalized the same way over the batches that were recorded: its outputs hold
//! what was done, the batches never processed are left out, and its status is ABORTED.
//!
//! Idempotent: for a job already terminal it writes nothing and returns the manifest it wrote before; for a job
//! still FINALIZING (a crash before the status was set) it writes the same bytes again, to the same keys.
//!
//! The output lines are streamed: they come from the parts as they are read, and go out in files of whole
//! batches cut at [`FinalizerConfig::output_file_bytes`], so memory holds one file at a time and a job makes one
//! PUT per file, not per batch. Files are named by their first batch, and which batches a file holds depends
//! only on the parts the records name: finalizing again writes the same files.

use futures::{StreamExt, TryStreamExt};

use crate::Deps;
use crate::completion::final_status;
use crate::error::PipelineError;
use crate::function::{self, FunctionConfig};
use crate::layout::OutputLocation;
use crate::map_results::{MapResults, MapResultsConfig};
use crate::message::FinalizeMessage;
use crate::outcome::{
    BatchCounts, BatchPart, ItemCounts, LiveFailures, Manifest, OutputLine, TerminalStatus,
    json_lines,
};
use crate::usage::{Prices, Usage};
use std::sync::Arc;

use crate::ports::{
    BatchRecord, JobRecord, JobStatus, ObjectStore, ObjectWriter, PartRef, read_all, require_job,
};

mod groups;
mod tree;

use groups::Groups;

pub(crate) use tree::ranges as tree_ranges;

/// Parts read at once.
pub(crate) const PART_READ_CONCURRENCY: usize = 16;
/// The chunks in which `failed.jsonl` and a tree's range files are written (S3: multipart parts): S3's least,
/// for the least memory; 10,000 of them (S3's most parts) make a 50 GB file.
const STREAM_CHUNK_BYTES: usize = crate::ports::MIN_CHUNK_BYTES;
/// Batch records read per page.
pub(crate) const RECORDS_PER_PAGE: usize = 1000;
/// How far past its checkpoint an aborted job's records are looked for: a page of a reader's items, sent before
/// its checkpoint, is far smaller.
const MAX_BATCHES_PAST_CHECKPOINT: u64 = 10_000_000;

/// Finalizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalizerConfig {
    /// The size at which a file under `outputs/` is closed: the next batch's lines begin a new file. A file
    /// holds whole batches, so it ends past this by less than one batch's lines.
    pub output_file_bytes: usize,
    /// The `lambda` processor's `map-results/` files.
    pub map_results: MapResultsConfig,
    /// How the reducer's throttling is waited out.
    pub functions: FunctionConfig,
    /// The batches one merge of a tree-shaped finalize reads: a job of more is finalized as a tree, its ranges
    /// of this many batches merged apart (by messages of their own on the finalize queue), then their results.
    pub range_batches: u64,
    /// The groups of a result keyed by group (`csv_aggregate`'s) past which a merge spills them,
    /// in shards, and the result is written shard by shard as `result-<shard>.json`, indexed by `result.json`.
    pub result_groups: usize,
}

impl Default for FinalizerConfig {
    /// 8 MiB files: few PUTs and files for a large job, and a small share of a Lambda's memory.
    fn default() -> Self {
        Self {
            output_file_bytes: 8 << 20,
            map_results: MapResultsConfig::default(),
            // The reducer runs once per job, in a finalizer with minutes to spare: it may wait longer.
            functions: FunctionConfig {
                throttle_budget: std::time::Duration::from_secs(120),
            },
            // 16 parts read at once, ~30 ms each on S3: a range in about 20 s, a 1M-part job in 100 ranges.
            range_batches: 10_000,
            // A few hundred bytes a group: some tens of MB, a small share of the finalizer's memory.
            result_groups: 100_000,
        }
    }
}

/// What the finalizer did.
#[derive(Debug, Clone, PartialEq)]
pub struct Finalized {
    pub manifest: Manifest,
    /// `false` when the job was already terminal and nothing was written.
    pub wrote: bool,
}

/// What a message on the finalize queue did.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// The job is finalized (now, or before).
    Finalized(Box<Finalized>),
    /// A job finalized as a tree: the merges of `ranges` ranges were sent (or are under way); the last to end
    /// triggers the finalizer again.
    RangesPending { ranges: u64 },
    /// One range of such a job was merged.
    RangeMerged { range: u64 },
}

/// Finalizes a job that won its completion claim, in this process (a job finalized as a tree has its ranges
/// merged here, those not merged yet). `NotReady` for a job still RUNNING.
pub async fn finalize(
    deps: &Deps,
    config: FinalizerConfig,
    job_id: &str,
) -> Result<Finalized, PipelineError> {
    let finalized = crate::usage::scoped(job_id, finalize_job(deps, config, job_id, None)).await?;
    Ok(finalized.expect("finalized in this process"))
}

/// Handles a message of the finalize queue, as the finalizer function does: a trigger finalizes a job, or,
/// for a job of more than [`FinalizerConfig::range_batches`] batches, sends the merges of its ranges as
/// messages of their own (a tree); a range's message merges that range and, once every range is merged,
/// triggers the finalizer again. Idempotent, as every message is.
pub async fn handle(
    deps: &Deps,
    config: FinalizerConfig,
    message: &FinalizeMessage,
) -> Result<Handled, PipelineError> {
    let job_id = message.job_id.as_str();
    match message.range {
        Some(range) => {
            crate::usage::scoped(
                job_id,
                tree::merge_range_message(deps, config, job_id, range),
            )
            .await?;
            Ok(Handled::RangeMerged { range })
        }
        None => {
            let finalized = crate::usage::scoped(
                job_id,
                finalize_job(deps, config, job_id, Some(message.resend)),
            )
            .await?;
            Ok(match finalized {
                Some(finalized) => Handled::Finalized(Box::new(finalized)),
                None => Handled::RangesPending {
                    ranges: require_job(deps.jobs.as_ref(), job_id)
                        .await
                        .ok()
                        .and_then(|r| tree::Tree::of(&r, &config))
                        .map_or(0, |t| t.ranges()),
                },
            })
        }
    }
}

/// `None` when `fan_out` and the job is finalized as a tree whose ranges are not all merged yet: their merges
/// were sent (`fan_out`: whether to send them again at once, for a trigger sent again).
async fn finalize_job(
    deps: &Deps,
    config: FinalizerConfig,
    job_id: &str,
    fan_out: Option<bool>,
) -> Result<Option<Finalized>, PipelineError> {
    let mut record = require_job(deps.jobs.as_ref(), job_id).await?;
    if record.status == JobStatus::Running && record.abort_requested() {
        // An aborted job's trigger comes once the batches in flight at the abort have ended: the claim is made
        // here. Whoever wins it, the job has left RUNNING.
        deps.jobs.claim_abort(job_id).await?;
        record = require_job(deps.jobs.as_ref(), job_id).await?;
    }
    let out = OutputLocation::for_job(&record.job);
    match record.status {
        JobStatus::Running => Err(PipelineError::NotReady {
            job_id: job_id.to_owned(),
            message: "it is still RUNNING; only the winner of the completion claim triggers the finalizer"
                .into(),
        }),
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Aborted => {
            let body = read_all(deps.objects.as_ref(), &out.bucket, &out.manifest_key()).await?;
            let manifest = serde_json::from_slice(&body).map_err(|e| PipelineError::Inconsistent {
                job_id: job_id.to_owned(),
                message: format!("manifest.json is unreadable: {e}"),
            })?;
            Ok(Some(Finalized {
                manifest,
                wrote: false,
            }))
        }
        JobStatus::Finalizing => {
            if let Some(resend) = fan_out
                && let Some(tree) = tree::Tree::of(&record, &config)
                && !tree::fan_out(deps, &record, &out, &tree, resend).await?
            {
                return Ok(None);
            }
            // A process that finalized the job before (a redrive's, warm) counts it as pending again.
            deps.usage.reopen(job_id);
            let written = write_outputs(deps, config, &record, &out).await;
            finish(deps, &record, &out, written).await.map(Some)
        }
    }
}

/// Ends a FINALIZING job with what its finalizing wrote, or, when that failed for good, FAILED with the
/// reason. A transient error is returned, for a retry.
async fn finish(
    deps: &Deps,
    record: &JobRecord,
    out: &OutputLocation,
    written: Result<(Manifest, Usage), PipelineError>,
) -> Result<Finalized, PipelineError> {
    let job_id = record.job.job_id.as_str();
    let (manifest, closed) = match written {
        Ok(written) => written,
        Err(e) if e.is_transient() => return Err(e),
        // Retrying cannot help: the job must still end, FAILED, with the reason where users look.
        Err(e) => {
            tracing::error!(job_id, error = %e, "finalizing failed for good; the job FAILS");
            write_failure(deps, record, out, &e).await?
        }
    };
    if let Err(e) = deps.jobs.finish(job_id, manifest.status, &closed).await {
        // The manifest holds `closed`, the store not yet: the retry's manifest is written again.
        deps.usage.reopen(job_id);
        deps.usage.put_back(job_id, closed);
        return Err(e.into());
    }
    tracing::info!(job_id, status = manifest.status.as_str(), "job finished");
    Ok(Finalized {
        manifest,
        wrote: true,
    })
}

/// What merging the parts in order found; `failed.jsonl` and `outputs/` are written.
struct Merged<'a> {
    items: ItemCounts,
    result: Groups,
    /// The keys of the files under `outputs/`, in order.
    outputs: Vec<String>,
    /// The batches with a record.
    recorded: u64,
    /// The `lambda` processor's executions, written.
    map_results: Option<MapResults<'a>>,
}

async fn write_outputs(
    deps: &Deps,
    config: FinalizerConfig,
    record: &JobRecord,
    out: &OutputLocation,
) -> Result<(Manifest, Usage), PipelineError> {
    let job = &record.job;
    let job_id = job.job_id.as_str();
    let inconsistent = |message: String| PipelineError::Inconsistent {
        job_id: job_id.to_owned(),
        message,
    };
    if let Some(seq) = record.input_changed {
        return Err(inconsistent(format!(
            "the items under item_reader changed while they were listed (batch {seq} was sent again with other \
             items), so the job cannot count each item once; run it again"
        )));
    }
    let aborted = record.abort_requested();
    let merged = match tree::Tree::of(record, &config) {
        Some(tree) => tree::merge_ranges(deps, config, record, out, &tree).await?,
        None => merge_in_order(deps, config, record, out).await?,
    };
    let objects = deps.objects.as_ref();
    let Merged {
        items,
        result,
        outputs: output_keys,
        recorded,
        map_results,
    } = merged;
    if let Some(totals) = record.listing
        && !aborted
        && items.total != totals.items
    {
        return Err(inconsistent(format!(
            "parts count {} items, the listing {}",
            items.total, totals.items
        )));
    }

    let (map_results, reducer_details) = match map_results {
        Some(map_results) => {
            let (key, details) = map_results.finish(objects).await?;
            (Some(key), Some(details))
        }
        None => (None, None),
    };
    // The reducer's response, exactly as returned, is the result; without one, the processor's own.
    let lambda = job.spec.processor.lambda();
    let reducer = lambda.and_then(|l| Some((l, l.reducer.as_deref()?)));
    let result_json = match (reducer, reducer_details) {
        (Some((lambda, reducer)), Some(details)) => {
            function::reduce(deps, config.functions, lambda, reducer, &details).await?
        }
        _ => result.write(objects, out, job_id).await?,
    };

    let manifest = Manifest {
        outputs: output_keys,
        map_results,
        ..manifest(
            record,
            out,
            if aborted {
                TerminalStatus::Aborted
            } else {
                final_status(record.tolerance(), items)
            },
            items,
            if aborted {
                recorded
            } else {
                record.listing.map_or(recorded, |l| l.batches)
            },
            None,
        )
    };
    objects
        .put(&out.bucket, &out.result_key(), result_json)
        .await?;
    // The one read the usage costs: the job store's sum, at the end.
    let stored = deps.jobs.progress(job_id).await?.usage;
    write_manifest(deps, out, manifest, stored).await
}

/// Merges every part in one pass, in order, writing `failed.jsonl` and `outputs/` as it goes.
async fn merge_in_order<'a>(
    deps: &Deps,
    config: FinalizerConfig,
    record: &'a JobRecord,
    out: &'a OutputLocation,
) -> Result<Merged<'a>, PipelineError> {
    let job = &record.job;
    let job_id = job.job_id.as_str();
    let inconsistent = |message: String| PipelineError::Inconsistent {
        job_id: job_id.to_owned(),
        message,
    };
    // An aborted job: the batches sent, of which those with a record count. A coordinator checkpoints after a
    // page's batches are sent, and workers may record some of them before that (or the coordinator died
    // before it), so the records are read until every counted batch is found, past the checkpoint if need be.
    let aborted = record.abort_requested();
    let (mut batches, counted) = match (record.listing, aborted) {
        (Some(totals), _) => (totals.batches, None),
        (None, true) => {
            let progress = deps.jobs.progress(job_id).await?;
            (record.checkpoint.next_seq, Some(progress.batches_done))
        }
        (None, false) => return Err(inconsistent("FINALIZING without listing totals".into())),
    };

    let objects = deps.objects.as_ref();
    let mut result = Groups::of_job(record, &config, 0, u64::MAX);
    let mut failures = Failures::new(deps, out, record.redrives > 0);
    let mut outputs = OutputFiles::new(out, config.output_file_bytes);
    let lambda = job.spec.processor.lambda();
    let mut map_results = lambda.map(|_| MapResults::new(out, job_id, config.map_results));
    let mut items = ItemCounts::default();
    let mut recorded = 0;
    // Every batch 0..total must have exactly one record (but those an abort left unprocessed): the record says
    // which part counts. Records are read a page at a time (they may hold their parts), and the parts of a page
    // in order, some at once.
    let mut from = 0;
    loop {
        if from >= batches {
            match counted {
                // Counted batches past those read: they are in the next pages of records.
                Some(counted) if recorded < counted => {
                    if from > record.checkpoint.next_seq + MAX_BATCHES_PAST_CHECKPOINT {
                        return Err(inconsistent(format!(
                            "{counted} batches are counted, {recorded} found by batch {from}"
                        )));
                    }
                    batches = from + RECORDS_PER_PAGE as u64;
                }
                _ => break,
            }
        }
        let to = (from + RECORDS_PER_PAGE as u64).min(batches);
        let records = deps.jobs.batch_records(job_id, from, to).await?;
        recorded += records.len() as u64;
        let mut expected = from;
        for (seq, _) in &records {
            if *seq != expected {
                break;
            }
            expected += 1;
        }
        if expected != to && !aborted {
            return Err(inconsistent(format!("batch {expected} has no record")));
        }
        from = to;
        let mut parts = read_parts(deps, out, job_id, records);
        while let Some(part) = parts.try_next().await? {
            items.succeeded += part.succeeded;
            failures.add(&part).await?;
            result.merge(objects, out, part.result).await?;
            outputs.add(objects, part.seq, &part.outputs).await?;
            if let Some(map_results) = &mut map_results {
                let execution = part.execution.as_ref().ok_or_else(|| {
                    inconsistent(format!("the part of batch {} has no execution", part.seq))
                })?;
                map_results.add(objects, part.seq, execution).await?;
            }
        }
    }
    let outputs = outputs.finish(objects).await?;
    // Each item's last outcome: a failure a redrive redid is gone, whatever the redo made of it.
    items.failed = failures.finish().await?;
    items.total = items.succeeded + items.failed;
    Ok(Merged {
        items,
        result,
        outputs,
        recorded,
        map_results,
    })
}

/// The parts of `records`, read in order, some at once.
fn read_parts<'a>(
    deps: &Deps,
    out: &OutputLocation,
    job_id: &str,
    records: Vec<(u64, BatchRecord)>,
) -> impl futures::Stream<Item = Result<BatchPart, PipelineError>> + 'a {
    let (objects, bucket, job_id) = (deps.objects.clone(), out.bucket.clone(), job_id.to_owned());
    futures::stream::iter(records)
        .map(move |(seq, batch)| {
            read_part(objects.clone(), bucket.clone(), job_id.clone(), seq, batch)
        })
        .buffered(PART_READ_CONCURRENCY)
}

/// `failed.jsonl` as the parts come. A job never redriven has no failure a later batch undoes: its lines go
/// out as they come, a chunk at a time. A redriven job's redone items drop their earlier failures, wherever
/// they were, so its failures are gathered first.
enum Failures {
    Streamed {
        writer: ObjectWriter,
        count: u64,
    },
    Gathered {
        live: LiveFailures,
        objects: Arc<dyn ObjectStore>,
        bucket: String,
        key: String,
    },
}

impl Failures {
    fn new(deps: &Deps, out: &OutputLocation, redriven: bool) -> Self {
        if redriven {
            Self::Gathered {
                live: LiveFailures::default(),
                objects: deps.objects.clone(),
                bucket: out.bucket.clone(),
                key: out.failures_key(),
            }
        } else {
            Self::Streamed {
                writer: ObjectWriter::new(
                    deps.objects.clone(),
                    &out.bucket,
                    out.failures_key(),
                    STREAM_CHUNK_BYTES,
                ),
                count: 0,
            }
        }
    }

    async fn add(&mut self, part: &BatchPart) -> Result<(), PipelineError> {
        match self {
            Self::Streamed { writer, count } => {
                *count += part.failures.len() as u64;
                writer.write(&json_lines(&part.failures)).await?;
            }
            Self::Gathered { live, .. } => live.add(part),
        }
        Ok(())
    }

    /// Writes `failed.jsonl`; the failures in it.
    async fn finish(self) -> Result<u64, PipelineError> {
        match self {
            Self::Streamed { writer, count } => {
                writer.finish().await?;
                Ok(count)
            }
            Self::Gathered {
                live,
                objects,
                bucket,
                key,
            } => {
                objects.put(&bucket, &key, live.to_jsonl()).await?;
                Ok(live.len())
            }
        }
    }
}

/// Writes the manifest with the job's usage: `stored` (what the job store holds) and what this process sent
/// for the job and has not carried, which is taken here and, once the manifest is written, closed (see
/// [`crate::usage`]); returned with the manifest, for [`JobStore::finish`] to add to the store. No usage for
/// a job that sent no AWS request.
async fn write_manifest(
    deps: &Deps,
    out: &OutputLocation,
    manifest: Manifest,
    stored: Usage,
) -> Result<(Manifest, Usage), PipelineError> {
    let job_id = manifest.job_id.clone();
    let closed = deps.usage.take(&job_id);
    let mut usage = stored;
    usage.add(&closed);
    let manifest = Manifest {
        usage: (!usage.is_empty()).then(|| usage.priced(&Prices::from_env())),
        ..manifest
    };
    let mut body = serde_json::to_vec_pretty(&manifest).expect("serializes");
    body.push(b'\n');
    if let Err(e) = deps
        .objects
        .put(&out.bucket, &out.manifest_key(), body)
        .await
    {
        deps.usage.put_back(&job_id, closed);
        return Err(e.into());
    }
    deps.usage.close(&job_id);
    Ok((manifest, closed))
}

/// The files under `outputs/` being written, in batch order: each holds the lines of consecutive batches, from
/// the first batch with lines after the previous file, until it reaches its size; a batch without lines adds
/// nothing.
struct OutputFiles<'a> {
    out: &'a OutputLocation,
    max_bytes: usize,
    /// The file being filled: its first batch's seq, and its lines so far.
    open: Option<(u64, Vec<u8>)>,
    /// The keys of the files written, in order.
    written: Vec<String>,
}

impl<'a> OutputFiles<'a> {
    fn new(out: &'a OutputLocation, max_bytes: usize) -> Self {
        Self {
            out,
            max_bytes,
            open: None,
            written: Vec::new(),
        }
    }

    /// Adds batch `seq`'s lines, and writes the file if it has reached its size.
    async fn add(
        &mut self,
        objects: &dyn ObjectStore,
        seq: u64,
        lines: &[OutputLine],
    ) -> Result<(), PipelineError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.add_bytes(objects, seq, &json_lines(lines)).await
    }

    /// Adds batch `seq`'s lines as written by [`json_lines`] (none: nothing).
    async fn add_bytes(
        &mut self,
        objects: &dyn ObjectStore,
        seq: u64,
        lines: &[u8],
    ) -> Result<(), PipelineError> {
        if lines.is_empty() {
            return Ok(());
        }
        let (_, body) = self.open.get_or_insert_with(|| (seq, Vec::new()));
        body.extend_from_slice(lines);
        if body.len() >= self.max_bytes {
            self.write_open(objects).await?;
        }
        Ok(())
    }

    async fn write_open(&mut self, objects: &dyn ObjectStore) -> Result<(), PipelineError> {
        if let Some((seq, body)) = self.open.take() {
            let key = self.out.outputs_key(seq);
            objects.put(&self.out.bucket, &key, body).await?;
            self.written.push(key);
        }
        Ok(())
    }

    /// Writes the last file; the keys of them all, in order.
    async fn finish(mut self, objects: &dyn ObjectStore) -> Result<Vec<String>, PipelineError> {
        self.write_open(objects).await?;
        Ok(self.written)
    }
}

/// The manifest of `record`'s job (without outputs: only a finalizing that succeeds has them).
fn manifest(
    record: &JobRecord,
    out: &OutputLocation,
    status: TerminalStatus,
    items: ItemCounts,
    batches: u64,
    error: Option<String>,
) -> Manifest {
    let spec = &record.job.spec;
    Manifest {
        job_id: record.job.job_id.clone(),
        status,
        items,
        batches: BatchCounts { total: batches },
        result: out.result_key(),
        failures: out.failures_key(),
        outputs: Vec::new(),
        map_results: None,
        bucket: out.bucket.clone(),
        processor: spec.processor.clone(),
        tolerated_failure_count: record.tolerance().count,
        tolerated_failure_percentage: record.tolerance().percentage,
        redrives: record.redrives,
        error,
        usage: None,
    }
}

/// The manifest of a job whose finalizing failed for good: FAILED, the counters as recorded, the reason.
async fn write_failure(
    deps: &Deps,
    record: &JobRecord,
    out: &OutputLocation,
    error: &PipelineError,
) -> Result<(Manifest, Usage), PipelineError> {
    let progress = deps.jobs.progress(&record.job.job_id).await?;
    let items = ItemCounts {
        total: progress.succeeded + progress.failed,
        succeeded: progress.succeeded,
        failed: progress.failed,
    };
    let batches = record.listing.map_or(progress.batches_done, |l| l.batches);
    let manifest = manifest(
        record,
        out,
        TerminalStatus::Failed,
        items,
        batches,
        Some(error.to_string()),
    );
    write_manifest(deps, out, manifest, progress.usage).await
}

/// The failures that stand in the records of the job's runs before its current redrive (batches below
/// `below` of an earlier generation): the items a redrive's redo pass runs again. The same whenever the pass
/// resumes: those records no longer change (a batch of an earlier run is dropped, not processed).
pub(crate) async fn standing_failures(
    deps: &Deps,
    record: &JobRecord,
    below: u64,
) -> Result<LiveFailures, PipelineError> {
    let job_id = record.job.job_id.as_str();
    let out = OutputLocation::for_job(&record.job);
    let mut live = LiveFailures::default();
    for from in (0..below).step_by(RECORDS_PER_PAGE) {
        let to = (from + RECORDS_PER_PAGE as u64).min(below);
        let records = deps.jobs.batch_records(job_id, from, to).await?;
        let records = records
            .into_iter()
            .filter(|(_, r)| r.generation < record.redrives && (r.failed > 0 || r.redone > 0))
            .collect();
        let mut parts = read_parts(deps, &out, job_id, records);
        while let Some(part) = parts.try_next().await? {
            live.add(&part);
        }
    }
    tracing::info!(
        job_id,
        items = live.len(),
        "failures standing before the redrive"
    );
    Ok(live)
}

/// Reads (from the record, or its object) and checks one part against its batch record. Owns its inputs so the
/// future is `'static`.
pub(crate) async fn read_part(
    objects: Arc<dyn ObjectStore>,
    bucket: String,
    job_id: String,
    seq: u64,
    batch: BatchRecord,
) -> Result<BatchPart, PipelineError> {
    let body = match &batch.part {
        PartRef::Inline(json) => json.as_bytes().to_vec(),
        PartRef::Object(key) => read_all(objects.as_ref(), &bucket, key).await?,
    };
    let inconsistent = |message: String| PipelineError::Inconsistent {
        job_id: job_id.clone(),
        message,
    };
    let part: BatchPart = serde_json::from_slice(&body)
        .map_err(|e| inconsistent(format!("{} is unreadable: {e}", batch.part.describe(seq))))?;
    // An output line per succeeded item at most: more would be lines of items that did not count.
    if part.seq != seq
        || part.succeeded != batch.succeeded
        || part.failed != batch.failed
        || part.outputs.len() as u64 > part.succeeded
        || part.redone.len() as u64 != batch.redone
    {
        return Err(inconsistent(format!(
            "{} disagrees with its batch record",
            batch.part.describe(seq)
        )));
    }
    Ok(part)
}
