//! dmap's core: a distributed map over S3 objects, as plain logic over three small ports. The modules, from the
//! leaves up (each imports only modules above it in this list; `scripts/module-graph` checks there is no
//! circle, and ARCHITECTURE.md draws the graph):
//!
//! - Processors: [`processor`] (the [`processor::Processor`] trait, the built-in processors, and the registry
//!   that the spec's `processor` field is parsed through; what is computed per item, how results merge).
//! - Data: [`spec`] (the job spec and the rules each field keeps on its own), [`clock`].
//! - Items and results: [`outcome`] (statuses, counts, the manifest, failed items, batch parts), [`layout`]
//!   (where a job's files live), [`message`] (the queue messages), [`batching`] (items cut into batches),
//!   [`job`] (a spec turned into a runnable [`spec::Job`]: parsing and the checks that need the envelope or the
//!   output names).
//! - [`ports`]: object store, batch queue, job store, as small domain-shaped traits; [`error`]: the pipeline's
//!   error over them.
//! - Backends, each with its composition root: [`embedded`] ([`Deps::embedded`]) and [`aws`] ([`Deps::aws`]).
//! - [`reader`]: the item readers (a listing, an object's rows, an inventory report, a table, inline items),
//!   read page by page from a position.
//! - The pipeline's steps, the same code in Lambda and in one process: [`coordinator`], [`worker`],
//!   [`completion`], [`dead_letter`], [`finalizer`]; [`function`] (users' Lambda functions, for the `lambda`
//!   processor) and [`map_results`] (Distributed Map's ResultWriter layout) beside them.
//! - [`sweeper`]: finds jobs that stopped moving, and repairs what it can; [`describe`]: a job's status, counts,
//!   times and rate, as `dmap status` shows them.
//! - [`plan`]: what a job will take on AWS (items, batches, requests, cost, time), before it runs.
//! - Ways to run them: [`esm`] (the SQS event source mapping, played by this process), [`runner`] (a whole job
//!   in one process, with optional fault injection), [`lambda`] (the three functions' handlers).

pub mod aws;
pub mod batching;
pub mod clock;
pub mod completion;
pub mod coordinator;
pub mod dead_letter;
pub mod describe;
pub mod embedded;
pub mod error;
pub mod esm;
pub mod finalizer;
pub mod function;
pub mod job;
pub mod lambda;
pub mod layout;
pub mod map_results;
pub mod message;
pub mod outcome;
pub mod parallel_listing;
pub mod plan;
pub mod ports;
pub mod processor;
pub mod reader;
pub mod redrive;
pub mod runner;
pub mod spec;
pub mod sweeper;
pub mod usage;
pub mod worker;

use std::sync::Arc;

pub use error::PipelineError;
use ports::{BatchQueue, FunctionInvoker, JobStore, ObjectStore, TableReader};

/// What the pipeline's steps run against. Built once per process, by one constructor per backend:
/// [`Deps::embedded`] (in [`embedded`]) and [`Deps::aws`] (in [`aws`]); borrowed by every handler.
#[derive(Clone)]
pub struct Deps {
    pub objects: Arc<dyn ObjectStore>,
    pub work_queue: Arc<dyn BatchQueue>,
    /// The work queue's dead-letter queue, where this process consumes it (the in-process runner). A Lambda
    /// function has none: the finalizer's event source mapping reads that queue for it.
    pub dead_letter: Option<Arc<dyn BatchQueue>>,
    pub finalize_queue: Arc<dyn BatchQueue>,
    pub jobs: Arc<dyn JobStore>,
    /// Where users' Lambda functions are invoked (the `lambda` processor's batch function and reducer): Lambda's
    /// Invoke API on AWS; on the embedded backends, whatever Invoke API the caller points it at, or none.
    pub functions: Option<Arc<dyn FunctionInvoker>>,
    /// Where users' DynamoDB tables are read (the `dynamodb_scan` reader): DynamoDB's API on AWS or an
    /// emulator; none on the embedded backends.
    pub tables: Option<Arc<dyn TableReader>>,
    /// Counts the AWS requests sent for each job (see [`usage`]); the embedded backends send none.
    pub usage: usage::Meter,
}
