//! The bodies of the queue messages: one batch of items for a worker, and the finalizer's trigger.
//!
//! A batch message is self-contained (source bucket, processor, output location), so a worker needs no read of
//! the job record to process it. Its identity is `(job_id, seq)`, derived from the batch's position in the
//! listing, never from the SQS message id: a coordinator that re-sends a batch re-sends the same identity.

use serde::{Deserialize, Serialize};

use crate::layout::OutputLocation;
use crate::outcome::{BatchPart, FailedItem};
use crate::processor::BatchItem;
use crate::spec::{Job, ProcessorSpec};

/// One batch of items: the body of a work-queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMessage {
    pub job_id: String,
    pub seq: u64,
    /// Where the items' objects are (the reader's bucket; empty for a reader of no bucket).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    pub processor: ProcessorSpec,
    pub output: OutputLocation,
    /// The items, in listing order: object keys, or listing entries for a processor that wants them.
    pub items: Vec<BatchItem>,
    /// How many times a worker sent this batch again because a user's function was throttled (see
    /// [`crate::function`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeued: u32,
    /// The job's redrive this batch was sent by (0: its first run). A worker drops a batch of an earlier
    /// redrive than the job's: one an abort left in the queue, which the redrive sent again itself.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// A redrive's batch of items that failed before (see [`crate::redrive`]): its part names them all as
    /// redone, and its record takes their earlier failures back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redo: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl BatchMessage {
    pub fn new(job: &Job, seq: u64, items: Vec<BatchItem>) -> Self {
        Self {
            job_id: job.job_id.clone(),
            seq,
            bucket: job.spec.item_reader.bucket().unwrap_or_default().to_owned(),
            processor: job.spec.processor.clone(),
            output: OutputLocation::for_job(job),
            items,
            requeued: 0,
            generation: 0,
            redo: false,
        }
    }

    /// `part` with the keys this batch re-runs (all of a redo batch's items, none of another's): see
    /// [`crate::worker::record_of`].
    pub fn with_redone(&self, mut part: BatchPart) -> BatchPart {
        if self.redo {
            part.redone = self.items.iter().map(|i| i.key().to_owned()).collect();
        }
        part
    }

    /// A digest of the batch's items (16 hex digits of SHA-256 over the keys, each ended by a newline): what
    /// its record keeps, so a batch sent again with other items is told from a duplicate.
    pub fn items_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for item in &self.items {
            hash.update(item.key().as_bytes());
            hash.update(b"\n");
        }
        let hash = hash.finalize();
        hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The part of this batch with every item failed with `error` (a dead-lettered batch's); an item that
    /// failed as it was read keeps its own error.
    pub fn failed_part(&self, error: &str) -> BatchPart {
        let failures: Vec<FailedItem> = self
            .items
            .iter()
            .map(|item| FailedItem {
                key: item.key().to_owned(),
                error: match item {
                    BatchItem::Failed(failed) => failed.error.clone(),
                    _ => error.to_owned(),
                },
            })
            .collect();
        BatchPart {
            job_id: self.job_id.clone(),
            seq: self.seq,
            succeeded: 0,
            failed: failures.len() as u64,
            result: self.processor.empty(),
            failures,
            outputs: Vec::new(),
            execution: None,
            redone: Vec::new(),
        }
    }

    /// `<job_id>#<seq>`: the batch id used in logs and metrics.
    pub fn batch_id(&self) -> String {
        format!("{}#{}", self.job_id, self.seq)
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a batch message always serializes")
    }

    pub fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// The coordinator's continuation queue's message: hop `hop` of `continue_listing`'s listing (it resumes from
/// the stored checkpoint; `next_seq` is where the hop began, for logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinueListing {
    pub continue_listing: String,
    pub next_seq: u64,
    pub hop: u32,
}

impl ContinueListing {
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a continuation always serializes")
    }
}

/// The finalizer's trigger, sent by whoever wins the completion claim; or, for a job finalized as a tree
/// ([`crate::finalizer`]), one range of its batches to merge. Strict, so that a batch message (which the
/// finalizer also receives, from the dead-letter queue) is never taken for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalizeMessage {
    pub job_id: String,
    /// The range to merge (its index); none for the trigger, which merges the ranges' results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<u64>,
    /// A trigger sent again for a job that seems stuck FINALIZING (a message may have been lost): a tree's
    /// merges not yet written are sent again at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
}

impl FinalizeMessage {
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a finalize message always serializes")
    }

    pub fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}
