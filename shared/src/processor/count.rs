//! The `count` processor: objects, bytes and lines; or, over items that are not objects (rows, JSON values,
//! table items), the items.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{Item, ItemError, ItemKind, MergeError, Processed, Processor, read_chunks};

/// `{"kind": "count"}`: no options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountProcessor {}

impl Processor for CountProcessor {
    type Aggregate = CountAggregate;

    const TAKES: &'static [ItemKind] = &[ItemKind::Object, ItemKind::Record, ItemKind::Value];

    fn empty(kind: ItemKind) -> CountAggregate {
        CountAggregate {
            items: (kind != ItemKind::Object).then_some(0),
            ..CountAggregate::default()
        }
    }

    fn process(&self, item: Item<'_>) -> Result<Processed<CountAggregate>, ItemError> {
        match item {
            Item::Object { key, body, .. } => count(key, body).map(Processed::from),
            Item::Value { .. } => Ok(CountAggregate {
                items: Some(1),
                ..CountAggregate::default()
            }
            .into()),
        }
    }

    fn merge(into: &mut CountAggregate, other: CountAggregate) -> Result<(), MergeError> {
        into.merge(&other);
        Ok(())
    }

    fn result_json(aggregate: &CountAggregate) -> serde_json::Value {
        match aggregate.items {
            Some(items) => serde_json::json!({ "items": items }),
            None => serde_json::to_value(aggregate).unwrap_or_default(),
        }
    }
}

/// `{"objects": N, "bytes": N, "lines": N}` over objects; `{"items": N}` over other items (`items` is set for
/// those, and absent from the parts of object jobs, which keep their bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountAggregate {
    pub objects: u64,
    pub bytes: u64,
    pub lines: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
}

impl CountAggregate {
    pub fn merge(&mut self, other: &Self) {
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.lines += other.lines;
        self.items = match (self.items, other.items) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
    }
}

/// Lines are newline characters, plus one for a final line without a trailing newline; an empty object has none.
fn count(key: &str, body: &mut dyn Read) -> Result<CountAggregate, ItemError> {
    let (mut newlines, mut last) = (0u64, b'\n');
    let bytes = read_chunks(key, body, |chunk| {
        newlines += bytecount::count(chunk, b'\n') as u64;
        last = chunk[chunk.len() - 1];
    })?;
    Ok(CountAggregate {
        objects: 1,
        bytes,
        lines: newlines + u64::from(last != b'\n'),
        items: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: &[u8]) -> u64 {
        count("k", &mut &data[..]).expect("counts").lines
    }

    #[test]
    fn lines_count_newlines_plus_an_unterminated_last_line() {
        assert_eq!(lines_of(b""), 0);
        assert_eq!(lines_of(b"a"), 1);
        assert_eq!(lines_of(b"a\n"), 1);
        assert_eq!(lines_of(b"a\nb"), 2);
        assert_eq!(lines_of(b"\n\n"), 2);
        let c = count("k", &mut &b"ab\ncd"[..]).expect("counts");
        assert_eq!((c.objects, c.bytes), (1, 5));
    }
}
