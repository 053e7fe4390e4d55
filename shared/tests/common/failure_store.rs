//! A fault-injecting object store: wraps any [`ObjectStore`] and fails the reads of chosen keys with a chosen
//! error, every time, counting each attempt. Listing and writes pass through, so a job lists the keys and then
//! meets the failure where a worker reads them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dmap_core::ports::{ListPage, ObjectReader, ObjectStore, StoreError};

/// Makes the error for a failed read of `(bucket, key)` (a `StoreError` is not `Clone`: one is made per read).
pub type MakeError = Arc<dyn Fn(&str, &str) -> StoreError + Send + Sync>;

pub struct FailureStore<S> {
    pub inner: S,
    failures: Mutex<HashMap<String, MakeError>>,
    attempts: Mutex<HashMap<String, u32>>,
}

impl<S: ObjectStore> FailureStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failures: Mutex::default(),
            attempts: Mutex::default(),
        }
    }

    /// Every later `get` of `key` (in any bucket) fails with `make(bucket, key)`.
    pub fn fail_get(
        &self,
        key: &str,
        make: impl Fn(&str, &str) -> StoreError + Send + Sync + 'static,
    ) {
        self.failures
            .lock()
            .unwrap()
            .insert(key.to_owned(), Arc::new(make));
    }

    /// How many times `get` was asked for `key`, failed or not.
    pub fn get_attempts(&self, key: &str) -> u32 {
        self.attempts.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FailureStore<S> {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.inner
            .list_page(bucket, prefix, start_after, continuation)
            .await
    }

    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        *self
            .attempts
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        let failure = self.failures.lock().unwrap().get(key).cloned();
        match failure {
            Some(make) => Err(make(bucket, key)),
            None => self.inner.get_from(bucket, key, offset).await,
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put(bucket, key, body).await
    }
}
