//! The object store port on S3: ListObjectsV2 pages, streamed GetObject, PutObject.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use tokio_util::io::SyncIoBridge;

use super::{boxed, error_code, is_throttling};
use crate::ports::object_store::MAX_KEYS_PER_PAGE;
use crate::ports::{ListPage, ObjectMeta, ObjectReader, ObjectStore, StoreError};

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

    async fn get(&self, bucket: &str, key: &str) -> Result<ObjectReader, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| map_error(e, bucket, key))?;
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
}
