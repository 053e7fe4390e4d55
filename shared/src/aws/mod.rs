//! AWS adapters for the ports: S3 ([`S3Store`]), SQS ([`SqsQueue`]) and DynamoDB ([`DynamoJobStore`]) for the
//! three stores, Lambda ([`LambdaInvoker`]) for users' functions and DynamoDB again ([`DynamoTableReader`]) for
//! users' tables, on the AWS SDK for Rust. Endpoints follow the SDK's standard configuration, so
//! `AWS_ENDPOINT_URL` (or the per-service `AWS_ENDPOINT_URL_S3`, `_SQS`, `_DYNAMODB`) points them at an
//! emulator with no code change.
//! Throttling and 5xx errors are retried by the SDK's standard retry strategy; what reaches the adapters is
//! mapped to the ports' typed errors.

pub mod dynamo_json;
mod dynamodb;
mod lambda;
pub mod resources;
mod s3;
mod sqs;
mod stats;
mod tables;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;

pub use dynamodb::{DynamoJobStore, GROUP_BATCHES};
pub use lambda::LambdaInvoker;
pub use s3::S3Store;
pub use sqs::SqsQueue;
pub use tables::DynamoTableReader;

use std::sync::Arc;
use std::time::Duration;

use crate::Deps;
use crate::usage::Meter;

/// The SDK clients, built once per process, each counting its requests into `usage`: the three stores', and
/// Lambda's for users' functions.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub usage: Meter,
}

impl AwsClients {
    /// Loads the SDK configuration from the environment (credentials, region, `AWS_ENDPOINT_URL*`), with an
    /// optional endpoint that overrides it for S3, SQS and DynamoDB (an emulator's).
    pub async fn from_env(stores_endpoint: Option<&str>) -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::new(&config, stores_endpoint)
    }

    /// Clients from `config`; `stores_endpoint` overrides its endpoint for S3, SQS and DynamoDB only. Lambda's
    /// client keeps the standard configuration (`AWS_ENDPOINT_URL_LAMBDA`, `AWS_ENDPOINT_URL`, or AWS): an
    /// emulator of the stores is rarely where users' functions run.
    pub fn new(config: &SdkConfig, stores_endpoint: Option<&str>) -> Self {
        let usage = Meter::default();
        let requests = stats::RequestCounter(usage.clone());
        // Emulators serve buckets under the path, not as subdomains.
        let custom_s3_endpoint = stores_endpoint.is_some()
            || config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        // Adaptive retries: on SlowDown the client also slows its own request rate (a token bucket), which is
        // what S3's per-prefix limits call for when many workers read one prefix.
        let mut s3 = aws_sdk_s3::config::Builder::from(config);
        let mut sqs = aws_sdk_sqs::config::Builder::from(config);
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(config);
        if let Some(url) = stores_endpoint {
            s3.set_endpoint_url(Some(url.to_owned()));
            sqs.set_endpoint_url(Some(url.to_owned()));
            dynamodb.set_endpoint_url(Some(url.to_owned()));
        }
        let s3 = s3
            .retry_config(aws_config::retry::RetryConfig::adaptive())
            .force_path_style(custom_s3_endpoint)
            .interceptor(requests.clone())
            .build();
        let sqs = sqs.interceptor(requests.clone()).build();
        let dynamodb = dynamodb.interceptor(requests.clone()).build();
        // No SDK retries: see `LambdaInvoker`.
        let lambda = aws_sdk_lambda::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .interceptor(requests.clone())
            .build();
        Self {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            lambda: aws_sdk_lambda::Client::from_conf(lambda),
            usage,
        }
    }
}

/// Error codes AWS services use for throttling (after the SDK's own retries gave up).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
];

/// The service's error code, if the service answered with one.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(ProvideErrorMetadata::code)
}

fn is_throttling<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    error_code(err).is_some_and(|code| THROTTLING_CODES.contains(&code))
}

/// Boxes an SDK error with the service's code and message kept (the SDK's `Display` alone says "service
/// error").
pub fn boxed<E, R>(err: SdkError<E, R>) -> Box<dyn std::error::Error + Send + Sync>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    detail(&err).into()
}

/// An SDK error as `code: message` when the service answered with one, else its whole chain of causes.
fn detail<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("unknown error"),
            service.message().unwrap_or("(no message)")
        ),
        None => aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
    }
}

/// Where a deployment's resources are: what [`Deps::aws`] needs besides the clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub table: String,
    /// Counter shards per job (see [`DynamoJobStore`]).
    pub counter_shards: u32,
    pub work_queue_url: String,
    /// The work queue's dead-letter queue, for a process that consumes it itself (`dmap run`); Lambda
    /// functions leave it out.
    pub dead_letter_queue_url: Option<String>,
    pub finalize_queue_url: String,
    /// Sent as `ExpectedBucketOwner` with every S3 call when set.
    pub expected_bucket_owner: Option<String>,
    /// How long job items live (the table's TTL).
    pub ttl: Duration,
}

impl Deps {
    /// The AWS backends: S3, SQS and DynamoDB through `clients`, and Lambda's Invoke API for users' functions.
    pub fn aws(clients: &AwsClients, resources: &AwsResources) -> Self {
        let queue = |url: &str| -> Arc<dyn crate::ports::BatchQueue> {
            Arc::new(SqsQueue::new(clients.sqs.clone(), url))
        };
        Self {
            objects: Arc::new(S3Store::new(
                clients.s3.clone(),
                resources.expected_bucket_owner.clone(),
            )),
            work_queue: queue(&resources.work_queue_url),
            dead_letter: resources.dead_letter_queue_url.as_deref().map(queue),
            finalize_queue: queue(&resources.finalize_queue_url),
            jobs: Arc::new(DynamoJobStore::new(
                clients.dynamodb.clone(),
                &resources.table,
                resources.counter_shards,
                resources.ttl,
            )),
            functions: Some(Arc::new(LambdaInvoker::new(clients.lambda.clone()))),
            tables: Some(Arc::new(DynamoTableReader::new(clients.dynamodb.clone()))),
            usage: clients.usage.clone(),
        }
    }
}
