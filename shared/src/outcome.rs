//! What a job produced: its statuses, its item and batch counts, the manifest, the failed items, the per-item
//! output lines, and the batch parts the finalizer merges. The shapes of the files a job writes; where they
//! live is [`crate::layout`].

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::processor::Aggregate;
use crate::spec::ProcessorSpec;
use crate::usage::PricedUsage;

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
    /// How many times the job was redriven (`dmap redrive`): its outputs are those of its last run, over
    /// every item.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
    /// Why the job FAILED without outputs: finalizing it failed for good (a result that overflows, parts that
    /// disagree with their records). `result.json` and `failed.jsonl` are then not written, and `outputs` is
    /// empty (files already written under `outputs/` before the failure are not the job's outputs); `items` are
    /// the job's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the job sent to AWS, over all its runs, up to this manifest's own write, and its estimated cost
    /// (see [`crate::usage`]). Absent for a job that sent nothing (the embedded backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<PricedUsage>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// The keys of the items this batch ran again in a redrive, each counted failed by an earlier batch: their
    /// earlier failures no longer stand (see [`crate::redrive`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redone: Vec<String>,
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

/// Values as JSON lines (`failed.jsonl`, `outputs/`): each on a line of its own, in order.
pub fn json_lines<'a, T: Serialize + 'a>(values: impl IntoIterator<Item = &'a T>) -> Vec<u8> {
    let mut lines = Vec::new();
    for value in values {
        serde_json::to_writer(&mut lines, value).expect("a JSON line serializes");
        lines.push(b'\n');
    }
    lines
}

/// The failures that stand, in listing order: a failure is taken back when a later batch redoes its item
/// (whatever that batch's own outcome for it), and an item that fails again keeps its first failure's place,
/// so the order is a first run's. One implementation for the finalizer (`failed.jsonl`) and the redo pass
/// (what to run again).
#[derive(Debug, Default)]
pub struct LiveFailures {
    /// Failures by their place: the seq of the batch that first failed the item, and its index there.
    by_position: BTreeMap<(u64, usize), FailedItem>,
    position: HashMap<String, (u64, usize)>,
}

impl LiveFailures {
    /// Takes a batch's part in: its redone items' earlier failures go, its own failures stand. Parts come in
    /// ascending seq (a redo batch comes after the batches whose items it redoes).
    pub fn add(&mut self, part: &BatchPart) {
        let mut places = HashMap::new();
        for key in &part.redone {
            if let Some(at) = self.position.remove(key) {
                self.by_position.remove(&at);
                places.insert(key.as_str(), at);
            }
        }
        for (i, failure) in part.failures.iter().enumerate() {
            let at = places
                .get(failure.key.as_str())
                .copied()
                .unwrap_or((part.seq, i));
            if let Some(old) = self.position.insert(failure.key.clone(), at) {
                self.by_position.remove(&old);
            }
            self.by_position.insert(at, failure.clone());
        }
    }

    pub fn len(&self) -> u64 {
        self.by_position.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.by_position.is_empty()
    }

    /// `failed.jsonl`: one failure per line, in order.
    pub fn to_jsonl(&self) -> Vec<u8> {
        json_lines(self.by_position.values())
    }

    /// The keys of the items whose failure stands.
    pub fn into_keys(self) -> HashSet<String> {
        self.position.into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProcessorSpec;

    fn part(seq: u64, failures: &[&str], redone: &[&str]) -> BatchPart {
        BatchPart {
            job_id: "j".into(),
            seq,
            succeeded: 0,
            failed: failures.len() as u64,
            result: serde_json::from_str::<ProcessorSpec>(r#"{"kind":"count"}"#)
                .unwrap()
                .empty(),
            failures: failures
                .iter()
                .map(|k| FailedItem {
                    key: (*k).into(),
                    error: format!("e{seq}"),
                })
                .collect(),
            outputs: Vec::new(),
            execution: None,
            redone: redone.iter().map(|k| (*k).into()).collect(),
        }
    }

    #[test]
    fn a_failure_stands_until_a_later_batch_redoes_its_item() {
        let mut live = LiveFailures::default();
        live.add(&part(0, &["a", "b"], &[]));
        live.add(&part(1, &["c"], &[]));
        // The redo batch ran a and b again: b failed again (in its first place, with its new error), a
        // succeeded.
        live.add(&part(2, &["b"], &["a", "b"]));
        assert_eq!(live.len(), 2);
        let text = String::from_utf8(live.to_jsonl()).unwrap();
        assert_eq!(
            text,
            "{\"key\":\"b\",\"error\":\"e2\"}\n{\"key\":\"c\",\"error\":\"e1\"}\n"
        );
        // A second redrive ran c and b again; both succeeded.
        live.add(&part(3, &[], &["b", "c"]));
        assert!(live.is_empty());
    }
}
