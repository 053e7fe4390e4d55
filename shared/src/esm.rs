//! The SQS event source mapping, played by this process: receive up to a batch of messages, invoke a target
//! with them, delete the ones the target did not list as failures (`batchItemFailures`). A failed invocation
//! deletes nothing: its messages return after the visibility timeout, and a message received more than the
//! queue's maximum receive count goes to the dead-letter queue, as on AWS.
//!
//! One player serves every place the mapping is played, parameterised by what it invokes: the in-process
//! runner's worker pool, dead-letter consumer and finalizer ([`EachMessage`] over a handler), `dmap local pump`
//! (a function behind the Lambda Invoke API), and the tests that hand events to the Lambda handlers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use crate::ports::{BatchQueue, QueueError, ReceivedMessage};

/// What a mapping invokes with the messages of one receive.
#[async_trait]
pub trait Invoke: Send + Sync {
    /// Handles the messages and returns the ids of those to leave for redelivery (the `batchItemFailures`).
    /// An `Err` is a failed invocation: no message is deleted.
    async fn invoke(&self, messages: &[ReceivedMessage]) -> Result<Vec<String>, InvokeError>;
}

/// A failed invocation.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvokeError(pub Box<dyn std::error::Error + Send + Sync>);

impl InvokeError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// How a standard-mode SQS event source mapping scales its concurrent invocations: it starts at `initial`, adds
/// `per_minute` a minute, and never passes `most` (Lambda's SQS scaling documentation) nor the mapping's own
/// MaximumConcurrency. Lambda adds invocations while messages wait; the model and the runner that use this
/// count from the job's first message (the model) or the run's start (the runner, a page earlier) and do not
/// wait for a backlog: a job's queue is seldom empty while it ramps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    pub initial: u32,
    pub per_minute: u32,
    pub most: u32,
}

impl Ramp {
    /// The concurrency `secs` after the first message, capped at `maximum`; at least one, whatever the
    /// settings (else nothing would ever be processed).
    pub fn concurrency_after(&self, secs: f64, maximum: u32) -> u32 {
        let ramped = self.initial as f64 + self.per_minute as f64 * secs / 60.0;
        (ramped as u32).min(maximum).min(self.most).max(1)
    }

    /// When invocation slot `slot` (from 0) is first used: the first `initial` (at least one) at once, then
    /// one every `60 / per_minute` seconds; `None` for a slot the mapping never reaches (past `most`, or with
    /// no ramp).
    pub fn slot_starts_after(&self, slot: u32) -> Option<Duration> {
        if slot < self.initial.max(1) {
            return Some(Duration::ZERO);
        }
        if slot >= self.most || self.per_minute == 0 {
            return None;
        }
        let past = slot.saturating_sub(self.initial);
        Some(Duration::from_secs_f64(
            60.0 * (past + 1) as f64 / self.per_minute as f64,
        ))
    }
}

/// Why one poll stopped short.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("receiving: {0}")]
    Receive(#[source] QueueError),
    /// The invocation failed; its messages were left for redelivery.
    #[error("invoking: {0}")]
    Invoke(#[source] InvokeError),
    #[error("deleting: {0}")]
    Delete(#[source] QueueError),
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polled {
    pub received: usize,
    /// Message ids the target left for redelivery.
    pub failed: Vec<String>,
}

/// One event source mapping: a queue, the batch size (1–10) and how long an idle receive waits.
#[derive(Clone)]
pub struct EventSourceMapping {
    pub queue: Arc<dyn BatchQueue>,
    pub batch_size: usize,
    pub wait: Duration,
}

impl EventSourceMapping {
    pub fn new(queue: Arc<dyn BatchQueue>, batch_size: usize, wait: Duration) -> Self {
        Self {
            queue,
            batch_size: batch_size.clamp(1, 10),
            wait,
        }
    }

    /// One receive, one invocation (when anything was received), and the deletes of what succeeded.
    pub async fn poll_once(&self, target: &dyn Invoke) -> Result<Polled, PollError> {
        let messages = self
            .queue
            .receive(self.batch_size, self.wait)
            .await
            .map_err(PollError::Receive)?;
        if messages.is_empty() {
            return Ok(Polled::default());
        }
        let failed = target.invoke(&messages).await.map_err(PollError::Invoke)?;
        let done: Vec<&str> = messages
            .iter()
            .filter(|m| !failed.contains(&m.message_id))
            .map(|m| m.receipt_handle.as_str())
            .collect();
        self.queue
            .delete_all(&done)
            .await
            .map_err(PollError::Delete)?;
        Ok(Polled {
            received: messages.len(),
            failed,
        })
    }
}

/// What an in-process handler says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Done: the mapping deletes it.
    Delete,
    /// Leave it for redelivery (a `batchItemFailures` entry).
    Retry,
}

/// An in-process handler of one message.
#[async_trait]
pub trait HandleMessage: Send + Sync {
    /// `Err` fails the whole invocation (nothing is deleted) and is returned by the poll.
    async fn handle(&self, message: &ReceivedMessage) -> Result<Ack, InvokeError>;
}

#[async_trait]
impl<H: HandleMessage + ?Sized> HandleMessage for Arc<H> {
    async fn handle(&self, message: &ReceivedMessage) -> Result<Ack, InvokeError> {
        (**self).handle(message).await
    }
}

/// An in-process target: the messages of a receive handled by `H`, up to `at_once` at a time (as the worker
/// function handles its event's messages), the ones it retries reported as failures.
pub struct EachMessage<H> {
    handler: H,
    at_once: usize,
}

impl<H> EachMessage<H> {
    /// Every message of a receive at once.
    pub fn new(handler: H) -> Self {
        Self::at_most(handler, usize::MAX)
    }

    /// At most `at_once` messages at a time.
    pub fn at_most(handler: H, at_once: usize) -> Self {
        Self {
            handler,
            at_once: at_once.max(1),
        }
    }
}

#[async_trait]
impl<H: HandleMessage> Invoke for EachMessage<H> {
    async fn invoke(&self, messages: &[ReceivedMessage]) -> Result<Vec<String>, InvokeError> {
        let handled: Vec<_> = messages.iter().map(|m| self.handler.handle(m)).collect();
        let acks: Vec<Ack> = futures::stream::iter(handled)
            .buffered(self.at_once.min(messages.len().max(1)))
            .try_collect()
            .await?;
        Ok(messages
            .iter()
            .zip(acks)
            .filter(|(_, ack)| *ack == Ack::Retry)
            .map(|(m, _)| m.message_id.clone())
            .collect())
    }
}

/// Received messages as the SQS event the event source mapping delivers for them, from the queue with ARN
/// `queue_arn` (its region is taken from the ARN).
pub fn sqs_event(queue_arn: &str, messages: &[ReceivedMessage]) -> serde_json::Value {
    let region = queue_arn.split(':').nth(3).unwrap_or_default();
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": { "ApproximateReceiveCount": m.receive_count.to_string() },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{EmbeddedQueue, QueueConfig};
    use crate::ports::OutgoingMessage;

    struct RetryOdd;

    #[async_trait]
    impl HandleMessage for RetryOdd {
        async fn handle(&self, message: &ReceivedMessage) -> Result<Ack, InvokeError> {
            let n: u32 = message.body.parse().map_err(InvokeError::new)?;
            Ok(if n % 2 == 1 { Ack::Retry } else { Ack::Delete })
        }
    }

    async fn queue_of(bodies: &[&str]) -> Arc<EmbeddedQueue> {
        let queue = EmbeddedQueue::new(QueueConfig::new("q", Duration::from_millis(50)));
        let messages: Vec<OutgoingMessage> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| OutgoingMessage {
                id: format!("m{i}"),
                body: (*b).to_owned(),
                group: None,
            })
            .collect();
        assert!(queue.send_batch(&messages).await.unwrap().is_empty());
        queue
    }

    #[tokio::test]
    async fn successes_are_deleted_and_failures_come_back() {
        let queue = queue_of(&["1", "2", "3", "4"]).await;
        let mapping = EventSourceMapping::new(queue.clone(), 10, Duration::from_millis(10));
        let polled = mapping
            .poll_once(&EachMessage::new(RetryOdd))
            .await
            .unwrap();
        assert_eq!((polled.received, polled.failed.len()), (4, 2));
        tokio::time::sleep(Duration::from_millis(80)).await;
        let again = queue.receive(10, Duration::from_millis(10)).await.unwrap();
        let mut bodies: Vec<&str> = again.iter().map(|m| m.body.as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, ["1", "3"]);
    }

    #[tokio::test]
    async fn a_failed_invocation_deletes_nothing() {
        let queue = queue_of(&["2", "not a number"]).await;
        let mapping = EventSourceMapping::new(queue.clone(), 10, Duration::from_millis(10));
        let err = mapping
            .poll_once(&EachMessage::new(RetryOdd))
            .await
            .unwrap_err();
        assert!(matches!(err, PollError::Invoke(_)), "{err}");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            queue
                .receive(10, Duration::from_millis(10))
                .await
                .unwrap()
                .len(),
            2
        );
    }

    /// Notes the most messages handled at once, each held a while, retrying the odd ones.
    #[derive(Default)]
    struct Slow {
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl HandleMessage for Slow {
        async fn handle(&self, message: &ReceivedMessage) -> Result<Ack, InvokeError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.now.fetch_sub(1, SeqCst);
            RetryOdd.handle(message).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_invocation_handles_at_most_its_message_concurrency_at_once() {
        let bodies: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let queue = queue_of(&bodies.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let mapping = EventSourceMapping::new(queue, 10, Duration::from_millis(10));
        let target = EachMessage::at_most(Slow::default(), 4);
        let polled = mapping.poll_once(&target).await.unwrap();
        assert_eq!(polled.received, 10);
        // The acks land on their own messages: the odd bodies (the queue's ids q-1, q-3...) are the ones retried.
        let mut failed = polled.failed.clone();
        failed.sort();
        assert_eq!(failed, ["q-1", "q-3", "q-5", "q-7", "q-9"]);
        let most = target
            .handler
            .most
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(most, 4);
    }

    #[test]
    fn a_ramped_slot_starts_when_the_mappings_concurrency_reaches_it() {
        let ramp = Ramp {
            initial: 5,
            per_minute: 300,
            most: 1250,
        };
        for slot in 0..1000u32 {
            let at = ramp.slot_starts_after(slot).unwrap().as_secs_f64();
            assert!(ramp.concurrency_after(at + 1e-9, u32::MAX) > slot, "{slot}");
            if slot >= ramp.initial {
                assert!(
                    ramp.concurrency_after(at - 1e-3, u32::MAX) <= slot,
                    "{slot}"
                );
            }
        }
        assert_eq!(ramp.slot_starts_after(4), Some(Duration::ZERO));
        assert_eq!(ramp.slot_starts_after(5), Some(Duration::from_millis(200)));
        assert_eq!(ramp.slot_starts_after(1250), None);
        let flat = Ramp {
            per_minute: 0,
            ..ramp
        };
        assert_eq!(flat.slot_starts_after(5), None);
        assert_eq!(flat.concurrency_after(1e9, 100), 5);
        assert_eq!(ramp.concurrency_after(6000.0, 2000), 1250);
    }

    #[test]
    fn the_event_names_its_queue_and_region() {
        let event = sqs_event(
            "arn:aws:sqs:eu-west-1:111122223333:work",
            &[ReceivedMessage {
                message_id: "id".into(),
                receipt_handle: "rh".into(),
                body: "{}".into(),
                receive_count: 2,
            }],
        );
        let record = &event["Records"][0];
        assert_eq!(record["awsRegion"], "eu-west-1");
        assert_eq!(
            record["eventSourceARN"],
            "arn:aws:sqs:eu-west-1:111122223333:work"
        );
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "2");
    }
}
