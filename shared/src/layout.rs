//! Where a job's files live. All keys are derived from the job, never stored; what the files hold is
//! [`crate::outcome`].
//!
//! Under `<result_writer.bucket>/<result_writer.prefix><job_id>/`:
//! `manifest.json`, `result.json`, `failed.jsonl`, `parts/` (one partial result per batch), `outputs/`
//! (the per-item output lines, one file per range of batches, named by the first batch's seq), for the
//! `lambda` processor `map-results/` (Distributed Map's ResultWriter layout), `result-<n>.json` (a result of
//! more groups than one process holds, in shards that `result.json` indexes), and `finalize/` (a job finalized as a
//! tree: what each range's merge found; the groups a merge spilled).

use serde::{Deserialize, Serialize};

use crate::spec::Job;

/// The shape of a key the job writes in its output folder: `head`, then, for a key per batch, the batch's seq
/// written with at least `seq_digits` digits, then (for a worker's part) `.` and the `attempt` hex digits of
/// the attempt that wrote it, then `tail`. Every key is made from its shape, so the check that
/// a listing can never see an output ([`OutputShape::can_match`]) covers every key a job can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputShape {
    pub head: &'static str,
    pub seq_digits: Option<usize>,
    /// Hex digits of an attempt id after the seq (0: none).
    pub attempt: usize,
    pub tail: &'static str,
}

/// Hex digits of the attempt id in a worker's part key.
pub const ATTEMPT_DIGITS: usize = 8;

/// Most digits of a seq (a `u64`).
const MAX_SEQ_DIGITS: usize = 20;

impl OutputShape {
    const fn fixed(name: &'static str) -> Self {
        Self {
            head: name,
            seq_digits: None,
            attempt: 0,
            tail: "",
        }
    }

    const fn per_batch(head: &'static str, attempt: usize, tail: &'static str) -> Self {
        Self {
            head,
            seq_digits: Some(10),
            attempt,
            tail,
        }
    }

    const fn numbered(head: &'static str, tail: &'static str) -> Self {
        Self {
            head,
            seq_digits: Some(1),
            attempt: 0,
            tail,
        }
    }

    /// The key of this shape in the folder `dir` (for batch `seq` and the attempt `attempt`, if the shape has
    /// them).
    fn key(&self, dir: &str, seq: u64, attempt: &str) -> String {
        debug_assert_eq!(attempt.len(), self.attempt);
        let attempt = if self.attempt > 0 {
            format!(".{attempt}")
        } else {
            String::new()
        };
        match self.seq_digits {
            Some(width) => format!("{dir}{}{seq:0width$}{attempt}{}", self.head, self.tail),
            None => format!("{dir}{}{}", self.head, self.tail),
        }
    }

    /// How the keys of this shape in `dir` look, for a message: `dir/parts/<seq>.json`.
    pub fn pattern(&self, dir: &str) -> String {
        let seq = if self.seq_digits.is_some() {
            "<seq>"
        } else {
            ""
        };
        let attempt = if self.attempt > 0 { ".<attempt>" } else { "" };
        format!("{dir}{}{seq}{attempt}{}", self.head, self.tail)
    }

    /// Whether some key of this shape in `dir` starts with `prefix` and ends with `suffix` (a listing with
    /// that prefix and suffix would see it).
    pub fn can_match(&self, dir: &str, prefix: &str, suffix: &str) -> bool {
        let (head, tail) = (format!("{dir}{}", self.head), self.tail.as_bytes());
        let Some(min) = self.seq_digits else {
            let key = format!("{head}{}", self.tail);
            return key.starts_with(prefix) && key.ends_with(suffix);
        };
        let (head, p, s) = (head.as_bytes(), prefix.as_bytes(), suffix.as_bytes());
        // The attempt's `.` and hex digits, between the seq and the tail.
        let attempt = if self.attempt > 0 {
            self.attempt + 1
        } else {
            0
        };
        // Key by key length: position i holds a fixed byte of the head or tail, or any digit of the seq (or hex
        // digit of the attempt).
        (min..=MAX_SEQ_DIGITS).any(|width| {
            let len = head.len() + width + attempt + tail.len();
            if p.len() > len || s.len() > len {
                return false;
            }
            // Zero-padded to `min` digits: a longer seq has no leading zero.
            let fits = |i: usize, b: u8| match i.checked_sub(head.len()) {
                None => head[i] == b,
                Some(0) if width > min => matches!(b, b'1'..=b'9'),
                Some(d) if d < width => b.is_ascii_digit(),
                Some(d) if d == width && attempt > 0 => b == b'.',
                Some(d) if d < width + attempt => b.is_ascii_hexdigit(),
                Some(d) => tail[d - width - attempt] == b,
            };
            let s_start = len - s.len();
            p.iter().enumerate().all(|(i, &b)| fits(i, b))
                && s.iter().enumerate().all(|(j, &b)| fits(s_start + j, b))
                // Where both fall on one position (a digit of the seq), they must agree.
                && (s_start..p.len()).all(|i| p[i] == s[i - s_start])
        })
    }
}

pub const MANIFEST: OutputShape = OutputShape::fixed("manifest.json");
pub const RESULT: OutputShape = OutputShape::fixed("result.json");
pub const FAILURES: OutputShape = OutputShape::fixed("failed.jsonl");
pub const PART: OutputShape = OutputShape::per_batch("parts/", ATTEMPT_DIGITS, ".json");
pub const DEAD_PART: OutputShape = OutputShape::per_batch("parts/", 0, ".dead.json");
pub const OUTPUTS: OutputShape = OutputShape::per_batch("outputs/", 0, ".jsonl");
/// A user's function's last error on a batch (the `lambda` processor), for the dead-letter handler.
pub const FUNCTION_ERROR: OutputShape = OutputShape::per_batch("parts/", 0, ".error.json");
pub const MAP_RESULTS_MANIFEST: OutputShape = OutputShape::fixed("map-results/manifest.json");
/// Distributed Map's result files, numbered from 0 without padding, as Step Functions names them.
pub const MAP_RESULTS_SUCCEEDED: OutputShape =
    OutputShape::numbered("map-results/SUCCEEDED_", ".json");
pub const MAP_RESULTS_FAILED: OutputShape = OutputShape::numbered("map-results/FAILED_", ".json");
/// What the merge of one range of a job's batches found (a tree-shaped finalize), named by its first batch.
pub const FINALIZE_RANGE: OutputShape = OutputShape::per_batch("finalize/", 0, ".json");
/// The failure lines of one range's batches, in order.
pub const FINALIZE_FAILURES: OutputShape = OutputShape::per_batch("finalize/", 0, ".failed.jsonl");
/// The output lines of one range's batches, in order.
pub const FINALIZE_OUTPUTS: OutputShape = OutputShape::per_batch("finalize/", 0, ".outputs.jsonl");
/// When the ranges' merges were last sent.
pub const FINALIZE_FAN_OUT: OutputShape = OutputShape::fixed("finalize/fan-out.json");
/// One shard of the groups a merge spilled (a result of more groups than one process holds), numbered by
/// the spill, then the merge's id (8 hex digits) and the shard (2).
pub const FINALIZE_GROUPS: OutputShape = OutputShape::per_batch("finalize/groups/", 10, ".json");
/// One shard of a result of more groups than one process holds, which `result.json` then indexes.
pub const RESULT_SHARD: OutputShape = OutputShape::numbered("result-", ".json");

/// Every shape of key a job writes in its output folder (the listing must never be able to see one). `outputs/`
/// and `map-results/` are among them whatever the processor: a spec is refused for what its job could write.
pub const OUTPUT_SHAPES: [OutputShape; 16] = [
    MANIFEST,
    RESULT,
    FAILURES,
    PART,
    DEAD_PART,
    OUTPUTS,
    FUNCTION_ERROR,
    MAP_RESULTS_MANIFEST,
    MAP_RESULTS_SUCCEEDED,
    MAP_RESULTS_FAILED,
    FINALIZE_RANGE,
    FINALIZE_FAILURES,
    FINALIZE_OUTPUTS,
    FINALIZE_FAN_OUT,
    FINALIZE_GROUPS,
    RESULT_SHARD,
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
        MANIFEST.key(&self.dir, 0, "")
    }

    pub fn result_key(&self) -> String {
        RESULT.key(&self.dir, 0, "")
    }

    pub fn failures_key(&self) -> String {
        FAILURES.key(&self.dir, 0, "")
    }

    /// A worker's partial result for batch `seq`, written by the attempt `attempt` ([`ATTEMPT_DIGITS`] hex
    /// digits): every attempt writes its own object, so a redelivery can never overwrite the part a record
    /// already points to (the objects may have changed in between).
    pub fn part_key(&self, seq: u64, attempt: &str) -> String {
        PART.key(&self.dir, seq, attempt)
    }

    /// The partial result written for a dead-lettered batch (all items failed). A different key from
    /// [`Self::part_key`], so it can never overwrite a part that a worker did record.
    pub fn dead_part_key(&self, seq: u64) -> String {
        DEAD_PART.key(&self.dir, seq, "")
    }

    /// A file of per-item output lines whose first line is from batch `seq`. Written by the finalizer alone,
    /// from the recorded parts, so it holds no line of an attempt that lost.
    pub fn outputs_key(&self, seq: u64) -> String {
        OUTPUTS.key(&self.dir, seq, "")
    }

    /// The last error of a user's function on batch `seq`: written by a worker's attempt that failed for good,
    /// read by the dead-letter handler.
    pub fn error_key(&self, seq: u64) -> String {
        FUNCTION_ERROR.key(&self.dir, seq, "")
    }

    /// Where a tree-shaped finalize keeps what its ranges' merges found ([`crate::finalizer`]).
    pub fn finalize_dir(&self) -> String {
        format!("{}finalize/", self.dir)
    }

    /// The merge of the range whose first batch is `first`.
    pub fn finalize_range_key(&self, first: u64) -> String {
        FINALIZE_RANGE.key(&self.dir, first, "")
    }

    /// The failure lines of the range whose first batch is `first`.
    pub fn finalize_failures_key(&self, first: u64) -> String {
        FINALIZE_FAILURES.key(&self.dir, first, "")
    }

    /// The output lines of the range whose first batch is `first`.
    pub fn finalize_outputs_key(&self, first: u64) -> String {
        FINALIZE_OUTPUTS.key(&self.dir, first, "")
    }

    /// When the ranges' merges were last sent.
    pub fn finalize_fan_out_key(&self) -> String {
        FINALIZE_FAN_OUT.key(&self.dir, 0, "")
    }

    /// Shard `shard` of the groups of spill `spill` by the merge `writer` (see [`crate::finalizer`]).
    pub fn finalize_groups_key(&self, spill: u64, writer: u32, shard: usize) -> String {
        FINALIZE_GROUPS.key(&self.dir, spill, &format!("{writer:08x}{shard:02x}"))
    }

    /// Shard `shard` of a result too large to hold whole, which `result.json` indexes.
    pub fn result_shard_key(&self, shard: usize) -> String {
        RESULT_SHARD.key(&self.dir, shard as u64, "")
    }

    /// Distributed Map's ResultWriter manifest of the job's executions.
    pub fn map_results_manifest_key(&self) -> String {
        MAP_RESULTS_MANIFEST.key(&self.dir, 0, "")
    }

    /// Result file `n` of the executions that succeeded (`failed`: that failed).
    pub fn map_results_key(&self, failed: bool, n: u64) -> String {
        let shape = if failed {
            MAP_RESULTS_FAILED
        } else {
            MAP_RESULTS_SUCCEEDED
        };
        shape.key(&self.dir, n, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_from_their_shapes() {
        let out = OutputLocation {
            bucket: "b".into(),
            dir: "results/j/".into(),
        };
        assert_eq!(out.manifest_key(), "results/j/manifest.json");
        assert_eq!(
            out.part_key(7, "0a1b2c3d"),
            "results/j/parts/0000000007.0a1b2c3d.json"
        );
        assert_eq!(
            out.dead_part_key(12_345_678_901),
            "results/j/parts/12345678901.dead.json"
        );
        assert_eq!(out.outputs_key(42), "results/j/outputs/0000000042.jsonl");
        assert_eq!(out.error_key(3), "results/j/parts/0000000003.error.json");
        assert_eq!(
            out.finalize_groups_key(12, 0xdead_beef, 31),
            "results/j/finalize/groups/0000000012.deadbeef1f.json"
        );
        assert_eq!(out.result_shard_key(7), "results/j/result-7.json");
        assert!(FINALIZE_GROUPS.can_match(&out.dir, "results/j/finalize/g", "a1f.json"));
        assert!(RESULT_SHARD.can_match(&out.dir, "results/j/result-", "31.json"));
        assert!(!RESULT_SHARD.can_match(&out.dir, "results/j/result", ".json.x"));
        assert_eq!(
            out.map_results_key(false, 12),
            "results/j/map-results/SUCCEEDED_12.json"
        );
        assert_eq!(
            out.map_results_manifest_key(),
            "results/j/map-results/manifest.json"
        );
        for seq in [0, 7, 9_999_999_999, 10_000_000_000, u64::MAX] {
            for (shape, key) in [
                (PART, out.part_key(seq, "deadbeef")),
                (DEAD_PART, out.dead_part_key(seq)),
                (OUTPUTS, out.outputs_key(seq)),
            ] {
                assert!(shape.can_match(&out.dir, &key, &key), "{key}");
                assert!(
                    shape.can_match(&out.dir, "", &key[key.len() - 7..]),
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn a_shape_matches_a_prefix_and_suffix_only_together() {
        let dir = "r/j/";
        assert!(PART.can_match(dir, "r/j/parts/00", "1.json"));
        assert!(PART.can_match(dir, "r/j/parts/0000000000.a", "f.json"));
        assert!(PART.can_match(dir, "r/j/parts/0000000000.0a1b2c3d.j", "n"));
        assert!(
            !PART.can_match(dir, "r/j/parts/0000000000.j", "n"),
            "an attempt is hex"
        );
        assert!(!PART.can_match(dir, "r/j/parts/0000000000.0a1b2c3d.j", ".dead.json"));
        assert!(DEAD_PART.can_match(dir, "r/j/parts/0000000000.d", ".json"));
        assert!(
            !PART.can_match(dir, "", "/1.0a1b2c3d.json"),
            "a seq has at least 10 digits"
        );
        assert!(PART.can_match(dir, "r/j/parts/12", "3.json"));
        // Prefix and suffix overlapping on the digits must agree on them.
        assert!(PART.can_match(dir, "r/j/parts/0000000001", "0000000001.00000000.json"));
        assert!(!PART.can_match(dir, "r/j/parts/0000000001", "0000000002.00000000.json"));
        assert!(!FAILURES.can_match(dir, "r/j/parts/", ".jsonl"));
        assert!(FAILURES.can_match(dir, "r/", "d.jsonl"));
        assert!(OUTPUTS.can_match(dir, "r/j/o", "7.jsonl"));
        assert!(!OUTPUTS.can_match(dir, "r/j/parts/", ".jsonl"));
        assert!(!OUTPUTS.can_match(dir, "", "d.jsonl"), "a seq is digits");
        assert_eq!(OUTPUTS.pattern(dir), "r/j/outputs/<seq>.jsonl");
        assert_eq!(PART.pattern(dir), "r/j/parts/<seq>.<attempt>.json");
        assert!(MAP_RESULTS_SUCCEEDED.can_match(dir, "r/j/map-results/SUCCEEDED_0", ".json"));
        assert!(MAP_RESULTS_FAILED.can_match(dir, "r/j/map-results/FAILED_1", "2.json"));
        assert!(!MAP_RESULTS_FAILED.can_match(dir, "r/j/map-results/FAILED_0", "2.json"));
        assert!(FUNCTION_ERROR.can_match(dir, "r/j/parts/", ".error.json"));
    }
}
