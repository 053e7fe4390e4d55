//! The `checksum` processor: each object's SHA-256 or CRC32C and size, as a per-item output, and the objects
//! and bytes checksummed in all, as the result. What an S3 Batch Operations user runs to audit a bucket: the
//! `outputs/` lines can be compared with the checksums S3 stores, or with those of another copy.
//!
//! Each digest is given twice: lowercase hex, as `sha256sum` prints it, and base64 of the digest's bytes (a
//! CRC32C as its 4 big-endian bytes), the form of S3's `x-amz-checksum-sha256` and `x-amz-checksum-crc32c`
//! headers and of `ChecksumSHA256`/`ChecksumCRC32C` in its API.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Item, ItemError, MergeError, Processed, Processor, read_chunks};

/// `{"kind": "checksum", "algorithm": "sha256" | "crc32c"}`; `algorithm` defaults to `sha256`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksumProcessor {
    #[serde(default)]
    pub algorithm: ChecksumAlgorithm,
}

/// The checksum computed, named as S3 names it, in lowercase. [`Self::ALL`] is the one table of the names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum ChecksumAlgorithm {
    #[default]
    Sha256,
    Crc32c,
}

impl From<ChecksumAlgorithm> for &'static str {
    fn from(algorithm: ChecksumAlgorithm) -> Self {
        ChecksumAlgorithm::ALL
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, name)| *name)
            .expect("every algorithm is in the table")
    }
}

/// A name that is not in the table is refused naming it and the known ones (serde's own message for an unknown
/// variant does not say which field it is).
impl TryFrom<String> for ChecksumAlgorithm {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(algorithm, _)| *algorithm)
            .ok_or_else(|| {
                let known: Vec<String> =
                    Self::ALL.iter().map(|(_, n)| format!("\"{n}\"")).collect();
                format!(
                    "unknown checksum algorithm \"{}\"; use {}",
                    super::echo(&name),
                    known.join(" or ")
                )
            })
    }
}

impl ChecksumAlgorithm {
    pub const ALL: [(Self, &'static str); 2] = [(Self::Sha256, "sha256"), (Self::Crc32c, "crc32c")];

    /// The digest of `body` and its size, read in chunks (an object is never whole in memory).
    fn digest(self, key: &str, body: &mut dyn std::io::Read) -> Result<(Vec<u8>, u64), ItemError> {
        match self {
            Self::Sha256 => {
                let mut hasher = Sha256::new();
                let size = read_chunks(key, body, |chunk| hasher.update(chunk))?;
                Ok((hasher.finalize().to_vec(), size))
            }
            Self::Crc32c => {
                let mut crc = 0u32;
                let size = read_chunks(key, body, |chunk| crc = crc32c::crc32c_append(crc, chunk))?;
                // Big-endian, as S3 encodes a CRC before base64.
                Ok((crc.to_be_bytes().to_vec(), size))
            }
        }
    }
}

/// One object's line in `outputs/`:
/// `{"algorithm": "sha256", "checksum": "<lowercase hex>", "base64": "<base64 of the digest>", "size": N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ChecksumOutput {
    algorithm: ChecksumAlgorithm,
    checksum: String,
    base64: String,
    size: u64,
}

impl Processor for ChecksumProcessor {
    type Aggregate = ChecksumAggregate;

    fn process(&self, item: Item<'_>) -> Result<Processed<ChecksumAggregate>, ItemError> {
        let Item::Object { key, body, .. } = item else {
            return Err(item.not_taken("checksum"));
        };
        let (digest, size) = self.algorithm.digest(key, body)?;
        let output = ChecksumOutput {
            algorithm: self.algorithm,
            checksum: digest.iter().map(|b| format!("{b:02x}")).collect(),
            base64: BASE64.encode(&digest),
            size,
        };
        Ok(Processed::with_output(
            ChecksumAggregate {
                objects: 1,
                bytes: size,
            },
            serde_json::to_value(output).expect("a checksum output serializes"),
        ))
    }

    fn merge(into: &mut ChecksumAggregate, other: ChecksumAggregate) -> Result<(), MergeError> {
        into.objects += other.objects;
        into.bytes += other.bytes;
        Ok(())
    }

    fn result_json(aggregate: &ChecksumAggregate) -> serde_json::Value {
        serde_json::to_value(aggregate).unwrap_or_default()
    }
}

/// `{"objects": N, "bytes": N}`: the objects checksummed and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumAggregate {
    pub objects: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::processor::ProcessorSpec;

    fn output_of(algorithm: ChecksumAlgorithm, data: &[u8]) -> serde_json::Value {
        let processed = ChecksumProcessor { algorithm }
            .process(Item::Object {
                key: "k",
                size: None,
                body: &mut &data[..],
            })
            .expect("checksums");
        assert_eq!(
            processed.result,
            ChecksumAggregate {
                objects: 1,
                bytes: data.len() as u64
            }
        );
        processed.output.expect("an output per item")
    }

    #[test]
    fn digests_match_the_published_check_values() {
        assert_eq!(
            output_of(ChecksumAlgorithm::Sha256, b""),
            json!({
                "algorithm": "sha256",
                "checksum": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "base64": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                "size": 0
            })
        );
        // CRC-32C's check value (RFC 3720, the CRC catalogue): 0xE3069283 for "123456789".
        assert_eq!(
            output_of(ChecksumAlgorithm::Crc32c, b"123456789"),
            json!({ "algorithm": "crc32c", "checksum": "e3069283", "base64": "4waSgw==", "size": 9 })
        );
        assert_eq!(
            output_of(ChecksumAlgorithm::Crc32c, b"")["checksum"],
            "00000000",
            "a CRC keeps its 8 hex digits"
        );
    }

    #[test]
    fn the_algorithm_defaults_to_sha256_and_an_unknown_one_is_refused_by_name() {
        let spec: ProcessorSpec = serde_json::from_value(json!({ "kind": "checksum" })).unwrap();
        assert_eq!(
            spec,
            ProcessorSpec::Checksum(ChecksumProcessor {
                algorithm: ChecksumAlgorithm::Sha256
            })
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({ "kind": "checksum", "algorithm": "sha256" })
        );
        let err = serde_json::from_value::<ProcessorSpec>(
            json!({ "kind": "checksum", "algorithm": "md5" }),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(r#"unknown checksum algorithm "md5"; use "sha256" or "crc32c""#),
            "{err}"
        );
    }
}
