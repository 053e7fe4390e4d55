//! The finalizer function, triggered by two queues: the finalize queue (a trigger sent by whoever won the
//! completion claim) and the work queue's dead-letter queue (a batch that exhausted its receives, whose items
//! are recorded as failed so the job can still finish). Both are idempotent.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use super::{MissingMessageId, for_each_record};
use crate::Deps;
use crate::dead_letter::{self, DeadLetterOutcome};
use crate::error::PipelineError;
use crate::finalizer::{FinalizerConfig, finalize};
use crate::message::FinalizeMessage;

pub async fn handle(deps: &Deps, event: &SqsEvent) -> Result<SqsBatchResponse, MissingMessageId> {
    for_each_record(event, 1, |body| async move {
        match FinalizeMessage::from_body(body) {
            Ok(trigger) => {
                let done = finalize(deps, FinalizerConfig::default(), &trigger.job_id).await?;
                tracing::info!(
                    job_id = trigger.job_id,
                    status = done.manifest.status.as_str(),
                    wrote = done.wrote,
                    "finalized"
                );
                Ok(())
            }
            // Not a trigger: a dead-lettered batch.
            Err(_) => match dead_letter::handle(deps, body).await? {
                DeadLetterOutcome::Orphaned(why) => {
                    tracing::error!(why, "dead letter names no job; dropped");
                    Ok(())
                }
                outcome => {
                    tracing::warn!(?outcome, "dead-lettered batch handled");
                    Ok::<(), PipelineError>(())
                }
            },
        }
    })
    .await
}
