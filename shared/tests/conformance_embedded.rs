//! The port conformance suite against the embedded adapters.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::QueuePair;
use dmap_core::embedded::{EmbeddedQueue, LocalDirStore, MemoryJobStore, QueueConfig};

fn store() -> (tempfile::TempDir, LocalDirStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(dir.path());
    store.create_bucket("bucket").expect("bucket");
    (dir, store)
}

fn queues() -> QueuePair {
    let dead_letter = EmbeddedQueue::new(QueueConfig::new("dlq", Duration::from_secs(1)));
    let mut config = QueueConfig::new("work", Duration::from_secs(1));
    config.dead_letter = Some((2, dead_letter.clone()));
    QueuePair {
        queue: EmbeddedQueue::new(config),
        dead_letter,
    }
}

#[tokio::test]
async fn object_store_round_trip() {
    let (_dir, s) = store();
    conformance::object_store_round_trip(&s, "bucket", "missing-bucket").await;
}

#[tokio::test]
async fn object_store_lists_in_key_order() {
    let (_dir, s) = store();
    conformance::object_store_lists_in_key_order(&s, "bucket").await;
}

#[tokio::test]
async fn object_store_paginates() {
    let (_dir, s) = store();
    conformance::object_store_paginates(&s, "bucket").await;
}

#[tokio::test]
async fn queue_delivers_and_deletes() {
    conformance::queue_delivers_and_deletes(&queues()).await;
}

#[tokio::test]
async fn queue_redelivers_after_the_visibility_timeout() {
    conformance::queue_redelivers_after_the_visibility_timeout(&queues()).await;
}

#[tokio::test]
async fn queue_dead_letters_after_max_receives() {
    conformance::queue_dead_letters_after_max_receives(&queues()).await;
}

#[tokio::test]
async fn queue_refuses_bad_sends() {
    conformance::queue_refuses_bad_sends(&queues()).await;
}

#[tokio::test]
async fn job_store_creates_once() {
    conformance::job_store_creates_once(&MemoryJobStore::new(), "job-create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_counts_each_batch_once() {
    conformance::job_store_counts_each_batch_once(Arc::new(MemoryJobStore::new()), "job-count")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_claims_once_after_listing() {
    conformance::job_store_claims_once_after_listing(Arc::new(MemoryJobStore::new()), "job-claim")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_counts_racing_records_exactly() {
    conformance::job_store_counts_racing_records_exactly(
        Arc::new(MemoryJobStore::new()),
        "job-race",
    )
    .await;
}
