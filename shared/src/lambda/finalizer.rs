//! The finalizer function, triggered by two queues: the finalize queue (a trigger sent by whoever won the
//! completion claim, or the merge of one range of a job finalized as a tree) and the work queue's dead-letter queue (a batch that exhausted its receives, whose items
//! are recorded as failed so the job can still finish). Both are idempotent.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use super::{MissingMessageId, for_each_record};
use crate::Deps;
use crate::dead_letter::{self, DeadLetterOutcome};
use crate::error::PipelineError;
use crate::finalizer::{self, FinalizerConfig, Handled};
use crate::message::FinalizeMessage;

pub async fn handle(
    deps: &Deps,
    config: FinalizerConfig,
    event: &SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    for_each_record(event, 1, |body| async move {
        match FinalizeMessage::from_body(body) {
            Ok(message) => {
                match finalizer::handle(deps, config, &message).await? {
                    Handled::Finalized(done) => tracing::info!(
                        job_id = message.job_id,
                        status = done.manifest.status.as_str(),
                        wrote = done.wrote,
                        "finalized"
                    ),
                    handled => tracing::info!(job_id = message.job_id, ?handled, "finalizing"),
                }
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
