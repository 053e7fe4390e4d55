//! The Lambda functions' handlers: what each function does with its events, over the same pipeline steps
//! `dmap run` uses. The binaries in `functions/` only read their configuration ([`config`]), build clients once
//! and call these.
//!
//! - [`coordinator`]: an S3 event for a job spec created under the jobs prefix, a direct invoke whose payload
//!   is a job spec, or an SQS event from its continuation queue.
//! - [`worker`]: an SQS event of batch messages, answered with `batchItemFailures`.
//! - [`finalizer`]: an SQS event from the finalize queue (finalize triggers) or from the work queue's
//!   dead-letter queue (dead-lettered batches, recorded as failed).

pub mod config;
pub mod coordinator;
pub mod finalizer;
pub mod metrics;
pub mod worker;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;

use crate::error::PipelineError;

/// JSON log lines on stdout (what CloudWatch Logs ingests) with the current spans' fields (the request, job
/// and batch ids) on every line. The level is [`log_filter`]'s.
pub fn init_logging() {
    let filter = log_filter(
        std::env::var("RUST_LOG").ok(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
    );
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(true)
        .init();
}

/// The log filter: `RUST_LOG` when set (a developer's per-module filter), else the level Lambda passes from
/// the function's `LoggingConfig.ApplicationLogLevel` (`AWS_LAMBDA_LOG_LEVEL`: TRACE ... FATAL), else `info`.
pub fn log_filter(rust_log: Option<String>, lambda_level: Option<String>) -> String {
    if let Some(filter) = rust_log.filter(|f| !f.trim().is_empty()) {
        return filter;
    }
    match lambda_level.as_deref().map(str::trim) {
        Some(level) if level.eq_ignore_ascii_case("fatal") => "error".to_owned(),
        Some(level) if !level.is_empty() => level.to_ascii_lowercase(),
        _ => "info".to_owned(),
    }
}

/// Runs one invocation's handling with its time charged to the jobs it serves (see [`crate::usage`]), at the
/// function's memory size as Lambda gives it (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; 128 MB, Lambda's least,
/// where it is not set).
pub async fn metered<F: Future>(handling: F) -> F::Output {
    let memory_mb = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(128);
    crate::usage::invocation(memory_mb, handling).await
}

/// A handler's error as the function reports it to Lambda: the `errorType` says whether a retry can help, so
/// an operator (or a Step Functions `Retry` on `ErrorEquals`) can tell a throttle from a bad event.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// Transient: the same event may succeed later (Lambda's retry of an asynchronous invoke, the queue's
    /// redelivery).
    #[error("{0}")]
    Retryable(#[source] PipelineError),
    /// Retrying the same event cannot help: a malformed event, a refused job, inconsistent bookkeeping.
    #[error("{0}")]
    NonRetryable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl FunctionError {
    pub const RETRYABLE: &str = "dmap.Retryable";
    pub const NON_RETRYABLE: &str = "dmap.NonRetryable";

    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Retryable(_) => Self::RETRYABLE,
            Self::NonRetryable(_) => Self::NON_RETRYABLE,
        }
    }
}

impl From<PipelineError> for FunctionError {
    fn from(e: PipelineError) -> Self {
        if e.is_transient() {
            Self::Retryable(e)
        } else {
            Self::NonRetryable(Box::new(e))
        }
    }
}

impl From<MissingMessageId> for FunctionError {
    fn from(e: MissingMessageId) -> Self {
        Self::NonRetryable(Box::new(e))
    }
}

impl From<FunctionError> for lambda_runtime::Diagnostic {
    fn from(e: FunctionError) -> Self {
        Self {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// A record that cannot be answered for: SQS needs its message id to retry just that record.
#[derive(Debug, thiserror::Error)]
#[error("an SQS record has no message id, so the whole batch is retried")]
pub struct MissingMessageId;

/// Handles every record of an SQS event (at most `concurrency` at once) and lists the ones to retry. A record
/// whose handler fails transiently is retried; one that fails for good is logged and also retried, so that
/// after the queue's maximum receive count it lands in the dead-letter queue where nothing is lost.
pub async fn for_each_record<'a, F, Fut>(
    event: &'a SqsEvent,
    concurrency: usize,
    handle: F,
) -> Result<SqsBatchResponse, MissingMessageId>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<(), PipelineError>>,
{
    let mut ids = Vec::with_capacity(event.records.len());
    for record in &event.records {
        ids.push(
            record
                .message_id
                .as_deref()
                .filter(|id| !id.is_empty())
                .ok_or(MissingMessageId)?,
        );
    }
    let outcomes: Vec<Result<(), PipelineError>> = futures::stream::iter(&event.records)
        .map(|record| handle(record.body.as_deref().unwrap_or_default()))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        if let Err(e) = outcome {
            tracing::warn!(message_id = id, error = %e, transient = e.is_transient(), "record will be retried");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.to_owned();
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{JobStoreError, StoreError};

    #[test]
    fn lambda_is_told_whether_a_retry_can_help() {
        let diagnostic = |e: FunctionError| lambda_runtime::Diagnostic::from(e);
        let throttled = diagnostic(PipelineError::Store(StoreError::Throttled).into());
        assert_eq!(throttled.error_type, "dmap.Retryable");
        assert_eq!(throttled.error_message, "throttled by the object store");
        let refused = diagnostic(PipelineError::Refused("results already exist".into()).into());
        assert_eq!(refused.error_type, "dmap.NonRetryable");
        assert_eq!(refused.error_message, "results already exist");
        let missing = diagnostic(PipelineError::Jobs(JobStoreError::NotFound("j".into())).into());
        assert_eq!(missing.error_type, "dmap.NonRetryable");
        assert_eq!(
            diagnostic(MissingMessageId.into()).error_type,
            "dmap.NonRetryable"
        );
    }

    #[test]
    fn the_level_comes_from_rust_log_then_lambda_then_info() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            log_filter(some("dmap_core=debug"), some("WARN")),
            "dmap_core=debug"
        );
        assert_eq!(log_filter(None, some("WARN")), "warn");
        assert_eq!(log_filter(some(" "), some("FATAL")), "error");
        assert_eq!(log_filter(None, None), "info");
    }
}
