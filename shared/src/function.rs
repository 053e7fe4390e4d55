//! Users' Lambda functions, as the `lambda` processor calls them: a batch's invocation (the worker's, and the
//! dead-letter handler's record of a batch that never got through), and the reducer's (the finalizer's).
//!
//! Two kinds of failure, handled apart, as Step Functions does:
//! - the function ran and failed (an exception, a timeout, out of memory): retried as the Task state's `Retry`
//!   says ([`RetryPolicy`]); when those retries are spent, that attempt of the batch fails, and the function's
//!   error is kept beside the batch's parts, so that if the batch is dead-lettered its items fail with it;
//! - Lambda did not run it (throttled, or a service error): retried with backoff for as long as
//!   [`FunctionConfig::throttle_budget`], never counted as an attempt. A batch still throttled after that is sent
//!   again as a fresh message (up to [`MAX_REQUEUES`] times) rather than left to the queue's redelivery, which
//!   would spend the message's receives and dead-letter items that never ran.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Deps;
use crate::error::PipelineError;
use crate::message::BatchMessage;
use crate::outcome::{BatchPart, Execution, FailedItem, TerminalStatus};
use crate::ports::{FunctionInvoker, InvokeError, StoreError, read_all};
use crate::processor::{BatchItem, LambdaProcessor, RetryPolicy};

/// How long Lambda's refusals (throttling, service errors) are waited out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionConfig {
    /// The most time one invocation spends retrying throttled calls before its caller gives up for now.
    pub throttle_budget: Duration,
}

impl Default for FunctionConfig {
    /// Half a minute: well inside a worker invocation (whose margin leaves ten seconds for the rest).
    fn default() -> Self {
        Self {
            throttle_budget: Duration::from_secs(30),
        }
    }
}

/// How many times a throttled batch is sent again as a fresh message before its throttling counts against the
/// message's receives: with the default budget, ten minutes of throttling lose nothing.
pub const MAX_REQUEUES: u32 = 20;

/// Invokes `function` until it answers, its Retry policy is spent, or Lambda keeps refusing it past the budget.
/// `Err` holds the last error: [`InvokeError::Function`] or [`InvokeError::Refused`] for good,
/// [`InvokeError::Throttled`] or [`InvokeError::Unavailable`] when the budget ran out.
pub async fn invoke_with_retry(
    invoker: &dyn FunctionInvoker,
    function: &str,
    payload: &[u8],
    retry: &RetryPolicy,
    config: FunctionConfig,
) -> Result<Vec<u8>, InvokeError> {
    let started = tokio::time::Instant::now();
    let mut retries = 0;
    let mut backoff = Duration::from_millis(200);
    loop {
        match invoker.invoke(function, payload.to_vec()).await {
            Ok(response) => return Ok(response),
            Err(e @ InvokeError::Function { .. }) if retries < retry.max_attempts => {
                retries += 1;
                let wait = retry.wait_before(retries);
                tracing::warn!(function, error = %e, retry = retries, ?wait, "function failed; retrying it");
                tokio::time::sleep(wait).await;
            }
            Err(e) if e.is_transient() && started.elapsed() + backoff <= config.throttle_budget => {
                tracing::info!(function, error = %e, ?backoff, "Lambda refused the call for now; waiting");
                tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..1.0))).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The function's error as Step Functions reports a failed execution: `Error` (the error type, or Lambda's
/// error code) and `Cause` (the message). Kept beside a batch's parts when an attempt failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionFailure {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause")]
    pub cause: String,
}

impl FunctionFailure {
    fn of(error: &InvokeError) -> Self {
        match error {
            InvokeError::Function {
                error_type,
                error_message,
            } => Self {
                error: error_type.clone(),
                cause: error_message.clone(),
            },
            InvokeError::Refused { code, message } => Self {
                error: code.clone(),
                cause: message.clone(),
            },
            InvokeError::Throttled(message) => Self {
                error: "Lambda.TooManyRequestsException".into(),
                cause: message.clone(),
            },
            InvokeError::Unavailable(message) => Self {
                error: "Lambda.ServiceException".into(),
                cause: message.clone(),
            },
        }
    }

    /// `Error: Cause`, as a failed item's error.
    pub fn item_error(&self) -> String {
        format!("{}: {}", self.error, self.cause)
    }
}

fn invoker(deps: &Deps) -> Result<&dyn FunctionInvoker, PipelineError> {
    deps.functions.as_deref().ok_or_else(|| {
        PipelineError::Refused(
            "the lambda processor needs Lambda's Invoke API, and this process has none configured"
                .into(),
        )
    })
}

/// An RFC 3339 UTC timestamp with milliseconds, as Step Functions writes `StartDate` and `StopDate`.
pub fn timestamp(ms: u64) -> String {
    // Whole seconds, then always three digits of milliseconds (the SDK's format drops trailing zeros).
    let seconds = aws_smithy_types::DateTime::from_secs((ms / 1000) as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    format!("{}.{:03}Z", seconds.trim_end_matches('Z'), ms % 1000)
}

/// Runs one batch through the function and returns its part: every item succeeded, and the execution record
/// holds the function's response. An `Err` leaves the batch for another attempt; for a function that failed
/// for good its error has been kept, for the dead-letter handler.
pub async fn process_batch(
    deps: &Deps,
    config: FunctionConfig,
    lambda: &LambdaProcessor,
    message: &BatchMessage,
) -> Result<BatchPart, PipelineError> {
    // Items that failed as they were read are not the function's: they fail on their own, beside its result.
    let failures: Vec<FailedItem> = message
        .items
        .iter()
        .filter_map(|item| match item {
            BatchItem::Failed(failed) => Some(FailedItem {
                key: failed.id.clone(),
                error: failed.error.clone(),
            }),
            _ => None,
        })
        .collect();
    let (failed, succeeded) = (
        failures.len() as u64,
        (message.items.len() - failures.len()) as u64,
    );
    if succeeded == 0 {
        // Every item failed as it was read (each keeps its own error): nothing to invoke.
        return Ok(message.failed_part(""));
    }
    let invoker = invoker(deps)?;
    let payload = lambda.payload(&message.items);
    let start = crate::clock::now_ms();
    match invoke_with_retry(invoker, &lambda.function, &payload, &lambda.retry, config).await {
        Ok(response) => {
            let stop = crate::clock::now_ms();
            Ok(BatchPart {
                job_id: message.job_id.clone(),
                seq: message.seq,
                succeeded,
                failed,
                result: message.processor.empty(),
                failures,
                outputs: Vec::new(),
                redone: Vec::new(),
                execution: Some(Execution {
                    status: TerminalStatus::Succeeded,
                    input: String::from_utf8(payload).expect("a payload is JSON"),
                    output: Some(response_json(response)),
                    error: None,
                    cause: None,
                    start_date: timestamp(start),
                    stop_date: timestamp(stop),
                }),
            })
        }
        Err(error) => {
            if !error.is_transient() {
                let failure = FunctionFailure::of(&error);
                tracing::error!(batch_id = %message.batch_id(), error = %failure.item_error(), "function failed for good on this attempt");
                let body = serde_json::to_vec(&failure).expect("a failure serializes");
                deps.objects
                    .put(
                        &message.output.bucket,
                        &message.output.error_key(message.seq),
                        body,
                    )
                    .await?;
            }
            Err(PipelineError::Function {
                function: lambda.function.clone(),
                error,
            })
        }
    }
}

/// A response as Step Functions records it: the function's JSON, `null` for none.
fn response_json(response: Vec<u8>) -> String {
    if response.is_empty() {
        "null".into()
    } else {
        String::from_utf8_lossy(&response).into_owned()
    }
}

/// The part of a dead-lettered batch of the `lambda` processor: its items failed with the function's last
/// error if an attempt kept one, else with `fallback` (the batch never got a definite answer).
pub async fn dead_part(
    deps: &Deps,
    lambda: &LambdaProcessor,
    message: &BatchMessage,
    fallback: &str,
) -> Result<BatchPart, PipelineError> {
    let failure = match read_all(
        deps.objects.as_ref(),
        &message.output.bucket,
        &message.output.error_key(message.seq),
    )
    .await
    {
        Ok(body) => serde_json::from_slice::<FunctionFailure>(&body).ok(),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    }
    .unwrap_or_else(|| FunctionFailure {
        error: "States.Runtime".into(),
        cause: fallback.to_owned(),
    });
    let now = timestamp(crate::clock::now_ms());
    Ok(BatchPart {
        execution: Some(Execution {
            status: TerminalStatus::Failed,
            input: String::from_utf8(lambda.payload(&message.items)).expect("a payload is JSON"),
            output: None,
            error: Some(failure.error.clone()),
            cause: Some(failure.cause.clone()),
            start_date: now.clone(),
            stop_date: now,
        }),
        ..message.failed_part(&failure.item_error())
    })
}

/// Invokes the reducer with Distributed Map's ResultWriter details and returns its response as `result.json`
/// holds it: exactly as returned, `null` when it returned nothing.
pub async fn reduce(
    deps: &Deps,
    config: FunctionConfig,
    lambda: &LambdaProcessor,
    reducer: &str,
    details: &serde_json::Value,
) -> Result<Vec<u8>, PipelineError> {
    let payload = serde_json::to_vec(details).expect("details serialize");
    invoke_with_retry(invoker(deps)?, reducer, &payload, &lambda.retry, config)
        .await
        .map(|response| response_json(response).into_bytes())
        .map_err(|error| PipelineError::Function {
            function: reducer.to_owned(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers with the outcomes it is given, in order, then with `{}`.
    struct Scripted(Mutex<Vec<Result<Vec<u8>, InvokeError>>>);

    #[async_trait::async_trait]
    impl FunctionInvoker for Scripted {
        async fn invoke(&self, _: &str, _: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
            let mut outcomes = self.0.lock().unwrap();
            if outcomes.is_empty() {
                Ok(b"{}".to_vec())
            } else {
                outcomes.remove(0)
            }
        }
    }

    fn raised() -> InvokeError {
        InvokeError::Function {
            error_type: "ValueError".into(),
            error_message: "bad".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn function_errors_follow_the_retry_policy_and_throttles_the_budget() {
        let retry = RetryPolicy::default();
        let config = FunctionConfig::default();
        // Three retries after the first failure, waiting 1, 2 and 4 s.
        let invoker = Scripted(Mutex::new(vec![Err(raised()); 3]));
        let started = tokio::time::Instant::now();
        let out = invoke_with_retry(&invoker, "f", b"{}", &retry, config).await;
        assert_eq!(out.unwrap(), b"{}");
        assert_eq!(started.elapsed().as_secs(), 7);
        let invoker = Scripted(Mutex::new(vec![Err(raised()); 4]));
        let out = invoke_with_retry(&invoker, "f", b"{}", &retry, config).await;
        assert_eq!(out.unwrap_err(), raised());
        // Throttling is waited out without spending an attempt, many times over...
        let invoker = Scripted(Mutex::new(vec![
            Err(InvokeError::Throttled(
                "slow down".into()
            ));
            8
        ]));
        let out = invoke_with_retry(&invoker, "f", b"{}", &retry, config).await;
        assert_eq!(out.unwrap(), b"{}");
        // ...until the budget runs out.
        let invoker = Scripted(Mutex::new(vec![
            Err(InvokeError::Throttled(
                "slow down".into()
            ));
            1000
        ]));
        let started = tokio::time::Instant::now();
        let out = invoke_with_retry(&invoker, "f", b"{}", &retry, config).await;
        assert!(matches!(out, Err(InvokeError::Throttled(_))));
        assert!(started.elapsed() <= config.throttle_budget);
        // A refusal is final at once.
        let refused = InvokeError::Refused {
            code: "ResourceNotFoundException".into(),
            message: "no such function".into(),
        };
        let invoker = Scripted(Mutex::new(vec![Err(refused.clone())]));
        let out = invoke_with_retry(&invoker, "f", b"{}", &retry, config).await;
        assert_eq!(out.unwrap_err(), refused);
    }

    #[test]
    fn timestamps_are_step_functions_dates() {
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(timestamp(1_700_000_000_080), "2023-11-14T22:13:20.080Z");
    }
}
