//! The batch queue port: an SQS-shaped standard queue (at-least-once, best-effort order, visibility timeout,
//! receive counts, a dead-letter queue after a maximum receive count).

use std::time::Duration;

use async_trait::async_trait;

/// Most entries in one SendMessageBatch call.
pub const MAX_ENTRIES_PER_SEND: usize = 10;

/// How messages sent in order fill SendMessageBatch calls: at most [`MAX_ENTRIES_PER_SEND`] entries and
/// [`crate::spec::MAX_MESSAGE_BYTES`] in all a call. The SQS adapter cuts its calls by it, and `dmap plan`
/// counts them by it.
#[derive(Debug, Default)]
pub struct SendCalls {
    entries: usize,
    bytes: usize,
    /// Calls begun so far.
    pub calls: u64,
}

impl SendCalls {
    /// Adds a message of `len` bytes; `true` when it begins a new call (the previous one is then complete).
    pub fn add(&mut self, len: usize) -> bool {
        let limit = crate::spec::MAX_MESSAGE_BYTES as usize;
        let new =
            self.calls == 0 || self.entries == MAX_ENTRIES_PER_SEND || self.bytes + len > limit;
        if new {
            self.calls += 1;
            (self.entries, self.bytes) = (0, 0);
        }
        self.entries += 1;
        self.bytes += len;
        new
    }
}

/// A message to send. `id` must be unique within one `send_batch` call (SQS batch entry id rules:
/// up to 80 of `[A-Za-z0-9_-]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub id: String,
    pub body: String,
    /// The message's group, for fairness: a queue delivers the groups' messages in turn, so a group with a
    /// backlog does not hold back the others' (SQS fair queues: the MessageGroupId of a standard queue). A
    /// batch's group is its job.
    pub group: Option<String>,
}

/// One entry the queue did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub id: String,
    pub code: String,
    pub message: String,
    /// The request itself is wrong (too large, bad id): retrying cannot help.
    pub sender_fault: bool,
}

impl SendFailure {
    /// The entry is larger than any queue message may be: the sender's fault, never retried.
    pub fn too_long(message: &OutgoingMessage, limit: usize) -> Self {
        Self {
            id: message.id.clone(),
            code: "MessageTooLong".into(),
            message: format!(
                "{} bytes is more than the {limit}-byte limit",
                message.body.len()
            ),
            sender_fault: true,
        }
    }
}

/// A received message. The receipt handle of this delivery is what `delete` and `change_visibility` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times this message has been received, this delivery included (ApproximateReceiveCount).
    pub receive_count: u32,
}

/// Approximate number of messages (as GetQueueAttributes reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
}

impl QueueDepth {
    pub fn is_empty(&self) -> bool {
        self.visible == 0 && self.in_flight == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue not found: {0}")]
    NotFound(String),
    #[error("receipt handle is no longer valid")]
    InvalidReceipt,
    #[error("throttled by the queue")]
    Throttled,
    #[error("{count} message(s) could not be sent: {first}")]
    SendFailed { count: usize, first: String },
    #[error("queue: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl QueueError {
    /// Worth retrying later (the same call may succeed).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::SendFailed { .. } | Self::NotFound(_))
    }
}

#[async_trait]
pub trait BatchQueue: Send + Sync {
    /// Sends messages, split into as many API calls as the entry and size limits require. Returns the entries
    /// that were not accepted (the others were); an `Err` means no entry is known to be accepted.
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendFailure>, QueueError>;

    /// Receives up to `max` (1–10) messages, waiting up to `wait` for the first. Each received message is hidden
    /// for the queue's visibility timeout; one received more than the queue's maximum receive count goes to the
    /// dead-letter queue instead.
    async fn receive(&self, max: usize, wait: Duration)
    -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Acknowledges a delivery. Deleting an already-deleted message is not an error.
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;

    /// Acknowledges several deliveries at once, as an event source mapping acknowledges a batch's successes
    /// (SQS: DeleteMessageBatch, ten handles a request, instead of a request per message). As for
    /// [`BatchQueue::delete`], a handle whose message is already deleted is not an error.
    async fn delete_all(&self, receipt_handles: &[&str]) -> Result<(), QueueError> {
        for handle in receipt_handles {
            self.delete(handle).await?;
        }
        Ok(())
    }

    /// Hides a received message for `timeout` from now (zero makes it visible again). Errors: `InvalidReceipt`
    /// when the delivery is no longer current.
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError>;

    /// Approximate visible and in-flight counts.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
}

/// Sends every message, retrying the entries the queue did not accept with exponential backoff. Fails with
/// `SendFailed` if an entry is refused for the sender's fault or still fails after the last attempt.
pub async fn send_all_with_retry(
    queue: &dyn BatchQueue,
    messages: Vec<OutgoingMessage>,
) -> Result<(), QueueError> {
    const ATTEMPTS: u32 = 8;
    let mut pending = messages;
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        if pending.is_empty() {
            return Ok(());
        }
        let failures = queue.send_batch(&pending).await?;
        if failures.is_empty() {
            return Ok(());
        }
        if let Some(fatal) = failures.iter().find(|f| f.sender_fault) {
            return Err(QueueError::SendFailed {
                count: failures.len(),
                first: format!("{} ({}): {}", fatal.id, fatal.code, fatal.message),
            });
        }
        if attempt == ATTEMPTS {
            let first = &failures[0];
            return Err(QueueError::SendFailed {
                count: failures.len(),
                first: format!("{} ({}): {}", first.id, first.code, first.message),
            });
        }
        tracing::warn!(
            failed = failures.len(),
            attempt,
            "queue refused some entries; retrying them"
        );
        pending.retain(|m| failures.iter().any(|f| f.id == m.id));
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Ok(())
}
