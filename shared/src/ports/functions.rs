//! The function port: a synchronous invocation of a user's Lambda function (the `lambda` processor's batch
//! function and its reducer). The one adapter is Lambda's Invoke API ([`crate::aws::LambdaInvoker`]), which
//! also serves the embedded mode through a local Invoke API; tests use an in-process double.

use async_trait::async_trait;

/// Why an invocation did not return the function's response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and failed: an unhandled exception, a timeout, running out of memory (Lambda's
    /// `X-Amz-Function-Error`). `error_type` and `error_message` come from the function's error document.
    #[error("{error_type}: {error_message}")]
    Function {
        error_type: String,
        error_message: String,
    },
    /// Lambda refused the call for now (`TooManyRequestsException`: concurrency or request rate): retry
    /// later. Never the items' fault.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Lambda itself failed or could not be reached (a 5xx, a connection cut): retry later.
    #[error("Lambda service: {0}")]
    Unavailable(String),
    /// Lambda refused the call for good (no such function, not allowed to invoke it, a payload too large):
    /// the same call would be refused again.
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
}

impl InvokeError {
    /// Worth retrying later (the same call may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Unavailable(_))
    }

    /// The function's error from its error document (`{"errorType": ..., "errorMessage": ...}`), as every
    /// Lambda runtime writes it; a document of another shape keeps its text as the message.
    pub fn from_error_document(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Document {
            #[serde(rename = "errorType")]
            error_type: Option<String>,
            #[serde(rename = "errorMessage")]
            error_message: Option<String>,
        }
        match serde_json::from_slice::<Document>(body) {
            Ok(Document {
                error_type,
                error_message,
            }) if error_type.is_some() || error_message.is_some() => Self::Function {
                error_type: error_type.unwrap_or_else(|| "Unhandled".into()),
                error_message: error_message.unwrap_or_default(),
            },
            _ => Self::Function {
                error_type: "Unhandled".into(),
                error_message: String::from_utf8_lossy(body).into_owned(),
            },
        }
    }
}

#[async_trait]
pub trait FunctionInvoker: Send + Sync {
    /// Invokes `function` (a name, an ARN, or an alias ARN) synchronously with `payload` (JSON) and returns its
    /// response (JSON; empty when the function returned nothing).
    async fn invoke(&self, function: &str, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_document_names_the_type_and_message() {
        let err = InvokeError::from_error_document(
            br#"{"errorType": "ValueError", "errorMessage": "bad row 3", "stackTrace": []}"#,
        );
        assert_eq!(err.to_string(), "ValueError: bad row 3");
        assert!(!err.is_transient());
        let err = InvokeError::from_error_document(b"Task timed out after 3.00 seconds");
        assert_eq!(
            err.to_string(),
            "Unhandled: Task timed out after 3.00 seconds"
        );
    }
}
