//! The pipeline's error type: what went wrong in a step, keeping the port error it came from.

use crate::ports::{JobStoreError, QueueError, StoreError};
use crate::processor::MergeError;
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Jobs(#[from] JobStoreError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// A user's table could not be read (the `dynamodb_scan` reader).
    #[error(transparent)]
    Table(#[from] crate::ports::TableError),
    /// The job cannot start as asked (missing bucket, results already present, id reused…).
    #[error("{0}")]
    Refused(String),
    /// A user's function did not return its response: it failed, or Lambda would not run it.
    #[error("function {function}: {error}")]
    Function {
        function: String,
        error: crate::ports::InvokeError,
    },
    /// A message body that is not what its queue carries.
    #[error("malformed message: {0}")]
    MalformedMessage(String),
    /// The job's records disagree with its parts: a bug, never papered over.
    #[error("inconsistent bookkeeping for job {job_id}: {message}")]
    Inconsistent { job_id: String, message: String },
    /// A step ran before its job was ready for it (a finalizer trigger for a RUNNING job).
    #[error("job {job_id} is not ready: {message}")]
    NotReady { job_id: String, message: String },
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl PipelineError {
    /// Worth retrying the step later (the same call may succeed); otherwise retrying cannot help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Queue(e) => e.is_transient(),
            Self::Jobs(e) => e.is_transient(),
            Self::Function { error, .. } => error.is_transient(),
            Self::Table(e) => matches!(e, crate::ports::TableError::Unavailable(_)),
            Self::NotReady { .. } | Self::Task(_) => true,
            _ => false,
        }
    }
}
