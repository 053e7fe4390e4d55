//! The port conformance suite against the embedded adapters.

#[macro_use]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::{QueuePair, StoreFixture};
use dmap_core::embedded::{EmbeddedQueue, LocalDirStore, MemoryJobStore, QueueConfig};
use dmap_core::ports::JobStore;

async fn object_store() -> StoreFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(dir.path());
    store.create_bucket("bucket").expect("bucket");
    StoreFixture {
        store: Arc::new(store),
        bucket: "bucket".into(),
        missing: "missing-bucket".into(),
        _guard: Some(Box::new(dir)),
    }
}

async fn queues() -> QueuePair {
    let dead_letter = EmbeddedQueue::new(QueueConfig::new("dlq", Duration::from_secs(1)));
    let mut config = QueueConfig::new("work", Duration::from_secs(1));
    config.dead_letter = Some((2, dead_letter.clone()));
    QueuePair {
        queue: EmbeddedQueue::new(config),
        dead_letter,
    }
}

async fn job_store() -> Arc<dyn JobStore> {
    Arc::new(MemoryJobStore::new())
}

conformance_suite!();
