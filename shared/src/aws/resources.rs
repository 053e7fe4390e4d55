//! The AWS resources a dmap deployment uses, created with the attributes the SAM template declares: the job
//! table (key schema, on-demand billing, TTL), the work queue and its dead-letter queue (visibility timeout,
//! redrive policy, retention, encryption), and the finalize queue with its own dead-letter queue.
//! `dmap local up` and the emulator tests create them from here.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::{AwsClients, boxed, error_code};

/// The worker function's timeout; the work queue hides a message for six times that (AWS's rule for a queue
/// that triggers Lambda).
pub const WORKER_TIMEOUT_SECS: u32 = 60;
pub const WORK_VISIBILITY_TIMEOUT_SECS: u32 = 6 * WORKER_TIMEOUT_SECS;
pub const FINALIZER_TIMEOUT_SECS: u32 = 300;
pub const FINALIZE_VISIBILITY_TIMEOUT_SECS: u32 = 6 * FINALIZER_TIMEOUT_SECS;
pub const COORDINATOR_TIMEOUT_SECS: u32 = 900;
/// The coordinator is its continuation queue's consumer.
pub const CONTINUATION_VISIBILITY_TIMEOUT_SECS: u32 = 6 * COORDINATOR_TIMEOUT_SECS;
/// Receives before a message is dead-lettered (at least 5 for a Lambda consumer).
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// Dead letters are kept for the longest SQS allows, 14 days.
pub const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 3600;
/// The job table's TTL attribute.
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long job items live after their last write.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_COUNTER_SHARDS: u32 = 16;

/// Names of a deployment's queues and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub table: String,
    pub work_queue: String,
    pub dead_letter_queue: String,
    pub finalize_queue: String,
    pub finalize_dead_letter_queue: String,
    /// The coordinator's own queue: listings handed over to a fresh invocation.
    pub continuation_queue: String,
}

impl ResourceNames {
    /// `<prefix>-jobs`, `<prefix>-work`, `<prefix>-work-dlq`, `<prefix>-finalize`, `<prefix>-finalize-dlq`,
    /// `<prefix>-continue`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            table: format!("{prefix}-jobs"),
            work_queue: format!("{prefix}-work"),
            dead_letter_queue: format!("{prefix}-work-dlq"),
            finalize_queue: format!("{prefix}-finalize"),
            finalize_dead_letter_queue: format!("{prefix}-finalize-dlq"),
            continuation_queue: format!("{prefix}-continue"),
        }
    }
}

/// The queue URLs of a created deployment (what the functions' environment names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub work: String,
    pub dead_letter: String,
    pub finalize: String,
    pub finalize_dead_letter: String,
    pub continuation: String,
}

/// Queue attributes that differ between a deployment and a test.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub work_visibility_timeout_secs: u32,
    pub finalize_visibility_timeout_secs: u32,
    pub max_receive_count: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            work_visibility_timeout_secs: WORK_VISIBILITY_TIMEOUT_SECS,
            finalize_visibility_timeout_secs: FINALIZE_VISIBILITY_TIMEOUT_SECS,
            max_receive_count: MAX_RECEIVE_COUNT,
        }
    }
}

/// A resource could not be created.
#[derive(Debug, thiserror::Error)]
#[error("creating {what}: {source}")]
pub struct ResourceError {
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn failed(
    what: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ResourceError {
    ResourceError {
        what: what.to_owned(),
        source: source.into(),
    }
}

/// Creates the table and the four queues (an existing one with the same attributes is kept).
pub async fn create_all(
    clients: &AwsClients,
    names: &ResourceNames,
    settings: QueueSettings,
) -> Result<QueueUrls, ResourceError> {
    create_table(&clients.dynamodb, &names.table).await?;
    let sqs = &clients.sqs;
    let (dead_letter, dlq_arn) =
        create_queue_with_url(sqs, &names.dead_letter_queue, dead_letter_attributes()).await?;
    let work_attributes = source_attributes(
        settings.work_visibility_timeout_secs,
        &dlq_arn,
        settings.max_receive_count,
    );
    let (work, _) = create_queue_with_url(sqs, &names.work_queue, work_attributes).await?;
    let (finalize_dead_letter, finalize_dlq_arn) = create_queue_with_url(
        sqs,
        &names.finalize_dead_letter_queue,
        dead_letter_attributes(),
    )
    .await?;
    let finalize_attributes = source_attributes(
        settings.finalize_visibility_timeout_secs,
        &finalize_dlq_arn,
        settings.max_receive_count,
    );
    let (finalize, _) =
        create_queue_with_url(sqs, &names.finalize_queue, finalize_attributes).await?;
    // A hand-over that keeps failing lands beside the finalizer's dead letters, where it is logged.
    let continuation_attributes = source_attributes(
        CONTINUATION_VISIBILITY_TIMEOUT_SECS,
        &finalize_dlq_arn,
        settings.max_receive_count,
    );
    let (continuation, _) =
        create_queue_with_url(sqs, &names.continuation_queue, continuation_attributes).await?;
    Ok(QueueUrls {
        work,
        dead_letter,
        finalize,
        finalize_dead_letter,
        continuation,
    })
}

fn dead_letter_attributes() -> HashMap<QueueAttributeName, String> {
    HashMap::from([
        (
            QueueAttributeName::MessageRetentionPeriod,
            DEAD_LETTER_RETENTION_SECS.to_string(),
        ),
        (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
    ])
}

fn source_attributes(
    visibility_secs: u32,
    dlq_arn: &str,
    max_receive_count: u32,
) -> HashMap<QueueAttributeName, String> {
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count });
    HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        ),
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
    ])
}

/// Creates a queue and returns its ARN.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, ResourceError> {
    create_queue_with_url(sqs, name, attributes)
        .await
        .map(|(_, arn)| arn)
}

/// Creates a queue and returns its URL and ARN.
pub async fn create_queue_with_url(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<(String, String), ResourceError> {
    let what = format!("queue {name}");
    let url = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| failed(&what, boxed(e)))?
        .queue_url()
        .ok_or_else(|| failed(&what, "no queue URL returned"))?
        .to_owned();
    let out = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed(&what, boxed(e)))?;
    let arn = out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| failed(&what, "no queue ARN returned"))?;
    Ok((url, arn))
}

/// Creates the job table (`pk`/`sk` strings, on demand) with TTL on [`TTL_ATTRIBUTE`].
pub async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), ResourceError> {
    let what = format!("table {name}");
    let attribute = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| failed(&what, e))
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| failed(&what, e))
    };
    let created = dynamodb
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
        Err(e) => return Err(failed(&what, boxed(e))),
    }
    dynamodb
        .wait_until_table_exists()
        .table_name(name)
        .wait(Duration::from_secs(300))
        .await
        .map_err(|e| failed(&what, e))?;
    let ttl = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(TTL_ATTRIBUTE)
        .build()
        .map_err(|e| failed(&what, e))?;
    match dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Enabling TTL twice is refused; the table already has it.
        Err(e) if error_code(&e) == Some("ValidationException") => Ok(()),
        Err(e) => Err(failed(&what, boxed(e))),
    }
}

/// Creates a bucket (one this account already owns is kept).
pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<(), ResourceError> {
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("BucketAlreadyOwnedByYou") => Ok(()),
        Err(e) => Err(failed(&format!("bucket {name}"), boxed(e))),
    }
}
