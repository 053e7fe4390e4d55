//! Processors: what is computed for one item (object), and how per-item results merge into the job's result.
//!
//! Merging is associative and commutative, and exact: numbers are decimals, not floats, so the result of any
//! grouping of items (per batch, in any order) equals a plain sequential pass over the same items.

mod count;
mod csv_aggregate;

use std::borrow::Cow;
use std::io::Read;

use serde::{Deserialize, Serialize};

pub use count::CountAggregate;
pub use csv_aggregate::{ColumnStats, CsvAggregate, GroupStats};

use crate::spec::ProcessorSpec;

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

/// Two results that cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("cannot merge a {0} result into a {1} result")]
    KindMismatch(&'static str, &'static str),
    #[error("the sum of column \"{column}\" in group \"{}\" overflows", echo(.group))]
    Overflow { group: String, column: String },
}

/// A (partial) result of a processor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Count(CountAggregate),
    CsvAggregate(CsvAggregate),
}

impl Aggregate {
    fn kind(&self) -> &'static str {
        match self {
            Self::Count(_) => "count",
            Self::CsvAggregate(_) => "csv_aggregate",
        }
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: Aggregate) -> Result<(), MergeError> {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => {
                a.merge(&b);
                Ok(())
            }
            (Self::CsvAggregate(a), Self::CsvAggregate(b)) => a.merge(b),
            (a, b) => Err(MergeError::KindMismatch(b.kind(), a.kind())),
        }
    }

    /// The user-facing `result.json` form (numbers as JSON numbers).
    pub fn to_result_json(&self) -> serde_json::Value {
        match self {
            Self::Count(c) => serde_json::to_value(c).unwrap_or_default(),
            Self::CsvAggregate(c) => c.to_result_json(),
        }
    }
}

impl ProcessorSpec {
    /// The result of zero items.
    pub fn empty(&self) -> Aggregate {
        match self {
            Self::Count => Aggregate::Count(CountAggregate::default()),
            Self::CsvAggregate { .. } => Aggregate::CsvAggregate(CsvAggregate::default()),
        }
    }

    /// Processes one object. Blocking: call it from a blocking thread (the body may be a network stream).
    pub fn process(&self, key: &str, body: &mut dyn Read) -> Result<Aggregate, ItemError> {
        match self {
            Self::Count => count::count(key, body).map(Aggregate::Count),
            Self::CsvAggregate { group_by, columns } => {
                csv_aggregate::aggregate(key, body, group_by, columns).map(Aggregate::CsvAggregate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::echo;

    #[test]
    fn echoed_values_are_cut_at_a_char_boundary() {
        assert_eq!(echo("short"), "short");
        let exact = "x".repeat(64);
        assert_eq!(echo(&exact), exact.as_str());
        // 'a' then two-byte characters: byte 64 falls inside one, so the cut is at 63.
        let value = format!("a{}", "é".repeat(50));
        assert_eq!(echo(&value), format!("a{}…(+38 bytes)", "é".repeat(31)));
    }
}
