//! Embedded adapters: the three ports without AWS, for `dmap run` on a laptop and for tests.
//! They keep the AWS services' semantics (proved by the shared conformance suite), not just their shapes.

mod batches;
mod job_store;
mod local_dir;
mod queue;

pub use job_store::MemoryJobStore;
pub use local_dir::LocalDirStore;
pub use queue::{EmbeddedQueue, QueueConfig};

use std::sync::Arc;
use std::time::Duration;

use crate::Deps;
use crate::ports::ObjectStore;

/// The embedded queues' attributes (the template's, for a run on a laptop).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedQueues {
    /// Every queue's visibility timeout.
    pub visibility_timeout: Duration,
    /// Receives before the work queue dead-letters a message.
    pub max_receive_count: u32,
    /// Most messages the work queue holds before a send waits (keeps memory flat); `None` for no limit.
    pub backlog_limit: Option<usize>,
}

impl Deps {
    /// The embedded backends: `objects` (a [`LocalDirStore`], or a wrapper around one), an in-process work
    /// queue with its dead-letter queue, a finalize queue, and an in-process job store. No function invoker: set
    /// [`Deps::functions`] to run `lambda` processors.
    pub fn embedded(objects: Arc<dyn ObjectStore>, queues: EmbeddedQueues) -> Self {
        let visibility = queues.visibility_timeout;
        let dead_letter = EmbeddedQueue::new(QueueConfig::new("work-dlq", visibility));
        let mut work = QueueConfig::new("work", visibility);
        work.dead_letter = Some((queues.max_receive_count, dead_letter.clone()));
        work.backlog_limit = queues.backlog_limit;
        Self {
            objects,
            work_queue: EmbeddedQueue::new(work),
            dead_letter: Some(dead_letter),
            finalize_queue: EmbeddedQueue::new(QueueConfig::new("finalize", visibility)),
            jobs: Arc::new(MemoryJobStore::new()),
            functions: None,
            tables: None,
            usage: Default::default(),
        }
    }
}
