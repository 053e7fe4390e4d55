//! The batch queue port on an SQS standard queue.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use super::{boxed, error_code, is_throttling};
use crate::ports::queue::{MAX_ENTRIES_PER_SEND, SendCalls};
use crate::ports::{
    BatchQueue, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendFailure,
};
use crate::spec::MAX_MESSAGE_BYTES;

/// Longest long poll SQS allows.
const MAX_WAIT_SECONDS: u64 = 20;

/// One SQS queue, by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

/// Codes with which SQS answers a receipt handle that is no longer current (the message deleted, or received
/// again since).
const INVALID_RECEIPT_CODES: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidParameterValue",
    "AWS.SimpleQueueService.MessageNotInflight",
    "MessageNotInflight",
];

fn map_error<E, R>(err: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error_code(&err) {
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => {
            QueueError::NotFound(boxed(err).to_string())
        }
        Some(code) if INVALID_RECEIPT_CODES.contains(&code) => QueueError::InvalidReceipt,
        _ if is_throttling(&err) => QueueError::Throttled,
        _ => QueueError::Other(boxed(err)),
    }
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// The queue named `name` (GetQueueUrl).
    pub async fn by_name(client: aws_sdk_sqs::Client, name: &str) -> Result<Self, QueueError> {
        let out = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| match map_error(e) {
                QueueError::NotFound(_) => {
                    QueueError::NotFound(format!("no queue named \"{name}\""))
                }
                other => other,
            })?;
        let url = out
            .queue_url()
            .ok_or_else(|| QueueError::NotFound(format!("no URL for queue \"{name}\"")))?;
        Ok(Self::new(client, url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's visibility timeout and, when it has a redrive policy, its maximum receive count.
    pub async fn visibility_and_max_receives(&self) -> Result<(Duration, Option<u32>), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(map_error)?;
        let attributes = out.attributes();
        let get = |name: QueueAttributeName| attributes.and_then(|a| a.get(&name));
        let visibility = get(QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(30), Duration::from_secs);
        let max_receives = get(QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| match &p["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .map(|n| n as u32);
        Ok((visibility, max_receives))
    }

    async fn send_chunk(&self, chunk: &[&OutgoingMessage]) -> Result<Vec<SendFailure>, QueueError> {
        let entries = chunk
            .iter()
            .map(|m| {
                // A group on a standard queue makes it a fair queue for that message: SQS delivers the groups'
                // messages in turn when one group has a backlog.
                SendMessageBatchRequestEntry::builder()
                    .id(&m.id)
                    .message_body(&m.body)
                    .set_message_group_id(m.group.clone())
                    .build()
                    .map_err(|e| QueueError::Other(Box::new(e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(map_error)?;
        // A 200 can still carry failed entries: every one is returned to the caller to retry or report.
        Ok(out
            .failed()
            .iter()
            .map(|f| SendFailure {
                id: f.id().to_owned(),
                code: f.code().to_owned(),
                message: f.message().unwrap_or_default().to_owned(),
                sender_fault: f.sender_fault(),
            })
            .collect())
    }
}

#[async_trait]
impl BatchQueue for SqsQueue {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let limit = MAX_MESSAGE_BYTES as usize;
        let mut failures = Vec::new();
        let mut chunk: Vec<&OutgoingMessage> = Vec::with_capacity(MAX_ENTRIES_PER_SEND);
        let mut calls = SendCalls::default();
        for message in messages {
            if message.body.len() > limit {
                failures.push(SendFailure::too_long(message, limit));
                continue;
            }
            if calls.add(message.body.len()) && !chunk.is_empty() {
                failures.extend(self.send_chunk(&chunk).await?);
                chunk.clear();
            }
            chunk.push(message);
        }
        if !chunk.is_empty() {
            failures.extend(self.send_chunk(&chunk).await?);
        }
        Ok(failures)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT_SECONDS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(map_error)?;
        out.messages()
            .iter()
            .map(|m| {
                let (Some(message_id), Some(receipt_handle)) = (m.message_id(), m.receipt_handle())
                else {
                    return Err(QueueError::Other(
                        "a received message has no id or receipt handle".into(),
                    ));
                };
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Ok(ReceivedMessage {
                    message_id: message_id.to_owned(),
                    receipt_handle: receipt_handle.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count,
                })
            })
            .collect()
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        match self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(map_error)
        {
            // Already deleted: the acknowledgement it asked for has happened.
            Ok(_) | Err(QueueError::InvalidReceipt) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_all(&self, receipt_handles: &[&str]) -> Result<(), QueueError> {
        for chunk in receipt_handles.chunks(MAX_ENTRIES_PER_SEND) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(*handle)
                        .build()
                        .expect("an id and a receipt handle")
                })
                .collect();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(map_error)?;
            // A handle already deleted (or received again since) has nothing left to acknowledge, as for
            // `delete`; any other failed entry fails the call, and the caller's retry deletes the rest.
            if let Some(failed) = out
                .failed()
                .iter()
                .find(|f| !INVALID_RECEIPT_CODES.contains(&f.code()))
            {
                let reason = format!(
                    "{} message(s) not deleted: {}: {}",
                    out.failed().len(),
                    failed.code(),
                    failed.message().unwrap_or("(no message)")
                );
                return Err(QueueError::Other(reason.into()));
            }
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        // SQS counts whole seconds; round up so a hidden message is never shown early.
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.min(43_200) as i32)
            .send()
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(map_error)?;
        let get = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
