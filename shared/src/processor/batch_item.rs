//! One item as a batch message carries it: an object's key, or, for a processor that hands its items to a
//! user's function, the object's listing entry in the shape Distributed Map gives a function for an S3 listing
//! (`{"Etag", "Key", "LastModified", "Size", "StorageClass"}`), so that the batch's `Items` are exactly what
//! that function already takes; a value read by the reader itself (a row, a JSON value, a table item) with its
//! name; or an item the reader found unusable (a ragged row, a line too long), which fails without being
//! processed, so that it is counted where every other item is.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// An item of a batch message. A key alone is a JSON string, so messages of the processors that need no more
/// keep the bytes they had before listing entries existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum BatchItem {
    Key(String),
    Object(S3Item),
    /// `{"id": "<name>", "value": <the item's JSON, as read>}`.
    Value(ValueItem),
    /// `{"id": "<name>", "error": "<why it is not an item>"}`.
    Failed(FailedEntry),
}

/// A value the reader read: its name (`<object key>#L<line>`, `<table>#<key>`, `items[<i>]`) and its JSON text,
/// kept as written (numbers exact).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueItem {
    pub id: String,
    pub value: Box<RawValue>,
}

impl PartialEq for ValueItem {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.value.get() == other.value.get()
    }
}

impl Eq for ValueItem {}

/// An item that failed as it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedEntry {
    pub id: String,
    pub error: String,
}

/// By hand: serde's untagged enums buffer their input, which a [`RawValue`] cannot go through.
impl<'de> Deserialize<'de> for BatchItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with('"') {
            return serde_json::from_str(text)
                .map(Self::Key)
                .map_err(D::Error::custom);
        }
        serde_json::from_str(text)
            .map(Self::Value)
            .or_else(|_| serde_json::from_str(text).map(Self::Failed))
            .or_else(|_| serde_json::from_str(text).map(Self::Object))
            .map_err(|e| D::Error::custom(format!("not a batch item: {e}")))
    }
}

/// An object as Distributed Map's S3 ListObjectsV2 reader hands it to a function (field names and order
/// included; `LastModified` in whole seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct S3Item {
    pub etag: String,
    pub key: String,
    pub last_modified: i64,
    pub size: u64,
    pub storage_class: String,
}

impl BatchItem {
    /// A value with its name.
    pub fn value(id: String, json: Box<RawValue>) -> Self {
        Self::Value(ValueItem { id, value: json })
    }

    /// An item that failed as it was read.
    pub fn failed(id: String, error: String) -> Self {
        Self::Failed(FailedEntry { id, error })
    }

    /// The item's name: an object's key, or a value's id. What identifies the item in `failed.jsonl`, in
    /// outputs, and in a hand-over's cut.
    pub fn key(&self) -> &str {
        match self {
            Self::Key(key) => key,
            Self::Object(object) => &object.key,
            Self::Value(value) => &value.id,
            Self::Failed(failed) => &failed.id,
        }
    }

    /// The object's size, when the listing gave it.
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::Object(object) => Some(object.size),
            _ => None,
        }
    }

    /// Bytes of the item's JSON in a message: counted, not written, for the items every batch holds many of.
    pub fn json_len(&self) -> usize {
        match self {
            Self::Key(key) => json_str_len(key),
            // {"id":<id>,"value":<value>}
            Self::Value(value) => 16 + json_str_len(&value.id) + value.value.get().len(),
            other => serde_json::to_string(other).map_or(usize::MAX, |s| s.len()),
        }
    }
}

impl From<String> for BatchItem {
    fn from(key: String) -> Self {
        Self::Key(key)
    }
}

impl From<&str> for BatchItem {
    fn from(key: &str) -> Self {
        Self::Key(key.to_owned())
    }
}

/// What serde_json writes for a byte of a string: itself (1), a two-character escape (`\n`, `\"`), or
/// `\u00XX` (6) for the other control characters.
fn escaped_len(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0x00..=0x1f => 6,
        _ => 1,
    }
}

/// Bytes of `s` as a JSON string, quotes included, exactly as serde_json writes it.
fn json_str_len(s: &str) -> usize {
    2 + s.bytes().map(escaped_len).sum::<usize>()
}

/// The most JSON bytes of a listing entry besides its key's: the field names, an ETag of up to 100 characters
/// (S3's are 34 to 45, quotes included, and each quote is escaped), a timestamp and a size of up to 20 digits, a
/// storage class of up to 32 characters. A bound, so that a spec can be checked to leave room for any item.
pub const MAX_ENTRY_EXTRA_JSON_BYTES: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, size: u64, etag: String, last_modified: i64, class: &str) -> BatchItem {
        BatchItem::Object(S3Item {
            etag,
            key: key.into(),
            last_modified,
            size,
            storage_class: class.into(),
        })
    }

    #[test]
    fn a_listing_entry_has_distributed_maps_shape_and_a_key_stays_a_string() {
        let entry = entry("a/b.csv", 12, "\"9b2c\"".into(), 1_700_000_000, "STANDARD");
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"Etag":"\"9b2c\"","Key":"a/b.csv","LastModified":1700000000,"Size":12,"StorageClass":"STANDARD"}"#
        );
        let key = BatchItem::from("a/b.csv");
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""a/b.csv""#);
        for item in [entry, key] {
            let json = serde_json::to_string(&item).unwrap();
            assert_eq!(serde_json::from_str::<BatchItem>(&json).unwrap(), item);
            assert_eq!(item.key(), "a/b.csv");
            assert_eq!(item.json_len(), json.len());
        }
    }

    #[test]
    fn values_keep_their_text_and_failed_items_their_error() {
        let value = BatchItem::value(
            "t.csv#L3".into(),
            RawValue::from_string(r#"{"a":"1","n":1.000000000000000000001}"#.into()).unwrap(),
        );
        let failed = BatchItem::failed("t.csv#L4".into(), "line 4: 3 fields".into());
        let key = BatchItem::from("{\"id\"");
        for item in [value, failed, key] {
            let json = serde_json::to_string(&item).unwrap();
            assert_eq!(
                serde_json::from_str::<BatchItem>(&json).unwrap(),
                item,
                "{json}"
            );
            assert_eq!(item.json_len(), json.len());
        }
        assert!(serde_json::from_str::<BatchItem>(r#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn strings_are_measured_as_serde_json_writes_them() {
        let every_byte: String = (0u8..128).map(char::from).collect();
        for s in [
            "",
            "plain",
            "é日本",
            "q\"b\\s\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            every_byte.as_str(),
        ] {
            assert_eq!(json_str_len(s), serde_json::to_string(s).unwrap().len());
        }
    }

    #[test]
    fn the_entry_bound_holds_for_the_widest_fields() {
        let entry = entry(
            "",
            u64::MAX,
            format!("\"{}\"", "f".repeat(98)),
            i64::MIN,
            &"S".repeat(32),
        );
        assert!(entry.json_len() - 2 <= MAX_ENTRY_EXTRA_JSON_BYTES);
    }
}
