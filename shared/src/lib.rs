//! dmap's core: a distributed map over S3 objects, as plain logic over three small ports.
//!
//! - [`spec`]: the job spec and its validation; [`batching`], [`message`]: how items become queue messages.
//! - [`processor`]: what is computed per item and how results merge.
//! - [`ports`]: object store, batch queue, job store; [`embedded`]: their in-process implementations.
//! - [`coordinator`], [`worker`], [`finalizer`], [`dead_letter`], [`completion`]: the pipeline's steps, the same
//!   code whether they run in Lambda or in one process.
//! - [`local`]: runs a whole job in one process, with a worker pool standing in for the SQS event source
//!   mapping, and optional fault injection.

pub mod aws;
pub mod batching;
pub mod completion;
pub mod coordinator;
pub mod dead_letter;
pub mod embedded;
pub mod error;
pub mod finalizer;
pub mod lambda;
pub mod layout;
pub mod local;
pub mod message;
pub mod ports;
pub mod processor;
pub mod spec;
pub mod worker;

use std::sync::Arc;

pub use error::PipelineError;
use ports::{BatchQueue, JobStore, ObjectStore};

/// What the pipeline's steps run against. Built once per process and borrowed by every handler.
#[derive(Clone)]
pub struct Deps {
    pub objects: Arc<dyn ObjectStore>,
    pub work_queue: Arc<dyn BatchQueue>,
    pub finalize_queue: Arc<dyn BatchQueue>,
    pub jobs: Arc<dyn JobStore>,
}
