//! `dmap plan`: what a job will take on AWS, before it runs. It writes nothing and sends nothing (but the
//! sample batches of a `lambda` processor, to its function).
//!
//! - **Census** ([`census`]): the job's own reader reads every item from the start, and the coordinator's
//!   own batching cuts them, page by page, as a run lists them in one stream. So the items, the pages, the
//!   batches and the SendMessageBatch calls are counted, not estimated. The census reads through counting
//!   wrappers, so the reader's requests are counted too ([`counting`]). A listing longer than
//!   [`PlanOptions::max_pages`] stops there (or at the first page past it that selects an item). The rest is
//!   extrapolated from where the last page's first key stands in the key span ([`crate::parallel_listing::share_reached`]), and the plan says so.
//! - **Sample** (`--sample N`): the first batches holding N items are processed for real by the worker's
//!   own code ([`crate::worker::compute`]), and nothing is stored. They give the time a batch takes, and the
//!   sizes of its part and output lines.
//! - **Requests**: what the pipeline sends for those pages and batches, operation by operation, from how the
//!   coordinator, the workers and the finalizer are written. Each count is marked exact (a fixed function of
//!   the census) or estimated (timing decides it: completion checks, the mapping's polls).
//! - **Cost** at list prices ([`crate::usage::Prices`]), and **time**: the [`model::timeline`] of the run on
//!   the stack's settings ([`model::Deployment`]), with the phase that bounds it.

pub mod counting;
pub mod model;

use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

use serde::Serialize;

use crate::Deps;
use crate::batching::{Batch, BatchLimits, Batcher};
use crate::coordinator::{Sending, batch_messages, batch_page};
use crate::error::PipelineError;
use crate::message::BatchMessage;
use crate::ports::queue::SendCalls;
use crate::processor::ItemKind;
use crate::reader;
use crate::spec::{ItemReader, Job};
use crate::usage::Prices;
use crate::worker::{INLINE_PART_BYTES, WorkerConfig, invocation_rounds, message_item_concurrency};
use counting::{CountingStore, CountingTables, Tally};
pub use model::{Bottleneck, Deployment, Model, Timeline, Workload};

use crate::aws::GROUP_BATCHES;
use crate::finalizer::{FinalizerConfig, PART_READ_CONCURRENCY, RECORDS_PER_PAGE, tree_ranges};

/// How `dmap plan` plans.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// The listing pages the census reads before it extrapolates (an `s3_list` listing; other readers are
    /// read to their end).
    pub max_pages: u64,
    /// Items of the first batches processed for real, to time a batch (0: none; the model's latencies then
    /// stand in).
    pub sample_items: u64,
    /// Whether the sample's reads crossed a network, as a worker's do: else (a local directory) the model's
    /// S3 latency is added to each object read.
    pub remote_reads: bool,
    /// Counter shards of the job's table (`CounterShards`).
    pub counter_shards: u32,
    pub deployment: Deployment,
    pub model: Model,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            max_pages: 10_000,
            sample_items: 0,
            remote_reads: false,
            counter_shards: 16,
            deployment: Deployment::default(),
            model: Model::AWS,
        }
    }
}

/// The job's items as its reader and batcher see them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Census {
    pub items: u64,
    pub batches: u64,
    /// Reads of the reader (ListObjectsV2 pages for `s3_list`).
    pub pages: u64,
    /// SendMessageBatch calls that send the batches, page by page.
    pub send_calls: u64,
    /// The checkpoints a one-stream listing saves: one a page that moves it (one that completes a batch, or
    /// leaves none pending).
    pub checkpoints: u64,
    /// The key ranges a listing on the stack splits into after its first page (0: one stream; 1: a split
    /// that found nothing, after which the coordinator reads on from its checkpoint). Its pages are then
    /// about one more a range, and how they group depends on when they arrive.
    pub ranges: u64,
    /// The split's requests as the listing waits for them: rounds of requests sent at once, one after the
    /// other, before the ranges are listed.
    pub split_rounds: u64,
    /// The items of the split's longest range (0: no split, or an extrapolated listing, whose later ranges
    /// the census never reached): the range listed last bounds the listing.
    pub longest_range_items: u64,
    /// The bytes of the objects listed (for an `s3_list` reader; the ones its filters leave out included),
    /// for the time the workers take to read them.
    pub object_bytes: u64,
    /// The reader's own requests (its checks before the job is created included).
    pub reads: BTreeMap<String, u64>,
    /// Set when the listing was longer than the census read: the figures above are then scaled up from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extrapolated: Option<Extrapolation>,
}

/// How a census too long to read whole was scaled up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extrapolation {
    pub items_read: u64,
    pub pages_read: u64,
    /// The share of the key span from the first key to `reached`, which holds the items before the last
    /// page read.
    pub share: f64,
    /// The last page's first key.
    pub reached: String,
}

/// What the sample's batches showed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub items: u64,
    pub batches: u64,
    /// Seconds one batch's processing took, on average (at a worker's per-message item concurrency).
    pub secs_per_batch: f64,
    /// Bytes of a batch's part as JSON, on average: parts over 8 KiB are objects (a PUT and a GET each).
    pub part_bytes: f64,
    /// The largest part's bytes.
    pub max_part_bytes: u64,
    /// Bytes of per-item output lines an item yields, on average.
    pub output_bytes_per_item: f64,
}

/// One operation's predicted requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestCount {
    pub count: u64,
    /// A fixed function of the census: a run sends exactly this many (or up to `most`, where two writers
    /// race for one claim and the loser's attempt is still a request).
    pub exact: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub most: Option<u64>,
    /// What they are.
    pub what: String,
}

/// Lambda's share.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LambdaEstimate {
    pub worker_invocations: u64,
    pub coordinator_invocations: u64,
    pub finalizer_invocations: u64,
    pub gb_seconds: f64,
}

/// A job's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub job_id: String,
    pub census: Census,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
    /// Requests by `Service.Operation` (as `dmap run --stats` names them).
    pub requests: BTreeMap<String, RequestCount>,
    pub lambda: LambdaEstimate,
    pub cost_usd: Cost,
    pub timeline: Timeline,
    pub deployment: Deployment,
    pub model: Model,
    /// Where the prices are from.
    pub prices: String,
}

/// The estimated cost, in US dollars.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    /// By service (S3, SQS, DynamoDB, Lambda).
    pub by_service: BTreeMap<String, f64>,
    pub total: f64,
}

/// Plans `job` (validated) against the backend of `deps`: reads its items, processes a sample, predicts.
pub async fn plan(deps: &Deps, job: &Job, options: &PlanOptions) -> Result<Plan, PipelineError> {
    let (census, sample_batches) = census(deps, job, options).await?;
    let sample = match sample_batches.is_empty() {
        true => None,
        false => Some(sample(deps, job, options, &sample_batches).await?),
    };
    Ok(predict(job, &census, sample, options, &Prices::from_env()))
}

/// Reads the job's items as a one-stream listing would, counting them, their batches and the requests it
/// takes, and keeps the first batches holding `sample_items` items.
pub async fn census(
    deps: &Deps,
    job: &Job,
    options: &PlanOptions,
) -> Result<(Census, Vec<Batch>), PipelineError> {
    let tally = Tally::default();
    let counted = Deps {
        objects: Arc::new(CountingStore {
            inner: deps.objects.clone(),
            tally: tally.clone(),
        }),
        tables: deps.tables.clone().map(|inner| {
            Arc::new(CountingTables {
                inner,
                tally: tally.clone(),
            }) as Arc<dyn crate::ports::TableReader>
        }),
        ..deps.clone()
    };
    crate::coordinator::preflight(&counted, job).await?;
    let mut source = reader::open(&counted, job, None).await?;
    let bucket = source.objects_bucket().map(str::to_owned);
    let mut batcher = Batcher::new(BatchLimits::for_job(&job.spec), 0);
    let mut census = Census {
        items: 0,
        batches: 0,
        pages: 0,
        send_calls: 0,
        checkpoints: 0,
        ranges: 0,
        split_rounds: 0,
        longest_range_items: 0,
        object_bytes: 0,
        reads: BTreeMap::new(),
        extrapolated: None,
    };
    let listing = match &job.spec.item_reader {
        ItemReader::S3List(reader) => Some(reader),
        _ => None,
    };
    // The keys that show the listing's alphabet, for an extrapolation: the first page's and the last's; and
    // the items before the last page.
    let (mut first_keys, mut last_keys): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut before_last;
    let mut kept: Vec<Batch> = Vec::new();
    let mut kept_items = 0;
    // The split's ranges (each by its last key) and the items counted in each.
    let (mut range_ends, mut range_items): (Vec<Option<String>>, Vec<u64>) =
        (Vec::new(), Vec::new());
    let parallelism = list_parallelism(job, &options.deployment);
    let objects = job.spec.item_reader.item_kind() == ItemKind::Object;
    loop {
        // Only the pages' own objects count toward the bytes the workers read (not the checks' or probes').
        tally.take_listed_bytes();
        let page = source.next_page().await?;
        if objects {
            census.object_bytes += tally.take_listed_bytes();
        }
        let last = page.last;
        census.pages += 1;
        before_last = census.items;
        census.items += page.items.len() as u64;
        // Each item past the split in its range: the first range whose last key is at or past it.
        for (item, _) in &page.items {
            let key = item.key();
            let range =
                range_ends.partition_point(|end| end.as_deref().is_some_and(|end| end < key));
            if let Some(items) = range_items.get_mut(range) {
                *items += 1;
            }
        }
        if listing.is_some() {
            let keys = page.items.iter().map(|(item, _)| item.key().to_owned());
            match census.pages {
                1 => first_keys = keys.collect(),
                _ => last_keys = keys.collect(),
            }
        }
        let end = page.end.as_ref().map(|p| p.encode());
        let batches = batch_page(&mut batcher, page, last);
        census.batches += batches.len() as u64;
        // Where the coordinator's checkpoint stands after the page, as `list_pass` moves it.
        let mut after = batches.last().map(|b| b.after.encode());
        if batcher.is_empty() && end.is_some() {
            after = end;
        }
        if !batches.is_empty() || (batcher.is_empty() && after.is_some()) {
            census.checkpoints += 1;
        }
        // The coordinator sends a page's batches in one send: its calls are counted per page.
        let mut calls = SendCalls::default();
        for message in batch_messages(job, bucket.as_deref(), &batches, Sending::default()) {
            calls.add(message.body.len());
        }
        census.send_calls += calls.calls;
        for batch in batches {
            if kept_items < options.sample_items {
                kept_items += batch.items.len() as u64;
                kept.push(batch);
            }
        }
        if last {
            break;
        }
        if let Some(reader) = listing.filter(|_| census.pages == 1 && parallelism > 1) {
            // As the coordinator splits, after the first page: its requests are the plan's too.
            let after = after.unwrap_or_default();
            let rounds = tally.listing_rounds();
            let ranges = crate::parallel_listing::split(
                counted.objects.as_ref(),
                reader,
                &after,
                parallelism as usize,
            )
            .await?;
            // With nothing to split, the coordinator reads on as one stream from its checkpoint (cutting its
            // batches anew from there): 1 stands for that.
            census.ranges = (ranges.len() as u64).max(1);
            census.split_rounds = tally.listing_rounds() - rounds;
            range_ends = ranges.into_iter().map(|r| r.upto).collect();
            range_items = vec![0; range_ends.len()];
        }
        if let Some(reader) = listing.filter(|_| census.pages >= options.max_pages) {
            // The items before the last page are those from the first key up to the last page's first key:
            // that key's place in the span is their share. (The last key read would undercount a listing of
            // folders: the last folder read is whole, but the span reaches only its first key.)
            let reached = (census.pages > 1)
                .then(|| last_keys.first().cloned())
                .flatten();
            // A page with no item selected gives no key: read on to one that does.
            let Some(reached) = reached else {
                continue;
            };
            let sample: Vec<&str> = first_keys
                .iter()
                .chain(&last_keys)
                .map(String::as_str)
                .collect();
            // The probes are the plan's own, not the run's: not counted.
            let share = crate::parallel_listing::share_reached(
                deps.objects.as_ref(),
                reader,
                &sample,
                &reached,
            )
            .await?
            .filter(|s| *s > 0.0 && *s < 1.0)
            .ok_or_else(|| {
                PipelineError::Refused(format!(
                    "the listing is longer than the {} pages the plan reads, and its keys show no \
                             span to extrapolate over; plan with a higher --max-pages",
                    options.max_pages
                ))
            })?;
            // At least what was read, whatever the estimate.
            let total = before_last as f64 / share;
            let ratio = (total / census.items as f64).max(1.0);
            let scale = |n: u64| (n as f64 * ratio).round() as u64;
            census.extrapolated = Some(Extrapolation {
                items_read: census.items,
                pages_read: census.pages,
                share,
                reached,
            });
            // The rest of the listing: its pages, batches and sends at the rate of those read.
            census.items = scale(census.items);
            census.batches = scale(census.batches);
            census.send_calls = scale(census.send_calls);
            census.checkpoints = scale(census.checkpoints);
            census.object_bytes = scale(census.object_bytes);
            let listed = census.pages;
            census.pages = scale(census.pages);
            let more = census.pages.saturating_sub(listed);
            tally.add("S3.ListObjectsV2", more);
            break;
        }
    }
    census.reads = tally.counts();
    if census.extrapolated.is_none() {
        census.longest_range_items = range_items.into_iter().max().unwrap_or(0);
    }
    Ok((census, kept))
}

/// The ranges the job's listing is listed in at once on the stack: the spec's `list_parallelism`, at most
/// the stack's; one for other readers.
fn list_parallelism(job: &Job, deployment: &Deployment) -> u32 {
    match &job.spec.item_reader {
        ItemReader::S3List(r) => r
            .list_parallelism
            .unwrap_or(deployment.list_parallelism)
            .min(deployment.list_parallelism),
        _ => 1,
    }
}

/// Processes the sample's batches one after the other with the worker's code, storing nothing.
async fn sample(
    deps: &Deps,
    job: &Job,
    options: &PlanOptions,
    batches: &[Batch],
) -> Result<Sample, PipelineError> {
    // A worker handles a few messages at once, which share its item concurrency (see `lambda::worker`).
    let config = WorkerConfig {
        item_concurrency: message_item_concurrency(options.deployment.item_concurrency as usize),
        ..WorkerConfig::default()
    };
    // Nothing the sample does may be written (a `lambda` batch whose function fails for good writes its error
    // object): the store drops puts.
    let deps = &Deps {
        objects: Arc::new(CountingStore {
            inner: deps.objects.clone(),
            tally: Tally::default(),
        }),
        ..deps.clone()
    };
    let (mut items, mut part_bytes, mut output_bytes, mut max_part_bytes) =
        (0u64, 0u64, 0u64, 0u64);
    // Tokio's clock: the wall clock, or under a paused clock (the scale model) the latencies the ports inject.
    let started = Instant::now();
    for batch in batches {
        let message = BatchMessage::new(job, batch.seq, batch.items.clone());
        let part = crate::worker::compute(deps, config, &message).await?;
        items += batch.items.len() as u64;
        let bytes = serde_json::to_vec(&part).map_or(0, |b| b.len() as u64);
        part_bytes += bytes;
        max_part_bytes = max_part_bytes.max(bytes);
        output_bytes += part
            .outputs
            .iter()
            .map(|line| serde_json::to_vec(line).map_or(0, |b| b.len() as u64 + 1))
            .sum::<u64>();
    }
    let n = batches.len() as f64;
    let mut secs_per_batch = started.elapsed().as_secs_f64() / n;
    let objects = job.spec.item_reader.item_kind() == ItemKind::Object
        && job.spec.processor.lambda().is_none();
    if objects && !options.remote_reads {
        // Each object's first byte from S3, a worker's share of the item concurrency at a time.
        secs_per_batch +=
            items as f64 / n * options.model.s3_request_secs / config.item_concurrency as f64;
    }
    Ok(Sample {
        items,
        batches: batches.len() as u64,
        secs_per_batch,
        part_bytes: part_bytes as f64 / n,
        max_part_bytes,
        output_bytes_per_item: output_bytes as f64 / items.max(1) as f64,
    })
}

/// The plan of a counted job.
pub fn predict(
    job: &Job,
    census: &Census,
    sample: Option<Sample>,
    options: &PlanOptions,
    prices: &Prices,
) -> Plan {
    let (model, deployment) = (&options.model, &options.deployment);
    let spec = &job.spec;
    let nb = census.batches;
    let objects = spec.item_reader.item_kind() == ItemKind::Object;
    let lambda_processor = spec.processor.lambda().is_some();
    let items_per_batch = census.items as f64 / nb.max(1) as f64;
    let message_concurrency = message_item_concurrency(deployment.item_concurrency as usize) as f64;
    // A batch's processing: the sample's, or each object's first byte and bytes at a worker's share.
    let batch_secs = match &sample {
        Some(sample) => sample.secs_per_batch,
        None if objects && !lambda_processor => {
            let bytes = census.object_bytes as f64 / census.items.max(1) as f64;
            items_per_batch * (model.s3_request_secs + bytes / model.s3_bytes_per_sec)
                / message_concurrency
        }
        None => 0.001 * items_per_batch,
    };
    // A batch's bookkeeping: two reads (the job, its marker), its marker, its group's count.
    let record_secs = 4.0 * model.dynamodb_request_secs;
    let per_invocation = deployment.worker_batch_size.max(1) as u64;
    let invocation_secs = invocation_rounds(per_invocation) as f64 * (batch_secs + record_secs)
        + model.sqs_request_secs;
    let large_parts = match &sample {
        Some(s) if s.part_bytes > INLINE_PART_BYTES as f64 => nb,
        _ => 0,
    };
    // Whether every part travels in its marker, as far as the sample shows: it covered every batch, or its
    // largest part was under half the limit (parts grow with their batch's items, which the sample's share).
    let parts_known = sample.as_ref().is_some_and(|s| {
        let limit = INLINE_PART_BYTES as u64;
        (s.batches == nb && s.max_part_bytes <= limit) || s.max_part_bytes * 2 <= limit
    });
    let output_bytes = sample
        .as_ref()
        .map_or(0.0, |s| s.output_bytes_per_item * census.items as f64);
    let output_file_bytes = FinalizerConfig::default().output_file_bytes as f64;
    let output_files = (output_bytes / output_file_bytes).ceil() as u64;
    // Reading `batches` records and their parts: a Query page per 1,000, and the parts not in their records,
    // PART_READ_CONCURRENCY at once.
    let merge_secs = |batches: u64| {
        batches.div_ceil(RECORDS_PER_PAGE as u64) as f64 * model.dynamodb_query_page_secs
            + if large_parts > 0 {
                batches as f64 * model.s3_request_secs / PART_READ_CONCURRENCY as f64
            } else {
                0.0
            }
    };
    let writes_secs = (output_files + 3) as f64 * model.s3_request_secs;
    let finalize_ranges = tree_ranges(job, nb, FinalizerConfig::default().range_batches);
    // The finalize's time end to end, and the finalizer's billed time (a tree's merges run side by side).
    let (finalize_secs, finalizer_billed_secs) = match finalize_ranges {
        None => (merge_secs(nb) + writes_secs, merge_secs(nb) + writes_secs),
        // A tree: the ranges' merges (each a full range at most, writing three objects), as many at once as
        // the finalize queue's mapping has ramped to, each wave started by a delivery; then the root, which
        // reads each range's result and lines in turn, and writes the job's files.
        Some(ranges) => {
            let range_batches = FinalizerConfig::default().range_batches;
            let range_work = merge_secs(range_batches.min(nb)) + 3.0 * model.s3_request_secs;
            let range_secs = model.finalize_trigger_secs + range_work;
            let (mut secs, mut left) = (0.0, ranges);
            while left > 0 {
                left = left.saturating_sub(model.esm_concurrency(secs, u32::MAX) as u64);
                secs += range_secs;
            }
            let root = 3.0 * ranges as f64 * model.s3_request_secs + writes_secs;
            (
                secs + model.finalize_trigger_secs + root,
                ranges as f64 * range_work + root,
            )
        }
    };
    let listing = matches!(spec.item_reader, ItemReader::S3List(_));
    let list_parallelism = list_parallelism(job, deployment);
    let split = census.ranges > 1;
    let deployment_used = Deployment {
        list_parallelism,
        ..*deployment
    };
    let timeline = model::timeline(
        model,
        &deployment_used,
        &Workload {
            batches: nb,
            pages: census.pages,
            listing,
            // The ranges the split found, at most the parallelism; one stream for a listing that did not split.
            streams: if split {
                (census.ranges as u32).min(list_parallelism)
            } else {
                1
            },
            split_rounds: if split { census.split_rounds } else { 0 },
            // The longest range's share of the pages, where the census counted it.
            range_rounds: (split && census.longest_range_items > 0).then(|| {
                (census.pages as f64 * census.longest_range_items as f64
                    / census.items.max(1) as f64)
                    .ceil() as u64
            }),
            invocation_secs,
            finalize_secs,
        },
    );
    let hops = timeline.coordinator_invocations;
    // The items are counted, not extrapolated.
    let counted = census.extrapolated.is_none();
    // And their batches are those a run cuts: one stream in one invocation (a split listing cuts each
    // group of pages apart, a hand-over cuts its partial batch).
    let exact_stream = census.ranges == 0 && hops == 1 && counted;
    // A split listing saves and logs each group of pages that arrive together: about one group a round of
    // its ranges.
    let groups = if split {
        1 + census
            .pages
            .saturating_sub(1)
            .div_ceil(list_parallelism as u64)
    } else {
        0
    };
    let checkpoints = if split {
        3 + groups
    } else {
        census.checkpoints
    } + (hops - 1);
    let completion_groups = nb.div_ceil(GROUP_BATCHES);
    let shards = options.counter_shards as u64;
    let worker_invocations = nb.div_ceil(deployment.worker_batch_size.max(1) as u64);

    let mut requests: BTreeMap<String, RequestCount> = BTreeMap::new();
    let mut put = |op: &str, count: u64, exact: bool, most: Option<u64>, what: &'static str| {
        // None of a kind that may be some: the operation's count is no longer exact.
        if count == 0
            && !exact
            && let Some(entry) = requests.get_mut(op)
        {
            entry.exact = false;
        }
        if count > 0 {
            let entry = requests.entry(op.to_owned()).or_insert(RequestCount {
                count: 0,
                exact: true,
                most: None,
                what: String::new(),
            });
            if !entry.what.is_empty() {
                entry.what.push_str("; ");
            }
            entry.what.push_str(what);
            entry.count += count;
            entry.exact &= exact;
            entry.most = match (entry.most, most) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(entry.count - count) + b.unwrap_or(count)),
            };
        }
    };
    let read_exact = counted && census.ranges == 0;
    for (op, n) in &census.reads {
        put(
            op,
            *n,
            read_exact,
            None,
            "the reader's reads, and its checks before the job is created",
        );
    }
    // Each range's last page is partial: a page more a range, about.
    put(
        "S3.ListObjectsV2",
        census.ranges.saturating_sub(1),
        census.ranges == 0,
        None,
        "the ranges' last pages",
    );
    if objects && !lambda_processor {
        put(
            "S3.GetObject",
            census.items,
            counted,
            None,
            "each object, read by its worker",
        );
    }
    put(
        "SQS.SendMessageBatch",
        census.send_calls,
        exact_stream,
        None,
        "the batches, ten a call",
    );
    put(
        "SQS.SendMessageBatch",
        1,
        true,
        None,
        "the finalizer's trigger",
    );
    put(
        "DynamoDB.PutItem",
        nb,
        exact_stream,
        None,
        "a marker per batch, its part inside",
    );
    put(
        "DynamoDB.PutItem",
        3,
        true,
        None,
        "the job, its index entry, its active entry",
    );
    put(
        "DynamoDB.PutItem",
        groups,
        !split,
        None,
        "a split listing's log of each group of pages",
    );
    put(
        "DynamoDB.UpdateItem",
        nb,
        exact_stream,
        None,
        "each batch's count, added to its group",
    );
    put(
        "DynamoDB.UpdateItem",
        checkpoints + 3,
        exact_stream,
        Some(checkpoints + 4),
        "checkpoints, the listing's totals, the completion claim, the finish",
    );
    put(
        "DynamoDB.DeleteItem",
        1,
        true,
        None,
        "the job's active entry",
    );
    put(
        "DynamoDB.GetItem (eventually consistent)",
        2 * nb,
        exact_stream,
        None,
        "each batch's reads of its job and its marker",
    );
    put(
        "DynamoDB.GetItem",
        5 + 2 * completion_groups + timeline.batches_done_listing,
        false,
        None,
        "the coordinator's and finalizer's reads; each group's last recorder's completion check; each \
         batch recorded while the listing runs, its read of whether it has ended",
    );
    put(
        "DynamoDB.Query",
        shards * (2 + completion_groups) + nb.div_ceil(RECORDS_PER_PAGE as u64) * shards.min(nb),
        false,
        None,
        "the counters (completion checks) and the finalizer's reads of the markers",
    );
    put(
        "S3.PutObject",
        3 + output_files,
        parts_known && output_files == 0,
        None,
        "result, failures, manifest, outputs",
    );
    put(
        "S3.PutObject",
        large_parts,
        parts_known && large_parts == 0,
        None,
        "parts over 8 KiB",
    );
    put(
        "S3.GetObject",
        large_parts,
        parts_known && large_parts == 0,
        None,
        "parts over 8 KiB, read by the finalizer",
    );
    if lambda_processor {
        put(
            "Lambda.Invoke",
            nb,
            exact_stream,
            None,
            "the user's function, a batch at a time",
        );
        put(
            "S3.PutObject",
            nb.div_ceil(1000).max(1),
            false,
            None,
            "map-results files",
        );
    }
    // The mappings' own requests, on the user's bill: a receive per invocation and a delete of its messages.
    put(
        "SQS.ReceiveMessage",
        worker_invocations + 1,
        false,
        None,
        "the mappings' receives that deliver (idle polls not counted)",
    );
    put(
        "SQS.DeleteMessageBatch",
        worker_invocations + 1,
        false,
        None,
        "the mappings' deletes",
    );
    put(
        "SQS.SendMessage",
        hops - 1,
        exact_stream,
        None,
        "the coordinator's hand-overs",
    );

    let lambda = LambdaEstimate {
        worker_invocations,
        coordinator_invocations: hops,
        // A tree's: the trigger that sends the merges, a merge per range, and the root.
        finalizer_invocations: finalize_ranges.map_or(1, |ranges| ranges + 2),
        gb_seconds: worker_invocations as f64
            * invocation_secs
            * deployment.worker_memory_mb as f64
            / 1024.0
            + timeline.listing_secs * deployment.coordinator_memory_mb as f64 / 1024.0
            + finalizer_billed_secs * deployment.finalizer_memory_mb as f64 / 1024.0,
    };
    let mut by_service: BTreeMap<String, f64> = BTreeMap::new();
    for (op, count) in &requests {
        let service = op.split_once('.').map_or(op.as_str(), |(s, _)| s);
        *by_service.entry(service.to_owned()).or_default() +=
            count.count as f64 * prices.per_request(op);
    }
    *by_service.entry("Lambda".into()).or_default() +=
        (lambda.worker_invocations + lambda.coordinator_invocations + lambda.finalizer_invocations)
            as f64
            * prices.lambda_per_request
            + lambda.gb_seconds * prices.lambda_per_gb_second;
    let total = by_service.values().sum();
    Plan {
        job_id: job.job_id.clone(),
        census: census.clone(),
        sample,
        requests,
        lambda,
        cost_usd: Cost { by_service, total },
        timeline,
        deployment: deployment_used,
        model: *model,
        prices: prices.region.clone(),
    }
}
