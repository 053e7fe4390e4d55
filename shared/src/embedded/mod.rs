//! Embedded adapters: the three ports without AWS, for `dmap run` on a laptop and for tests.
//! They keep the AWS services' semantics (proved by the shared conformance suite), not just their shapes.

mod job_store;
mod local_dir;
mod queue;

pub use job_store::MemoryJobStore;
pub use local_dir::LocalDirStore;
pub use queue::{EmbeddedQueue, QueueConfig};
