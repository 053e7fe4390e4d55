//! Ports: the capabilities the pipeline needs from the outside world, as small domain-shaped traits. The
//! three stores each have an embedded implementation ([`crate::embedded`]) and an AWS one; one conformance
//! suite (`shared/tests/conformance`) holds them all to the same contract. The fourth, [`FunctionInvoker`],
//! invokes users' Lambda functions; its one adapter speaks Lambda's Invoke API, to AWS or to a local one. The
//! fifth, [`TableReader`], scans users' DynamoDB tables; its one adapter is DynamoDB's API.

pub mod functions;
pub mod job_store;
pub mod object_store;
pub mod queue;
pub mod tables;

pub use functions::{FunctionInvoker, InvokeError};
pub use job_store::{
    BatchRecord, Checkpoint, ControlChange, CreateOutcome, Cut, GroupCount, JobControl, JobRecord,
    JobStatus, JobStore, JobStoreError, KeyRange, ListingTotals, LoggedPage, NumberedPage, PartRef,
    Progress, RecordOutcome, Recorded, SettingsUpdate, TerminalStatus, Tolerance, require_job,
};
pub use object_store::{
    Chunks, ListPage, MIN_CHUNK_BYTES, ObjectMeta, ObjectReader, ObjectStore, ObjectWriter,
    StoreError, decode_s3_key, folder_of, read_all, read_up_to,
};
pub use queue::{
    BatchQueue, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendFailure,
    send_all_with_retry,
};
pub use tables::{ScanPage, ScanRequest, TableError, TableInfo, TableItem, TableReader};
