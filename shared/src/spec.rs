//! The job spec: the JSON a user submits, its defaults, and the validation that refuses a bad spec before
//! anything is written. Field names mirror Step Functions Distributed Map (ItemReader, ItemBatcher,
//! ToleratedFailure…, ResultWriter) in snake_case.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batching::BatchLimits;
use crate::layout::OUTPUT_NAMES;

/// Largest SQS message body (and so the largest batch we can send).
pub const MAX_MESSAGE_BYTES: u32 = 1_048_576;
/// Longest S3 key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A job spec as submitted. Use [`JobSpec::parse`] to get a validated [`Job`].
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
}

/// How items are read. Only S3 listings today: every listed object whose key ends with the suffix is one item.
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

/// What is computed for each item, and merged into the job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorSpec {
    /// Objects, bytes and lines.
    Count,
    /// Per-group row counts and count/sum/min/max of numeric columns of CSV objects.
    CsvAggregate {
        group_by: String,
        columns: Vec<String>,
    },
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
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A validated spec with its job id resolved. Everything downstream takes a `Job`, never a raw spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub spec: JobSpec,
}

impl JobSpec {
    /// Parses and validates a spec; a missing `job_id` is replaced by a fresh unique one.
    pub fn parse(json: &[u8]) -> Result<Job, SpecError> {
        Self::parse_with_id(json, || uuid::Uuid::new_v4().simple().to_string())
    }

    /// Like [`JobSpec::parse`], with the id to use when the spec has none (the Lambda coordinator derives it
    /// from the triggering object so that a duplicated event maps to the same job).
    pub fn parse_with_id(json: &[u8], make_id: impl FnOnce() -> String) -> Result<Job, SpecError> {
        let de = &mut serde_json::Deserializer::from_slice(json);
        let spec: JobSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(root)".to_owned()
            } else {
                path
            };
            SpecError::new(&field, e.into_inner().to_string())
        })?;
        spec.into_job(make_id)
    }

    /// Validates this spec and resolves its job id.
    pub fn into_job(mut self, make_id: impl FnOnce() -> String) -> Result<Job, SpecError> {
        let job_id = self.job_id.clone().unwrap_or_else(make_id);
        validate_job_id(&job_id)?;
        self.job_id = Some(job_id.clone());
        self.validate()?;
        Ok(Job { job_id, spec: self })
    }

    fn validate(&self) -> Result<(), SpecError> {
        validate_bucket("item_reader.bucket", &self.item_reader.bucket)?;
        validate_key_part("item_reader.prefix", &self.item_reader.prefix)?;
        if let Some(suffix) = &self.item_reader.suffix {
            if suffix.is_empty() {
                return Err(SpecError::new(
                    "item_reader.suffix",
                    "must not be empty (leave it out to take every object)",
                ));
            }
            validate_key_part("item_reader.suffix", suffix)?;
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
        if !result_prefix.is_empty() && !result_prefix.ends_with('/') {
            return Err(SpecError::new(
                "result_writer.prefix",
                format!("must be empty or end with '/' (e.g. \"{result_prefix}/\")"),
            ));
        }
        self.validate_outputs_outside_input()?;
        // Every S3 key must fit in a batch on its own, so that the byte limit can never strand an item.
        let limits = BatchLimits::for_job(self);
        let needed = limits.envelope_bytes + BatchLimits::MAX_ITEM_JSON_BYTES;
        if (max_bytes as usize) < needed {
            return Err(SpecError::new(
                "item_batcher.max_input_bytes_per_batch",
                format!(
                    "{max_bytes} is too small: a batch message for this job needs {} bytes of envelope plus up to {} \
                     for one item (a {MAX_KEY_BYTES}-byte key); use at least {needed}",
                    limits.envelope_bytes,
                    BatchLimits::MAX_ITEM_JSON_BYTES
                ),
            ));
        }
        Ok(())
    }

    fn validate_processor(&self) -> Result<(), SpecError> {
        let ProcessorSpec::CsvAggregate { group_by, columns } = &self.processor else {
            return Ok(());
        };
        if group_by.is_empty() {
            return Err(SpecError::new(
                "processor.group_by",
                "must name a header column",
            ));
        }
        for (i, column) in columns.iter().enumerate() {
            if column.is_empty() {
                return Err(SpecError::new(
                    &format!("processor.columns[{i}]"),
                    "must name a header column",
                ));
            }
            if columns[..i].contains(column) {
                return Err(SpecError::new(
                    &format!("processor.columns[{i}]"),
                    format!("column \"{column}\" is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Outputs written where the listing can see them would become items of the job that writes them.
    fn validate_outputs_outside_input(&self) -> Result<(), SpecError> {
        let reader = &self.item_reader;
        let writer = &self.result_writer;
        if reader.bucket != writer.bucket {
            return Ok(());
        }
        let job_id = self.job_id.as_deref().unwrap_or_default();
        let output_dir = format!("{}{job_id}/", writer.prefix);
        let prefixes_meet =
            output_dir.starts_with(&reader.prefix) || reader.prefix.starts_with(&output_dir);
        let suffix_matches = reader.suffix.as_deref().is_none_or(|suffix| {
            OUTPUT_NAMES
                .iter()
                .any(|name| format!("{output_dir}{name}").ends_with(suffix))
        });
        if prefixes_meet && suffix_matches {
            return Err(SpecError::new(
                "result_writer.prefix",
                format!(
                    "results would be written under s3://{}/{output_dir}, inside the items being listed \
                     (item_reader.prefix \"{}\"{}); use another prefix or bucket",
                    writer.bucket,
                    reader.prefix,
                    reader
                        .suffix
                        .as_deref()
                        .map(|s| format!(", suffix \"{s}\""))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// A stable digest of the spec, stored with the job so that a job id reused for another spec is refused.
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&canonical);
        format!("{hash:x}")
    }
}

fn validate_job_id(id: &str) -> Result<(), SpecError> {
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
    use serde_json::{Value, json};

    fn base() -> Value {
        json!({
            "job_id": "weather-2026",
            "item_reader": { "kind": "s3_list", "bucket": "data", "prefix": "weather/", "suffix": ".csv" },
            "item_batcher": { "max_items_per_batch": 100, "max_input_bytes_per_batch": 262144 },
            "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN"] },
            "tolerated_failure_count": 0,
            "tolerated_failure_percentage": 0,
            "result_writer": { "bucket": "data", "prefix": "results/" }
        })
    }

    fn refused(spec: Value) -> SpecError {
        JobSpec::parse(spec.to_string().as_bytes()).expect_err("the spec is refused")
    }

    #[test]
    fn the_issue_example_parses_with_its_values() {
        let job = JobSpec::parse(base().to_string().as_bytes()).expect("valid");
        assert_eq!(job.job_id, "weather-2026");
        assert_eq!(job.spec.item_batcher.max_items_per_batch, 100);
        assert_eq!(job.spec.tolerated_failure_percentage, Some(0.0));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let spec = json!({
            "item_reader": { "bucket": "data" },
            "processor": { "kind": "count" },
            "result_writer": { "bucket": "out-bucket" }
        });
        let job = JobSpec::parse(spec.to_string().as_bytes()).expect("valid");
        assert_eq!(job.job_id.len(), 32, "a fresh id is made");
        assert_eq!(job.spec.job_id.as_deref(), Some(job.job_id.as_str()));
        let s = &job.spec;
        assert_eq!(s.item_reader.kind, ItemReaderKind::S3List);
        assert_eq!(
            (
                s.item_reader.prefix.as_str(),
                s.item_reader.suffix.as_deref()
            ),
            ("", None)
        );
        assert_eq!(
            s.item_batcher,
            ItemBatcher {
                max_items_per_batch: 100,
                max_input_bytes_per_batch: 262_144
            }
        );
        assert_eq!(s.result_writer.prefix, "results/");
        assert_ne!(
            JobSpec::parse(spec.to_string().as_bytes()).unwrap().job_id,
            job.job_id
        );
    }

    #[test]
    fn every_refusal_names_the_field() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "unknown top-level field",
                Box::new(|s| s["colour"] = json!("red")),
                "colour",
            ),
            (
                "unknown nested field",
                Box::new(|s| s["item_batcher"]["max_items"] = json!(5)),
                "item_batcher.max_items",
            ),
            (
                "unknown reader kind",
                Box::new(|s| s["item_reader"]["kind"] = json!("s3_inventory")),
                "item_reader.kind",
            ),
            (
                "unknown processor kind",
                Box::new(|s| s["processor"] = json!({"kind": "sum"})),
                "processor.kind",
            ),
            (
                "missing bucket",
                Box::new(|s| {
                    s["item_reader"].as_object_mut().unwrap().remove("bucket");
                }),
                "item_reader",
            ),
            (
                "missing result bucket",
                Box::new(|s| {
                    s["result_writer"].as_object_mut().unwrap().remove("bucket");
                }),
                "result_writer",
            ),
            (
                "bad bucket",
                Box::new(|s| s["item_reader"]["bucket"] = json!("Data_Bucket")),
                "item_reader.bucket",
            ),
            (
                "zero batch",
                Box::new(|s| s["item_batcher"]["max_items_per_batch"] = json!(0)),
                "item_batcher.max_items_per_batch",
            ),
            (
                "negative batch",
                Box::new(|s| s["item_batcher"]["max_items_per_batch"] = json!(-3)),
                "item_batcher.max_items_per_batch",
            ),
            (
                "tiny byte limit",
                Box::new(|s| s["item_batcher"]["max_input_bytes_per_batch"] = json!(1000)),
                "item_batcher.max_input_bytes_per_batch",
            ),
            (
                "huge byte limit",
                Box::new(|s| s["item_batcher"]["max_input_bytes_per_batch"] = json!(2_000_000)),
                "item_batcher.max_input_bytes_per_batch",
            ),
            (
                "percentage over 100",
                Box::new(|s| s["tolerated_failure_percentage"] = json!(101)),
                "tolerated_failure_percentage",
            ),
            (
                "percentage below 0",
                Box::new(|s| s["tolerated_failure_percentage"] = json!(-1)),
                "tolerated_failure_percentage",
            ),
            (
                "negative count",
                Box::new(|s| s["tolerated_failure_count"] = json!(-1)),
                "tolerated_failure_count",
            ),
            (
                "bad job id",
                Box::new(|s| s["job_id"] = json!("has space")),
                "job_id",
            ),
            (
                "long job id",
                Box::new(|s| s["job_id"] = json!("x".repeat(65))),
                "job_id",
            ),
            (
                "empty job id",
                Box::new(|s| s["job_id"] = json!("")),
                "job_id",
            ),
            (
                "empty group_by",
                Box::new(|s| s["processor"]["group_by"] = json!("")),
                "processor.group_by",
            ),
            (
                "duplicate column",
                Box::new(|s| s["processor"]["columns"] = json!(["TMAX", "TMAX"])),
                "processor.columns[1]",
            ),
            (
                "empty suffix",
                Box::new(|s| s["item_reader"]["suffix"] = json!("")),
                "item_reader.suffix",
            ),
            (
                "prefix without slash",
                Box::new(|s| s["result_writer"]["prefix"] = json!("out")),
                "result_writer.prefix",
            ),
            (
                "results inside the input",
                Box::new(|s| {
                    s["item_reader"]["prefix"] = json!("");
                    s["item_reader"]["suffix"] = json!(".json");
                }),
                "result_writer.prefix",
            ),
            (
                "not JSON",
                Box::new(|s| *s = json!("just a string")),
                "(root)",
            ),
        ];
        for (what, mutate, field) in cases {
            let mut spec = base();
            mutate(&mut spec);
            let err = refused(spec);
            assert_eq!(err.field, field, "{what}: {err}");
            assert!(err.to_string().contains(field), "{what}: {err}");
        }
    }

    #[test]
    fn results_beside_the_input_are_allowed() {
        let mut spec = base();
        spec["item_reader"]["prefix"] = json!("");
        JobSpec::parse(spec.to_string().as_bytes())
            .expect("a .csv suffix keeps outputs out of the listing");
        spec["result_writer"]["bucket"] = json!("other-bucket");
        spec["item_reader"]["suffix"] = json!(".json");
        JobSpec::parse(spec.to_string().as_bytes()).expect("another bucket is always fine");
    }
}
