//! The worker function: an SQS event of batch messages (one message = one batch), answered with
//! `batchItemFailures` listing the messages to retry. Items that fail for good are recorded as failed items
//! inside their batch, so their message succeeds and is not retried.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use std::time::Instant;

use tracing::Instrument;

use super::metrics::batch_line;
use super::{MissingMessageId, for_each_record};
use crate::Deps;
use crate::error::PipelineError;
use crate::ports::RecordOutcome;
use crate::worker::{self, MESSAGE_CONCURRENCY, WorkerConfig};

/// Start no message with less than this left of the invocation (a batch of slow objects takes seconds).
pub const WORKER_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The worker's deadline policy: whether an invocation that started at `started` and must end by `deadline`
/// may, at `now`, start another message. The margin is [`WORKER_MARGIN`], or a quarter of the invocation's
/// time when that is shorter (a local emulator's invocations, or a function deployed with a short timeout),
/// so that an invocation always has time for its first messages. A deadline before the invocation began is
/// no deadline at all (`cargo lambda watch` sends a constant 600,000 ms since the epoch): nothing is held back.
pub fn worker_time_left(
    deadline: std::time::SystemTime,
    started: std::time::SystemTime,
    now: std::time::SystemTime,
) -> bool {
    let Ok(whole) = deadline.duration_since(started) else {
        return true;
    };
    let margin = WORKER_MARGIN.min(whole / 4);
    deadline.duration_since(now).is_ok_and(|left| left > margin)
}

/// Handles an SQS event of batches, with no deadline (tests, and callers that have none).
pub async fn handle(
    deps: &Deps,
    config: WorkerConfig,
    event: &SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    handle_until(deps, config, event, &|| true).await
}

/// Handles an SQS event of batches. `time_left` is asked before each message starts: once it says no (the
/// invocation is near its timeout), the messages not started are reported in `batchItemFailures`, to be
/// delivered again, rather than cut off by the timeout (which would fail the whole event).
pub async fn handle_until(
    deps: &Deps,
    config: WorkerConfig,
    event: &SqsEvent,
    time_left: &(dyn Fn() -> bool + Sync),
) -> Result<SqsBatchResponse, MissingMessageId> {
    let config = WorkerConfig {
        item_concurrency: worker::message_item_concurrency(config.item_concurrency),
        ..config
    };
    for_each_record(event, MESSAGE_CONCURRENCY, |body| async move {
        if !time_left() {
            return Err(PipelineError::NotReady {
                job_id: String::new(),
                message: "the invocation is near its timeout; left for the next delivery".into(),
            });
        }
        let message = worker::parse_message(body)?;
        let span =
            tracing::info_span!("batch", job_id = %message.job_id, batch_id = %message.batch_id());
        async {
            let started = Instant::now();
            let handled = worker::handle(deps, config, &message).await?;
            tracing::info!(
                succeeded = handled.record.succeeded,
                failed = handled.record.failed,
                outcome = ?handled.outcome,
                completion = ?handled.completion,
                "batch done"
            );
            let counted = (handled.outcome == RecordOutcome::Recorded)
                .then_some((handled.record.succeeded, handled.record.failed));
            // Lambda sends stdout to CloudWatch Logs, where EMF lines become metrics.
            println!(
                "{}",
                batch_line(
                    &message.job_id,
                    &message.batch_id(),
                    counted,
                    started.elapsed(),
                    crate::clock::now_ms()
                )
            );
            Ok(())
        }
        .instrument(span)
        .await
    })
    .await
}
