//! The function port on Lambda's Invoke API ([`LambdaInvoker`]): a synchronous (RequestResponse) invocation,
//! its outcome mapped to [`InvokeError`]. The client follows the SDK's standard configuration, so
//! `AWS_ENDPOINT_URL_LAMBDA` points it at a local Invoke API such as `cargo lambda watch`.
//!
//! The SDK's own retries are off for this client: whether and when to invoke again is the caller's policy
//! (a Task state's `Retry` for function errors, a longer backoff for throttling), and a retried invocation runs
//! the user's code again.

use async_trait::async_trait;
use aws_sdk_lambda::operation::invoke::InvokeError as SdkInvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::error_code;
use crate::ports::{FunctionInvoker, InvokeError};

/// Invokes functions through Lambda's Invoke API.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
}

impl LambdaInvoker {
    pub fn new(client: aws_sdk_lambda::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl FunctionInvoker for LambdaInvoker {
    async fn invoke(&self, function: &str, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let result = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send()
            .await;
        match result {
            Ok(out) => {
                let body = out.payload.map(Blob::into_inner).unwrap_or_default();
                match out.function_error {
                    // "Unhandled" or "Handled": either way the function failed, and its error document says how.
                    Some(_) => Err(InvokeError::from_error_document(&body)),
                    None => Ok(body),
                }
            }
            Err(err) => Err(map_error(function, err)),
        }
    }
}

/// Error codes of an Invoke that may succeed if sent again later, besides throttling: Lambda's own failures,
/// and a function that is being created or updated.
const UNAVAILABLE_CODES: &[&str] = &[
    "ServiceException",
    "ResourceNotReadyException",
    "ResourceConflictException",
    "EC2ThrottledException",
    "ENILimitReachedException",
    "SnapStartNotReadyException",
    "SnapStartTimeoutException",
];

fn map_error(function: &str, err: SdkError<SdkInvokeError, HttpResponse>) -> InvokeError {
    let detail = super::detail(&err);
    match error_code(&err) {
        Some("TooManyRequestsException") => return InvokeError::Throttled(detail),
        Some(code) if UNAVAILABLE_CODES.contains(&code) => return InvokeError::Unavailable(detail),
        Some(code) => {
            return InvokeError::Refused {
                code: code.to_owned(),
                message: format!("invoking {function}: {detail}"),
            };
        }
        None => {}
    }
    let Some(raw) = err.raw_response() else {
        // Never answered: a connection refused or cut, a timeout.
        return InvokeError::Unavailable(detail);
    };
    let body = raw.body().bytes().unwrap_or_default();
    match raw.status().as_u16() {
        // A local Invoke API (`cargo lambda watch`) answers a function's error with HTTP 500 and the function's
        // error document, where Lambda answers 200 with X-Amz-Function-Error.
        500 if is_error_document(body) => InvokeError::from_error_document(body),
        429 => InvokeError::Throttled(detail),
        status if status >= 500 => InvokeError::Unavailable(detail),
        status => InvokeError::Refused {
            code: format!("HTTP {status}"),
            message: format!(
                "invoking {function}: {}",
                String::from_utf8_lossy(&body[..body.len().min(512)])
            ),
        },
    }
}

fn is_error_document(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("errorType").is_some() || v.get("errorMessage").is_some())
}
