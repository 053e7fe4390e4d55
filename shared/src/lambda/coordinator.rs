//! The coordinator function. Four kinds of event:
//! - an S3 event for job specs created under the jobs prefix: each spec object is read and its job started;
//!   a spec without `job_id` gets one derived from bucket, key and the object's version (or ETag), so a
//!   duplicated S3 event resumes the same job instead of starting a second one;
//! - a direct invoke whose payload is a job spec: the job is started and its id returned;
//! - an SQS event from its continuation queue: a listing handed over by an earlier invocation resumes (so does
//!   a direct invoke of the same message, `{"continue_listing": ID, "next_seq": N, "hop": H}`: how `dmap
//!   redrive --detach` hands a redriven job's listing to the stack);
//! - its schedule's `{"sweep": {"stale_after_minutes": N}}`: the [`crate::sweeper`] looks at every unfinished
//!   job and repairs the ones whose progress has not moved for N minutes.
//!
//! Long listings: the listing stops at a checkpoint while enough of the invocation's time remains, and a
//! `ContinueListing` message resumes it in a fresh invocation. That is an intentional recursive pattern
//! (coordinator → SQS → coordinator), which Lambda's loop detection would stop after ~16 hops: the function is
//! deployed with `RecursiveLoop: Allow`, and the chain is bounded here instead: the job record stores which hop
//! owns the listing (moved by one conditional hand-over, so only one invocation continues a hop), every message
//! carries its hop, an older hop's message is dropped, and [`MAX_HOPS`] ends a chain that could only be a bug
//! (at ~14 minutes of listing a hop, 1,000 hops list billions of keys).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::for_each_record;
use crate::Deps;
use crate::coordinator::{
    ListParallelism, ListingOutcome, Rerun, run_listing_with, start_or_resume,
};
use crate::error::PipelineError;
pub use crate::message::ContinueListing;
use crate::ports::{
    BatchQueue, Checkpoint, JobRecord, OutgoingMessage, read_up_to, send_all_with_retry,
};
use crate::processor::FunctionRef;
use crate::spec::{ItemReader, Job, JobSpec, MAX_SPEC_BYTES};
use crate::sweeper::sweep;

/// Most hand-overs of one listing.
pub const MAX_HOPS: u32 = 1000;

/// Hand the listing over while this much of the invocation remains (a page, its sends, the checkpoint).
pub const HAND_OVER_MARGIN: Duration = Duration::from_secs(90);

/// The hand-over policy: whether an invocation that must end by `deadline` has time, at `now`, to list
/// another page. A deadline already past (or a clock that disagrees) says no.
pub fn time_for_another_page(deadline: SystemTime, now: SystemTime) -> bool {
    deadline
        .duration_since(now)
        .is_ok_and(|left| left > HAND_OVER_MARGIN)
}

/// The schedule's request: sweep the jobs whose progress has not moved for this long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepRequest {
    stale_after_minutes: u64,
}

/// A job this invocation started or resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    pub job_id: String,
    /// `complete` (every batch sent), or `handed over` (continued by a later invocation).
    pub listing: &'static str,
}

/// A spec object that was not started, and why (it is not retried: the same object would fail the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    pub source: String,
    pub reason: String,
}

/// The coordinator's answer to an S3 event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct S3Response {
    pub jobs: Vec<Started>,
    pub refused: Vec<Refused>,
}

/// The coordinator function's state, built once per process.
pub struct Coordinator {
    pub deps: Deps,
    pub continuation: Arc<dyn BatchQueue>,
    /// Buckets a job may read items from.
    pub allowed_buckets: Vec<String>,
    /// Buckets a job may write results to.
    pub result_buckets: Vec<String>,
    pub jobs_prefix: String,
    /// Where results may go: `result_writer.prefix` must start with it (empty: anywhere).
    pub results_prefix: String,
    /// Function ARNs the `lambda` processor may invoke.
    pub processor_functions: Vec<String>,
    /// What a function named without an ARN resolves against: the stack's partition, region and account.
    pub function_arn_prefix: Option<String>,
    /// Tables a `dynamodb_scan` job may read.
    pub allowed_tables: Vec<String>,
    /// The key ranges of an `s3_list` listing listed at once: the stack's `MaxListParallelism` for a spec that
    /// does not say, and at most.
    pub list_parallelism: ListParallelism,
}

pub use crate::ports::decode_s3_key;

/// The id of a job whose spec object has no `job_id`: the object's name and a digest of where it is and which
/// version it is, so the same object always maps to the same job and a new upload to a new one.
pub fn derive_job_id(bucket: &str, key: &str, version: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or_default();
    let stem: String = name
        .strip_suffix(".json")
        .unwrap_or(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let digest = Sha256::digest(format!("{bucket}/{key}#{version}"));
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", if stem.is_empty() { "job" } else { &stem })
}

impl Coordinator {
    /// The coordinator on AWS, as its function builds it at cold start.
    pub fn from_config(
        clients: &crate::aws::AwsClients,
        config: super::config::CoordinatorConfig,
    ) -> Self {
        Self {
            deps: Deps::aws(clients, &config.common.resources()),
            continuation: Arc::new(crate::aws::SqsQueue::new(
                clients.sqs.clone(),
                &config.continuation_queue_url,
            )),
            allowed_buckets: config.allowed_buckets,
            allowed_tables: config.allowed_tables,
            list_parallelism: ListParallelism {
                default: config.list_parallelism,
                max: config.list_parallelism,
            },
            result_buckets: config.result_buckets,
            jobs_prefix: config.jobs_prefix,
            results_prefix: config.results_prefix,
            processor_functions: config.processor_functions,
            function_arn_prefix: config.function_arn_prefix,
        }
    }

    /// Handles any of the three events, outside Lambda (no request id: a spec invoked without `job_id` gets a
    /// fresh one). `keep_going` says whether enough of the invocation's time remains to list another page.
    pub async fn handle(
        &self,
        payload: Value,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Value, PipelineError> {
        self.handle_invocation(payload, None, keep_going).await
    }

    /// Handles any of the three events for the invocation `request_id` (Lambda's request id). A spec invoked
    /// without `job_id` gets an id derived from the request id: Lambda retries an asynchronous invoke with the
    /// same request id, and the retry must resume the job the first attempt started, not start another.
    pub async fn handle_invocation(
        &self,
        payload: Value,
        request_id: Option<&str>,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Value, PipelineError> {
        let source = payload
            .get("Records")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("eventSource").or_else(|| r.get("EventSource")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let malformed = |e: serde_json::Error| PipelineError::MalformedMessage(e.to_string());
        match source.as_deref() {
            Some("aws:s3") => {
                let event: S3Event = serde_json::from_value(payload).map_err(malformed)?;
                Ok(json!(self.handle_s3(&event, keep_going).await?))
            }
            Some("aws:sqs") => {
                let event: SqsEvent = serde_json::from_value(payload).map_err(malformed)?;
                let response = for_each_record(&event, 1, |body| self.resume(body, keep_going))
                    .await
                    .map_err(|e| PipelineError::MalformedMessage(e.to_string()))?;
                Ok(serde_json::to_value(response).map_err(malformed)?)
            }
            Some(other) => Err(PipelineError::MalformedMessage(format!(
                "unexpected event source \"{other}\""
            ))),
            None if payload.get("sweep").is_some() => {
                let request: SweepRequest =
                    serde_json::from_value(payload["sweep"].clone()).map_err(malformed)?;
                let stale_after = Duration::from_secs(request.stale_after_minutes * 60);
                let stuck = sweep(
                    &self.deps,
                    Some(self.continuation.as_ref()),
                    crate::clock::now_ms(),
                    stale_after,
                )
                .await?;
                let stuck: Vec<Value> = stuck
                    .iter()
                    .map(|s| {
                        json!({
                            "job_id": s.job_id,
                            "status": s.status.as_str(),
                            "finding": format!("{:?}", s.finding),
                            "repair": format!("{:?}", s.repair),
                        })
                    })
                    .collect();
                Ok(json!({ "stuck": stuck }))
            }
            None if payload.get("continue_listing").is_some() => {
                self.resume(&payload.to_string(), keep_going).await?;
                Ok(json!({ "resumed": payload["continue_listing"] }))
            }
            None => {
                let body = payload.to_string();
                let job = match request_id {
                    Some(id) => JobSpec::parse_with_id(body.as_bytes(), || {
                        derive_job_id("", "invoke.json", id)
                    })?,
                    None => JobSpec::parse(body.as_bytes())?,
                };
                Ok(json!(self.start(job, keep_going).await?))
            }
        }
    }

    async fn handle_s3(
        &self,
        event: &S3Event,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<S3Response, PipelineError> {
        let mut response = S3Response::default();
        for record in &event.records {
            let bucket = record.s3.bucket.name.clone().unwrap_or_default();
            let raw_key = record.s3.object.key.clone().unwrap_or_default();
            let source = format!("s3://{bucket}/{raw_key}");
            let refuse = |reason: String| Refused {
                source: source.clone(),
                reason,
            };
            let Some(key) = decode_s3_key(&raw_key) else {
                response
                    .refused
                    .push(refuse("the key is not valid UTF-8 once decoded".into()));
                continue;
            };
            if !key.starts_with(&self.jobs_prefix) || !key.ends_with(".json") {
                response.refused.push(refuse(format!(
                    "not a job spec (not {}*.json)",
                    self.jobs_prefix
                )));
                continue;
            }
            let version = record
                .s3
                .object
                .version_id
                .as_deref()
                .or(record.s3.object.e_tag.as_deref())
                .unwrap_or("");
            // A spec over the limit is refused by its size, before it is read: from the event, and by reading
            // no more than one byte past the limit whatever the event says.
            let too_big = |size: String| {
                refuse(format!(
                    "the spec object is {size} bytes, over the limit of {MAX_SPEC_BYTES} bytes (256 KiB)"
                ))
            };
            if let Some(size) = record.s3.object.size.filter(|s| *s > MAX_SPEC_BYTES as i64) {
                response.refused.push(too_big(size.to_string()));
                continue;
            }
            let limit = MAX_SPEC_BYTES as u64 + 1;
            let body = read_up_to(self.deps.objects.as_ref(), &bucket, &key, limit).await?;
            if body.len() > MAX_SPEC_BYTES {
                response
                    .refused
                    .push(too_big(format!("more than {MAX_SPEC_BYTES}")));
                continue;
            }
            let job = match JobSpec::parse_with_id(&body, || derive_job_id(&bucket, &key, version))
            {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(source, error = %e, "job spec refused");
                    response.refused.push(refuse(e.to_string()));
                    continue;
                }
            };
            match self.start(job, keep_going).await {
                Ok(started) => response.jobs.push(started),
                Err(e @ PipelineError::Refused(_)) => {
                    tracing::error!(source, error = %e, "job refused");
                    response.refused.push(refuse(e.to_string()));
                }
                Err(e) => return Err(e), // transient: S3's asynchronous invoke retries; starting is idempotent
            }
        }
        Ok(response)
    }

    /// The `lambda` processor may invoke only the functions the stack lets the worker and finalizer invoke
    /// (any version or alias of each); a name is resolved in the stack's region and account, as Lambda would.
    fn check_functions(&self, job: &Job) -> Result<(), PipelineError> {
        let Some(lambda) = job.spec.processor.lambda() else {
            return Ok(());
        };
        let stack = self
            .function_arn_prefix
            .as_deref()
            .and_then(|prefix| FunctionRef::parse(&format!("{prefix}stack")).ok());
        let arn = |reference: &str| {
            FunctionRef::parse(reference)
                .ok()
                .and_then(|f| f.function_arn(stack.as_ref()))
        };
        let allowed: Vec<String> = self
            .processor_functions
            .iter()
            .filter_map(|f| arn(f))
            .collect();
        for (field, function) in lambda.functions() {
            if arn(function).is_some_and(|arn| allowed.contains(&arn)) {
                continue;
            }
            let list = if self.processor_functions.is_empty() {
                "none: list them in the stack's ProcessorFunctions parameter".to_owned()
            } else {
                self.processor_functions.join(", ")
            };
            return Err(PipelineError::Refused(format!(
                "processor.{field}: function \"{function}\" is not one this deployment may invoke \
                 (DMAP_PROCESSOR_FUNCTIONS: {list})"
            )));
        }
        Ok(())
    }

    fn check_allowed(&self, job: &Job) -> Result<(), PipelineError> {
        let spec = &job.spec;
        let refuse = |field: &str, bucket: &str, variable: &str, list: &[String]| {
            PipelineError::Refused(format!(
                "{field}: bucket \"{bucket}\" is not allowed ({variable}: {})",
                list.join(", ")
            ))
        };
        if let Some(reader) = spec.item_reader.bucket()
            && !self.allowed_buckets.iter().any(|b| b == reader)
        {
            let list = &self.allowed_buckets;
            return Err(refuse(
                "item_reader.bucket",
                reader,
                "DMAP_ALLOWED_BUCKETS",
                list,
            ));
        }
        if let ItemReader::DynamodbScan(reader) = &spec.item_reader
            && !self.allowed_tables.contains(&reader.table)
        {
            let list = if self.allowed_tables.is_empty() {
                "none: list them in the stack's InputTables parameter".to_owned()
            } else {
                self.allowed_tables.join(", ")
            };
            return Err(PipelineError::Refused(format!(
                "item_reader.table: table \"{}\" is not one this deployment may read (DMAP_ALLOWED_TABLES: {list})",
                reader.table
            )));
        }
        let writer = &spec.result_writer;
        if !self.result_buckets.contains(&writer.bucket) {
            let list = &self.result_buckets;
            return Err(refuse(
                "result_writer.bucket",
                &writer.bucket,
                "DMAP_RESULT_BUCKETS",
                list,
            ));
        }
        // The functions may write only under the results prefix: a job writing elsewhere would fail at its first
        // part, after its batches were sent.
        if !writer.prefix.starts_with(&self.results_prefix) {
            return Err(PipelineError::Refused(format!(
                "result_writer.prefix: \"{}\" is not under the results prefix \"{}\" (DMAP_RESULTS_PREFIX), the only \
                 place this deployment writes results",
                writer.prefix, self.results_prefix
            )));
        }
        self.check_functions(job)?;
        // Results under the jobs prefix would be read as job specs (the notification's filter is the only
        // guard on AWS; refuse before it matters).
        let under_jobs = writer.prefix.starts_with(&self.jobs_prefix)
            || self.jobs_prefix.starts_with(&writer.prefix);
        if under_jobs && !self.jobs_prefix.is_empty() {
            return Err(PipelineError::Refused(format!(
                "result_writer.prefix: \"{}\" overlaps the jobs prefix \"{}\", where every .json starts a job",
                writer.prefix, self.jobs_prefix
            )));
        }
        Ok(())
    }

    /// An inventory's items are objects of the bucket its report lists: that bucket must be an allowed input
    /// (the worker may read no other), which only the report says.
    async fn check_inventory_source(&self, job: &Job) -> Result<(), PipelineError> {
        let ItemReader::S3Inventory(reader) = &job.spec.item_reader else {
            return Ok(());
        };
        let manifest = crate::reader::inventory::read_manifest(&self.deps, reader).await?;
        let source = &manifest.source_bucket;
        if self.allowed_buckets.iter().any(|b| b == source) {
            return Ok(());
        }
        Err(PipelineError::Refused(format!(
            "item_reader.manifest_key: the report lists the objects of bucket \"{source}\", which is not allowed \
             (DMAP_ALLOWED_BUCKETS: {})",
            self.allowed_buckets.join(", ")
        )))
    }

    /// Creates the job (or resumes the same one) and lists until done or out of time.
    pub async fn start(
        &self,
        job: Job,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Started, PipelineError> {
        let job_id = job.job_id.clone();
        crate::usage::scoped(&job_id, self.start_job(job, keep_going)).await
    }

    async fn start_job(
        &self,
        job: Job,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Started, PipelineError> {
        self.check_allowed(&job)?;
        self.check_inventory_source(&job).await?;
        let record = start_or_resume(&self.deps, job, Rerun::Resume).await?;
        if record.checkpoint.hop > 0 && record.listing.is_none() {
            // A retried trigger of a job whose listing a chain of hand-overs already carries.
            return Ok(Started {
                job_id: record.job.job_id,
                listing: "handed over",
            });
        }
        self.list(&record, 0, keep_going).await
    }

    async fn list(
        &self,
        record: &JobRecord,
        hop: u32,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Started, PipelineError> {
        let job_id = record.job.job_id.clone();
        let handed_over = Started {
            job_id: job_id.clone(),
            listing: "handed over",
        };
        let parallelism = self.list_parallelism;
        match run_listing_with(&self.deps, record, keep_going, parallelism).await? {
            ListingOutcome::Complete { .. } => Ok(Started {
                job_id,
                listing: "complete",
            }),
            ListingOutcome::Aborted => Ok(Started {
                job_id,
                listing: "stopped: the job was aborted",
            }),
            ListingOutcome::TakenOver => Ok(Started {
                job_id,
                listing: "taken over by another invocation",
            }),
            ListingOutcome::Paused(checkpoint) => {
                if hop >= MAX_HOPS {
                    return Err(PipelineError::Inconsistent {
                        job_id,
                        message: format!(
                            "the listing was handed over {MAX_HOPS} times without finishing"
                        ),
                    });
                }
                // Only one invocation of a hop hands it over (a duplicate delivery may list the same pages);
                // the hand-over is saved before its message is sent, so a failed send comes back as a
                // redelivery of this hop, which sends it again (see `resume`).
                let mut next = Checkpoint {
                    hop: hop + 1,
                    ..checkpoint
                };
                let carried = crate::coordinator::carry_usage(&self.deps, &job_id, &mut next);
                let handed = self.deps.jobs.hand_over(&job_id, &next).await;
                if !matches!(handed, Ok(true)) {
                    // Not saved: the usage goes back for another write.
                    self.deps.usage.put_back(&job_id, carried);
                }
                if !handed? {
                    tracing::warn!(
                        job_id,
                        hop,
                        "this hop was handed over by another invocation"
                    );
                    return Ok(handed_over);
                }
                self.send_continuation(&job_id, &next).await?;
                Ok(handed_over)
            }
        }
    }

    async fn send_continuation(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), PipelineError> {
        let body = ContinueListing {
            continue_listing: job_id.to_owned(),
            next_seq: checkpoint.next_seq,
            hop: checkpoint.hop,
        }
        .to_body();
        send_all_with_retry(
            self.continuation.as_ref(),
            vec![OutgoingMessage {
                id: "continue".into(),
                body,
                group: None,
            }],
        )
        .await?;
        self.deps
            .jobs
            .continuation_sent(job_id, checkpoint.hop)
            .await?;
        tracing::info!(
            job_id,
            hop = checkpoint.hop,
            next_seq = checkpoint.next_seq,
            "listing handed over"
        );
        Ok(())
    }

    /// Resumes a handed-over listing. The stored checkpoint says which hop owns the listing: a message of that
    /// hop (a first delivery, or a redelivery after the invocation failed midway) resumes from the stored
    /// checkpoint; a message of the hop just before it, when the hand-over is saved but not known to be sent,
    /// failed between the two, so the hand-over is sent again; any other older message is stale and dropped,
    /// as is one for a job that no longer exists.
    async fn resume(
        &self,
        body: &str,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), PipelineError> {
        let message: ContinueListing = serde_json::from_str(body)
            .map_err(|e| PipelineError::MalformedMessage(e.to_string()))?;
        let job_id = message.continue_listing.clone();
        crate::usage::scoped(&job_id, self.resume_listing(message, keep_going)).await
    }

    async fn resume_listing(
        &self,
        message: ContinueListing,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), PipelineError> {
        let job_id = message.continue_listing.as_str();
        let Some(record) = self.deps.jobs.get_job(job_id).await? else {
            tracing::error!(
                job_id,
                "continuation for a job that does not exist; dropped"
            );
            return Ok(());
        };
        let owner = record.checkpoint.hop;
        if record.listing.is_none() && message.hop < owner {
            if message.hop + 1 == owner && !record.checkpoint.hop_sent {
                tracing::warn!(
                    job_id,
                    hop = owner,
                    "hand-over may not have been sent; sending it again"
                );
                return self.send_continuation(job_id, &record.checkpoint).await;
            }
            tracing::warn!(
                job_id,
                hop = message.hop,
                owner,
                "stale continuation; dropped"
            );
            return Ok(());
        }
        self.list(&record, owner.max(message.hop), keep_going)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_handed_over_with_a_margin_left() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let after = |secs| now + Duration::from_secs(secs);
        assert!(time_for_another_page(after(900), now));
        assert!(time_for_another_page(after(91), now));
        assert!(!time_for_another_page(after(90), now), "exactly the margin");
        assert!(!time_for_another_page(after(10), now));
        assert!(
            !time_for_another_page(now - Duration::from_secs(1), now),
            "past"
        );
    }

    #[test]
    fn s3_keys_decode_as_form_encoding() {
        assert_eq!(
            decode_s3_key("jobs/a+b%2Bc.json").unwrap(),
            "jobs/a b+c.json"
        );
        assert_eq!(
            decode_s3_key("jobs%2Fnested%2F%E6%97%A5.json").unwrap(),
            "jobs/nested/日.json"
        );
        assert_eq!(decode_s3_key("jobs/100%25.json").unwrap(), "jobs/100%.json");
        assert!(decode_s3_key("jobs/%FF.json").is_none());
    }

    #[test]
    fn derived_job_ids_are_stable_valid_and_per_version() {
        let a = derive_job_id("data", "jobs/weather 2026.json", "etag1");
        assert_eq!(a, derive_job_id("data", "jobs/weather 2026.json", "etag1"));
        assert_ne!(a, derive_job_id("data", "jobs/weather 2026.json", "etag2"));
        assert!(a.starts_with("weather-2026-"), "{a}");
        let long = derive_job_id("data", &format!("jobs/{}.json", "x".repeat(200)), "e");
        assert!(JobSpec::parse_with_id(
            br#"{"item_reader":{"bucket":"in-b"},"processor":{"kind":"count"},"result_writer":{"bucket":"out-b"}}"#,
            || long.clone()
        )
        .is_ok(), "{long}");
    }
}
