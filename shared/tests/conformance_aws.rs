//! The port conformance suite against the AWS adapters, over HTTP to moto's server.

#[macro_use]
mod conformance;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use conformance::{QueuePair, StoreFixture};
use dmap_core::aws::resources::create_queue;
use dmap_core::aws::{DynamoJobStore, S3Store, SqsQueue};
use dmap_core::ports::JobStore;
use dmap_emulator as emulator;

async fn object_store() -> StoreFixture {
    let clients = emulator::clients().await;
    let bucket = emulator::bucket(&clients, "conformance").await;
    StoreFixture {
        store: Arc::new(S3Store::new(clients.s3.clone(), None)),
        bucket,
        missing: "missing-bucket-conformance".into(),
        _guard: None,
    }
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

async fn job_store() -> Arc<dyn JobStore> {
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

conformance_suite!();
