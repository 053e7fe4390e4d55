//! Where a job's files live. All keys are derived from the job, never stored; what the files hold is
//! [`crate::outcome`].
//!
//! Under `<result_writer.bucket>/<result_writer.prefix><job_id>/`:
//! `manifest.json`, `result.json`, `failed.jsonl`, and `parts/` (one partial result per batch).

use serde::{Deserialize, Serialize};

use crate::spec::Job;

/// File names the job writes in its output folder (the listing must never be able to see them).
pub const OUTPUT_NAMES: [&str; 5] = [
    "manifest.json",
    "result.json",
    "failed.jsonl",
    "parts/0000000000.0123abcd.json",
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

    /// A worker's partial result for batch `seq`, written by the attempt `attempt`: every attempt writes its
    /// own object, so a redelivery can never overwrite the part a record already points to (the object may
    /// have changed in between).
    pub fn part_key(&self, seq: u64, attempt: &str) -> String {
        format!("{}parts/{seq:010}.{attempt}.json", self.dir)
    }

    /// The partial result written for a dead-lettered batch (all items failed). A different key from
    /// [`Self::part_key`], so it can never overwrite a part that a worker did record.
    pub fn dead_part_key(&self, seq: u64) -> String {
        format!("{}parts/{seq:010}.dead.json", self.dir)
    }
}
