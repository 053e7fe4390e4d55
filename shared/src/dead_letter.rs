//! Dead letters: a batch that exhausted its receives lands in the work queue's dead-letter queue. Its items are
//! recorded as failed (with the user's function's last error, for the `lambda` processor) so the job still
//! completes; if a worker did record the batch before, the record stands
//! and nothing changes (the dead part has its own key and is never counted).

use crate::Deps;
use crate::completion::Completion;
use crate::error::PipelineError;
use crate::function;
use crate::message::BatchMessage;
use crate::ports::RecordOutcome;
use crate::worker::{INLINE_PART_BYTES, parse_message, record_done, store_part};

/// What handling a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterOutcome {
    /// The batch's items were recorded as failed.
    RecordedFailed { items: u64, completion: Completion },
    /// The batch had been recorded already.
    AlreadyRecorded,
    /// The message names no existing job (or is not a batch): nothing to record.
    Orphaned(String),
}

/// Records a dead-lettered batch's items as failed. An `Err` is transient: leave the message for redelivery.
pub async fn handle(deps: &Deps, body: &str) -> Result<DeadLetterOutcome, PipelineError> {
    let message = match parse_message(body) {
        Ok(message) => message,
        Err(e) => return Ok(DeadLetterOutcome::Orphaned(e.to_string())),
    };
    crate::usage::scoped(&message.job_id, record_dead(deps, &message)).await
}

async fn record_dead(
    deps: &Deps,
    message: &BatchMessage,
) -> Result<DeadLetterOutcome, PipelineError> {
    let Some(job) = deps.jobs.get_job(&message.job_id).await? else {
        return Ok(DeadLetterOutcome::Orphaned(format!(
            "no job \"{}\"",
            message.job_id
        )));
    };
    if job.abort_requested() {
        // Not processed because the job was aborted: a batch an abort left, not a failed one.
        return Ok(DeadLetterOutcome::Orphaned(format!(
            "job \"{}\" was aborted",
            message.job_id
        )));
    }
    if message.generation < job.redrives {
        // A batch of a run before the job's redrive, which sent again what that run left.
        return Ok(DeadLetterOutcome::Orphaned(format!(
            "batch {} belongs to a run before the job's redrive {}",
            message.batch_id(),
            job.redrives
        )));
    }
    let why = format!(
        "batch {} was dead-lettered: it could not be processed within the queue's maximum receive count",
        message.batch_id()
    );
    // A batch of the `lambda` processor fails with the function's own error, as Step Functions reports it.
    let part = message.with_redone(match message.processor.lambda() {
        Some(lambda) => function::dead_part(deps, lambda, message, &why).await?,
        None => message.failed_part(&why),
    });
    let part_ref = store_part(
        deps,
        INLINE_PART_BYTES,
        &message.output.bucket,
        &part,
        || message.output.dead_part_key(message.seq),
    )
    .await?;
    let record = crate::worker::record_of(message, &part, part_ref);
    let (recorded, completion) = record_done(deps, &job, message, &record).await?;
    let outcome = recorded.outcome;
    tracing::warn!(batch_id = %message.batch_id(), ?outcome, "dead-lettered batch handled");
    Ok(match outcome {
        RecordOutcome::Recorded => DeadLetterOutcome::RecordedFailed {
            // What counted: this part's, or a worker's that recorded the batch before a crash.
            items: recorded.record.failed,
            completion,
        },
        RecordOutcome::Duplicate => DeadLetterOutcome::AlreadyRecorded,
    })
}
