//! The job store port on one DynamoDB table (single-table design).
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | job | `JOB#<job_id>` | `JOB` | `job` (the validated spec, JSON), `spec_digest`, `status`, `created_at_ms`, `finished_at_ms`, `cp_start_after`, `cp_next_seq`, `cp_items_sent`, `cp_hop`, `cp_hop_sent`, `cp_cut_seq`, `cp_cut_key`, `cp_redo_from`, `cp_usage` (the coordinators' usage, JSON), `cp_ranges` (a split listing's key ranges, JSON), `cp_lease` (the coordinator holding a split listing), `u:<counter>` (the finalizer's usage), `listing_batches`, `listing_items`, `counter_shards`, `input_changed_seq`, `redrives`, `sweep_fp`, `sweep_since_ms` |
//! | batch marker | `JOB#<job_id>#S<seq % shards>` | `BATCH#<seq, 20 digits>` | `succeeded`, `failed`, `digest`, and `part` (the part's JSON, when small) or `part_key`; a redrive's batch also `gen` and, a redo batch, `redone` |
//! | group counter | `JOB#<job_id>#S<group % shards>` | `GROUP#<group, 20 digits>` | `done` (the seqs counted, a number set), `batches`, `succeeded`, `failed` (negative in a group of redo batches whose items had failed before: see [`crate::redrive`]), `u:<counter>` (the usage its batches' recorders carried: see [`crate::usage`]) |
//! | active job | `ACTIVE` | `JOB#<job_id>` | (none): written before the job item, deleted once it is terminal, so the sweeper finds every unfinished job with one Query |
//! | concurrency slot | `JOB#<job_id>` | `SLOT#<slot, 5 digits>` | `holder`, `until_ms`: a worker's lease, for a job with `max_concurrency` |
//! | logged pages | `JOB#<job_id>` | `PAGES#<first seq, 20 digits>` | `pages`: a split listing's group of numbered pages (JSON), to read again and re-send (see [`crate::parallel_listing`]) |
//! | job index | `JOBS` | `<created_at_ms, 20 digits>#<job_id>` | (none): written before the job item and kept, so `dmap ls` reads the newest jobs with one Query instead of a Scan |
//!
//! Every item carries `expires_at` (the table's TTL attribute). Batches are counted in groups of
//! [`GROUP_BATCHES`] consecutive seqs; markers and groups are spread over `shards` partitions, so the batch
//! rate is not capped by one partition's write limit.
//!
//! Recording a batch is two single-item conditional writes, one write unit each for a small marker, where a
//! transaction of the two would cost four (a transactional write costs two units per item):
//! 1. put the marker if absent. The first marker stands: a later recording takes the stored one (returned by
//!    the failed condition) and counts that;
//! 2. add the marker's counts to its group, if the group's `done` set lacks the seq (the set makes the step
//!    idempotent; a group holds at most 64 seqs, so its item, usage counters and all, stays about a kilobyte).
//!
//! A crash between the two leaves a marker not yet counted: the batch's message is redelivered (it was not
//! deleted), and its recording counts it. The group's count after the write comes back with it, so only the
//! recorder of a group's last batch reads every group (see [`crate::ports::Recorded::group`]; so does one past
//! the listing's total, or on an endpoint that does not return the group). A progress read counts, in a group
//! reaching past the listing's total, only the batches below it. Conditions are
//! recognised from their error codes, never from an error string.
//!
//! `shards` is the job's own `counter_shards`, stored when it is created: a deployment may change its shard
//! count while jobs run, and each job goes on being counted (and read) by the count it started with. A store
//! reads a job's count once (one GetItem) and remembers it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures::{StreamExt, TryStreamExt};

use super::resources::TTL_ATTRIBUTE;
use super::{boxed, error_code, is_throttling};
use crate::outcome::TerminalStatus;
use crate::ports::{
    BatchRecord, Checkpoint, ControlChange, CreateOutcome, Cut, GroupCount, JobControl, JobRecord,
    JobStatus, JobStore, JobStoreError, ListingTotals, LoggedPage, PartRef, Progress,
    RecordOutcome, Recorded,
};
use crate::usage::Usage;

type Item = HashMap<String, AttributeValue>;

const JOB_SK: &str = "JOB";
/// The partition of the active-job registry.
const ACTIVE_PK: &str = "ACTIVE";
/// The partition of the job index, by creation time.
const JOBS_PK: &str = "JOBS";
/// Consecutive batches counted in one group item. Its `done` set of at most 64 seqs keeps the item under a
/// kilobyte (one write unit per count), and a job's progress is one item per 64 batches to read.
pub const GROUP_BATCHES: u64 = 64;
/// Shard partitions queried at once for a progress read.
const PROGRESS_QUERIES: usize = 32;
/// Jobs whose shard count a store remembers; past this the memory starts over (a long-lived process meets
/// many jobs, and forgetting one costs a single read).
const REMEMBERED_JOBS: usize = 10_000;

/// The extra condition a status move may carry.
#[derive(Clone, Copy)]
enum MoveCondition {
    None,
    /// The listing totals are recorded (no claim before the listing is complete) and no abort was requested.
    ListingComplete,
    /// An abort was requested.
    AbortRequested,
}

impl MoveCondition {
    fn expression(self) -> &'static str {
        match self {
            Self::None => "#status = :from",
            Self::ListingComplete => {
                "#status = :from AND attribute_exists(listing_batches) AND attribute_not_exists(ctl_aborted_at_ms)"
            }
            Self::AbortRequested => "#status = :from AND attribute_exists(ctl_aborted_at_ms)",
        }
    }
}

/// DynamoDB as the job store.
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Counter shards of the jobs this store creates.
    shards: u32,
    ttl: Duration,
    /// Each job's own `counter_shards`, by job id, as read from its item.
    job_shards: Arc<Mutex<HashMap<String, u32>>>,
}

fn job_pk(job_id: &str) -> String {
    format!("JOB#{job_id}")
}

fn shard_pk(job_id: &str, shard: u64) -> String {
    format!("JOB#{job_id}#S{shard:03}")
}

fn batch_sk(seq: u64) -> String {
    format!("BATCH#{seq:020}")
}

/// The conditions [`Checkpoint::refused_over`] sets on a save or hand-over of `checkpoint` (`:lease` is bound
/// by the update when the checkpoint has one).
fn split_listing_condition(checkpoint: &Checkpoint) -> String {
    let lease = match checkpoint.lease {
        Some(_) => " AND cp_lease = :lease",
        None => " AND attribute_not_exists(cp_lease)",
    };
    let ranges = if checkpoint.ranges.is_empty() {
        " AND attribute_not_exists(cp_ranges)"
    } else {
        ""
    };
    format!("{lease}{ranges}")
}

fn pages_sk(seq: u64) -> String {
    format!("PAGES#{seq:020}")
}

fn index_sk(created_at_ms: u64, job_id: &str) -> String {
    format!("{created_at_ms:020}#{job_id}")
}

fn slot_sk(slot: u32) -> String {
    format!("SLOT#{slot:05}")
}

fn group_sk(group: u64) -> String {
    format!("GROUP#{group:020}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// A number that may be negative: a group's `failed` sum, which a redrive's redo batches lower.
fn get_i(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn get_n(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn corrupt(job_id: &str, what: &str) -> JobStoreError {
    JobStoreError::Other(format!("job \"{job_id}\": item has no valid {what}").into())
}

fn map_error<E, R>(err: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> JobStoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if is_throttling(&err) {
        JobStoreError::Throttled
    } else if error_code(&err) == Some("ValidationException") {
        // A client error ("Item size has exceeded the maximum allowed size", a malformed request): retrying
        // the same request cannot help.
        let message = err.as_service_error().and_then(|e| e.message());
        JobStoreError::Rejected(message.unwrap_or("ValidationException").to_owned())
    } else {
        JobStoreError::Other(boxed(err))
    }
}

/// The outcome of a conditional write: `true` if it was applied, `false` if its condition failed.
fn applied<O, E, R>(
    result: Result<O, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
) -> Result<bool, JobStoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(map_error(e)),
    }
}

fn marker_record(job_id: &str, item: &Item) -> Result<BatchRecord, JobStoreError> {
    let part = match (get_s(item, "part"), get_s(item, "part_key")) {
        (Some(json), _) => PartRef::Inline(json.to_owned()),
        (None, Some(key)) => PartRef::Object(key.to_owned()),
        (None, None) => return Err(corrupt(job_id, "part or part key")),
    };
    Ok(BatchRecord {
        succeeded: get_n(item, "succeeded").ok_or_else(|| corrupt(job_id, "succeeded count"))?,
        failed: get_n(item, "failed").ok_or_else(|| corrupt(job_id, "failed count"))?,
        part,
        items_digest: get_s(item, "digest").unwrap_or_default().to_owned(),
        generation: get_n(item, "gen").map_or(0, |g| g as u32),
        redone: get_n(item, "redone").unwrap_or(0),
    })
}

/// How many of the batches a group counted are at or past `below` (none without it).
fn past(group: &Item, below: Option<u64>) -> u64 {
    let Some(below) = below else { return 0 };
    let first = get_s(group, "sk")
        .and_then(|sk| sk.strip_prefix("GROUP#"))
        .and_then(|g| g.parse::<u64>().ok())
        .map_or(0, |g| g * GROUP_BATCHES);
    if first + GROUP_BATCHES <= below {
        return 0;
    }
    let done = group.get("done").and_then(|v| v.as_ns().ok());
    done.into_iter()
        .flatten()
        .filter_map(|seq| seq.parse::<u64>().ok())
        .filter(|seq| *seq >= below)
        .count() as u64
}

/// The error code of a failed condition.
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// The prefix of the attributes a usage's counters are added to, on group items (the workers') and the job
/// item (the finalizer's); the coordinators' sum is the job item's `cp_usage`.
const USAGE_PREFIX: &str = "u:";

type UpdateItem = aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;

/// Gives `request` the names (`#u0`, ...) and values (`:u0`, ...) that add `usage`'s counters to its item,
/// and returns the `ADD` clauses that use them, for the request's update expression.
fn add_usage(mut request: UpdateItem, usage: &Usage) -> (UpdateItem, Vec<String>) {
    let mut clauses = Vec::new();
    for (i, (counter, count)) in usage.counters().enumerate() {
        clauses.push(format!("#u{i} :u{i}"));
        request = request
            .expression_attribute_names(format!("#u{i}"), format!("{USAGE_PREFIX}{counter}"))
            .expression_attribute_values(format!(":u{i}"), n(count));
    }
    (request, clauses)
}

/// The usage counters an item holds.
fn usage_of(item: &Item, usage: &mut Usage) {
    for (name, value) in item {
        if let Some(counter) = name.strip_prefix(USAGE_PREFIX)
            && let Ok(count) = value.as_n().map(|v| v.parse::<u64>())
        {
            usage.add_counter(counter, count.unwrap_or(0));
        }
    }
}

/// The job item's `counter_shards`.
fn shards_from_item(job_id: &str, item: &Item) -> Result<u32, JobStoreError> {
    get_n(item, "counter_shards")
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| corrupt(job_id, "counter_shards"))
}

fn record_from_item(job_id: &str, item: &Item) -> Result<JobRecord, JobStoreError> {
    let job = get_s(item, "job")
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| corrupt(job_id, "job"))?;
    let status = get_s(item, "status")
        .and_then(JobStatus::parse)
        .ok_or_else(|| corrupt(job_id, "status"))?;
    let listing = match (get_n(item, "listing_batches"), get_n(item, "listing_items")) {
        (Some(batches), Some(items)) => Some(ListingTotals { batches, items }),
        _ => None,
    };
    let record = JobRecord {
        job,
        spec_digest: get_s(item, "spec_digest").unwrap_or_default().to_owned(),
        status,
        checkpoint: Checkpoint {
            start_after: get_s(item, "cp_start_after").map(str::to_owned),
            next_seq: get_n(item, "cp_next_seq").unwrap_or(0),
            items_sent: get_n(item, "cp_items_sent").unwrap_or(0),
            hop: get_n(item, "cp_hop").map_or(0, |h| h as u32),
            hop_sent: item.get("cp_hop_sent").and_then(|v| v.as_bool().ok()) == Some(&true),
            cut: get_n(item, "cp_cut_seq")
                .zip(get_s(item, "cp_cut_key"))
                .map(|(seq, key)| Cut {
                    seq,
                    last_key: key.to_owned(),
                }),
            redo_from: get_n(item, "cp_redo_from"),
            usage: get_s(item, "cp_usage")
                .and_then(|u| serde_json::from_str(u).ok())
                .unwrap_or_default(),
            lease: get_s(item, "cp_lease").map(str::to_owned),
            ranges: match get_s(item, "cp_ranges") {
                Some(json) => {
                    serde_json::from_str(json).map_err(|_| corrupt(job_id, "cp_ranges"))?
                }
                None => Vec::new(),
            },
        },
        listing,
        created_at_ms: get_n(item, "created_at_ms").unwrap_or(0),
        input_changed: get_n(item, "input_changed_seq"),
        finished_at_ms: get_n(item, "finished_at_ms"),
        control: JobControl {
            aborted_at_ms: get_n(item, "ctl_aborted_at_ms"),
            max_concurrency: get_n(item, "ctl_max_concurrency").map(|n| n as u32),
            tolerated_failure_count: get_n(item, "ctl_tol_count"),
            tolerated_failure_percentage: get_s(item, "ctl_tol_pct").and_then(|p| p.parse().ok()),
        },
        redrives: get_n(item, "redrives").map_or(0, |r| r as u32),
    };
    Ok(record)
}

impl DynamoJobStore {
    /// `shards` counter shards for each job this store creates (a job keeps the count it was created with,
    /// whatever the store that later records or reads it is configured with); items expire `ttl` after they
    /// are written.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        shards: u32,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            shards: shards.max(1),
            ttl,
            job_shards: Arc::default(),
        }
    }

    fn remember_shards(&self, job_id: &str, shards: u32) {
        let mut known = self.job_shards.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= REMEMBERED_JOBS && !known.contains_key(job_id) {
            known.clear();
        }
        known.insert(job_id.to_owned(), shards);
    }

    /// The job's own counter shard count: remembered, or read from its item (strongly consistent, so a job
    /// created a moment ago is found). `NotFound` for a job that does not exist.
    async fn shards_of(&self, job_id: &str) -> Result<u32, JobStoreError> {
        let known = self
            .job_shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
            .copied();
        if let Some(shards) = known {
            return Ok(shards);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::job_key(job_id)))
            .projection_expression("counter_shards")
            .consistent_read(true)
            .send()
            .await
            .map_err(map_error)?;
        let item = out
            .item()
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))?;
        let shards = shards_from_item(job_id, item)?;
        self.remember_shards(job_id, shards);
        Ok(shards)
    }

    fn expires_at(&self) -> AttributeValue {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        n((now + self.ttl).as_secs())
    }

    fn job_key(job_id: &str) -> Item {
        HashMap::from([
            ("pk".to_owned(), s(job_pk(job_id))),
            ("sk".to_owned(), s(JOB_SK)),
        ])
    }

    fn conflict(job_id: &str, message: impl Into<String>) -> JobStoreError {
        JobStoreError::Conflict {
            job_id: job_id.to_owned(),
            message: message.into(),
        }
    }

    /// Step 1 of a record: writes batch `seq`'s marker unless it has one. `None` if this call wrote it; the
    /// stored record if one was there.
    async fn put_marker(
        &self,
        job_id: &str,
        shards: u32,
        seq: u64,
        record: &BatchRecord,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        let pk = shard_pk(job_id, seq % u64::from(shards));
        let (part_name, part_value) = match &record.part {
            PartRef::Inline(json) => ("part", json),
            PartRef::Object(key) => ("part_key", key),
        };
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s(batch_sk(seq)))
            .item("succeeded", n(record.succeeded))
            .item("failed", n(record.failed))
            .item(part_name, s(part_value))
            .item("digest", s(&record.items_digest))
            .item(TTL_ATTRIBUTE, self.expires_at());
        // Only a redrive's batches carry these: a first run's markers keep their size.
        if record.generation > 0 {
            put = put.item("gen", n(record.generation.into()));
        }
        if record.redone > 0 {
            put = put.item("redone", n(record.redone));
        }
        let result = put
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(None),
            Err(err) if error_code(&err) == Some(CONDITION_FAILED) => err,
            Err(err) => return Err(map_error(err)),
        };
        let stored = match err.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(e)) => e.item().cloned(),
            _ => None,
        };
        match stored {
            Some(item) => marker_record(job_id, &item).map(Some),
            // An endpoint that does not return the item with the failed condition: read it.
            None => self
                .batch_record(job_id, seq)
                .await?
                .ok_or_else(|| corrupt(job_id, "batch marker"))
                .map(Some),
        }
    }

    /// Step 2 of a record: adds `record`'s counts to batch `seq`'s group unless the group counted `seq`.
    async fn count_in_group(
        &self,
        job_id: &str,
        shards: u32,
        seq: u64,
        record: &BatchRecord,
        usage: &Usage,
    ) -> Result<(RecordOutcome, Option<GroupCount>), JobStoreError> {
        let group = seq / GROUP_BATCHES;
        // The usage rides on the count: no request of its own, and added exactly when the batch is counted.
        let (request, usage_clauses) = add_usage(self.client.update_item(), usage);
        let adds = ["done :seqs, batches :one, succeeded :s, failed :f".to_owned()]
            .into_iter()
            .chain(usage_clauses)
            .collect::<Vec<_>>()
            .join(", ");
        let result = request
            .table_name(&self.table)
            .key("pk", s(shard_pk(job_id, group % u64::from(shards))))
            .key("sk", s(group_sk(group)))
            .update_expression(format!("ADD {adds} SET {TTL_ATTRIBUTE} = :e"))
            .condition_expression("NOT contains(done, :seq)")
            .expression_attribute_values(":seqs", AttributeValue::Ns(vec![seq.to_string()]))
            .expression_attribute_values(":seq", n(seq))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":s", n(record.succeeded))
            .expression_attribute_values(":f", AttributeValue::N(record.failed_delta().to_string()))
            .expression_attribute_values(":e", self.expires_at())
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let (outcome, item) = match result {
            Ok(out) => (RecordOutcome::Recorded, out.attributes().cloned()),
            Err(err) if error_code(&err) == Some(CONDITION_FAILED) => {
                let item = match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(e)) => e.item().cloned(),
                    _ => None,
                };
                (RecordOutcome::Duplicate, item)
            }
            Err(err) => return Err(map_error(err)),
        };
        // Without the item (an endpoint that does not return it) the group's count is unknown, and the caller
        // reads every group.
        let group = item
            .as_ref()
            .and_then(|i| get_n(i, "batches"))
            .map(|counted| GroupCount {
                first: group * GROUP_BATCHES,
                len: GROUP_BATCHES,
                counted,
            });
        Ok((outcome, group))
    }

    /// Every item a Query returns, page after page. `query` has its key condition and values; the table and
    /// the paging are added here.
    /// The items of the job's own partition whose sort key starts with `sk_prefix` (a strongly consistent
    /// Query, every page), with only the `projection`'s attributes when one is given.
    async fn job_items(
        &self,
        job_id: &str,
        sk_prefix: &str,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, JobStoreError> {
        self.query_all(
            self.client
                .query()
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(job_pk(job_id)))
                .expression_attribute_values(":prefix", s(sk_prefix))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(true),
        )
        .await
    }

    async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, JobStoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = query
                .clone()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(map_error)?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// An UpdateItem of the job item; the caller adds the expressions.
    fn update_job(
        &self,
        job_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::job_key(job_id)))
    }

    /// The job item, read strongly consistent.
    async fn job_item(&self, job_id: &str) -> Result<Option<Item>, JobStoreError> {
        self.read_job_item(job_id, true).await
    }

    async fn read_job_item(
        &self,
        job_id: &str,
        consistent: bool,
    ) -> Result<Option<Item>, JobStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::job_key(job_id)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(map_error)?;
        Ok(out.item().cloned())
    }

    /// The job record, read strongly consistent or not.
    async fn job_record(
        &self,
        job_id: &str,
        consistent: bool,
    ) -> Result<Option<JobRecord>, JobStoreError> {
        let Some(item) = self.read_job_item(job_id, consistent).await? else {
            return Ok(None);
        };
        // The item is at hand: remember its shard count, saving the read a first batch record would make.
        if let Ok(shards) = shards_from_item(job_id, &item) {
            self.remember_shards(job_id, shards);
        }
        record_from_item(job_id, &item).map(Some)
    }

    /// Batch `seq`'s marker, read strongly consistent or not.
    async fn marker(
        &self,
        job_id: &str,
        seq: u64,
        consistent: bool,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                "pk",
                s(shard_pk(
                    job_id,
                    seq % u64::from(self.shards_of(job_id).await?),
                )),
            )
            .key("sk", s(batch_sk(seq)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(map_error)?;
        out.item()
            .map(|item| marker_record(job_id, item))
            .transpose()
    }

    /// The update that writes a checkpoint's fields (and its hop, for a hand-over); the caller adds the
    /// condition.
    fn checkpoint_update(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
        with_hop: bool,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let mut set = vec!["cp_next_seq = :n", "cp_items_sent = :i"];
        let mut remove = Vec::new();
        let mut values = HashMap::from([
            (":n".to_owned(), n(checkpoint.next_seq)),
            (":i".to_owned(), n(checkpoint.items_sent)),
        ]);
        match &checkpoint.start_after {
            Some(key) => {
                set.push("cp_start_after = :a");
                values.insert(":a".to_owned(), s(key));
            }
            None => remove.push("cp_start_after"),
        }
        match &checkpoint.cut {
            Some(cut) => {
                set.extend(["cp_cut_seq = :cs", "cp_cut_key = :ck"]);
                values.insert(":cs".to_owned(), n(cut.seq));
                values.insert(":ck".to_owned(), s(&cut.last_key));
            }
            None => remove.extend(["cp_cut_seq", "cp_cut_key"]),
        }
        match checkpoint.redo_from {
            Some(seq) => {
                set.push("cp_redo_from = :r");
                values.insert(":r".to_owned(), n(seq));
            }
            None => remove.push("cp_redo_from"),
        }
        match &checkpoint.lease {
            Some(lease) => {
                set.push("cp_lease = :lease");
                values.insert(":lease".to_owned(), s(lease));
            }
            None => remove.push("cp_lease"),
        }
        if checkpoint.ranges.is_empty() {
            remove.push("cp_ranges");
        } else {
            set.push("cp_ranges = :rg");
            values.insert(
                ":rg".to_owned(),
                s(serde_json::to_string(&checkpoint.ranges).expect("serializes")),
            );
        }
        // Never removed: a checkpoint's usage only grows.
        if !checkpoint.usage.is_empty() {
            set.push("cp_usage = :u");
            values.insert(
                ":u".to_owned(),
                s(serde_json::to_string(&checkpoint.usage).expect("serializes")),
            );
        }
        if with_hop {
            set.extend(["cp_hop = :h", "cp_hop_sent = :false"]);
            values.insert(":h".to_owned(), n(checkpoint.hop.into()));
            values.insert(":false".to_owned(), AttributeValue::Bool(false));
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        self.update_job(job_id)
            .update_expression(update)
            .set_expression_attribute_values(Some(values))
    }

    /// Moves the job's status from `from` to `to` if it is `from` (and `condition` holds). `false` when the
    /// condition failed.
    async fn move_status(
        &self,
        job_id: &str,
        from: JobStatus,
        to: JobStatus,
        condition: MoveCondition,
        usage: &Usage,
    ) -> Result<bool, JobStoreError> {
        let mut update = if to.is_terminal() {
            "SET #status = :to, finished_at_ms = :now".to_owned()
        } else {
            "SET #status = :to".to_owned()
        };
        let (request, usage_clauses) = add_usage(self.update_job(job_id), usage);
        if !usage_clauses.is_empty() {
            update.push_str(&format!(" ADD {}", usage_clauses.join(", ")));
        }
        let mut request = request
            .update_expression(update)
            .condition_expression(condition.expression())
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(from.as_str()));
        if to.is_terminal() {
            request = request.expression_attribute_values(":now", n(crate::clock::now_ms()));
        }
        let result = request.send().await;
        applied(result)
    }

    /// Sums `batches`, `succeeded` and `failed` over the job's group counters: one strongly consistent Query
    /// (of the groups alone, not the markers beside them) per shard partition. Not one snapshot, and need not
    /// be: counters only grow, so a read can only lag, never show a complete job that is not. With `below` (the
    /// listing's total), a group reaching past it counts the batches of its `done` set below it.
    async fn sum_groups(
        &self,
        job_id: &str,
        shards: u32,
        below: Option<u64>,
    ) -> Result<([u64; 3], Usage), JobStoreError> {
        let ([batches, succeeded, failed], usage) = self.sum_signed(job_id, shards, below).await?;
        Ok((
            [batches, succeeded, failed].map(|n| u64::try_from(n).unwrap_or(0)),
            usage,
        ))
    }

    /// [`Self::sum_groups`] in signed numbers: a group's `failed` may be negative (a redo batch takes back
    /// failures another group counted), the job's sum never is.
    async fn sum_signed(
        &self,
        job_id: &str,
        shards: u32,
        below: Option<u64>,
    ) -> Result<([i64; 3], Usage), JobStoreError> {
        // Whole items: the usage counters' names are not known in advance (a projection would not make the
        // read cheaper anyway; DynamoDB bills the items' size).
        let queries = (0..u64::from(shards)).map(|shard| {
            self.query_all(
                self.client
                    .query()
                    .key_condition_expression("pk = :pk AND begins_with(sk, :group)")
                    .expression_attribute_values(":pk", s(shard_pk(job_id, shard)))
                    .expression_attribute_values(":group", s("GROUP#"))
                    .consistent_read(true),
            )
        });
        futures::stream::iter(queries)
            .buffer_unordered(PROGRESS_QUERIES)
            .try_fold(
                ([0i64; 3], Usage::default()),
                |(mut sums, mut usage), groups| async move {
                    for group in &groups {
                        for (sum, name) in sums.iter_mut().zip(["batches", "succeeded", "failed"]) {
                            *sum += get_i(group, name).unwrap_or(0);
                        }
                        usage_of(group, &mut usage);
                        sums[0] -= past(group, below) as i64;
                    }
                    Ok((sums, usage))
                },
            )
            .await
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create_job(&self, record: &JobRecord) -> Result<CreateOutcome, JobStoreError> {
        let job_id = record.job.job_id.as_str();
        let job =
            serde_json::to_string(&record.job).map_err(|e| JobStoreError::Other(Box::new(e)))?;
        // The registry and index entries first: a crash before the job item leaves entries with no job, which
        // the sweeper forgets and `ls` skips, never a job the sweeper cannot find. (A job created again after
        // such a crash gets a second index entry, of its new creation time; `ls` shows the job once.)
        for (pk, sk) in [
            (ACTIVE_PK, job_pk(job_id)),
            (JOBS_PK, index_sk(record.created_at_ms, job_id)),
        ] {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .item(TTL_ATTRIBUTE, self.expires_at())
                .send()
                .await
                .map_err(map_error)?;
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::job_key(job_id)))
            .item("job", s(job))
            .item("spec_digest", s(&record.spec_digest))
            .item("status", s(record.status.as_str()))
            .item("created_at_ms", n(record.created_at_ms))
            .item("cp_next_seq", n(record.checkpoint.next_seq))
            .item("cp_items_sent", n(record.checkpoint.items_sent))
            .item("cp_hop", n(record.checkpoint.hop.into()))
            .item("counter_shards", n(self.shards.into()))
            .item(TTL_ATTRIBUTE, self.expires_at())
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if applied(result)? {
            self.remember_shards(job_id, self.shards);
            return Ok(CreateOutcome::Created);
        }
        let existing = self
            .get_job(job_id)
            .await?
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))?;
        Ok(CreateOutcome::Exists(Box::new(existing)))
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.job_record(job_id, true).await
    }

    async fn peek_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.job_record(job_id, false).await
    }

    async fn save_checkpoint(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), JobStoreError> {
        let condition = format!(
            "attribute_exists(pk) AND attribute_not_exists(listing_batches) AND cp_next_seq <= :n{}",
            split_listing_condition(checkpoint)
        );
        let result = self
            .checkpoint_update(job_id, checkpoint, false)
            .condition_expression(condition)
            // The item as written, to tell an aborted job at no extra request (the write costs the same).
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out)
                if out
                    .attributes()
                    .is_some_and(|a| a.contains_key("ctl_aborted_at_ms")) =>
            {
                return Err(Self::conflict(job_id, "the job was aborted"));
            }
            Ok(_) => return Ok(()),
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => {}
            Err(e) => return Err(map_error(e)),
        }
        match self.get_job(job_id).await? {
            None => Err(JobStoreError::NotFound(job_id.to_owned())),
            Some(r) if r.listing.is_some() => {
                Err(Self::conflict(job_id, "the listing is already complete"))
            }
            Some(r) if r.abort_requested() => Err(Self::conflict(job_id, "the job was aborted")),
            Some(r) => match checkpoint.refused_over(&r.checkpoint) {
                Some(why) => Err(Self::conflict(job_id, why)),
                None => Ok(()), // an older checkpoint than the stored one: ignored
            },
        }
    }

    async fn log_pages(&self, job_id: &str, pages: &[LoggedPage]) -> Result<(), JobStoreError> {
        let Some(first) = pages.first() else {
            return Ok(());
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(job_pk(job_id)))
            .item("sk", s(pages_sk(first.page.seq)))
            .item(
                "pages",
                s(serde_json::to_string(pages).expect("serializes")),
            )
            .item(TTL_ATTRIBUTE, self.expires_at())
            .send()
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn logged_pages(&self, job_id: &str) -> Result<Vec<LoggedPage>, JobStoreError> {
        let items = self.job_items(job_id, "PAGES#", None).await?;
        let mut pages = Vec::new();
        for item in &items {
            let group: Vec<LoggedPage> = get_s(item, "pages")
                .and_then(|p| serde_json::from_str(p).ok())
                .ok_or_else(|| corrupt(job_id, "pages"))?;
            pages.extend(group);
        }
        Ok(pages)
    }

    async fn take_listing(
        &self,
        job_id: &str,
        hop: u32,
        lease: &str,
    ) -> Result<Option<JobRecord>, JobStoreError> {
        // Jobs created before hops were stored have none: theirs is hop 0.
        let condition = if hop == 0 {
            "attribute_exists(pk) AND attribute_not_exists(listing_batches) \
             AND (attribute_not_exists(cp_hop) OR cp_hop = :hop)"
        } else {
            "attribute_exists(pk) AND attribute_not_exists(listing_batches) AND cp_hop = :hop"
        };
        let result = self
            .update_job(job_id)
            .update_expression("SET cp_lease = :lease")
            .condition_expression(condition)
            .expression_attribute_values(":lease", s(lease))
            .expression_attribute_values(":hop", n(hop.into()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes().ok_or_else(|| corrupt(job_id, "job"))?;
                return record_from_item(job_id, item).map(Some);
            }
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => {}
            Err(e) => return Err(map_error(e)),
        }
        match self.get_job(job_id).await? {
            None => Err(JobStoreError::NotFound(job_id.to_owned())),
            Some(r) if r.listing.is_some() => {
                Err(Self::conflict(job_id, "the listing is already complete"))
            }
            Some(_) => Ok(None), // handed on past `hop`
        }
    }

    async fn hand_over(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<bool, JobStoreError> {
        let Some(from) = checkpoint.hop.checked_sub(1) else {
            return Ok(false); // hop 0 is never handed to
        };
        // Jobs created before hops were stored have none: theirs is hop 0.
        let mut condition = if from == 0 {
            "attribute_exists(pk) AND attribute_not_exists(listing_batches) AND cp_next_seq <= :n \
             AND (attribute_not_exists(cp_hop) OR cp_hop = :from)"
        } else {
            "attribute_exists(pk) AND attribute_not_exists(listing_batches) AND cp_next_seq <= :n \
             AND cp_hop = :from"
        }
        .to_owned();
        condition.push_str(&split_listing_condition(checkpoint));
        let result = self
            .checkpoint_update(job_id, checkpoint, true)
            .condition_expression(condition)
            .expression_attribute_values(":from", n(from.into()))
            .send()
            .await;
        if applied(result)? {
            return Ok(true);
        }
        match self.get_job(job_id).await? {
            None => Err(JobStoreError::NotFound(job_id.to_owned())),
            Some(_) => Ok(false),
        }
    }

    async fn continuation_sent(&self, job_id: &str, hop: u32) -> Result<(), JobStoreError> {
        let result = self
            .update_job(job_id)
            .update_expression("SET cp_hop_sent = :true")
            .condition_expression("attribute_exists(pk) AND cp_hop = :h")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":h", n(hop.into()))
            .send()
            .await;
        if applied(result)? {
            return Ok(());
        }
        match self.get_job(job_id).await? {
            None => Err(JobStoreError::NotFound(job_id.to_owned())),
            Some(_) => Ok(()), // handed over further since: nothing to mark
        }
    }

    async fn complete_listing(
        &self,
        job_id: &str,
        totals: ListingTotals,
    ) -> Result<(), JobStoreError> {
        let result = self
            .update_job(job_id)
            .update_expression("SET listing_batches = :b, listing_items = :i, cp_next_seq = :b, cp_items_sent = :i")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(listing_batches)")
            .expression_attribute_values(":b", n(totals.batches))
            .expression_attribute_values(":i", n(totals.items))
            .send()
            .await;
        if applied(result)? {
            return Ok(());
        }
        match self.get_job(job_id).await? {
            None => Err(JobStoreError::NotFound(job_id.to_owned())),
            Some(r) if r.listing == Some(totals) => Ok(()),
            Some(r) => Err(Self::conflict(
                job_id,
                format!(
                    "listing already completed with {:?}, not {totals:?}",
                    r.listing
                ),
            )),
        }
    }

    async fn record_batch(
        &self,
        job_id: &str,
        seq: u64,
        record: &BatchRecord,
        usage: &Usage,
    ) -> Result<Recorded, JobStoreError> {
        let shards = self.shards_of(job_id).await?;
        let record = match self.put_marker(job_id, shards, seq, record).await? {
            None => record.clone(),
            Some(stored) => stored,
        };
        let (outcome, group) = self
            .count_in_group(job_id, shards, seq, &record, usage)
            .await?;
        Ok(Recorded {
            outcome,
            record,
            group,
        })
    }

    async fn batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        self.marker(job_id, seq, true).await
    }

    async fn peek_batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        self.marker(job_id, seq, false).await
    }

    async fn batch_records(
        &self,
        job_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, BatchRecord)>, JobStoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let shards = u64::from(self.shards_of(job_id).await?);
        // Only the shards that can hold a seq of the range.
        let shard_ids: Vec<u64> = (from..to.min(from + shards))
            .map(|seq| seq % shards)
            .collect();
        let queries = shard_ids.into_iter().map(|shard| {
            self.query_all(
                self.client
                    .query()
                    .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                    .expression_attribute_values(":pk", s(shard_pk(job_id, shard)))
                    .expression_attribute_values(":lo", s(batch_sk(from)))
                    .expression_attribute_values(":hi", s(batch_sk(to - 1)))
                    .consistent_read(true),
            )
        });
        let mut records = Vec::new();
        for item in futures::future::try_join_all(queries)
            .await?
            .into_iter()
            .flatten()
        {
            let seq = get_s(&item, "sk")
                .and_then(|sk| sk.strip_prefix("BATCH#"))
                .and_then(|seq| seq.parse().ok())
                .ok_or_else(|| corrupt(job_id, "batch marker key"))?;
            records.push((seq, marker_record(job_id, &item)?));
        }
        records.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(records)
    }

    async fn progress(&self, job_id: &str) -> Result<Progress, JobStoreError> {
        // The job item first: the groups read after it are at least as new.
        let job = self
            .job_item(job_id)
            .await?
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))?;
        let record = record_from_item(job_id, &job)?;
        let shards = shards_from_item(job_id, &job)?;
        self.remember_shards(job_id, shards);
        let below = record.listing.map(|l| l.batches);
        let ([batches_done, succeeded, failed], mut usage) =
            self.sum_groups(job_id, shards, below).await?;
        usage_of(&job, &mut usage);
        usage.add(&record.checkpoint.usage);
        Ok(Progress {
            status: record.status,
            listing: record.listing,
            items_sent: record.checkpoint.items_sent,
            batches_done,
            succeeded,
            failed,
            usage,
        })
    }

    async fn claim_finalization(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.move_status(
            job_id,
            JobStatus::Running,
            JobStatus::Finalizing,
            MoveCondition::ListingComplete,
            &Usage::NONE,
        )
        .await
    }

    async fn claim_abort(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.move_status(
            job_id,
            JobStatus::Running,
            JobStatus::Finalizing,
            MoveCondition::AbortRequested,
            &Usage::NONE,
        )
        .await
    }

    async fn acquire_slot(
        &self,
        job_id: &str,
        max: u32,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<u32>, JobStoreError> {
        // One strongly consistent Query for the leases, then a conditional write on a free slot: a worker that
        // finds every slot taken pays a read, not a failed write per slot.
        let leases = self
            .job_items(job_id, "SLOT#", Some("sk, holder, until_ms"))
            .await?;
        let live: Vec<String> = leases
            .iter()
            .filter(|l| l.contains_key("holder") && get_n(l, "until_ms").unwrap_or(0) > now_ms)
            .filter_map(|l| get_s(l, "sk").map(str::to_owned))
            .collect();
        if live.len() >= max as usize {
            return Ok(None);
        }
        for slot in (0..max).filter(|k| !live.contains(&slot_sk(*k))) {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(job_pk(job_id)))
                .key("sk", s(slot_sk(slot)))
                .update_expression("SET holder = :h, until_ms = :until, #ttl = :expires")
                .condition_expression("attribute_not_exists(holder) OR until_ms < :now")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":h", s(holder))
                .expression_attribute_values(":until", n(until_ms))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":expires", self.expires_at())
                .send()
                .await;
            if applied(result)? {
                return Ok(Some(slot));
            }
        }
        Ok(None) // taken by others since the read
    }

    async fn release_slot(
        &self,
        job_id: &str,
        slot: u32,
        holder: &str,
    ) -> Result<(), JobStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(job_pk(job_id)))
            .key("sk", s(slot_sk(slot)))
            .update_expression("REMOVE holder, until_ms")
            .condition_expression("holder = :h")
            .expression_attribute_values(":h", s(holder))
            .send()
            .await;
        applied(result)?; // a lease gone to another stays with it
        Ok(())
    }

    async fn control(
        &self,
        job_id: &str,
        change: &ControlChange,
    ) -> Result<JobRecord, JobStoreError> {
        let mut sets = Vec::new();
        let mut values: Item =
            HashMap::from([(":running".to_owned(), s(JobStatus::Running.as_str()))]);
        match change {
            ControlChange::Abort { at_ms } => {
                // The first abort's time stands.
                sets.push("ctl_aborted_at_ms = if_not_exists(ctl_aborted_at_ms, :aborted)");
                values.insert(":aborted".into(), n(*at_ms));
            }
            ControlChange::Update(update) => {
                if let Some(max) = update.max_concurrency {
                    sets.push("ctl_max_concurrency = :max");
                    values.insert(":max".into(), n(max.into()));
                }
                if let Some(count) = update.tolerated_failure_count {
                    sets.push("ctl_tol_count = :count");
                    values.insert(":count".into(), n(count));
                }
                if let Some(pct) = update.tolerated_failure_percentage {
                    // A string: the percentage as given, not a number's rounding of it.
                    sets.push("ctl_tol_pct = :pct");
                    values.insert(":pct".into(), s(pct.to_string()));
                }
            }
        }
        if sets.is_empty() {
            return self
                .get_job(job_id)
                .await?
                .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()));
        }
        let result = self
            .update_job(job_id)
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_exists(pk) AND #status = :running")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                record_from_item(job_id, &item)
            }
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => match self.get_job(job_id).await?
            {
                None => Err(JobStoreError::NotFound(job_id.to_owned())),
                Some(r) => Err(Self::conflict(
                    job_id,
                    format!(
                        "it is {}: only a RUNNING job can be aborted or updated",
                        r.status.as_str()
                    ),
                )),
            },
            Err(e) => Err(map_error(e)),
        }
    }

    async fn active_jobs(&self) -> Result<Vec<String>, JobStoreError> {
        let items = self
            .query_all(
                self.client
                    .query()
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(ACTIVE_PK)),
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| get_s(item, "sk")?.strip_prefix("JOB#").map(str::to_owned))
            .collect())
    }

    async fn recent_jobs(&self, limit: usize) -> Result<Vec<String>, JobStoreError> {
        let mut ids: Vec<String> = Vec::new();
        let mut start: Option<Item> = None;
        while ids.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(JOBS_PK))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - ids.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(map_error)?;
            for item in out.items() {
                let id = get_s(item, "sk")
                    .and_then(|sk| sk.split_once('#'))
                    .map(|(_, id)| id);
                if let Some(id) = id
                    && !ids.iter().any(|known| known == id)
                {
                    ids.push(id.to_owned());
                }
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        ids.truncate(limit);
        Ok(ids)
    }

    async fn forget_active(&self, job_id: &str) -> Result<(), JobStoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(ACTIVE_PK))
            .key("sk", s(job_pk(job_id)))
            .send()
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn note_progress(
        &self,
        job_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<u64, JobStoreError> {
        let result = self
            .update_job(job_id)
            .update_expression("SET sweep_fp = :fp, sweep_since_ms = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(sweep_fp) OR sweep_fp <> :fp)",
            )
            .expression_attribute_values(":fp", s(fingerprint))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        if applied(result)? {
            return Ok(now_ms);
        }
        let item = self
            .job_item(job_id)
            .await?
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))?;
        Ok(get_n(&item, "sweep_since_ms").unwrap_or(now_ms))
    }

    async fn flag_input_changed(&self, job_id: &str, seq: u64) -> Result<(), JobStoreError> {
        let result = self
            .update_job(job_id)
            .update_expression("SET input_changed_seq = if_not_exists(input_changed_seq, :seq)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":seq", n(seq))
            .send()
            .await;
        if applied(result)? {
            Ok(())
        } else {
            Err(JobStoreError::NotFound(job_id.to_owned()))
        }
    }

    async fn redrive(&self, expected: &JobRecord) -> Result<JobRecord, JobStoreError> {
        let job_id = expected.job.job_id.as_str();
        // The condition below holds the stored job to `expected`, so `expected` must be redrivable.
        expected
            .redrivable()
            .map_err(|why| Self::conflict(job_id, why))?;
        let next = expected.redriven();
        // Listed active again first, as at creation: a crash before the job item is updated leaves an entry
        // the sweeper forgets.
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ACTIVE_PK))
            .item("sk", s(job_pk(job_id)))
            .item(TTL_ATTRIBUTE, self.expires_at())
            .send()
            .await
            .map_err(map_error)?;
        let cp = &next.checkpoint;
        let mut sets = vec![
            "#status = :running",
            "redrives = :next",
            "cp_next_seq = :n",
            "cp_items_sent = :i",
        ];
        let mut removes = vec!["finished_at_ms", "ctl_aborted_at_ms"];
        let mut request = self
            .update_job(job_id)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
            .expression_attribute_values(":from", s(expected.status.as_str()))
            .expression_attribute_values(":next", n(next.redrives.into()))
            .expression_attribute_values(":n", n(cp.next_seq))
            .expression_attribute_values(":i", n(cp.items_sent));
        if let Some(seq) = cp.redo_from {
            // The listing was complete: it is read again for the redo batches.
            sets.push("cp_redo_from = :r");
            removes.extend([
                "listing_batches",
                "listing_items",
                "cp_start_after",
                "cp_cut_seq",
                "cp_cut_key",
            ]);
            request = request.expression_attribute_values(":r", n(seq));
        }
        let condition = if expected.redrives == 0 {
            "attribute_exists(pk) AND #status = :from AND attribute_not_exists(redrives) \
             AND attribute_not_exists(input_changed_seq)"
        } else {
            request = request.expression_attribute_values(":prev", n(expected.redrives.into()));
            "attribute_exists(pk) AND #status = :from AND redrives = :prev \
             AND attribute_not_exists(input_changed_seq)"
        };
        let result = request
            .update_expression(format!(
                "SET {} REMOVE {}",
                sets.join(", "),
                removes.join(", ")
            ))
            .condition_expression(condition)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => record_from_item(job_id, &out.attributes.unwrap_or_default()),
            Err(e) if error_code(&e) == Some(CONDITION_FAILED) => {
                match self.get_job(job_id).await? {
                    None => Err(JobStoreError::NotFound(job_id.to_owned())),
                    Some(r) => Err(Self::conflict(job_id, r.redrive_conflict(expected))),
                }
            }
            Err(e) => Err(map_error(e)),
        }
    }

    async fn finish(
        &self,
        job_id: &str,
        status: TerminalStatus,
        usage: &Usage,
    ) -> Result<bool, JobStoreError> {
        let target = JobStatus::from(status);
        if self
            .move_status(
                job_id,
                JobStatus::Finalizing,
                target,
                MoveCondition::None,
                usage,
            )
            .await?
        {
            // Off the active registry; should this fail, the sweeper forgets the entry when it sees the job
            // terminal.
            if let Err(e) = self.forget_active(job_id).await {
                tracing::warn!(job_id, error = %e, "could not remove the job from the active registry");
            }
            return Ok(true);
        }
        match self.get_job(job_id).await? {
            None => Err(JobStoreError::NotFound(job_id.to_owned())),
            Some(r) if r.status == target => Ok(false),
            Some(r) => Err(Self::conflict(
                job_id,
                format!(
                    "cannot move from {} to {}",
                    r.status.as_str(),
                    target.as_str()
                ),
            )),
        }
    }
}
