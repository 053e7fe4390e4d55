//! The plan's view of its backend: the object store and table reader it reads through, counting each call as
//! the S3 or DynamoDB request it is on AWS (named as the request meter names them), whichever backend serves
//! it. A store whose folder listing is several pages (the embedded one's default) counts it as the one request
//! S3 answers it with. A plan writes nothing: a put is counted and dropped (a sampled `lambda` batch whose
//! function fails for good would otherwise leave its error object in the job's results folder).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::{
    ListPage, ObjectReader, ObjectStore, ScanPage, ScanRequest, StoreError, TableError, TableInfo,
    TableReader,
};

/// Requests by `Service.Operation`, and the bytes of the objects listed, shared by the wrappers of one census.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    requests: Arc<Mutex<BTreeMap<String, u64>>>,
    listed_bytes: Arc<AtomicU64>,
    /// Listing requests in flight now, and the rounds they came in (see [`Tally::listing_rounds`]).
    in_flight: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
}

/// A listing request in flight: counted out when dropped.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tally {
    pub fn add(&self, operation: &str, n: u64) {
        if n > 0 {
            *self
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(crate::usage::counted_as(operation).into_owned())
                .or_default() += n;
        }
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The listing requests' rounds so far: a round begins with a request sent while none is in flight, so
    /// requests sent at once are one round and requests sent one after the other are one each. A listing's
    /// rounds, not its requests, are what it waits for. Requests that wait (on S3, or on a disk) show their
    /// rounds; a store that answers before the next request of a round is sent would count each as a round of
    /// its own: an upper bound.
    pub fn listing_rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    fn listing(&self) -> InFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.rounds.fetch_add(1, Ordering::Relaxed);
        }
        InFlight(&self.in_flight)
    }

    /// The sizes of the objects listed since the last call (the filters' leftovers included: the items of a
    /// listing carry no size), and starts again from 0.
    pub fn take_listed_bytes(&self) -> u64 {
        self.listed_bytes.swap(0, Ordering::Relaxed)
    }
}

/// An object store that counts what it is asked.
pub struct CountingStore {
    pub inner: Arc<dyn ObjectStore>,
    pub tally: Tally,
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.tally.add("S3.ListObjectsV2", 1);
        let _round = self.tally.listing();
        let page = self
            .inner
            .list_page(bucket, prefix, start_after, continuation)
            .await?;
        let bytes = page.objects.iter().map(|o| o.size).sum::<u64>();
        self.tally.listed_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(page)
    }

    async fn list_folders(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        self.tally.add("S3.ListObjectsV2", 1);
        let _round = self.tally.listing();
        self.inner.list_folders(bucket, prefix, start_after).await
    }

    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        self.tally.add("S3.GetObject", 1);
        self.inner.get_from(bucket, key, offset).await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let _ = (bucket, key, body);
        self.tally.add("S3.PutObject", 1);
        Ok(())
    }

    async fn read_up_to(&self, bucket: &str, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        self.tally.add("S3.GetObject", 1);
        self.inner.read_up_to(bucket, key, limit).await
    }

    async fn read_small(
        &self,
        bucket: &str,
        keys: &[String],
        limit: u64,
    ) -> Vec<Option<Result<Vec<u8>, StoreError>>> {
        let read = self.inner.read_small(bucket, keys, limit).await;
        self.tally.add(
            "S3.GetObject",
            read.iter().filter(|r| r.is_some()).count() as u64,
        );
        read
    }
}

/// A table reader that counts what it is asked.
pub struct CountingTables {
    pub inner: Arc<dyn TableReader>,
    pub tally: Tally,
}

#[async_trait]
impl TableReader for CountingTables {
    async fn describe(&self, table: &str) -> Result<TableInfo, TableError> {
        self.tally.add("DynamoDB.DescribeTable", 1);
        self.inner.describe(table).await
    }

    async fn scan_page(&self, request: ScanRequest<'_>) -> Result<ScanPage, TableError> {
        // The reader's Scans are eventually consistent (half a read unit a 4 KB).
        self.tally.add("DynamoDB.Scan (eventually consistent)", 1);
        self.inner.scan_page(request).await
    }
}
