//! The worker: processes one batch message (one SQS message = one batch), then records the batch, with its
//! partial result, exactly once.
//!
//! A small part travels in the batch's record (no object to write, none to read back); a larger one is written
//! as an object, under a key of its attempt's own, before the record that names it. The two halves are
//! separate functions because a crash can fall between them.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::Deps;
use crate::completion::{Completion, complete_after_record};
use crate::error::PipelineError;
use crate::message::BatchMessage;
use crate::outcome::{BatchPart, FailedItem, OutputLine};
use std::sync::Arc;

use crate::function::{self, FunctionConfig, MAX_REQUEUES};
use crate::ports::{
    BatchRecord, JobRecord, ObjectStore, OutgoingMessage, PartRef, RecordOutcome, Recorded,
    StoreError, require_job, send_all_with_retry,
};
use crate::processor::{Aggregate, BatchItem, FoldError, Item, ItemError, Processed};
use crate::spec::ProcessorSpec;

/// Messages the worker function handles at once within one invocation (`lambda::worker`). They share the invocation's `item_concurrency`, so the
/// GETs in flight per invocation never exceed it whatever the event source mapping's batch size: with the
/// mapping's MaximumConcurrency, that is what bounds the request rate on the input prefix.
pub const MESSAGE_CONCURRENCY: usize = 4;

/// The item concurrency each message of an invocation gets: its share of the invocation's, at least one.
pub fn message_item_concurrency(item_concurrency: usize) -> usize {
    (item_concurrency / MESSAGE_CONCURRENCY).max(1)
}

/// The rounds in which an invocation of `messages` handles them, [`MESSAGE_CONCURRENCY`] at a time.
pub fn invocation_rounds(messages: u64) -> u64 {
    messages.div_ceil(MESSAGE_CONCURRENCY as u64)
}

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Objects read and processed at once within one batch.
    pub item_concurrency: usize,
    /// How a user's function's throttling is waited out (the `lambda` processor).
    pub functions: FunctionConfig,
    /// A part of up to this many bytes of JSON travels in the batch's record; a larger one is an object.
    pub inline_part_bytes: usize,
    /// For a job with `max_concurrency`: how long a batch's concurrency slot is leased (longer than a worker
    /// can run: a lease only ends this way when its worker died), and how long a worker waits for a slot
    /// before it sends the batch back to the queue and moves on.
    pub slot_lease: Duration,
    pub slot_wait: Duration,
}

/// The default [`WorkerConfig::inline_part_bytes`]. Up to 8 KiB a part in the record (one DynamoDB write unit
/// per KiB, $0.625 per million) costs no more than an object's PUT ($5 per million) and is read back for less
/// than its GET; past it, the object is cheaper. DynamoDB's item limit (400 KB) is far above.
pub const INLINE_PART_BYTES: usize = 8 * 1024;

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            item_concurrency: 8,
            functions: FunctionConfig::default(),
            inline_part_bytes: INLINE_PART_BYTES,
            slot_lease: Duration::from_secs(15 * 60),
            slot_wait: Duration::from_secs(10),
        }
    }
}

/// What handling a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub record: BatchRecord,
    pub outcome: RecordOutcome,
    pub completion: Completion,
}

impl Handled {
    /// A delivery that counted nothing: a batch dropped, sent back to the queue, or past the listing's total.
    const NOTHING: Self = Self {
        record: BatchRecord {
            succeeded: 0,
            failed: 0,
            part: PartRef::Inline(String::new()),
            items_digest: String::new(),
            generation: 0,
            redone: 0,
        },
        outcome: RecordOutcome::Duplicate,
        completion: Completion::NotYet,
    };
}

/// Parses a work-queue message body.
pub fn parse_message(body: &str) -> Result<BatchMessage, PipelineError> {
    BatchMessage::from_body(body).map_err(|e| PipelineError::MalformedMessage(e.to_string()))
}

/// Processes and records one batch. An `Err` is transient: leave the message for redelivery.
///
/// A batch recorded before (a redelivery whose acknowledgement was lost, a duplicate delivery) is not processed
/// again: what counts is what its record says, and processing it would only cost the reads (and, for `lambda`,
/// the user's function). The record is still made again (it counts a marker that a crash left uncounted, once)
/// and the completion check still runs, in case the recording attempt died before it.
///
/// Both reads before processing may be a moment old, at half the price: a stale job read misses listing totals
/// (the completion check reads again when it needs them, and a batch past the total that gets through is never
/// finalized), and a stale marker read only means processing a batch whose record then stands.
pub async fn handle(
    deps: &Deps,
    config: WorkerConfig,
    message: &BatchMessage,
) -> Result<Handled, PipelineError> {
    crate::usage::scoped(&message.job_id, handle_batch(deps, config, message)).await
}

async fn handle_batch(
    deps: &Deps,
    config: WorkerConfig,
    message: &BatchMessage,
) -> Result<Handled, PipelineError> {
    let (job_id, seq) = (&message.job_id, message.seq);
    // A batch at or past the total of a complete listing was cut by an earlier pass of a listing that has
    // changed since (the coordinator died between sending and its checkpoint): it must never count.
    // A job created a moment ago may not show in a stale read yet: then read again, strongly.
    // So may one of a batch sent by a redrive (of a later generation than the read shows): read strongly, or
    // the redriven job would look ended and its batch be dropped.
    let job = match deps.jobs.peek_job(job_id).await? {
        Some(job) if message.generation <= job.redrives => job,
        _ => require_job(deps.jobs.as_ref(), job_id).await?,
    };
    // An aborted job's batches are dropped unprocessed (a stale read only lets through a batch that was in
    // flight at the abort anyway: the job's end waits for those), and so are those of a run before the job's
    // redrive (the redrive sent again those it needs).
    if job.abort_requested() || job.status.is_terminal() || message.generation < job.redrives {
        return Ok(dropped(message));
    }
    if let Some(totals) = job.listing
        && seq >= totals.batches
    {
        tracing::warn!(batch_id = %message.batch_id(), total = totals.batches, "batch past the listing's total; not counted");
        return Ok(Handled::NOTHING);
    }
    let record = match deps.jobs.peek_batch_record(job_id, seq).await? {
        Some(stored) => {
            tracing::info!(batch_id = %message.batch_id(), "batch was already recorded; not processed again");
            stored
        }
        None => {
            // A job with `max_concurrency` processes a batch only in one of its slots.
            let slot = match job.max_concurrency() {
                None => None,
                Some(max) => match take_slot(deps, config, job_id, max).await? {
                    Slot::Taken(slot, holder) => Some((slot, holder)),
                    Slot::Unlimited => None,
                    Slot::Busy => {
                        return requeue(deps, message, "no concurrency slot free", false).await;
                    }
                    Slot::Aborted => return Ok(dropped(message)),
                },
            };
            let processed = process(deps, config, message).await;
            if let Some((slot, holder)) = slot
                && let Err(e) = deps.jobs.release_slot(job_id, slot, &holder).await
            {
                // The lease ends on its own; until then the job runs one batch short of its limit.
                tracing::warn!(batch_id = %message.batch_id(), slot, error = %e, "could not give back a concurrency slot");
            }
            match processed {
                Err(PipelineError::Function { error, .. })
                    if error.is_transient() && message.requeued < MAX_REQUEUES =>
                {
                    let why = format!("function throttled: {error}");
                    return requeue(deps, message, &why, true).await;
                }
                record => record?,
            }
        }
    };
    let (recorded, completion) = record_done(deps, &job, message, &record).await?;
    Ok(Handled {
        record: recorded.record,
        outcome: recorded.outcome,
        completion,
    })
}

/// What waiting for a concurrency slot came to.
enum Slot {
    /// This slot, leased to this holder.
    Taken(u32, String),
    /// The limit was lifted while waiting.
    Unlimited,
    /// Every slot stayed taken.
    Busy,
    /// The job was aborted while waiting.
    Aborted,
}

/// Waits up to [`WorkerConfig::slot_wait`] for one of the job's concurrency slots, reading the job again as it
/// waits (`dmap update` may change the limit, `dmap abort` end the job).
async fn take_slot(
    deps: &Deps,
    config: WorkerConfig,
    job_id: &str,
    mut max: u32,
) -> Result<Slot, PipelineError> {
    let holder = uuid::Uuid::new_v4().simple().to_string();
    let deadline = tokio::time::Instant::now() + config.slot_wait;
    let mut pause = Duration::from_millis(10);
    let mut waited = false;
    loop {
        let now = crate::clock::now_ms();
        let until = now + config.slot_lease.as_millis() as u64;
        if let Some(slot) = deps
            .jobs
            .acquire_slot(job_id, max, &holder, now, until)
            .await?
        {
            // An abort while this worker waited: the batch is no longer in flight.
            if waited
                && deps
                    .jobs
                    .peek_job(job_id)
                    .await?
                    .is_some_and(|job| job.abort_requested() || job.status.is_terminal())
            {
                deps.jobs.release_slot(job_id, slot, &holder).await?;
                return Ok(Slot::Aborted);
            }
            return Ok(Slot::Taken(slot, holder));
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Ok(Slot::Busy);
        }
        tokio::time::sleep(pause).await;
        waited = true;
        pause = (pause * 2).min(Duration::from_millis(500));
        match deps.jobs.peek_job(job_id).await? {
            Some(job) if job.abort_requested() || job.status.is_terminal() => {
                return Ok(Slot::Aborted);
            }
            Some(job) => match job.max_concurrency() {
                Some(now_max) => max = now_max,
                None => return Ok(Slot::Unlimited),
            },
            None => {} // a read a moment old, of a job just created: wait on
        }
    }
}

/// Drops a batch of a job aborted or ended, unprocessed.
fn dropped(message: &BatchMessage) -> Handled {
    tracing::info!(batch_id = %message.batch_id(), "job aborted or ended; batch dropped");
    Handled::NOTHING
}

/// Sends the batch again, as a fresh message, and lets this delivery succeed: the queue's redelivery would
/// spend one of the message's receives, and dead-letter in the end items that never ran. For a function
/// Lambda kept throttling (`throttled`: counted, up to [`MAX_REQUEUES`]) or a job whose concurrency slots
/// stayed taken. Nothing is counted; a duplicate of the batch is absorbed by its record as always.
async fn requeue(
    deps: &Deps,
    message: &BatchMessage,
    why: &str,
    throttled: bool,
) -> Result<Handled, PipelineError> {
    let again = BatchMessage {
        requeued: message.requeued + u32::from(throttled),
        ..message.clone()
    };
    tracing::warn!(batch_id = %message.batch_id(), requeued = again.requeued, why, "batch sent again");
    send_all_with_retry(
        deps.work_queue.as_ref(),
        vec![OutgoingMessage {
            id: format!("b{}", message.seq),
            body: again.to_body(),
            group: Some(message.job_id.clone()),
        }],
    )
    .await?;
    Ok(Handled::NOTHING)
}

/// The record of `message`'s batch for its part (as [`BatchMessage::with_redone`] made it), stored at
/// `part_ref`: a redo batch's record says how many earlier failures it takes back.
pub(crate) fn record_of(
    message: &BatchMessage,
    part: &BatchPart,
    part_ref: PartRef,
) -> BatchRecord {
    BatchRecord {
        succeeded: part.succeeded,
        failed: part.failed,
        part: part_ref,
        items_digest: message.items_digest(),
        generation: message.generation,
        redone: part.redone.len() as u64,
    }
}

enum ItemOutcome {
    Done(Processed<Aggregate>),
    Failed(String),
}

/// Processes the batch (each item through the processor, or the whole batch through the user's function, for
/// the `lambda` processor) and stores its part: in the record when small, else as an object under a key of
/// this attempt's own (a concurrent duplicate writes its own; the record names the one that counts).
pub async fn process(
    deps: &Deps,
    config: WorkerConfig,
    message: &BatchMessage,
) -> Result<BatchRecord, PipelineError> {
    let part = compute(deps, config, message).await?;
    let part_ref = store_part(
        deps,
        config.inline_part_bytes,
        &message.output.bucket,
        &part,
        || {
            let attempt = uuid::Uuid::new_v4().simple().to_string();
            message
                .output
                .part_key(message.seq, &attempt[..crate::layout::ATTEMPT_DIGITS])
        },
    )
    .await?;
    Ok(record_of(message, &part, part_ref))
}

/// The batch's part: what [`process`] stores, computed and kept (`dmap plan` times a sample of batches with
/// it, writing nothing).
pub async fn compute(
    deps: &Deps,
    config: WorkerConfig,
    message: &BatchMessage,
) -> Result<BatchPart, PipelineError> {
    Ok(message.with_redone(match message.processor.lambda() {
        Some(lambda) => function::process_batch(deps, config.functions, lambda, message).await?,
        None => process_items(deps, config, message).await?,
    }))
}

/// Processes every item of the batch. Items that fail for good (bad data, object gone or refused by the store)
/// become failed items; a transient error (throttling, a read cut short) fails the whole call.
async fn process_items(
    deps: &Deps,
    config: WorkerConfig,
    message: &BatchMessage,
) -> Result<BatchPart, PipelineError> {
    if message
        .items
        .iter()
        .all(|item| matches!(item, BatchItem::Value(_) | BatchItem::Failed(_)))
    {
        return Ok(fold_values(message));
    }
    let (objects, bucket, processor) = (&deps.objects, &message.bucket, &message.processor);
    let done = process_small_objects(deps, message).await?;
    let outcomes: Vec<ItemOutcome> =
        futures::stream::iter(message.items.clone().into_iter().zip(done))
            .map(|(item, done)| {
                let (objects, bucket, processor) =
                    (objects.clone(), bucket.clone(), processor.clone());
                async move {
                    match (item, done) {
                        (_, Some(outcome)) => Ok(outcome),
                        (BatchItem::Failed(failed), None) => Ok(ItemOutcome::Failed(failed.error)),
                        (item, None) => {
                            let size = item.size();
                            let key = item.key().to_owned();
                            process_item_with_retry(objects, bucket, processor, key, size).await
                        }
                    }
                }
            })
            .buffered(config.item_concurrency.max(1))
            .try_collect()
            .await?;
    let mut result = message.processor.empty();
    let mut failures = Vec::new();
    let mut outputs = Vec::new();
    for (item, outcome) in message.items.iter().zip(outcomes) {
        let key = item.key();
        match outcome {
            // An item whose result cannot be added to the batch's (a sum that overflows) fails alone: the
            // merge is all or nothing, and retrying the batch would overflow again. Its output goes with it:
            // only succeeded items have one.
            ItemOutcome::Done(processed) => match result.merge(processed.result) {
                Ok(()) => outputs.extend(processed.output.map(|output| OutputLine {
                    key: key.to_owned(),
                    output,
                })),
                Err(e) => failures.push(FailedItem {
                    key: key.to_owned(),
                    error: format!("\"{key}\": {e}"),
                }),
            },
            ItemOutcome::Failed(error) => failures.push(FailedItem {
                key: key.to_owned(),
                error,
            }),
        }
    }
    Ok(part_of(message, result, failures, outputs))
}

/// The objects of the batch that the store reads whole for less than one at a time
/// ([`ObjectStore::read_small`]: small files on a local disk), read and processed [`SMALL_OBJECTS_AT_ONCE`] at a
/// time, each group in one blocking step of processing. The outcomes by item; `None` for the items left to the
/// one-by-one path (larger objects, other items, every object of a store that reads one at a time, and any
/// whose read failed: that path retries, or words the failure).
async fn process_small_objects(
    deps: &Deps,
    message: &BatchMessage,
) -> Result<Vec<Option<ItemOutcome>>, PipelineError> {
    let mut done: Vec<Option<ItemOutcome>> = message.items.iter().map(|_| None).collect();
    let objects: Vec<usize> = message
        .items
        .iter()
        .enumerate()
        .filter(|(_, item)| match item {
            BatchItem::Key(_) => true,
            BatchItem::Object(object) => object.size <= SMALL_OBJECT_BYTES,
            BatchItem::Value(_) | BatchItem::Failed(_) => false,
        })
        .map(|(i, _)| i)
        .collect();
    for group in objects.chunks(SMALL_OBJECTS_AT_ONCE) {
        let keys: Vec<String> = group
            .iter()
            .map(|&i| message.items[i].key().to_owned())
            .collect();
        let reads = deps
            .objects
            .read_small(&message.bucket, &keys, SMALL_OBJECT_BYTES)
            .await;
        let read: Vec<(usize, String, Vec<u8>)> = group
            .iter()
            .zip(keys)
            .zip(reads)
            .filter_map(|((&i, key), read)| Some((i, key, read?.ok()?)))
            .collect();
        if read.is_empty() {
            continue;
        }
        let processor = message.processor.clone();
        let processed = tokio::task::spawn_blocking(move || {
            read.into_iter()
                .map(|(i, key, bytes)| {
                    let processed = processor.process(Item::Object {
                        key: &key,
                        size: Some(bytes.len() as u64),
                        body: &mut bytes.as_slice(),
                    });
                    (i, processed)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (i, processed) in processed {
            done[i] = Some(outcome(processed)?);
        }
    }
    Ok(done)
}

/// Processes a batch of values (rows, JSON values, table items: nothing to read) in one pass, each folded
/// straight into the batch's result.
fn fold_values(message: &BatchMessage) -> BatchPart {
    let mut result = message.processor.empty();
    let (mut failures, mut outputs) = (Vec::new(), Vec::new());
    for item in &message.items {
        let value = match item {
            BatchItem::Value(value) => value,
            BatchItem::Failed(failed) => {
                failures.push(FailedItem {
                    key: failed.id.clone(),
                    error: failed.error.clone(),
                });
                continue;
            }
            _ => unreachable!("only values are folded"),
        };
        let folded = result.fold(
            &message.processor,
            Item::Value {
                id: &value.id,
                json: &value.value,
            },
        );
        match folded {
            Ok(output) => outputs.extend(output.map(|output| OutputLine {
                key: value.id.clone(),
                output,
            })),
            // A value is read already: even a "read" error is about the value itself, and fails it alone.
            Err(e) => failures.push(FailedItem {
                key: value.id.clone(),
                error: match e {
                    FoldError::Merge(e) => format!("\"{}\": {e}", value.id),
                    FoldError::Item(e) => e.to_string(),
                },
            }),
        }
    }
    part_of(message, result, failures, outputs)
}

/// The part of a batch processed item by item: every item not failed succeeded.
fn part_of(
    message: &BatchMessage,
    result: Aggregate,
    failures: Vec<FailedItem>,
    outputs: Vec<OutputLine>,
) -> BatchPart {
    let failed = failures.len() as u64;
    BatchPart {
        job_id: message.job_id.clone(),
        seq: message.seq,
        succeeded: message.items.len() as u64 - failed,
        failed,
        result,
        failures,
        outputs,
        execution: None,
        redone: Vec::new(),
    }
}

/// A batch part as JSON: kept for the record when it is at most `inline_bytes`, else written to `bucket` under
/// `key()`.
pub(crate) async fn store_part(
    deps: &Deps,
    inline_bytes: usize,
    bucket: &str,
    part: &BatchPart,
    key: impl FnOnce() -> String,
) -> Result<PartRef, PipelineError> {
    let json = serde_json::to_string(part).expect("a batch part always serializes");
    if json.len() <= inline_bytes {
        return Ok(PartRef::Inline(json));
    }
    let key = key();
    deps.objects.put(bucket, &key, json.into_bytes()).await?;
    Ok(PartRef::Object(key))
}

/// Attempts at one item whose read fails transiently (throttling, a connection cut midway), with jittered
/// exponential backoff, before the whole batch is left for redelivery.
const ITEM_ATTEMPTS: u32 = 3;

/// Processes one item, retrying a transient failure of that item alone: one throttled GET must not send 99
/// good items back through the queue.
async fn process_item_with_retry(
    objects: Arc<dyn ObjectStore>,
    bucket: String,
    processor: ProcessorSpec,
    key: String,
    size: Option<u64>,
) -> Result<ItemOutcome, PipelineError> {
    let mut delay = Duration::from_millis(50);
    for attempt in 1.. {
        let read = process_item(
            objects.clone(),
            bucket.clone(),
            processor.clone(),
            key.clone(),
            size,
        );
        // A read started again repeats requests the item needed once: counted as retries, so that the
        // requests a job sends stay the ones `dmap plan` predicts.
        let read = if attempt == 1 {
            read.await
        } else {
            crate::usage::repeat(read).await
        };
        match read {
            Err(e) if e.is_transient() && attempt < ITEM_ATTEMPTS => {
                tracing::debug!(key, attempt, error = %e, "item read failed; retrying it");
                let jitter = rand::random_range(0.5..1.5);
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay *= 4;
            }
            outcome => return outcome,
        }
    }
    unreachable!("the loop returns")
}

/// An object of at most this size may be read whole into memory, with others as small
/// ([`process_small_objects`]).
const SMALL_OBJECT_BYTES: u64 = 64 * 1024;
/// Small objects read and processed at once: at most 2 MiB in memory per batch.
const SMALL_OBJECTS_AT_ONCE: usize = 32;

/// Owns its inputs so that the future is `'static` (a stream of borrowing futures inside a spawned task trips
/// the compiler's higher-ranked lifetime checks).
async fn process_item(
    objects: Arc<dyn ObjectStore>,
    bucket: String,
    processor: ProcessorSpec,
    key: String,
    size: Option<u64>,
) -> Result<ItemOutcome, PipelineError> {
    let mut body = match objects.get(&bucket, &key).await {
        Ok(body) => body,
        Err(e) => return unreadable(&key, e),
    };
    let processed = tokio::task::spawn_blocking(move || {
        processor.process(Item::Object {
            key: &key,
            size,
            body: &mut body,
        })
    })
    .await?;
    outcome(processed)
}

/// What a failed read of an item makes of it: a failed item when the store refuses it for good, else a
/// transient error that leaves the batch for redelivery.
fn unreadable(key: &str, error: StoreError) -> Result<ItemOutcome, PipelineError> {
    match error {
        e @ (StoreError::NotFound { .. } | StoreError::NoSuchBucket { .. }) => Ok(
            ItemOutcome::Failed(format!("\"{key}\": {e} (it was listed, then removed)")),
        ),
        // Refused for good (access, encryption key, archived): the same read would be refused again.
        e @ (StoreError::InvalidKey { .. } | StoreError::Denied { .. }) => {
            Ok(ItemOutcome::Failed(e.to_string()))
        }
        e => Err(e.into()),
    }
}

/// What a processor's answer for one item makes of it: done, failed for good, or a transient error that
/// leaves the batch for redelivery.
fn outcome(
    processed: Result<Processed<Aggregate>, ItemError>,
) -> Result<ItemOutcome, PipelineError> {
    match processed {
        Ok(processed) => Ok(ItemOutcome::Done(processed)),
        Err(ItemError::Invalid(error)) => Ok(ItemOutcome::Failed(error)),
        Err(ItemError::Read { key, source }) => Err(StoreError::Other(Box::new(
            std::io::Error::new(source.kind(), format!("reading \"{key}\": {source}")),
        ))
        .into()),
    }
}

/// A batch whose record counted other items than this message carries was sent twice with different items:
/// the items under the reader changed while they were listed. The first version stands; the job is flagged,
/// and ends FAILED saying so, since it can no longer be exact.
async fn check_items(
    deps: &Deps,
    message: &BatchMessage,
    recorded: &BatchRecord,
) -> Result<(), PipelineError> {
    if recorded.items_digest.is_empty() || recorded.items_digest == message.items_digest() {
        return Ok(());
    }
    tracing::error!(batch_id = %message.batch_id(), "batch sent again with other items: the input changed while it was listed");
    deps.jobs
        .flag_input_changed(&message.job_id, message.seq)
        .await?;
    Ok(())
}

/// Counts the batch (once, however often this runs) and checks whether the job is complete. `job` is the job's
/// record as read before (its listing totals, if it had them, save a read).
pub async fn record_done(
    deps: &Deps,
    job: &JobRecord,
    message: &BatchMessage,
    record: &BatchRecord,
) -> Result<(Recorded, Completion), PipelineError> {
    // What this process sent for the job rides on the record; kept for the next write when this one does
    // not count it.
    let usage = deps.usage.take(&message.job_id);
    let recorded = deps
        .jobs
        .record_batch(&message.job_id, message.seq, record, &usage)
        .await;
    if !matches!(&recorded, Ok(r) if r.outcome == RecordOutcome::Recorded) {
        deps.usage.put_back(&message.job_id, usage);
    }
    let recorded = recorded?;
    if recorded.outcome == RecordOutcome::Duplicate {
        tracing::info!(batch_id = %message.batch_id(), "batch was already recorded");
    }
    check_items(deps, message, &recorded.record).await?;
    let completion = complete_after_record(deps, job, &recorded).await?;
    Ok((recorded, completion))
}
