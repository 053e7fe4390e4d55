//! Where a job's files live and what the manifest says. All keys are derived from the job, never stored.
//!
//! Under `<result_writer.bucket>/<result_writer.prefix><job_id>/`:
//! `manifest.json`, `result.json`, `failed.jsonl`, and `parts/` (one partial result per batch).

use serde::{Deserialize, Serialize};

use crate::spec::{Job, ProcessorSpec};

/// File names the job writes in its output folder (the listing must never be able to see them).
pub const OUTPUT_NAMES: [&str; 5] = [
    "manifest.json",
    "result.json",
    "failed.jsonl",
    "parts/0000000000.json",
    "parts/0000000000.dead.json",
];

/// The output location of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLocation {
    pub bucket: String,
    /// `<result_writer.prefix><job_id>/`
    pub dir: String,
}

impl OutputLocation {
    pub fn for_job(job: &Job) -> Self {
        Self {
            bucket: job.spec.result_writer.bucket.clone(),
            dir: format!("{}{}/", job.spec.result_writer.prefix, job.job_id),
        }
    }

    pub fn manifest_key(&self) -> String {
        format!("{}manifest.json", self.dir)
    }

    pub fn result_key(&self) -> String {
        format!("{}result.json", self.dir)
    }

    pub fn failures_key(&self) -> String {
        format!("{}failed.jsonl", self.dir)
    }

    /// A worker's partial result for batch `seq`: deterministic, so a redelivery overwrites the same object.
    pub fn part_key(&self, seq: u64) -> String {
        format!("{}parts/{seq:010}.json", self.dir)
    }

    /// The partial result written for a dead-lettered batch (all items failed). A different key from
    /// [`Self::part_key`], so it can never overwrite a part that a worker did record.
    pub fn dead_part_key(&self, seq: u64) -> String {
        format!("{}parts/{seq:010}.dead.json", self.dir)
    }
}

/// The terminal outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TerminalStatus {
    Succeeded,
    Failed,
}

impl TerminalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }
}

/// Item counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// Batch counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    pub total: u64,
}

/// `manifest.json`: written last, after `result.json` and `failed.jsonl`, so its presence means the outputs are
/// complete. Deterministic (no timestamps): a fault-free run and a run under faults write the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub job_id: String,
    pub status: TerminalStatus,
    pub items: ItemCounts,
    pub batches: BatchCounts,
    /// Key of `result.json` (in the result bucket).
    pub result: String,
    /// Key of `failed.jsonl` (in the result bucket).
    pub failures: String,
    pub bucket: String,
    pub processor: ProcessorSpec,
    pub tolerated_failure_count: Option<u64>,
    pub tolerated_failure_percentage: Option<f64>,
}

/// One line of `failed.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedItem {
    pub key: String,
    pub error: String,
}

/// A batch's partial result: written by the worker (or the dead-letter handler) before the batch is recorded,
/// read by the finalizer. Numbers are exact decimal strings, so merging parts loses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPart {
    pub job_id: String,
    pub seq: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub result: crate::processor::Aggregate,
    pub failures: Vec<FailedItem>,
}
