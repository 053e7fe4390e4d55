//! The `count` processor: objects, bytes and lines.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{Item, ItemError, MergeError, Processed, Processor, read_chunks};

/// `{"kind": "count"}`: no options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountProcessor {}

impl Processor for CountProcessor {
    type Aggregate = CountAggregate;

    fn process(&self, item: Item<'_>) -> Result<Processed<CountAggregate>, ItemError> {
        let Item::Object { key, body, .. } = item;
        count(key, body).map(Processed::from)
    }

    fn merge(into: &mut CountAggregate, other: CountAggregate) -> Result<(), MergeError> {
        into.merge(&other);
        Ok(())
    }

    fn result_json(aggregate: &CountAggregate) -> serde_json::Value {
        serde_json::to_value(aggregate).unwrap_or_default()
    }
}

/// `{"objects": N, "bytes": N, "lines": N}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountAggregate {
    pub objects: u64,
    pub bytes: u64,
    pub lines: u64,
}

impl CountAggregate {
    pub fn merge(&mut self, other: &Self) {
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.lines += other.lines;
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
