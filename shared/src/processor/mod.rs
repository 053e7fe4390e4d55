//! Processors: what is computed for one item, and how per-item results merge into the job's result.
//!
//! Every processor, the built-in ones included, is a [`Processor`]: its config (the job spec's `processor`
//! field without `kind`), what it computes for one [`Item`], and how two partial results merge. Merging is
//! associative and commutative, and exact: numbers are decimals, not floats, so the result of any grouping of
//! items (per batch, in any order) equals a plain sequential pass over the same items. `lambda` is the exception:
//! the worker hands it whole batches, which go to the user's own Lambda function ([`crate::function`]), and its
//! job's result is the reducer's response, not a merge.
//!
//! A processor may also emit one JSON record per item ([`Processed::output`]): the map half of a job, written
//! by the finalizer as JSON Lines under the job's `outputs/`, beside the reduce half, `result.json`.
//!
//! The registry is the `processors!` list below: one line per processor. From it come
//! [`ProcessorSpec`] (the spec's field, parsed by `kind`) and [`Aggregate`] (a partial result), which the
//! worker, the finalizer and the dead-letter handler use without knowing which processor runs.

mod batch_item;
mod csv_rows;
mod registry;

use std::borrow::Cow;
use std::fmt::Debug;
use std::io::{ErrorKind, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use registry::processors;

/// What one item of a reader is, so that a processor can say which it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// An S3 object (listed, or named by an inventory): its body is read.
    Object,
    /// A JSON object of named fields: a CSV row, a DynamoDB item.
    Record,
    /// Any JSON value: a JSON Lines line, an element of a JSON array, an inline item.
    Value,
}

impl ItemKind {
    /// How a refusal names this kind.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Object => "S3 objects",
            Self::Record => "records (CSV rows, DynamoDB items)",
            Self::Value => "JSON values",
        }
    }
}

processors! {
    /// Objects, bytes and lines.
    "count" => Count(count::CountProcessor),
    /// Per-group row counts and count/sum/min/max of numeric columns of CSV objects.
    "csv_aggregate" => CsvAggregate(csv_aggregate::CsvAggregateProcessor),
    /// Each object's SHA-256 or CRC32C and size as a per-item output; objects and bytes in all.
    "checksum" => Checksum(checksum::ChecksumProcessor),
    /// Per month, the row with the highest value: the hottest day of each month in NOAA's daily summaries.
    "monthly_high" => MonthlyHigh(monthly_high::MonthlyHighProcessor),
    /// Each batch through the user's own Lambda function, with Distributed Map's input and result layout.
    "lambda" => Lambda(lambda::LambdaProcessor),
}

pub use batch_item::{BatchItem, MAX_ENTRY_EXTRA_JSON_BYTES, S3Item};

pub use checksum::{ChecksumAggregate, ChecksumAlgorithm};
pub use count::CountAggregate;
pub use csv_aggregate::{ColumnStats, CsvAggregate, GroupStats};
pub use lambda::{FunctionRef, LambdaAggregate, MAX_PAYLOAD_BYTES, RetryPolicy};
pub use monthly_high::{MonthlyHighAggregate, Winner};

impl ProcessorSpec {
    /// The `lambda` processor's config, for the steps that hand it whole batches instead of items.
    pub fn lambda(&self) -> Option<&LambdaProcessor> {
        match self {
            Self::Lambda(p) => Some(p),
            _ => None,
        }
    }

    /// Whether it takes items of `kind`.
    pub fn takes(&self, kind: ItemKind) -> bool {
        self.kinds_taken().contains(&kind)
    }

    /// Whether batches carry each object's listing entry (ETag, size, LastModified, storage class), not only its
    /// key: what a function written for Distributed Map takes.
    pub fn wants_listing_entries(&self) -> bool {
        self.lambda().is_some()
    }
}

/// A processor: its config is `Self`, deserialized from the job spec's `processor` field (its `kind` removed)
/// and carried in every batch message. Add one as a file in this folder and a line in `processors!`.
///
/// The config must refuse unknown fields (`#[serde(deny_unknown_fields)]`): a misspelt option would otherwise
/// be ignored silently.
pub trait Processor:
    Debug + Clone + PartialEq + Eq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// A partial result: of one item, of a batch, of the job. `Default` is the result of zero items. Its serde
    /// form goes into batch parts, so it must round-trip exactly (decimals as strings, never floats).
    type Aggregate: Debug
        + Clone
        + Default
        + PartialEq
        + Eq
        + Serialize
        + DeserializeOwned
        + Send
        + 'static;

    /// The kinds of item it takes (S3 objects only, unless it says more).
    const TAKES: &'static [ItemKind] = &[ItemKind::Object];

    /// The result of zero items of `kind`: `Default` unless the result's shape depends on what is counted.
    fn empty(kind: ItemKind) -> Self::Aggregate {
        let _ = kind;
        Self::Aggregate::default()
    }

    /// The rules the config keeps on its own (names not empty, no duplicates…), beyond what its types say.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The result of one item, and its output record if the processor emits one (`Ok(aggregate.into())` when
    /// not). [`ItemError::Invalid`] fails the item for good; [`ItemError::Read`] is transient and retries it.
    /// Blocking: the worker calls it from a blocking thread.
    fn process(&self, item: Item<'_>) -> Result<Processed<Self::Aggregate>, ItemError>;

    /// Folds `other` into `into`: associative, commutative and exact, and all or nothing (an error leaves
    /// `into` as it was, so that only the item or part that caused it fails). It takes no config: parts are
    /// merged the same whichever batch made them.
    fn merge(into: &mut Self::Aggregate, other: Self::Aggregate) -> Result<(), MergeError>;

    /// Processes one item straight into `into` and returns its output record: what `process` then `merge`
    /// give, all or nothing as `merge` is. The worker folds items that need no read (rows, values) this way; a
    /// processor whose per-item result is costly to build (a map per row) overrides it to skip building one.
    fn fold(
        &self,
        into: &mut Self::Aggregate,
        item: Item<'_>,
    ) -> Result<Option<serde_json::Value>, FoldError> {
        let processed = self.process(item)?;
        Self::merge(into, processed.result)?;
        Ok(processed.output)
    }

    /// The user-facing `result.json` form of the job's result.
    fn result_json(aggregate: &Self::Aggregate) -> serde_json::Value;

    /// `result.json`'s bytes: [`Processor::result_json`], indented, and a newline. A processor whose result
    /// grows with the items writes the same bytes without building the JSON tree (several times the result's
    /// own memory) first.
    fn result_bytes(aggregate: &Self::Aggregate) -> Vec<u8> {
        pretty_json(&Self::result_json(aggregate))
    }

    /// The groups the result holds, for a result keyed by a value of the items (`csv_aggregate`'s groups),
    /// which grows with the items: past [`crate::finalizer::FinalizerConfig::result_groups`] the finalizer
    /// spills it in shards ([`Processor::shard`]) instead of holding every group. 0 (the default) for a result
    /// whose size does not grow with the items.
    fn groups(aggregate: &Self::Aggregate) -> usize {
        let _ = aggregate;
        0
    }

    /// Splits the result into `shards` results, each group whole in the one [`shard_of`] its key names: the
    /// same group goes to the same shard from every process, so merging shard by shard is merging the whole.
    /// Called only for a result with [`Processor::groups`]; the default keeps it whole in shard 0.
    fn shard(aggregate: Self::Aggregate, shards: usize) -> Vec<Self::Aggregate> {
        let mut split = vec![Self::Aggregate::default(); shards.max(1)];
        split[0] = aggregate;
        split
    }
}

/// JSON as the job's result files are written: indented, with a newline at the end.
pub fn pretty_json(value: &impl Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).expect("a result serializes");
    body.push(b'\n');
    body
}

/// The shard of `shards` a group keyed `key` belongs to: CRC32C, which is fixed by its standard, so the
/// shard does not change with the build (std's hasher may).
pub fn shard_of(key: &str, shards: usize) -> usize {
    crc32c::crc32c(key.as_bytes()) as usize % shards.max(1)
}

/// What processing one item gave: its partial result, merged into the job's `result.json`, and optionally a
/// record of its own, written as the line `{"key": <the item's key>, "output": <record>}` of a file under the
/// job's `outputs/` (only for an item that succeeds: one that fails, or whose result cannot be merged, has
/// none). The record is JSON written as is, so a processor gives exact numbers as integers or strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed<A> {
    pub result: A,
    pub output: Option<serde_json::Value>,
}

impl<A> Processed<A> {
    /// A result with an output record for the item.
    pub fn with_output(result: A, output: serde_json::Value) -> Self {
        Self {
            result,
            output: Some(output),
        }
    }
}

/// A result without an output record.
impl<A> From<A> for Processed<A> {
    fn from(result: A) -> Self {
        Self {
            result,
            output: None,
        }
    }
}

/// Reads `body` to its end in chunks, handing each to `chunk`, and returns the bytes read: one streaming read
/// for every processor, so none holds a whole object in memory. A failed read is [`ItemError::Read`] naming
/// `key`.
fn read_chunks(key: &str, body: &mut dyn Read, chunk: impl FnMut(&[u8])) -> Result<u64, ItemError> {
    thread_local! {
        /// A thread's read buffer, kept: allocating and zeroing 256 KiB per object cost more than reading a
        /// small one.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.is_empty() {
                buffer.resize(CHUNK_BYTES, 0);
            }
            read_chunks_into(key, body, &mut buffer, chunk)
        }
        // A read within a read (a processor's chunk handler reading another body): a buffer of its own.
        Err(_) => read_chunks_into(key, body, &mut vec![0u8; CHUNK_BYTES], chunk),
    })
}

/// The size of [`read_chunks`]' reads.
const CHUNK_BYTES: usize = 256 * 1024;

fn read_chunks_into(
    key: &str,
    body: &mut dyn Read,
    buf: &mut [u8],
    mut chunk: impl FnMut(&[u8]),
) -> Result<u64, ItemError> {
    let mut bytes = 0u64;
    loop {
        match body.read(buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                bytes += n as u64;
                chunk(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ItemError::Read {
                    key: key.to_owned(),
                    source,
                });
            }
        }
    }
}

/// One item, as the item reader hands it to a processor. A processor says which kinds it takes
/// ([`Processor::TAKES`]); a spec pairing it with a reader of another kind is refused, and an item of another
/// kind reaching it anyway fails alone ([`Item::not_taken`]).
pub enum Item<'a> {
    /// An object: its key, its size when the listing gave it, and its body, streamed.
    Object {
        key: &'a str,
        size: Option<u64>,
        body: &'a mut dyn Read,
    },
    /// A CSV row (an object of column name → string), a JSON value, a DynamoDB item as plain JSON: its name
    /// (`<object key>#L<line>`, `<table>#<primary key>`, `items[<i>]`) and its JSON text, numbers as written.
    Value {
        id: &'a str,
        json: &'a serde_json::value::RawValue,
    },
}

impl Item<'_> {
    /// The item's name in errors and outputs.
    pub fn id(&self) -> &str {
        match self {
            Self::Object { key, .. } => key,
            Self::Value { id, .. } => id,
        }
    }

    /// The error of an item that `kind` does not take.
    pub fn not_taken(&self, kind: &str) -> ItemError {
        ItemError::Invalid(format!(
            "\"{}\": the {kind} processor does not take this kind of item",
            self.id()
        ))
    }
}

/// A refused processor config: the field, relative to the config (`group_by`, `columns[1]`); the spec reports
/// it as `processor.<field>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Most bytes of a data value (a cell, a group) that an error message repeats: enough to recognise it, never a
/// whole row: error messages go to `failed.jsonl` and the logs, which must not carry the data itself.
pub const MAX_ECHO_BYTES: usize = 64;

/// `value` as an error message shows it: at most [`MAX_ECHO_BYTES`] bytes, cut on a character boundary, with
/// how many bytes were left out.
pub fn echo(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_ECHO_BYTES {
        return Cow::Borrowed(value);
    }
    let mut end = MAX_ECHO_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…(+{} bytes)", &value[..end], value.len() - end))
}

/// Why one item could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// The object's content is unusable (bad header, non-numeric cell, not UTF-8 CSV…). Permanent: the item fails
    /// and is listed in `failed.jsonl`. The message names the key, and the row and column where there are some.
    #[error("{0}")]
    Invalid(String),
    /// Reading the object failed midway. Transient: the batch is retried.
    #[error("reading \"{key}\": {source}")]
    Read {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why an item could not be folded into a result: it could not be processed, or its result not merged.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Item(#[from] ItemError),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// Two results that cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("cannot merge a {0} result into a {1} result")]
    KindMismatch(&'static str, &'static str),
    #[error("the sum of column \"{column}\" in group \"{}\" overflows", echo(.group))]
    Overflow { group: String, column: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_cut_at_a_char_boundary() {
        assert_eq!(echo("short"), "short");
        let exact = "x".repeat(64);
        assert_eq!(echo(&exact), exact.as_str());
        // 'a' then two-byte characters: byte 64 falls inside one, so the cut is at 63.
        let value = format!("a{}", "é".repeat(50));
        assert_eq!(echo(&value), format!("a{}…(+38 bytes)", "é".repeat(31)));
    }

    fn csv_spec() -> ProcessorSpec {
        ProcessorSpec::CsvAggregate(CsvAggregateProcessor {
            group_by: "STATION".into(),
            columns: vec!["TMAX".into(), "TMIN".into()],
        })
    }

    #[test]
    fn a_spec_is_its_kind_then_its_config() {
        let count = ProcessorSpec::Count(CountProcessor {});
        assert_eq!(
            serde_json::to_string(&count).unwrap(),
            r#"{"kind":"count"}"#
        );
        assert_eq!(
            serde_json::to_string(&csv_spec()).unwrap(),
            r#"{"kind":"csv_aggregate","group_by":"STATION","columns":["TMAX","TMIN"]}"#
        );
        for spec in [count, csv_spec()] {
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<ProcessorSpec>(&json).unwrap(), spec);
        }
    }

    /// Holds every processor added later to the rule its config must keep by hand (`deny_unknown_fields`).
    #[test]
    fn every_registered_config_refuses_an_unknown_field() {
        for kind in ProcessorSpec::KINDS {
            let spec = serde_json::json!({ "kind": kind, "no_such_option": 1 });
            let err = serde_json::from_value::<ProcessorSpec>(spec)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("unknown field `no_such_option`"),
                "{kind}: {err}"
            );
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_known_ones() {
        let err = serde_json::from_str::<ProcessorSpec>(r#"{"kind":"sum"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sum`") && err.contains("`csv_aggregate`"),
            "{err}"
        );
    }

    #[test]
    fn an_item_goes_through_its_processor_and_results_of_other_kinds_do_not_merge() {
        let item = Item::Object {
            key: "k.csv",
            size: Some(21),
            body: &mut &b"STATION,TMAX,TMIN\nA,1,\n"[..],
        };
        let mut result = csv_spec().empty();
        let processed = csv_spec().process(item).unwrap();
        assert_eq!(processed.output, None);
        result.merge(processed.result).unwrap();
        assert_eq!(result.to_result_json()["groups"]["A"]["rows"], 1);
        let counted = ProcessorSpec::Count(CountProcessor {}).empty();
        assert_eq!(
            result.merge(counted),
            Err(MergeError::KindMismatch("count", "csv_aggregate"))
        );
        let part = serde_json::to_value(&result).unwrap();
        assert_eq!(
            part["csv_aggregate"]["groups"]["A"]["columns"]["TMAX"]["sum"],
            "1"
        );
    }
}
