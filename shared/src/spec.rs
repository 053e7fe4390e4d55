//! The job spec: the JSON a user submits, its defaults, and the rules each field keeps on its own. It knows
//! nothing of messages or outputs; its `processor` field is the processor registry's [`ProcessorSpec`].
//! Turning a spec into a runnable [`Job`] (parsing, the checks that need the message envelope or the output
//! names) is [`crate::job`]'s.
//!
//! Field names mirror Step Functions Distributed Map (ItemReader, ItemBatcher, ToleratedFailure…,
//! ResultWriter) in snake_case.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::processor::ProcessorSpec;

/// Largest SQS message body (and so the largest batch we can send).
pub const MAX_MESSAGE_BYTES: u32 = 1_048_576;
/// Longest S3 key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest job spec, in bytes (256 KiB, as much as an asynchronous Lambda invoke carries). The job's record
/// holds the spec and a few small fields, so this keeps it well under DynamoDB's 400 KB item limit.
pub const MAX_SPEC_BYTES: usize = 262_144;

/// A job spec as submitted. Use [`JobSpec::parse`] (in [`crate::job`]) to get a validated [`Job`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// 1–64 of `[A-Za-z0-9._-]`; when absent a fresh unique id is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub item_reader: ItemReader,
    #[serde(default)]
    pub item_batcher: ItemBatcher,
    pub processor: ProcessorSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage: Option<f64>,
    pub result_writer: ResultWriter,
}

/// Where the items come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemReader {
    #[serde(default)]
    pub kind: ItemReaderKind,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Only objects of at least this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Only objects of at most this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Only objects last modified after this instant (RFC 3339, any offset; the instant itself excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_after: Option<String>,
    /// Only objects last modified before this instant (RFC 3339, any offset; the instant itself excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_before: Option<String>,
}

/// Which listed objects are items: the reader's suffix and filters, their instants parsed once. Made by
/// [`ItemReader::selection`] from a validated spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    suffix: Option<String>,
    min_size: u64,
    max_size: u64,
    /// Exclusive bounds on LastModified, in milliseconds since the Unix epoch.
    after_ms: Option<i64>,
    before_ms: Option<i64>,
}

impl Selection {
    /// Whether the object `key` of `size` bytes, last modified at `last_modified_ms`, is an item.
    pub fn selects(&self, key: &str, size: u64, last_modified_ms: i64) -> bool {
        self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
            && (self.min_size..=self.max_size).contains(&size)
            && self.after_ms.is_none_or(|after| last_modified_ms > after)
            && self
                .before_ms
                .is_none_or(|before| last_modified_ms < before)
    }
}

impl ItemReader {
    /// The reader's selection. Its instants were checked by [`JobSpec::validate_fields`]; one that does not
    /// parse (a spec that skipped validation) selects nothing rather than everything.
    pub fn selection(&self) -> Selection {
        let instant = |value: &Option<String>, unparsable: i64| {
            value
                .as_deref()
                .map(|v| parse_instant_ms(v).unwrap_or(unparsable))
        };
        Selection {
            suffix: self.suffix.clone(),
            min_size: self.min_size.unwrap_or(0),
            max_size: self.max_size.unwrap_or(u64::MAX),
            after_ms: instant(&self.modified_after, i64::MAX),
            before_ms: instant(&self.modified_before, i64::MIN),
        }
    }
}

/// An RFC 3339 instant (`2026-01-31T23:00:00Z`, `2026-02-01T00:00:00+01:00`), in milliseconds since the Unix
/// epoch (sub-millisecond digits cut, toward the past).
pub fn parse_instant_ms(value: &str) -> Result<i64, String> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let instant = DateTime::from_str(value, Format::DateTimeWithOffset).map_err(|_| {
        format!(
            "\"{}\" is not an RFC 3339 date and time (e.g. \"2026-01-31T00:00:00Z\" or \"2026-01-31T00:00:00+01:00\")",
            crate::processor::echo(value)
        )
    })?;
    instant
        .to_millis()
        .map_err(|_| format!("\"{value}\" is out of range"))
}

/// How items are read. Only S3 listings today: every listed object that the reader's suffix and filters select is
/// one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemReaderKind {
    #[default]
    S3List,
}

/// How items are cut into batches (one batch = one queue message = one unit of work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemBatcher {
    #[serde(default = "default_max_items")]
    pub max_items_per_batch: u32,
    #[serde(default = "default_max_bytes")]
    pub max_input_bytes_per_batch: u32,
}

fn default_max_items() -> u32 {
    100
}
fn default_max_bytes() -> u32 {
    262_144
}

impl Default for ItemBatcher {
    fn default() -> Self {
        Self {
            max_items_per_batch: default_max_items(),
            max_input_bytes_per_batch: default_max_bytes(),
        }
    }
}

/// Where the job's outputs go: `<bucket>/<prefix><job_id>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultWriter {
    pub bucket: String,
    #[serde(default = "default_result_prefix")]
    pub prefix: String,
}

fn default_result_prefix() -> String {
    "results/".to_owned()
}

/// A refused job spec: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job spec: {field}: {message}")]
pub struct SpecError {
    /// Dotted path of the offending field (`item_batcher.max_items_per_batch`), or `(root)`.
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A validated spec with its job id resolved ([`crate::job`] makes them). Everything downstream takes a `Job`,
/// never a raw spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub spec: JobSpec,
}

impl JobSpec {
    /// The rules each field keeps on its own. The rules that need the message envelope or the output names
    /// are [`crate::job`]'s.
    pub(crate) fn validate_fields(&self) -> Result<(), SpecError> {
        validate_bucket("item_reader.bucket", &self.item_reader.bucket)?;
        validate_key_part("item_reader.prefix", &self.item_reader.prefix)?;
        validate_folders("item_reader.prefix", &self.item_reader.prefix)?;
        if let Some(suffix) = &self.item_reader.suffix {
            if suffix.is_empty() {
                return Err(SpecError::new(
                    "item_reader.suffix",
                    "must not be empty (leave it out to take every object)",
                ));
            }
            validate_key_part("item_reader.suffix", suffix)?;
        }
        let reader = &self.item_reader;
        if let (Some(min), Some(max)) = (reader.min_size, reader.max_size)
            && min > max
        {
            return Err(SpecError::new(
                "item_reader.max_size",
                format!("{max} is less than min_size {min}: no object could be selected"),
            ));
        }
        let mut instants = [None, None];
        for (i, (field, value)) in [
            ("item_reader.modified_after", &reader.modified_after),
            ("item_reader.modified_before", &reader.modified_before),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(value) = value {
                instants[i] = Some(
                    parse_instant_ms(value).map_err(|message| SpecError::new(field, message))?,
                );
            }
        }
        if let [Some(after), Some(before)] = instants
            && after >= before
        {
            return Err(SpecError::new(
                "item_reader.modified_before",
                "must be later than modified_after: no object could be selected",
            ));
        }
        if self.item_batcher.max_items_per_batch == 0 {
            return Err(SpecError::new(
                "item_batcher.max_items_per_batch",
                "must be at least 1",
            ));
        }
        let max_bytes = self.item_batcher.max_input_bytes_per_batch;
        if max_bytes > MAX_MESSAGE_BYTES {
            return Err(SpecError::new(
                "item_batcher.max_input_bytes_per_batch",
                format!("{max_bytes} exceeds the SQS message limit of {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        self.validate_processor()?;
        if let Some(pct) = self.tolerated_failure_percentage
            && !(pct.is_finite() && (0.0..=100.0).contains(&pct))
        {
            return Err(SpecError::new(
                "tolerated_failure_percentage",
                format!("{pct} is outside 0–100"),
            ));
        }
        validate_bucket("result_writer.bucket", &self.result_writer.bucket)?;
        let result_prefix = &self.result_writer.prefix;
        validate_key_part("result_writer.prefix", result_prefix)?;
        if result_prefix.starts_with('/') {
            return Err(SpecError::new(
                "result_writer.prefix",
                format!(
                    "\"{result_prefix}\" must not start with '/': the results would go under a folder with no name"
                ),
            ));
        }
        validate_folders("result_writer.prefix", result_prefix)?;
        if !result_prefix.is_empty() && !result_prefix.ends_with('/') {
            return Err(SpecError::new(
                "result_writer.prefix",
                format!("must be empty or end with '/' (e.g. \"{result_prefix}/\")"),
            ));
        }
        Ok(())
    }

    /// A processor's own rules, its field named under `processor`.
    fn validate_processor(&self) -> Result<(), SpecError> {
        self.processor
            .validate()
            .map_err(|e| SpecError::new(&format!("processor.{}", e.field), e.message))
    }

    /// A stable digest of the spec, stored with the job so that a job id reused for another spec is refused.
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&canonical);
        format!("{hash:x}")
    }
}

pub(crate) fn validate_job_id(id: &str) -> Result<(), SpecError> {
    if id == "." || id == ".." {
        return Err(SpecError::new(
            "job_id",
            format!(
                "\"{id}\" names a folder's place, not a folder: the job's outputs go in a folder named after it"
            ),
        ));
    }
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            "job_id",
            format!("\"{id}\" must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'"),
        ))
    }
}

/// S3 bucket naming rules (the subset that matters for portability between local and AWS runs).
fn validate_bucket(field: &str, bucket: &str) -> Result<(), SpecError> {
    let valid_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
    let ends_ok = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(first, last)| first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && valid_chars && ends_ok && !bucket.contains("..") {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!(
                "\"{bucket}\" is not a valid S3 bucket name (3–63 characters: lowercase letters, digits, '.' and '-', \
                 starting and ending with a letter or digit)"
            ),
        ))
    }
}

/// A prefix's folders must have names: `a//b` is legal in S3 but almost always a mistake, and a local data
/// directory cannot hold it.
fn validate_folders(field: &str, prefix: &str) -> Result<(), SpecError> {
    if prefix.contains("//") {
        return Err(SpecError::new(
            field,
            format!("\"{prefix}\" has an empty folder name ('//')"),
        ));
    }
    Ok(())
}

fn validate_key_part(field: &str, part: &str) -> Result<(), SpecError> {
    if part.len() > MAX_KEY_BYTES {
        return Err(SpecError::new(
            field,
            format!(
                "is {} bytes; S3 keys are at most {MAX_KEY_BYTES}",
                part.len()
            ),
        ));
    }
    if part.contains('\0') {
        return Err(SpecError::new(field, "must not contain a NUL character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(json: serde_json::Value) -> ItemReader {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sizes_are_inclusive_and_instants_exclusive_in_any_offset() {
        let selection = reader(serde_json::json!({
            "bucket": "b",
            "suffix": ".csv",
            "min_size": 10,
            "max_size": 20,
            // 2026-01-31T23:00:00Z and 2026-02-01T00:00:00Z.
            "modified_after": "2026-02-01T00:00:00+01:00",
            "modified_before": "2026-01-31T19:00:00-05:00",
        }))
        .selection();
        let (after, before) = (1_769_900_400_000, 1_769_904_000_000);
        let inside = after + 1;
        assert!(selection.selects("a.csv", 10, inside));
        assert!(selection.selects("a.csv", 20, before - 1));
        assert!(!selection.selects("a.txt", 15, inside), "suffix");
        assert!(!selection.selects("a.csv", 9, inside), "below min_size");
        assert!(!selection.selects("a.csv", 21, inside), "above max_size");
        assert!(
            !selection.selects("a.csv", 15, after),
            "modified_after is exclusive"
        );
        assert!(
            !selection.selects("a.csv", 15, before),
            "modified_before is exclusive"
        );
        let everything = reader(serde_json::json!({"bucket": "b"})).selection();
        assert!(
            everything.selects("k", 0, i64::MIN) && everything.selects("k", u64::MAX, i64::MAX)
        );
    }

    #[test]
    fn filters_left_out_keep_a_specs_bytes() {
        let json = serde_json::json!({"kind": "s3_list", "bucket": "b", "prefix": "p/"});
        assert_eq!(serde_json::to_value(reader(json.clone())).unwrap(), json);
        assert_eq!(parse_instant_ms("1970-01-01T00:00:01.0009Z"), Ok(1000));
    }
}
