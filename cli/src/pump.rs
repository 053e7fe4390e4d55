//! `dmap local pump`: what AWS does between the functions, played locally for functions served by
//! `cargo lambda watch`. For each queue, an event source mapping: receive up to the batch size, invoke the
//! function with an SQS event through the Lambda Invoke API, delete the messages it did not list in
//! `batchItemFailures` (a failed invocation deletes none: the messages return after the visibility timeout).
//! For the data bucket, the S3 notification: a new `.json` object under the jobs prefix becomes an
//! `ObjectCreated:Put` event for the coordinator, its key form-encoded as S3 sends it.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use dmap_core::aws::{AwsClients, S3Store, SqsQueue};
use dmap_core::esm::{EventSourceMapping, Invoke, InvokeError, sqs_event};
use dmap_core::ports::{ObjectStore, ReceivedMessage};
use dmap_infra::Stack;
use dmap_infra::stack::S3Source;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::PumpArgs;

/// How long an idle receive waits (a long poll).
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// How often the jobs prefix is listed.
const NOTIFICATION_INTERVAL: Duration = Duration::from_secs(1);

/// The local Lambda Invoke API.
#[derive(Clone)]
struct Invoker {
    http: reqwest::Client,
    base: String,
}

impl Invoker {
    async fn invoke(&self, function: &str, event: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.base);
        let response = self
            .http
            .post(&url)
            .json(event)
            .send()
            .await
            .with_context(|| {
                format!("invoking {function} at {url} (is `cargo lambda watch` running?)")
            })?;
        let status = response.status();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() || function_error {
            bail!("{function} failed ({status}): {body}");
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

/// An S3 `ObjectCreated:Put` event, its key form-encoded as S3 sends it.
fn s3_event(bucket: &str, key: &str, size: u64, etag: &str) -> Value {
    let encoded: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
    json!({ "Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "1970-01-01T00:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": { "principalId": "local" },
        "requestParameters": { "sourceIPAddress": "127.0.0.1" },
        "responseElements": { "x-amz-request-id": "local", "x-amz-id-2": "local" },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "dmap-jobs",
            "bucket": {
                "name": bucket,
                "ownerIdentity": { "principalId": "local" },
                "arn": format!("arn:aws:s3:::{bucket}"),
            },
            "object": { "key": encoded, "size": size, "eTag": etag, "sequencer": "0" },
        },
    }]})
}

/// A function behind the Invoke API, as an event source mapping's target: the received messages become the
/// SQS event of the queue `queue_arn`, and the function's `batchItemFailures` are the messages to retry.
struct FunctionTarget {
    invoker: Invoker,
    function: String,
    queue_arn: String,
}

#[async_trait]
impl Invoke for FunctionTarget {
    async fn invoke(&self, messages: &[ReceivedMessage]) -> Result<Vec<String>, InvokeError> {
        let event = sqs_event(&self.queue_arn, messages);
        let response = self
            .invoker
            .invoke(&self.function, &event)
            .await
            .map_err(|e| InvokeError::new(format!("{e:#}")))?;
        Ok(response["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
            .collect())
    }
}

/// One event source mapping, forever. Failures are reported and the mapping goes on, as Lambda's does.
async fn mapping(mapping: EventSourceMapping, target: FunctionTarget) -> anyhow::Result<()> {
    loop {
        match mapping.poll_once(&target).await {
            Ok(polled) if !polled.failed.is_empty() => eprintln!(
                "{}: {} of {} messages left for retry",
                target.function,
                polled.failed.len(),
                polled.received
            ),
            Ok(_) => {}
            Err(e @ dmap_core::esm::PollError::Receive(_)) => {
                tracing::warn!(queue = target.queue_arn, error = %e, "receive failed");
                tokio::time::sleep(RECEIVE_WAIT).await;
            }
            Err(e) => eprintln!(
                "{}: {e}; the messages return after the visibility timeout",
                target.function
            ),
        }
    }
}

/// The S3 notification: new objects under the prefix with the suffix become events for the function.
async fn notifications(
    clients: AwsClients,
    source: S3Source,
    function: String,
    invoker: Invoker,
) -> anyhow::Result<()> {
    let S3Source {
        bucket,
        prefix,
        suffix,
        ..
    } = source;
    let store = S3Store::new(clients.s3.clone(), None);
    let mut seen: HashMap<String, u64> = HashMap::new();
    loop {
        let mut token: Option<String> = None;
        loop {
            let page = store
                .list_page(&bucket, &prefix, None, token.as_deref())
                .await?;
            for object in page
                .objects
                .into_iter()
                .filter(|o| o.key.ends_with(&suffix))
            {
                if seen.get(&object.key) == Some(&object.size) {
                    continue;
                }
                seen.insert(object.key.clone(), object.size);
                let head = clients
                    .s3
                    .head_object()
                    .bucket(&bucket)
                    .key(&object.key)
                    .send()
                    .await?;
                let event = s3_event(
                    &bucket,
                    &object.key,
                    object.size,
                    head.e_tag().unwrap_or_default().trim_matches('"'),
                );
                let (invoker, key, function) =
                    (invoker.clone(), object.key.clone(), function.clone());
                // The coordinator lists until done; the pump goes on meanwhile.
                tokio::spawn(async move {
                    match invoker.invoke(&function, &event).await {
                        Ok(response) => eprintln!("{function}, for {key}: {response}"),
                        Err(e) => eprintln!("{e:#}"),
                    }
                });
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        tokio::time::sleep(NOTIFICATION_INTERVAL).await;
    }
}

pub async fn pump(args: &PumpArgs) -> anyhow::Result<ExitCode> {
    let clients = AwsClients::from_env(args.endpoint_url.as_deref()).await;
    let (template, options) = crate::local_up::stack_options(&args.stack)?;
    let stack = Stack::plan(&template, &options)?;
    let invoker = Invoker {
        http: reqwest::Client::new(),
        base: args.lambda_url.trim_end_matches('/').to_owned(),
    };
    let mut tasks = JoinSet::new();
    for function in &stack.functions {
        for source in &function.sqs_sources {
            let queue = SqsQueue::by_name(clients.sqs.clone(), &source.queue)
                .await
                .with_context(|| {
                    format!(
                        "queue {} (create the stack with `dmap local up --stack-name {}`)",
                        source.queue, args.stack.stack_name
                    )
                })?;
            // Lambda's pollers: one per concurrent invocation, capped for a laptop.
            let pollers = source
                .maximum_concurrency
                .map_or(1, |max| max.min(u32::from(args.concurrency)));
            let queue_arn = stack
                .queues
                .values()
                .find(|q| q.name == source.queue)
                .map(|q| q.arn.clone())
                .with_context(|| format!("queue {} is not in the stack", source.queue))?;
            for _ in 0..pollers {
                tasks.spawn(mapping(
                    EventSourceMapping::new(
                        Arc::new(queue.clone()),
                        source.batch_size as usize,
                        RECEIVE_WAIT,
                    ),
                    FunctionTarget {
                        invoker: invoker.clone(),
                        function: function.binary.clone(),
                        queue_arn: queue_arn.clone(),
                    },
                ));
            }
            eprintln!(
                "{} -> {} (batches of {}, {pollers} at once)",
                source.queue, function.binary, source.batch_size
            );
        }
        for source in &function.s3_sources {
            eprintln!(
                "s3://{}/{}*{} -> {}",
                source.bucket, source.prefix, source.suffix, function.binary
            );
            tasks.spawn(notifications(
                clients.clone(),
                source.clone(),
                function.binary.clone(),
                invoker.clone(),
            ));
        }
    }
    eprintln!(
        "pumping stack {} into {} (Ctrl-C stops)",
        args.stack.stack_name, invoker.base
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        Some(finished) = tasks.join_next() => match finished? {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e),
        },
    }
}
