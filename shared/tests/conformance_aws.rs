//! The port conformance suite against the AWS adapters, over HTTP to moto's server.

mod conformance;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use conformance::QueuePair;
use dmap_core::aws::resources::create_queue;
use dmap_core::aws::{DynamoJobStore, S3Store, SqsQueue};
use dmap_emulator as emulator;

async fn store() -> (S3Store, String) {
    let clients = emulator::clients().await;
    let bucket = emulator::bucket(&clients, "conformance").await;
    (S3Store::new(clients.s3.clone(), None), bucket)
}

/// A queue with a 1 s visibility timeout whose DLQ takes messages received more than twice.
async fn queues() -> QueuePair {
    let clients = emulator::clients().await;
    let dlq_name = emulator::unique("dlq");
    let dlq_arn = create_queue(&clients.sqs, &dlq_name, HashMap::new())
        .await
        .expect("dlq");
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2 }).to_string();
    let name = emulator::unique("work");
    create_queue(
        &clients.sqs,
        &name,
        HashMap::from([
            (QueueAttributeName::VisibilityTimeout, "1".to_owned()),
            (QueueAttributeName::RedrivePolicy, redrive),
        ]),
    )
    .await
    .expect("queue");
    QueuePair {
        queue: Arc::new(
            SqsQueue::by_name(clients.sqs.clone(), &name)
                .await
                .expect("url"),
        ),
        dead_letter: Arc::new(
            SqsQueue::by_name(clients.sqs.clone(), &dlq_name)
                .await
                .expect("url"),
        ),
    }
}

async fn job_store() -> Arc<DynamoJobStore> {
    let clients = emulator::clients().await;
    // The table as the template defines it (key schema, TTL).
    let table = emulator::stack(&clients, 30).await.tables["JobsTable"].clone();
    Arc::new(DynamoJobStore::new(
        clients.dynamodb.clone(),
        table,
        4,
        Duration::from_secs(86_400),
    ))
}

#[tokio::test]
async fn object_store_round_trip() {
    let (s, bucket) = store().await;
    conformance::object_store_round_trip(&s, &bucket, "missing-bucket-conformance").await;
}

#[tokio::test]
async fn object_store_lists_in_key_order() {
    let (s, bucket) = store().await;
    conformance::object_store_lists_in_key_order(&s, &bucket).await;
}

#[tokio::test]
async fn object_store_paginates() {
    let (s, bucket) = store().await;
    conformance::object_store_paginates(&s, &bucket).await;
}

#[tokio::test]
async fn queue_delivers_and_deletes() {
    conformance::queue_delivers_and_deletes(&queues().await).await;
}

#[tokio::test]
async fn queue_redelivers_after_the_visibility_timeout() {
    conformance::queue_redelivers_after_the_visibility_timeout(&queues().await).await;
}

#[tokio::test]
async fn queue_dead_letters_after_max_receives() {
    conformance::queue_dead_letters_after_max_receives(&queues().await).await;
}

#[tokio::test]
async fn queue_refuses_bad_sends() {
    conformance::queue_refuses_bad_sends(&queues().await).await;
}

#[tokio::test]
async fn job_store_creates_once() {
    conformance::job_store_creates_once(job_store().await.as_ref(), "job-create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_counts_each_batch_once() {
    conformance::job_store_counts_each_batch_once(job_store().await, "job-count").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_claims_once_after_listing() {
    conformance::job_store_claims_once_after_listing(job_store().await, "job-claim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_counts_racing_records_exactly() {
    conformance::job_store_counts_racing_records_exactly(job_store().await, "job-race").await;
}
