//! Creating AWS resources: the generic steps (a queue with attributes, a bucket) that the template-driven local
//! set-up (`dmap-infra`) and the tests use, and the constants the code shares with `template.yaml` (checked
//! against it by the infra tests).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{boxed, error_code};

/// The job table's TTL attribute (the template's `TimeToLiveSpecification`).
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// How long job items live after their last write.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Counter shards per job when not configured (the template's `CounterShards` default).
pub const DEFAULT_COUNTER_SHARDS: u32 = 16;

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

/// Creates a bucket (one this account already owns is kept).
pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<(), ResourceError> {
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("BucketAlreadyOwnedByYou") => Ok(()),
        Err(e) => Err(failed(&format!("bucket {name}"), boxed(e))),
    }
}
