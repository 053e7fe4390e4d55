//! Cutting the item stream into batches: at most `max_items_per_batch` items and at most
//! `max_input_bytes_per_batch` bytes of message body each, in listing order, numbered from a starting sequence.
//!
//! Pure and deterministic: the same items from the same starting point always give the same batches, which is
//! what lets a resumed coordinator re-send exactly the batches it may have lost.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::BatchMessage;
use crate::processor::{BatchItem, MAX_ENTRY_EXTRA_JSON_BYTES};
use crate::spec::{ItemKind, ItemReader, Job, JobSpec, MAX_KEY_BYTES};

/// The longest S3 bucket name.
const MAX_BUCKET_BYTES: usize = 63;

/// The byte and item limits of one batch message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_items: usize,
    pub max_bytes: usize,
    /// Bytes of a batch message with no items and the widest possible sequence number.
    pub envelope_bytes: usize,
    /// The most bytes one item can take in this job's messages.
    pub max_item_bytes: usize,
}

impl BatchLimits {
    /// The most JSON bytes one S3 key can take in a message: every byte escaped as `\u00XX`, plus quotes.
    pub const MAX_KEY_JSON_BYTES: usize = MAX_KEY_BYTES * 6 + 2;

    pub fn for_job(spec: &JobSpec) -> Self {
        let job = Job {
            job_id: spec.job_id.clone().unwrap_or_default(),
            spec: spec.clone(),
        };
        let mut message = BatchMessage::new(&job, u64::MAX, Vec::new());
        if let ItemReader::S3Inventory(_) = spec.item_reader {
            // The items' bucket is the report's sourceBucket, known only once the report is read: room for the
            // longest name a bucket can have.
            message.bucket = "b".repeat(MAX_BUCKET_BYTES);
        }
        let envelope = message.to_body().len();
        let entry = if spec.processor.wants_listing_entries() {
            MAX_ENTRY_EXTRA_JSON_BYTES
        } else {
            0
        };
        // A value of any size may be read; what every batch must have room for is the failed item that stands
        // for one too large: its name (a key and a position) and a short error.
        let max_item_bytes = match spec.item_reader.item_kind() {
            ItemKind::Object => Self::MAX_KEY_JSON_BYTES + entry,
            ItemKind::Record | ItemKind::Value => Self::MAX_FAILED_ITEM_JSON_BYTES,
        };
        Self {
            max_items: spec.item_batcher.max_items_per_batch as usize,
            max_bytes: spec.item_batcher.max_input_bytes_per_batch as usize,
            envelope_bytes: envelope,
            max_item_bytes,
        }
    }

    /// The most JSON bytes of a failed item standing for a value too large: `{"id": <a key and a position>,
    /// "error": <at most 200 bytes>}`, every byte of the id escaped.
    pub const MAX_FAILED_ITEM_JSON_BYTES: usize = Self::MAX_KEY_JSON_BYTES + 6 * 32 + 200 + 20;

    /// Whether `item` fits in a batch of its own.
    fn fits(&self, len: usize) -> bool {
        self.envelope_bytes + len <= self.max_bytes
    }
}

/// Batch `seq` ends with the key `last_key` (a cut made at a hand-over, saved in the checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub seq: u64,
    pub last_key: String,
}

/// One key range of an `s3_list` listing split to be listed in parallel (see [`crate::parallel_listing`]): the
/// keys after `after` up to `upto`, and how far its listing got. Stored in the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// The range's listing resumes after this key (exclusive).
    pub after: String,
    /// Its last key (inclusive); `None`: the listing's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upto: Option<String>,
    /// Every item of the range was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
    /// A page whose batches were numbered and saved, and may not all be sent: a resumed listing sends them
    /// again, cut the same way, before it lists on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending: Option<NumberedPage>,
}

/// The items of one range's keys after its `after` up to `through` (inclusive), cut into `batches` batches
/// numbered from `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberedPage {
    pub seq: u64,
    pub batches: u64,
    pub through: String,
    /// The range ends with this page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
}

/// A numbered page as the job store logs it, with the range position it was read from: it can be read again,
/// and its batches sent again, long after its range moved on (the sweeper's and a resumed run's re-sends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedPage {
    pub after: String,
    #[serde(flatten)]
    pub page: NumberedPage,
}

/// A reader's position after an item, as a checkpoint stores it ([`crate::reader`] says what each reader's
/// means). Kept unencoded until it is saved: most items' positions never are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A key, an index, a file and row: the text the checkpoint stores.
    Text(String),
    /// A record boundary in an object: `<offset>:<line>:<index>`.
    Record { offset: u64, line: u64, index: u64 },
    /// A place in a round of reads that a resumed reader reads again whole (a table scan's, whose pages
    /// cannot be resumed one by one): the round's start, shared by all its items, and how many of its items
    /// come before the place. `<taken>@<start>`.
    Round { start: Arc<str>, taken: u64 },
}

impl Default for Position {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl Position {
    /// The checkpoint's text.
    pub fn encode(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Record {
                offset,
                line,
                index,
            } => format!("{offset}:{line}:{index}"),
            Self::Round { start, taken } => format!("{taken}@{start}"),
        }
    }

    /// A [`Position::Record`]'s fields back from its text.
    pub fn parse_record(text: &str) -> Option<(u64, u64, u64)> {
        let mut parts = text.split(':').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(offset)), Some(Ok(line)), Some(Ok(index)), None) => {
                Some((offset, line, index))
            }
            _ => None,
        }
    }
}

impl From<String> for Position {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Position {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// A batch cut from the item stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seq: u64,
    pub items: Vec<BatchItem>,
    /// The reader's position after the batch's last item: where a read resumes once the batch is sent.
    pub after: Position,
}

/// Accumulates items and emits full batches.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchLimits,
    next_seq: u64,
    items: Vec<BatchItem>,
    /// The position after the last item pushed.
    after: Position,
    bytes: usize,
    /// A batch that ends early, at a key (a cut made at a hand-over, replayed).
    cut: Option<Cut>,
}

impl Batcher {
    pub fn new(limits: BatchLimits, first_seq: u64) -> Self {
        Self {
            limits,
            next_seq: first_seq,
            items: Vec::new(),
            after: Position::default(),
            bytes: limits.envelope_bytes,
            cut: None,
        }
    }

    /// Ends batch `cut.seq` with the key `cut.last_key`, wherever the limits would have ended it: how a
    /// listing replayed after a crash cuts again a batch that an earlier run cut at a hand-over.
    pub fn cut_after(&mut self, cut: Cut) {
        self.cut = Some(cut);
    }

    /// No partial batch is pending.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The sequence number the next emitted batch will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds an item, `after` being the reader's position after it; every batch it completes is appended to
    /// `out`. An item that no batch can hold (a row larger than the byte limit) goes in as a failed item
    /// naming it, so that it is counted, and failed, where every other item is.
    pub fn push(&mut self, item: BatchItem, after: Position, out: &mut Vec<Batch>) {
        let mut len = item.json_len();
        let item = if self.limits.fits(len) {
            item
        } else {
            let id = item.key();
            let error = format!(
                "{}: needs {} bytes in a batch message, more than item_batcher.max_input_bytes_per_batch ({})",
                position_of(id),
                self.limits.envelope_bytes + len,
                self.limits.max_bytes
            );
            let failed = BatchItem::failed(id.to_owned(), error);
            len = failed.json_len();
            failed
        };
        let separator = usize::from(!self.items.is_empty());
        if !self.items.is_empty() && self.bytes + separator + len > self.limits.max_bytes {
            out.push(self.take());
        }
        self.after = after;
        self.bytes += usize::from(!self.items.is_empty()) + len;
        let cut_here = self
            .cut
            .as_ref()
            .is_some_and(|c| c.seq == self.next_seq && c.last_key == item.key());
        self.items.push(item);
        if cut_here {
            self.cut = None;
        }
        if cut_here || self.items.len() >= self.limits.max_items {
            out.push(self.take());
        }
    }

    /// Emits the partly filled batch, if any (at the end of the listing).
    pub fn flush(&mut self) -> Option<Batch> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Batch {
        let batch = Batch {
            seq: self.next_seq,
            items: std::mem::take(&mut self.items),
            after: std::mem::take(&mut self.after),
        };
        self.next_seq += 1;
        self.bytes = self.limits.envelope_bytes;
        batch
    }
}

/// How an error names an item: by the position in its name (`line 12` for `data.csv#L12`, `element [3]` for
/// `data.json#[3]`), else as "the item" (its name is beside the error in `failed.jsonl`; repeating a long
/// one would make the failed item itself too large).
fn position_of(id: &str) -> String {
    let position = id.rsplit_once('#').map_or(id, |(_, position)| position);
    match position.strip_prefix('L') {
        Some(line) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => {
            format!("line {line}")
        }
        _ if position.starts_with('[') => format!("element {position}"),
        _ => "the item".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(max_items: u32, max_bytes: u32) -> Job {
        let spec = format!(
            r#"{{"job_id":"j1","item_reader":{{"bucket":"in-bucket"}},"processor":{{"kind":"count"}},
               "item_batcher":{{"max_items_per_batch":{max_items},"max_input_bytes_per_batch":{max_bytes}}},
               "result_writer":{{"bucket":"out-bucket"}}}}"#
        );
        JobSpec::parse(spec.as_bytes()).expect("valid spec")
    }

    fn cut(limits: BatchLimits, keys: &[String]) -> Vec<Batch> {
        let mut batcher = Batcher::new(limits, 0);
        let mut out = Vec::new();
        for key in keys {
            batcher.push(key.as_str().into(), key.as_str().into(), &mut out);
        }
        out.extend(batcher.flush());
        out
    }

    #[test]
    fn batches_respect_the_item_limit_and_keep_order() {
        let keys: Vec<String> = (0..23).map(|i| format!("k{i:03}")).collect();
        let batches = cut(BatchLimits::for_job(&job(7, 262_144).spec), &keys);
        let sizes: Vec<usize> = batches.iter().map(|b| b.items.len()).collect();
        assert_eq!(sizes, vec![7, 7, 7, 2]);
        assert_eq!(
            batches.iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        let flat: Vec<String> = batches
            .into_iter()
            .flat_map(|b| b.items)
            .map(|i| i.key().to_owned())
            .collect();
        assert_eq!(flat, keys);
    }

    #[test]
    fn an_inventorys_batches_have_room_for_any_source_bucket() {
        let spec = |reader: serde_json::Value| {
            let spec = serde_json::json!({"job_id": "j1", "item_reader": reader,
                "processor": {"kind": "count"}, "result_writer": {"bucket": "out-bucket"}});
            JobSpec::parse(spec.to_string().as_bytes()).unwrap().spec
        };
        let listing = BatchLimits::for_job(&spec(serde_json::json!({"bucket": "abc"})));
        let inventory = BatchLimits::for_job(&spec(
            serde_json::json!({"kind": "s3_inventory", "bucket": "abc", "manifest_key": "m.json"}),
        ));
        assert_eq!(inventory.envelope_bytes, listing.envelope_bytes + 60);
    }

    #[test]
    fn an_item_that_cannot_fit_goes_in_as_a_failed_item_naming_it() {
        let mut limits = BatchLimits::for_job(&job(10, 262_144).spec);
        limits.max_bytes = limits.envelope_bytes + 200;
        let mut batcher = Batcher::new(limits, 0);
        let mut out = Vec::new();
        let row =
            serde_json::value::RawValue::from_string(format!("\"{}\"", "x".repeat(300))).unwrap();
        batcher.push(
            BatchItem::value("t.csv#L12".into(), row),
            "p12".into(),
            &mut out,
        );
        batcher.push("k".into(), "p13".into(), &mut out);
        let batch = batcher.flush().unwrap();
        let BatchItem::Failed(failed) = &batch.items[0] else {
            panic!("{:?}", batch.items[0]);
        };
        assert_eq!(failed.id, "t.csv#L12");
        assert!(
            failed.error.starts_with("line 12: needs ")
                && failed.error.contains("max_input_bytes_per_batch"),
            "{}",
            failed.error
        );
        assert_eq!(
            (batch.items.len(), batch.after.encode().as_str()),
            (2, "p13")
        );
    }

    proptest! {
        #[test]
        fn every_batch_fits_its_message_and_items_are_kept_in_order(
            keys in proptest::collection::vec("[a-z/ +%é\"\\\\]{1,40}", 0..200),
            max_items in 1u32..20,
            extra_bytes in 0usize..400,
        ) {
            let job = job(max_items, 262_144);
            let mut limits = BatchLimits::for_job(&job.spec);
            limits.max_bytes = limits.envelope_bytes + 6 * 40 + 2 + extra_bytes;
            let batches = cut(limits, &keys);
            for (i, batch) in batches.iter().enumerate() {
                prop_assert_eq!(batch.seq, i as u64);
                prop_assert!(!batch.items.is_empty());
                prop_assert!(batch.items.len() <= max_items as usize);
                let body = BatchMessage::new(&job, batch.seq, batch.items.clone()).to_body();
                prop_assert!(body.len() <= limits.max_bytes, "{} > {}", body.len(), limits.max_bytes);
            }
            let flat: Vec<String> = batches.into_iter().flat_map(|b| b.items).map(|i| i.key().to_owned()).collect();
            prop_assert_eq!(flat, keys);
        }
    }
}
