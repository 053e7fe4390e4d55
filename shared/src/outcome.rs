//! What a job produced: its statuses, its item and batch counts, the manifest, the failed items, the per-item
//! output lines, and the batch parts the finalizer merges. The shapes of the files a job writes; where they
//! live is [`crate::layout`].

use serde::{Deserialize, Serialize};

use crate::processor::Aggregate;
use crate::spec::ProcessorSpec;

/// Where a job is in its life. The one table of status names: [`Self::as_str`] and [`Self::parse`] both read
/// [`Self::ALL`], and serde writes the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Running,
    Finalizing,
    Succeeded,
    Failed,
    /// Stopped by `dmap abort`: its outputs hold what was done before.
    Aborted,
}

impl JobStatus {
    pub const ALL: [(Self, &'static str); 5] = [
        (Self::Running, "RUNNING"),
        (Self::Finalizing, "FINALIZING"),
        (Self::Succeeded, "SUCCEEDED"),
        (Self::Failed, "FAILED"),
        (Self::Aborted, "ABORTED"),
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(status, _)| *status == self)
            .map(|(_, name)| *name)
            .expect("every status is in the table")
    }

    /// The status named `name` (as [`Self::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(status, _)| *status)
    }
}

impl From<TerminalStatus> for JobStatus {
    fn from(s: TerminalStatus) -> Self {
        match s {
            TerminalStatus::Succeeded => Self::Succeeded,
            TerminalStatus::Failed => Self::Failed,
            TerminalStatus::Aborted => Self::Aborted,
        }
    }
}

/// The terminal outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TerminalStatus {
    Succeeded,
    Failed,
    Aborted,
}

impl TerminalStatus {
    pub fn as_str(self) -> &'static str {
        JobStatus::from(self).as_str()
    }
}

/// The failure tolerance of a job: Distributed Map's `ToleratedFailureCount` and `ToleratedFailurePercentage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub count: Option<u64>,
    pub percentage: Option<f64>,
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

/// `manifest.json`: written last, after `result.json`, `failed.jsonl` and the `outputs/` files, so its presence
/// means the outputs are complete. Deterministic (no timestamps): a fault-free run and a run under faults write
/// the same bytes.
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
    /// Keys of the per-item output files under `outputs/` (in the result bucket), in item order: the files of
    /// this job, whatever else a listing of the folder shows. Absent for a processor that emits none, so such a
    /// job's manifest has the bytes it had before outputs existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Key of `map-results/manifest.json`, Distributed Map's ResultWriter manifest of the batches' executions
    /// (the `lambda` processor's; absent for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_results: Option<String>,
    pub bucket: String,
    pub processor: ProcessorSpec,
    pub tolerated_failure_count: Option<u64>,
    pub tolerated_failure_percentage: Option<f64>,
    /// Why the job FAILED without outputs: finalizing it failed for good (a result that overflows, parts that
    /// disagree with their records). `result.json` and `failed.jsonl` are then not written, and `outputs` is
    /// empty (files already written under `outputs/` before the failure are not the job's outputs); `items` are
    /// the job's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `failed.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedItem {
    pub key: String,
    pub error: String,
}

/// One line of a file under `outputs/`: a succeeded item's key and the record its processor emitted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    pub key: String,
    pub output: serde_json::Value,
}

/// A batch's partial result: written by the worker (or the dead-letter handler) before the batch is recorded,
/// read by the finalizer. Numbers are exact decimal strings, so merging parts loses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPart {
    pub job_id: String,
    pub seq: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub result: Aggregate,
    pub failures: Vec<FailedItem>,
    /// The output records of the batch's succeeded items, in item order (none for a processor that emits
    /// none, or a dead-lettered batch). They live in the part, not in files of their own, so that only the
    /// attempt the batch's record names reaches `outputs/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputLine>,
    /// The batch's run through a user's function (the `lambda` processor's batches; none for the others): what
    /// `map-results/` records for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
}

/// One batch's run through a user's function, as Step Functions records a child execution: its status, its
/// input and output (JSON text), or its error and cause, and when it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub status: TerminalStatus,
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub start_date: String,
    pub stop_date: String,
}
