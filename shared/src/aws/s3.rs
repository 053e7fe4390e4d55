//! The object store port on S3: ListObjectsV2 pages, streamed GetObject, PutObject, and multipart uploads
//! for objects written in chunks.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::StreamExt;
use tokio_util::io::SyncIoBridge;

use super::{boxed, error_code, is_throttling};
use crate::ports::object_store::MAX_KEYS_PER_PAGE;
use crate::ports::{Chunks, ListPage, ObjectMeta, ObjectReader, ObjectStore, StoreError};

/// S3 as the object store. With `expected_bucket_owner` set, every call carries `ExpectedBucketOwner`, so a
/// bucket that changed hands is refused instead of read or written.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    expected_bucket_owner: Option<String>,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, expected_bucket_owner: Option<String>) -> Self {
        Self {
            client,
            expected_bucket_owner,
        }
    }
}

/// Codes with which S3 refuses one object for good: the role may not read it (and, without `s3:ListBucket`,
/// a missing key answers `AccessDenied` too), its KMS key is disabled, gone or not ours to use (`KMS.*`), or
/// it is archived (`InvalidObjectState`). Retrying the read cannot help.
fn is_refusal(code: &str) -> bool {
    matches!(code, "AccessDenied" | "InvalidObjectState") || code.starts_with("KMS.")
}

fn map_error<E, R>(
    err: aws_smithy_runtime_api::client::result::SdkError<E, R>,
    bucket: &str,
    key: &str,
) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error_code(&err) {
        Some("NoSuchBucket") => StoreError::NoSuchBucket {
            bucket: bucket.to_owned(),
        },
        Some("NoSuchKey" | "NotFound") => StoreError::NotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        Some("KeyTooLongError") => StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "longer than S3 allows".into(),
        },
        Some(code) if is_refusal(code) => StoreError::Denied {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            code: code.to_owned(),
            message: err
                .as_service_error()
                .and_then(|e| e.message())
                .unwrap_or("(no message)")
                .to_owned(),
        },
        _ if is_throttling(&err) => StoreError::Throttled,
        _ => StoreError::Other(boxed(err)),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(MAX_KEYS_PER_PAGE as i32)
            .set_start_after(start_after.map(str::to_owned))
            .set_continuation_token(continuation.map(str::to_owned))
            .set_expected_bucket_owner(self.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| map_error(e, bucket, prefix))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: o.key()?.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_owned(),
                    last_modified_ms: o
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or_default(),
                    storage_class: o
                        .storage_class()
                        .map_or("STANDARD", |c| c.as_str())
                        .to_owned(),
                })
            })
            .collect();
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }

    async fn list_folders(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .max_keys(MAX_KEYS_PER_PAGE as i32)
            .set_start_after(start_after.map(str::to_owned))
            .set_expected_bucket_owner(self.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| map_error(e, bucket, prefix))?;
        Ok(out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_owned))
            .collect())
    }

    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_range((offset > 0).then(|| format!("bytes={offset}-")))
            .set_expected_bucket_owner(self.expected_bucket_owner.clone())
            .send()
            .await;
        let out = match out {
            // A range that starts at or past the end: S3 answers 416; there is nothing left to read.
            Err(e) if offset > 0 && error_code(&e) == Some("InvalidRange") => {
                return Ok(Box::new(std::io::empty()));
            }
            other => other.map_err(|e| map_error(e, bucket, key))?,
        };
        // Streamed: the body is read chunk by chunk from the blocking thread that consumes it.
        Ok(Box::new(SyncIoBridge::new(out.body.into_async_read())))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_expected_bucket_owner(self.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| map_error(e, bucket, key))?;
        Ok(())
    }

    /// One chunk: one PutObject, as [`ObjectStore::put`]. More: a multipart upload with a part per chunk,
    /// aborted if a chunk or a part fails, so that no half-written upload is left to bill its storage.
    async fn put_chunks(
        &self,
        bucket: &str,
        key: &str,
        mut chunks: Chunks<'_>,
    ) -> Result<(), StoreError> {
        let first = chunks.next().await.transpose()?.unwrap_or_default();
        let Some(second) = chunks.next().await else {
            return self.put(bucket, key, first).await;
        };
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| map_error(e, bucket, key))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Other("CreateMultipartUpload returned no upload id".into()))?
            .to_owned();
        let uploaded = async {
            let mut parts = Vec::new();
            let mut next = Some(Ok(first));
            let mut after = Some(second);
            while let Some(chunk) = next {
                let number = parts.len() as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk?))
                    .set_expected_bucket_owner(self.expected_bucket_owner.clone())
                    .send()
                    .await
                    .map_err(|e| map_error(e, bucket, key))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                );
                next = match after.take() {
                    Some(chunk) => Some(chunk),
                    None => chunks.next().await,
                };
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .set_expected_bucket_owner(self.expected_bucket_owner.clone())
                .send()
                .await
                .map_err(|e| map_error(e, bucket, key))?;
            Ok(())
        }
        .await;
        if uploaded.is_err() {
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .set_expected_bucket_owner(self.expected_bucket_owner.clone())
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::warn!(bucket, key, error = %e, "a failed multipart upload was not aborted");
            }
        }
        uploaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::types::error::InvalidObjectState;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    /// GetObject's error as the SDK hands it over once S3 answered `status` with `error`.
    fn answered(status: u16, error: GetObjectError) -> StoreError {
        let response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        map_error(SdkError::service_error(error, response), "in-b", "k/1.csv")
    }

    #[test]
    fn objects_s3_refuses_for_good_are_denied_with_their_code() {
        let archived = GetObjectError::InvalidObjectState(
            InvalidObjectState::builder()
                .message("The operation is not valid for the object's storage class")
                .meta(meta(
                    "InvalidObjectState",
                    "The operation is not valid for the object's storage class",
                ))
                .build(),
        );
        let cases = [
            (
                "AccessDenied",
                answered(
                    403,
                    GetObjectError::generic(meta("AccessDenied", "Access Denied")),
                ),
            ),
            (
                "KMS.DisabledException",
                answered(
                    400,
                    GetObjectError::generic(meta("KMS.DisabledException", "key disabled")),
                ),
            ),
            (
                "KMS.AccessDeniedException",
                answered(
                    403,
                    GetObjectError::generic(meta("KMS.AccessDeniedException", "no kms:Decrypt")),
                ),
            ),
            (
                "KMS.NotFoundException",
                answered(
                    400,
                    GetObjectError::generic(meta("KMS.NotFoundException", "no such key")),
                ),
            ),
            ("InvalidObjectState", answered(403, archived)),
        ];
        for (code, err) in cases {
            assert!(!err.is_transient(), "{code}: {err:?}");
            match &err {
                StoreError::Denied {
                    bucket,
                    key,
                    code: c,
                    ..
                } => assert_eq!(
                    (bucket.as_str(), key.as_str(), c.as_str()),
                    ("in-b", "k/1.csv", code)
                ),
                other => panic!("{code}: {other:?}"),
            }
            assert!(
                err.to_string()
                    .starts_with(&format!("{code}: s3://in-b/k/1.csv: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_missing_key_is_not_found_and_throttling_and_server_errors_stay_transient() {
        let missing = answered(404, GetObjectError::generic(meta("NoSuchKey", "gone")));
        assert!(
            matches!(missing, StoreError::NotFound { .. }),
            "{missing:?}"
        );
        let slow = answered(
            503,
            GetObjectError::generic(meta("SlowDown", "reduce your rate")),
        );
        assert!(matches!(slow, StoreError::Throttled), "{slow:?}");
        let internal = answered(
            500,
            GetObjectError::generic(meta("InternalError", "try again")),
        );
        assert!(internal.is_transient(), "{internal:?}");
    }
}
