//! One item as a batch message carries it: an object's key, or, for a processor that hands its items to a
//! user's function, the object's listing entry in the shape Distributed Map gives a function for an S3 listing
//! (`{"Etag", "Key", "LastModified", "Size", "StorageClass"}`), so that the batch's `Items` are exactly what
//! that function already takes.

use serde::{Deserialize, Serialize};

/// An item of a batch message. A key alone is a JSON string, so messages of the processors that need no more
/// keep the bytes they had before listing entries existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchItem {
    Key(String),
    Object(S3Item),
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
    /// The object's key: what identifies the item in `failed.jsonl`, in outputs, and in a listing's checkpoint.
    pub fn key(&self) -> &str {
        match self {
            Self::Key(key) => key,
            Self::Object(object) => &object.key,
        }
    }

    /// The object's key, taken out of the item.
    pub fn into_key(self) -> String {
        match self {
            Self::Key(key) => key,
            Self::Object(object) => object.key,
        }
    }

    /// The object's size, when the listing gave it.
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::Key(_) => None,
            Self::Object(object) => Some(object.size),
        }
    }

    /// Bytes of the item's JSON in a message.
    pub fn json_len(&self) -> usize {
        serde_json::to_string(self).map_or(usize::MAX, |s| s.len())
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
