//! The worker function: an SQS event of batch messages (one message = one batch), answered with
//! `batchItemFailures` listing the messages to retry. Items that fail for good are recorded as failed items
//! inside their batch, so their message succeeds and is not retried.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use std::time::Instant;

use tracing::Instrument;

use super::metrics::batch_line;
use super::{MissingMessageId, for_each_record};
use crate::Deps;
use crate::ports::RecordOutcome;
use crate::worker::{self, WorkerConfig};

/// Messages handled at once within one invocation (each reads its objects with `item_concurrency`).
const MESSAGE_CONCURRENCY: usize = 4;

pub async fn handle(
    deps: &Deps,
    config: WorkerConfig,
    event: &SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    for_each_record(event, MESSAGE_CONCURRENCY, |body| async move {
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
