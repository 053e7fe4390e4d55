//! A fault-injecting object store: wraps any [`ObjectStore`] and fails the reads of chosen keys with a chosen
//! error, every time, counting each attempt. Listing and writes pass through, so a job lists the keys and then
//! meets the failure where a worker reads them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dmap_core::ports::{ListPage, ObjectReader, ObjectStore, StoreError};

/// Makes the error for a failed read of `(bucket, key)` (a `StoreError` is not `Clone`: one is made per read).
pub type MakeError = Arc<dyn Fn(&str, &str) -> StoreError + Send + Sync>;

pub struct FailureStore {
    pub inner: Arc<dyn ObjectStore>,
    failures: Mutex<HashMap<String, MakeError>>,
    attempts: Mutex<HashMap<String, u32>>,
    delay: Mutex<std::time::Duration>,
}

impl FailureStore {
    pub fn new(inner: impl ObjectStore + 'static) -> Self {
        Self::wrap(Arc::new(inner))
    }

    pub fn wrap(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            failures: Mutex::default(),
            attempts: Mutex::default(),
            delay: Mutex::default(),
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

    /// Reads of `key` succeed again (the object was fixed).
    pub fn heal(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }

    /// Every read takes `delay` more (a slow store, so that a test can act while a job runs).
    pub fn slow(&self, delay: std::time::Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// Every key's `get` count so far.
    pub fn all_attempts(&self) -> HashMap<String, u32> {
        self.attempts.lock().unwrap().clone()
    }

    /// How many times `get` was asked for `key`, failed or not.
    pub fn get_attempts(&self, key: &str) -> u32 {
        self.attempts.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl ObjectStore for FailureStore {
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
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
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
