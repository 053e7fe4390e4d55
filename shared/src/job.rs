//! Turning a job spec into a runnable [`Job`]: parsing, resolving the job id, and the checks that need more
//! than one field: outputs that the listing could see, and a batch message's envelope that must leave room
//! for any one item. The per-field rules are [`crate::spec`]'s.

use crate::batching::BatchLimits;
use crate::layout::OUTPUT_SHAPES;
use crate::processor::MAX_PAYLOAD_BYTES;
use crate::spec::{
    ItemKind, Job, JobSpec, MAX_KEY_BYTES, MAX_SPEC_BYTES, SpecError, validate_job_id,
};

/// An error from inside `item_reader` (read by kind, in two steps): the field it names, `item_reader.<field>`
/// (`kind` for an unknown kind), with the message that says the rest.
fn reader_error(message: String) -> SpecError {
    let field = |name: &str| format!("item_reader.{name}");
    let quoted = |m: &str, marker: &str| {
        m.split_once(marker)
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
    };
    let named = if message.starts_with("unknown variant") {
        Some("kind".to_owned())
    } else if let Some(name) = quoted(&message, "missing field `") {
        Some(name)
    } else if let Some(name) = quoted(&message, "unknown field `") {
        Some(name)
    } else {
        // `<path>: <message>` from a field's own type.
        message
            .split_once(": ")
            .filter(|(path, _)| !path.contains(' '))
            .map(|(path, _)| path.to_owned())
    };
    match named {
        Some(name) => SpecError::new(&field(&name), message),
        None => SpecError::new("item_reader", message),
    }
}

/// A fresh, unique job id, for a spec that names none.
pub fn fresh_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl JobSpec {
    /// Parses and validates a spec; a missing `job_id` is replaced by a fresh unique one.
    pub fn parse(json: &[u8]) -> Result<Job, SpecError> {
        Self::parse_with_id(json, fresh_job_id)
    }

    /// Like [`JobSpec::parse`], with the id to use when the spec has none (the Lambda coordinator derives it
    /// from the triggering object so that a duplicated event maps to the same job).
    pub fn parse_with_id(json: &[u8], make_id: impl FnOnce() -> String) -> Result<Job, SpecError> {
        if json.len() > MAX_SPEC_BYTES {
            return Err(SpecError::new(
                "(root)",
                format!(
                    "the spec is {} bytes, over the limit of {MAX_SPEC_BYTES} bytes (256 KiB)",
                    json.len()
                ),
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        let spec: JobSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if path == "item_reader" {
                return reader_error(message);
            }
            let field = if path == "." {
                "(root)".to_owned()
            } else {
                path
            };
            SpecError::new(&field, message)
        })?;
        spec.into_job(make_id)
    }

    /// Validates this spec and resolves its job id.
    pub fn into_job(mut self, make_id: impl FnOnce() -> String) -> Result<Job, SpecError> {
        let job_id = self.job_id.clone().unwrap_or_else(make_id);
        validate_job_id(&job_id)?;
        self.job_id = Some(job_id.clone());
        self.validate_fields()?;
        self.validate_with_envelope_and_outputs()?;
        Ok(Job { job_id, spec: self })
    }

    fn validate_with_envelope_and_outputs(&self) -> Result<(), SpecError> {
        let max_bytes = self.item_batcher.max_input_bytes_per_batch;
        self.validate_outputs_outside_input()?;
        // Every S3 key must fit in a batch on its own, so that the byte limit can never strand an item.
        let limits = BatchLimits::for_job(self);
        let needed = limits.envelope_bytes + limits.max_item_bytes;
        if (max_bytes as usize) < needed {
            return Err(SpecError::new(
                "item_batcher.max_input_bytes_per_batch",
                format!(
                    "{max_bytes} is too small: a batch message for this job needs {} bytes of envelope plus up to {} \
                     for one item ({}); use at least {needed}",
                    limits.envelope_bytes,
                    limits.max_item_bytes,
                    match (
                        self.item_reader.item_kind(),
                        self.processor.wants_listing_entries()
                    ) {
                        (ItemKind::Object, false) => format!("a {MAX_KEY_BYTES}-byte key"),
                        (ItemKind::Object, true) =>
                            format!("a {MAX_KEY_BYTES}-byte key and its listing entry"),
                        _ => "the failed item that stands for a value too large".to_owned(),
                    }
                ),
            ));
        }
        // A function is invoked with the batch's items as the message carries them: the message's byte limit
        // bounds the payload, which must stay under Lambda's.
        if let Some(lambda) = self.processor.lambda() {
            let most = lambda.max_payload_bytes(max_bytes as usize - limits.envelope_bytes);
            if most > MAX_PAYLOAD_BYTES {
                return Err(SpecError::new(
                    "item_batcher.max_input_bytes_per_batch",
                    format!(
                        "{max_bytes} lets a batch's input to the function reach {most} bytes, over Lambda's \
                         {MAX_PAYLOAD_BYTES}-byte limit for a synchronous invocation"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Outputs written where the listing can see them would become items of the job that writes them.
    fn validate_outputs_outside_input(&self) -> Result<(), SpecError> {
        // Only a listing sees what is written while it runs: the other readers' items are fixed by then.
        let Some(reader) = self.item_reader.s3_list() else {
            return Ok(());
        };
        let writer = &self.result_writer;
        if reader.bucket != writer.bucket {
            return Ok(());
        }
        let job_id = self.job_id.as_deref().unwrap_or_default();
        let output_dir = format!("{}{job_id}/", writer.prefix);
        let suffix = reader.suffix.as_deref().unwrap_or_default();
        // Every key the job can write, each batch's part included, not only sample names.
        if let Some(seen) = OUTPUT_SHAPES
            .iter()
            .find(|shape| shape.can_match(&output_dir, &reader.prefix, suffix))
        {
            return Err(SpecError::new(
                "result_writer.prefix",
                format!(
                    "results would be written under s3://{}/{output_dir}, inside the items being listed \
                     ({} would be listed by item_reader.prefix \"{}\"{}); use another prefix or bucket",
                    writer.bucket,
                    seen.pattern(&output_dir),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ItemBatcher, ItemReader};
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
        let ItemReader::S3List(reader) = &s.item_reader else {
            panic!("{:?}", s.item_reader);
        };
        assert_eq!(
            (reader.prefix.as_str(), reader.suffix.as_deref()),
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
                Box::new(|s| s["item_reader"]["kind"] = json!("ftp_list")),
                "item_reader.kind",
            ),
            (
                "inventory without its manifest",
                Box::new(|s| s["item_reader"] = json!({"kind": "s3_inventory", "bucket": "data"})),
                "item_reader.manifest_key",
            ),
            (
                "a listing's field on another reader",
                Box::new(|s| {
                    s["item_reader"] = json!({"kind": "inline", "items": [1], "prefix": "p/"})
                }),
                "item_reader.prefix",
            ),
            (
                "a wrong type inside a reader",
                Box::new(|s| s["item_reader"]["min_size"] = json!("big")),
                "item_reader.min_size",
            ),
            (
                "no object key",
                Box::new(|s| {
                    s["item_reader"] =
                        json!({"kind": "s3_object", "bucket": "data", "key": "", "format": "csv"})
                }),
                "item_reader.key",
            ),
            (
                "an unknown format",
                Box::new(|s| {
                    s["item_reader"] =
                        json!({"kind": "s3_object", "bucket": "data", "key": "k", "format": "xml"})
                }),
                "item_reader.format",
            ),
            (
                "a CSV option on JSON Lines",
                Box::new(|s| {
                    s["item_reader"] = json!({"kind": "s3_object", "bucket": "data", "key": "k",
                                              "format": "jsonl", "csv_delimiter": ";"})
                }),
                "item_reader.csv_delimiter",
            ),
            (
                "a two-byte delimiter",
                Box::new(|s| {
                    s["item_reader"] = json!({"kind": "s3_object", "bucket": "data", "key": "k",
                                              "format": "csv", "csv_delimiter": "||"})
                }),
                "item_reader.csv_delimiter",
            ),
            (
                "a header word other than first_row",
                Box::new(|s| {
                    s["item_reader"] = json!({"kind": "s3_object", "bucket": "data", "key": "k",
                                              "format": "csv", "csv_header": "second_row"})
                }),
                "item_reader.csv_header",
            ),
            (
                "a column named twice",
                Box::new(|s| {
                    s["item_reader"] = json!({"kind": "s3_object", "bucket": "data", "key": "k",
                                              "format": "csv", "csv_header": ["A", "A"]})
                }),
                "item_reader.csv_header[1]",
            ),
            (
                "a bad table name",
                Box::new(|s| s["item_reader"] = json!({"kind": "dynamodb_scan", "table": "a b"})),
                "item_reader.table",
            ),
            (
                "no segment",
                Box::new(|s| {
                    s["item_reader"] =
                        json!({"kind": "dynamodb_scan", "table": "items", "segments": 0})
                }),
                "item_reader.segments",
            ),
            (
                "too many segments",
                Box::new(|s| {
                    s["item_reader"] =
                        json!({"kind": "dynamodb_scan", "table": "items", "segments": 1001})
                }),
                "item_reader.segments",
            ),
            (
                "a processor that does not take rows",
                Box::new(|s| {
                    s["item_reader"] =
                        json!({"kind": "s3_object", "bucket": "data", "key": "k", "format": "csv"});
                    s["processor"] = json!({"kind": "checksum"});
                }),
                "processor.kind",
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
                "item_reader.bucket",
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
            (
                "max_size under min_size",
                Box::new(|s| {
                    s["item_reader"]["min_size"] = json!(10);
                    s["item_reader"]["max_size"] = json!(9);
                }),
                "item_reader.max_size",
            ),
            (
                "negative size",
                Box::new(|s| s["item_reader"]["min_size"] = json!(-1)),
                "item_reader.min_size",
            ),
            (
                "not a date",
                Box::new(|s| s["item_reader"]["modified_after"] = json!("yesterday")),
                "item_reader.modified_after",
            ),
            (
                "a date without a time",
                Box::new(|s| s["item_reader"]["modified_before"] = json!("2026-01-31")),
                "item_reader.modified_before",
            ),
            (
                "an empty window",
                Box::new(|s| {
                    s["item_reader"]["modified_after"] = json!("2026-02-01T00:00:00+01:00");
                    s["item_reader"]["modified_before"] = json!("2026-01-31T23:00:00Z");
                }),
                "item_reader.modified_before",
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
    fn an_unknown_checksum_algorithm_is_refused_naming_it() {
        let mut spec = base();
        spec["processor"] = json!({ "kind": "checksum", "algorithm": "md5" });
        let err = refused(spec);
        assert_eq!(err.field, "processor");
        assert!(
            err.to_string()
                .contains(r#"unknown checksum algorithm "md5"; use "sha256" or "crc32c""#),
            "{err}"
        );
    }

    #[test]
    fn a_lambda_batch_that_could_pass_lambdas_payload_limit_is_refused() {
        let mut spec = base();
        spec["processor"] =
            json!({"kind": "lambda", "function": "f", "batch_input": {"Bucket": "data"}});
        let job =
            JobSpec::parse(spec.to_string().as_bytes()).expect("a 256 KiB batch fits a payload");
        let limits = BatchLimits::for_job(&job.spec);
        assert!(
            limits.max_item_bytes > BatchLimits::MAX_KEY_JSON_BYTES,
            "items carry listing entries"
        );
        // SQS's message limit keeps every spec that passes its own check far under Lambda's 6 MB; the payload
        // check still holds on its own, for the day a batch outgrows one message.
        let mut big = job.spec.clone();
        big.item_batcher.max_input_bytes_per_batch = 7_000_000;
        let err = big.validate_with_envelope_and_outputs().unwrap_err();
        assert_eq!(err.field, "item_batcher.max_input_bytes_per_batch");
        assert!(
            err.message.contains("over Lambda's 6291456-byte limit"),
            "{err}"
        );
        big.item_batcher.max_input_bytes_per_batch = MAX_PAYLOAD_BYTES as u32 - 1000;
        big.validate_with_envelope_and_outputs()
            .expect("a payload just under the limit is fine");
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
