//! The job spec: the JSON a user submits, its defaults, and the rules each field keeps on its own. It knows
//! nothing of messages or outputs; its `processor` field is the processor registry's [`ProcessorSpec`].
//! Turning a spec into a runnable [`Job`] (parsing, the checks that need the message envelope or the output
//! names) is [`crate::job`]'s.
//!
//! Field names mirror Step Functions Distributed Map (ItemReader, ItemBatcher, ToleratedFailure…,
//! ResultWriter) in snake_case.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::processor::{ItemKind, ProcessorSpec};

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
    #[serde(deserialize_with = "deserialize_item_reader")]
    pub item_reader: ItemReader,
    #[serde(default)]
    pub item_batcher: ItemBatcher,
    pub processor: ProcessorSpec,
    /// The most batches of the job in flight at once across all workers (Distributed Map's `MaxConcurrency`;
    /// 0 or absent: no limit but the workers'), to protect what the processor calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage: Option<f64>,
    pub result_writer: ResultWriter,
}

/// Where the items come from: `{"kind": "<kind>", <the reader's fields>}`, `kind` defaulting to `s3_list`
/// (so specs written before there were other readers keep their meaning and their digest).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ItemReader {
    /// Every listed object that the suffix and filters select.
    S3List(S3ListReader),
    /// The rows of one CSV object, the lines of a JSON Lines object, or the elements of a JSON array.
    S3Object(S3ObjectReader),
    /// The objects an S3 Inventory report lists.
    S3Inventory(S3InventoryReader),
    /// Every item of a DynamoDB table, read by a parallel Scan.
    DynamodbScan(DynamodbScanReader),
    /// Items given in the spec itself.
    Inline(InlineReader),
}

/// `{"kind": "s3_list", "bucket", "prefix", "suffix", ...filters}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ListReader {
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
    /// How many key ranges of a listing larger than one page are listed at once (1: one stream; see
    /// [`crate::parallel_listing`]). Absent, the deployment decides
    /// ([`crate::coordinator::ListParallelism`]): the stack's `MaxListParallelism` on Lambda, one stream in
    /// `dmap run`. A deployment also caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_parallelism: Option<u32>,
}

impl S3ListReader {
    /// Ranges listed at once on Lambda by default (the stack's `MaxListParallelism`): 16 streams of
    /// ListObjectsV2 send ~50-150 requests a second, far below S3's 5,500 GET (LIST included) per second per
    /// prefix, and list ~15x faster than one.
    pub const DEFAULT_LIST_PARALLELISM: u32 = 16;
    /// The most ranges: each is a few hundred bytes of the job's checkpoint, whose DynamoDB item holds 400 KB.
    pub const MAX_LIST_PARALLELISM: u32 = 64;
}

/// `{"kind": "s3_object", "bucket", "key", "format", "csv_header", "csv_delimiter"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ObjectReader {
    pub bucket: String,
    pub key: String,
    pub format: ObjectFormat,
    /// CSV only: `"first_row"` (the default) or the column names, every row then being data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_header: Option<CsvHeader>,
    /// CSV only: one byte; `,` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_delimiter: Option<String>,
}

/// How an `s3_object`'s bytes are items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// Each row one item: an object of column name → string.
    Csv,
    /// Each line one item: any JSON value.
    Jsonl,
    /// A top-level array, each element one item.
    Json,
}

/// A CSV's column names: `"first_row"`, or given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CsvHeader {
    /// Only `"first_row"` is meaningful; [`JobSpec::validate_fields`] refuses any other word.
    FirstRow(String),
    Names(Vec<String>),
}

/// `{"kind": "s3_inventory", "bucket", "manifest_key", "prefix", "suffix", ...filters}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3InventoryReader {
    /// The bucket holding the report's manifest and data files.
    pub bucket: String,
    /// The report's `manifest.json`.
    pub manifest_key: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_before: Option<String>,
}

/// `{"kind": "dynamodb_scan", "table", "segments", "max_read_units_per_second"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamodbScanReader {
    pub table: String,
    /// Parallel Scan segments, 1–1,000.
    #[serde(default = "one")]
    pub segments: u32,
    /// Read capacity the scan may use per second (none: as fast as the table answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_read_units_per_second: Option<u32>,
}

fn one() -> u32 {
    1
}

/// `{"kind": "inline", "items": [...]}`: Distributed Map's `ItemsPath`, for small lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineReader {
    pub items: Vec<serde_json::Value>,
}

impl ItemReader {
    /// The reader's `kind`, as the spec names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::S3List(_) => "s3_list",
            Self::S3Object(_) => "s3_object",
            Self::S3Inventory(_) => "s3_inventory",
            Self::DynamodbScan(_) => "dynamodb_scan",
            Self::Inline(_) => "inline",
        }
    }

    /// What its items are.
    pub fn item_kind(&self) -> ItemKind {
        match self {
            Self::S3List(_) | Self::S3Inventory(_) => ItemKind::Object,
            Self::S3Object(r) if r.format == ObjectFormat::Csv => ItemKind::Record,
            Self::DynamodbScan(_) => ItemKind::Record,
            Self::S3Object(_) | Self::Inline(_) => ItemKind::Value,
        }
    }

    /// The bucket the reader reads (the listing's, the object's, the inventory report's), if it reads one.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Self::S3List(r) => Some(&r.bucket),
            Self::S3Object(r) => Some(&r.bucket),
            Self::S3Inventory(r) => Some(&r.bucket),
            Self::DynamodbScan(_) | Self::Inline(_) => None,
        }
    }

    /// The listing's reader, for the steps that only `s3_list` has.
    pub fn s3_list(&self) -> Option<&S3ListReader> {
        match self {
            Self::S3List(r) => Some(r),
            _ => None,
        }
    }

    /// The object filters of the readers that select objects (`s3_list`, `s3_inventory`).
    pub fn filters(&self) -> Option<Filters<'_>> {
        match self {
            Self::S3List(r) => Some(r.filters()),
            Self::S3Inventory(r) => Some(r.filters()),
            _ => None,
        }
    }
}

/// The same filter fields, in both readers that have them.
macro_rules! filters_of {
    ($($reader:ty),+) => {$(
        impl $reader {
            /// The reader's object filters.
            pub fn filters(&self) -> Filters<'_> {
                Filters {
                    prefix: &self.prefix,
                    suffix: self.suffix.as_deref(),
                    min_size: self.min_size,
                    max_size: self.max_size,
                    modified_after: self.modified_after.as_deref(),
                    modified_before: self.modified_before.as_deref(),
                }
            }
        }
    )+};
}

filters_of!(S3ListReader, S3InventoryReader);

/// A reader's object filters, borrowed: the same rules for a listing and an inventory report.
#[derive(Debug, Clone, Copy)]
pub struct Filters<'a> {
    pub prefix: &'a str,
    pub suffix: Option<&'a str>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub modified_after: Option<&'a str>,
    pub modified_before: Option<&'a str>,
}

/// `item_reader` as the spec gives it: a missing `kind` is `s3_list`. Read in two steps (the kind, then that
/// reader's fields) so that an error inside names its field (`min_size: invalid type...`), which serde's
/// internally tagged enums lose.
fn deserialize_item_reader<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ItemReader, D::Error> {
    use serde::de::{DeserializeOwned, Error};
    let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    let kind = match map.remove("kind") {
        None => "s3_list".to_owned(),
        Some(serde_json::Value::String(kind)) => kind,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "kind: invalid type: {other}, expected a string"
            )));
        }
    };
    fn fields<T: DeserializeOwned, E: Error>(
        map: serde_json::Map<String, serde_json::Value>,
    ) -> Result<T, E> {
        serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if path == "." {
                E::custom(message)
            } else {
                E::custom(format!("{path}: {message}"))
            }
        })
    }
    Ok(match kind.as_str() {
        "s3_list" => ItemReader::S3List(fields(map)?),
        "s3_object" => ItemReader::S3Object(fields(map)?),
        "s3_inventory" => ItemReader::S3Inventory(fields(map)?),
        "dynamodb_scan" => ItemReader::DynamodbScan(fields(map)?),
        "inline" => ItemReader::Inline(fields(map)?),
        other => {
            return Err(D::Error::unknown_variant(
                other,
                &[
                    "s3_list",
                    "s3_object",
                    "s3_inventory",
                    "dynamodb_scan",
                    "inline",
                ],
            ));
        }
    })
}

/// Which listed objects are items: the reader's prefix, suffix and filters, their instants parsed once. Made by
/// [`Filters::selection`] from a validated spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    prefix: String,
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
        key.starts_with(&self.prefix)
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
            && (self.min_size..=self.max_size).contains(&size)
            && self.after_ms.is_none_or(|after| last_modified_ms > after)
            && self
                .before_ms
                .is_none_or(|before| last_modified_ms < before)
    }
}

impl Filters<'_> {
    /// The reader's selection. Its instants were checked by [`JobSpec::validate_fields`]; one that does not
    /// parse (a spec that skipped validation) selects nothing rather than everything.
    pub fn selection(&self) -> Selection {
        let instant = |value: Option<&str>, unparsable: i64| {
            value.map(|v| parse_instant_ms(v).unwrap_or(unparsable))
        };
        Selection {
            prefix: self.prefix.to_owned(),
            suffix: self.suffix.map(str::to_owned),
            min_size: self.min_size.unwrap_or(0),
            max_size: self.max_size.unwrap_or(u64::MAX),
            after_ms: instant(self.modified_after, i64::MAX),
            before_ms: instant(self.modified_before, i64::MIN),
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
        self.validate_reader()?;
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

    /// The reader's own rules, each naming its field under `item_reader`.
    fn validate_reader(&self) -> Result<(), SpecError> {
        let reader = &self.item_reader;
        if let Some(bucket) = reader.bucket() {
            validate_bucket("item_reader.bucket", bucket)?;
        }
        if let Some(filters) = reader.filters() {
            validate_filters(&filters)?;
        }
        match reader {
            ItemReader::S3List(r) => {
                if let Some(p) = r.list_parallelism
                    && !(1..=S3ListReader::MAX_LIST_PARALLELISM).contains(&p)
                {
                    return Err(SpecError::new(
                        "item_reader.list_parallelism",
                        format!(
                            "must be between 1 and {}, not {p}",
                            S3ListReader::MAX_LIST_PARALLELISM
                        ),
                    ));
                }
            }
            ItemReader::Inline(_) => {}
            ItemReader::S3Object(r) => {
                validate_object_key("item_reader.key", &r.key)?;
                let csv_only = r.format != ObjectFormat::Csv;
                if csv_only && (r.csv_header.is_some() || r.csv_delimiter.is_some()) {
                    let field = if r.csv_header.is_some() {
                        "csv_header"
                    } else {
                        "csv_delimiter"
                    };
                    return Err(SpecError::new(
                        &format!("item_reader.{field}"),
                        "applies to the csv format only",
                    ));
                }
                match &r.csv_header {
                    Some(CsvHeader::FirstRow(word)) if word != "first_row" => {
                        return Err(SpecError::new(
                            "item_reader.csv_header",
                            format!(
                                "\"{}\" is neither \"first_row\" nor a list of column names",
                                crate::processor::echo(word)
                            ),
                        ));
                    }
                    Some(CsvHeader::Names(names)) => validate_column_names(names)?,
                    _ => {}
                }
                if let Some(delimiter) = &r.csv_delimiter
                    && (delimiter.len() != 1
                        || matches!(delimiter.as_bytes()[0], b'"' | b'\n' | b'\r'))
                {
                    return Err(SpecError::new(
                        "item_reader.csv_delimiter",
                        format!(
                            "\"{}\" must be one byte (e.g. \",\", \";\" or a tab), not a quote or a line end",
                            crate::processor::echo(delimiter)
                        ),
                    ));
                }
            }
            ItemReader::S3Inventory(r) => {
                validate_object_key("item_reader.manifest_key", &r.manifest_key)?;
            }
            ItemReader::DynamodbScan(r) => {
                validate_table("item_reader.table", &r.table)?;
                if !(1..=MAX_SCAN_SEGMENTS).contains(&r.segments) {
                    return Err(SpecError::new(
                        "item_reader.segments",
                        format!("{} is outside 1–{MAX_SCAN_SEGMENTS}", r.segments),
                    ));
                }
                if r.max_read_units_per_second == Some(0) {
                    return Err(SpecError::new(
                        "item_reader.max_read_units_per_second",
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
            }
        }
        let kind = reader.item_kind();
        if !self.processor.takes(kind) {
            return Err(SpecError::new(
                "processor.kind",
                format!(
                    "\"{}\" does not take {}, the items of item_reader.kind \"{}\"",
                    self.processor.kind(),
                    kind.describe(),
                    reader.kind()
                ),
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

/// Most segments of a parallel Scan (DynamoDB's own limit is 1,000,000; more than this buys nothing here).
pub const MAX_SCAN_SEGMENTS: u32 = 1000;

/// The object filters: a prefix and suffix that are parts of a key, sizes and instants that can select something.
fn validate_filters(filters: &Filters<'_>) -> Result<(), SpecError> {
    validate_key_part("item_reader.prefix", filters.prefix)?;
    validate_folders("item_reader.prefix", filters.prefix)?;
    if let Some(suffix) = filters.suffix {
        if suffix.is_empty() {
            return Err(SpecError::new(
                "item_reader.suffix",
                "must not be empty (leave it out to take every object)",
            ));
        }
        validate_key_part("item_reader.suffix", suffix)?;
    }
    if let (Some(min), Some(max)) = (filters.min_size, filters.max_size)
        && min > max
    {
        return Err(SpecError::new(
            "item_reader.max_size",
            format!("{max} is less than min_size {min}: no object could be selected"),
        ));
    }
    let mut instants = [None, None];
    for (i, (field, value)) in [
        ("item_reader.modified_after", filters.modified_after),
        ("item_reader.modified_before", filters.modified_before),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(value) = value {
            instants[i] =
                Some(parse_instant_ms(value).map_err(|message| SpecError::new(field, message))?);
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
    Ok(())
}

/// A whole object key: not empty, and a key S3 can hold.
fn validate_object_key(field: &str, key: &str) -> Result<(), SpecError> {
    if key.is_empty() {
        return Err(SpecError::new(field, "must name an object"));
    }
    validate_key_part(field, key)
}

/// Given CSV column names: each named, none twice (they become the fields of every row's item).
fn validate_column_names(names: &[String]) -> Result<(), SpecError> {
    if names.is_empty() {
        return Err(SpecError::new("item_reader.csv_header", "names no column"));
    }
    for (i, name) in names.iter().enumerate() {
        let field = format!("item_reader.csv_header[{i}]");
        if name.is_empty() {
            return Err(SpecError::new(
                &field,
                "is empty: every column needs a name",
            ));
        }
        if names[..i].contains(name) {
            return Err(SpecError::new(
                &field,
                format!("\"{}\" names two columns", crate::processor::echo(name)),
            ));
        }
    }
    Ok(())
}

/// DynamoDB table naming rules: 3–255 of `[A-Za-z0-9_.-]`.
fn validate_table(field: &str, table: &str) -> Result<(), SpecError> {
    let ok = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!(
                "\"{}\" is not a valid DynamoDB table name (3–255 characters: letters, digits, '_', '.' and '-')",
                crate::processor::echo(table)
            ),
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
        deserialize_item_reader(json).unwrap()
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
        .filters()
        .unwrap()
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
        let everything = reader(serde_json::json!({"bucket": "b"}))
            .filters()
            .unwrap()
            .selection();
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
