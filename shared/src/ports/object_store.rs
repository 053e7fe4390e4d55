//! The object store port: S3-shaped listing, streamed reads, and writes of whole objects or of objects
//! streamed in chunks (S3's multipart upload), so that a large output is never held whole in memory.

use std::io::Read;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;

/// Most keys one listing page returns (as ListObjectsV2).
pub const MAX_KEYS_PER_PAGE: usize = 1000;

/// The least size of a chunk of a streamed write but the last (S3's least multipart part: 5 MiB).
pub const MIN_CHUNK_BYTES: usize = 5 << 20;

/// The chunks of a streamed write, in order. An error ends the write without writing the object.
pub type Chunks<'a> = BoxStream<'a, Result<Vec<u8>, StoreError>>;

/// One listed object: what ListObjectsV2 says of it, which is what Distributed Map hands a function per item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// The entity tag, quotes included, as S3 writes it (`"9b2cf535f27731c974343645a3985328"`).
    pub etag: String,
    /// When the object was last written, in milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// `STANDARD`, `GLACIER`...
    pub storage_class: String,
}

impl ObjectMeta {
    /// An object of the standard storage class.
    pub fn new(
        key: impl Into<String>,
        size: u64,
        etag: impl Into<String>,
        last_modified_ms: i64,
    ) -> Self {
        Self {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms,
            storage_class: "STANDARD".into(),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Ascending in UTF-8 byte order, at most [`MAX_KEYS_PER_PAGE`].
    pub objects: Vec<ObjectMeta>,
    /// Opaque token for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// An object's body. Blocking reads: consume it on a blocking thread (`spawn_blocking`), never on the runtime.
pub type ObjectReader = Box<dyn Read + Send>;

/// The folder one level below `prefix` that holds `key` (`prefix + name + "/"`), if it is in one.
pub fn folder_of<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?;
    rest.find('/').map(|i| &key[..prefix.len() + i + 1])
}

/// Errors the pipeline branches on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no object s3://{bucket}/{key}")]
    NotFound { bucket: String, key: String },
    #[error("no bucket \"{bucket}\"")]
    NoSuchBucket { bucket: String },
    #[error("key \"{key}\" cannot be stored: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The store refuses this one object for good (access denied, its encryption key unusable, archived): the
    /// same read would be refused again, so the item fails, not its batch. `code` is the store's own error code
    /// (S3's `AccessDenied`, `KMS.DisabledException`, `InvalidObjectState`...).
    #[error("{code}: s3://{bucket}/{key}: {message}")]
    Denied {
        bucket: String,
        key: String,
        code: String,
        message: String,
    },
    #[error("throttled by the object store")]
    Throttled,
    #[error("object store: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Worth retrying later (the same call may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled | Self::Other(_))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Other(Box::new(e))
    }
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// One page of the keys under `prefix`, ascending. Starts after `start_after` (exclusive) when given;
    /// `continuation` is a previous page's `next` and wins over `start_after`. Errors: `NoSuchBucket`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError>;

    /// The folders one level below `prefix` that hold keys after `start_after`: the distinct `prefix + name +
    /// "/"` of those keys, ascending, at most [`MAX_KEYS_PER_PAGE`] (S3: one ListObjectsV2 page with
    /// `Delimiter=/`). This default finds them with [`ObjectStore::list_page`], skipping each folder once it is
    /// seen: one page per folder or per 1,000 keys outside any folder.
    async fn list_folders(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut folders: Vec<String> = Vec::new();
        let mut after = start_after.map(str::to_owned);
        while folders.len() < MAX_KEYS_PER_PAGE {
            let page = self
                .list_page(bucket, prefix, after.as_deref(), None)
                .await?;
            let Some(last) = page.objects.last() else {
                break;
            };
            let start = after.replace(last.key.clone());
            for object in &page.objects {
                if let Some(folder) = folder_of(prefix, &object.key)
                    && folders.last().is_none_or(|f| f.as_str() != folder)
                {
                    folders.push(folder.to_owned());
                }
            }
            if let Some(folder) = folder_of(prefix, &last.key) {
                // Past every key of the last page's folder: U+10FFFF sorts after any character a key can hold.
                let past = format!("{folder}\u{10FFFF}");
                if start.as_deref() == Some(past.as_str()) {
                    break; // keys holding U+10FFFF itself: no further to skip
                }
                after = Some(past);
            } else if page.next.is_none() {
                break;
            }
        }
        folders.truncate(MAX_KEYS_PER_PAGE);
        Ok(folders)
    }

    /// Opens an object for a streamed read. Errors: `NotFound`, `NoSuchBucket`, `Denied`.
    async fn get(&self, bucket: &str, key: &str) -> Result<ObjectReader, StoreError> {
        self.get_from(bucket, key, 0).await
    }

    /// Opens an object for a streamed read from byte `offset` on (S3: a `Range: bytes=<offset>-` GET), so that
    /// a read of a large object resumes where it stopped. An offset at or past the end reads nothing. Errors
    /// as [`ObjectStore::get`].
    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError>;

    /// Writes a whole object, replacing any previous one atomically (readers see the old or the new body).
    /// Errors: `NoSuchBucket`, `InvalidKey`.
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError>;

    /// Writes an object from `chunks`, each at least [`MIN_CHUNK_BYTES`] but the last, replacing any previous
    /// one atomically once the last chunk is in (S3: one PutObject for a single chunk, else a multipart
    /// upload with a part per chunk). A chunk stream that ends in an error leaves the old object, or none, and
    /// returns that error. This default gathers the chunks and [`ObjectStore::put`]s them, for stores that
    /// hold objects in memory anyway; a store that can should stream them.
    async fn put_chunks(
        &self,
        bucket: &str,
        key: &str,
        mut chunks: Chunks<'_>,
    ) -> Result<(), StoreError> {
        let mut body = Vec::new();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
        }
        self.put(bucket, key, body).await
    }

    /// Reads the first `limit` bytes of an object (all of it if it is no longer) into memory, off the async
    /// runtime. Errors as [`ObjectStore::get`].
    async fn read_up_to(&self, bucket: &str, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let reader = self.get(bucket, key).await?;
        tokio::task::spawn_blocking(move || {
            let mut body = Vec::new();
            reader.take(limit).read_to_end(&mut body).map(|_| body)
        })
        .await
        .map_err(|e| StoreError::Other(Box::new(e)))?
        .map_err(StoreError::from)
    }

    /// Reads each of `keys` that is at most `limit` bytes whole, in order, where a store can do that for less
    /// than opening and reading each object apart: `None` for an object it leaves to [`ObjectStore::get`] (a
    /// larger one, or every one for a store that reads an object at a time, the default). A local disk reads
    /// them all in one blocking step: for small objects the thread hand-offs cost more than the reads.
    async fn read_small(
        &self,
        _bucket: &str,
        keys: &[String],
        _limit: u64,
    ) -> Vec<Option<Result<Vec<u8>, StoreError>>> {
        keys.iter().map(|_| None).collect()
    }
}

/// Decodes a key as S3 writes it in event notifications and inventory reports: form encoding, `+` for a space
/// (`%2B` for a plus), then percent-decoding. Right for AWS's keys and for moto's (which also encodes `/`).
pub fn decode_s3_key(key: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&key.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

/// Reads a whole (small) object into memory, off the async runtime.
pub async fn read_all(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, StoreError> {
    read_up_to(store, bucket, key, u64::MAX).await
}

/// Reads the first `limit` bytes of an object (all of it if it is no longer), off the async runtime: an object
/// of unknown size is never read whole into memory.
pub async fn read_up_to(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    limit: u64,
) -> Result<Vec<u8>, StoreError> {
    store.read_up_to(bucket, key, limit).await
}

/// Writes one object as its bytes come, through [`ObjectStore::put_chunks`], holding a few chunks at most: a
/// large output is never whole in memory. An object that fits in one chunk is one
/// plain [`ObjectStore::put`]. Dropped before [`ObjectWriter::finish`], it writes nothing.
pub struct ObjectWriter {
    store: std::sync::Arc<dyn ObjectStore>,
    bucket: String,
    key: String,
    chunk_bytes: usize,
    buffer: Vec<u8>,
    written: u64,
    /// Once the first chunk is full: the upload running on its own task, and the chunks' way to it.
    upload: Option<Upload>,
}

struct Upload {
    chunks: futures::channel::mpsc::Sender<Result<Vec<u8>, StoreError>>,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl ObjectWriter {
    /// A writer of `bucket/key` in chunks of `chunk_bytes` (at least [`MIN_CHUNK_BYTES`]).
    pub fn new(
        store: std::sync::Arc<dyn ObjectStore>,
        bucket: impl Into<String>,
        key: impl Into<String>,
        chunk_bytes: usize,
    ) -> Self {
        assert!(
            chunk_bytes >= MIN_CHUNK_BYTES,
            "a chunk of {chunk_bytes} bytes is too small"
        );
        Self {
            store,
            bucket: bucket.into(),
            key: key.into(),
            chunk_bytes,
            buffer: Vec::new(),
            written: 0,
            upload: None,
        }
    }

    /// The bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Appends `bytes`; sends a chunk each time the buffer holds one. A chunk is exactly `chunk_bytes` (a line
    /// may straddle two), and the buffer is allocated at that size once it outgrows half of it: a buffer that
    /// doubled as it grew would reach 8 MiB for a chunk of 5, and hold both its old and new bytes while
    /// growing.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            let (now, rest) = bytes.split_at(bytes.len().min(self.chunk_bytes - self.buffer.len()));
            let needed = self.buffer.len() + now.len();
            if needed > self.buffer.capacity() && needed > self.chunk_bytes / 2 {
                self.buffer
                    .reserve_exact(self.chunk_bytes - self.buffer.len());
            }
            self.buffer.extend_from_slice(now);
            bytes = rest;
            if self.buffer.len() == self.chunk_bytes {
                let chunk =
                    std::mem::replace(&mut self.buffer, Vec::with_capacity(self.chunk_bytes));
                self.send(chunk).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), StoreError> {
        use futures::SinkExt;
        let upload = self.upload.get_or_insert_with(|| {
            // One chunk waits in the channel while the store sends another (S3's first two are read before
            // the upload starts): a writer holds a few chunks at most.
            let (chunks, received) = futures::channel::mpsc::channel(0);
            let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let done = finished.clone();
            // Chunks until the channel closes; then, unless `finish` closed it, an error, so that a writer
            // dropped half-way (its caller failed) leaves no object.
            let stream = received
                .map(Some)
                .chain(futures::stream::once(async move {
                    (!done.load(std::sync::atomic::Ordering::SeqCst)).then(|| {
                        Err(StoreError::Other(
                            "the write was abandoned before its end".into(),
                        ))
                    })
                }))
                .filter_map(futures::future::ready);
            let (store, bucket, key) = (self.store.clone(), self.bucket.clone(), self.key.clone());
            let task =
                // Its requests count for the writer's job, as the writer's own would.
                tokio::spawn(crate::usage::in_current_scope(async move {
                    store.put_chunks(&bucket, &key, stream.boxed()).await
                }));
            Upload {
                chunks,
                finished,
                task,
            }
        });
        if upload.chunks.send(Ok(chunk)).await.is_err() {
            // The upload ended early: its error says why.
            let upload = self.upload.take().expect("just used");
            return Err(join(upload.task).await.err().unwrap_or_else(|| {
                StoreError::Other("the upload ended before its last chunk".into())
            }));
        }
        Ok(())
    }

    /// Sends the rest and completes the object; its size.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        let rest = std::mem::take(&mut self.buffer);
        if self.upload.is_none() {
            self.store.put(&self.bucket, &self.key, rest).await?;
            return Ok(self.written);
        }
        if !rest.is_empty() {
            self.send(rest).await?;
        }
        let upload = self.upload.take().expect("started");
        upload
            .finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(upload.chunks);
        join(upload.task).await?;
        Ok(self.written)
    }
}

async fn join(task: tokio::task::JoinHandle<Result<(), StoreError>>) -> Result<(), StoreError> {
    task.await.map_err(|e| StoreError::Other(Box::new(e)))?
}
