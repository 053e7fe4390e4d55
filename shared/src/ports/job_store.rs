//! The job store port: DynamoDB-shaped job bookkeeping with conditional writes.
//!
//! The contract every implementation keeps:
//! - a job is created once (a second create of the same id returns the existing record);
//! - a batch is counted once however often it is recorded. Its marker is written first, and the first
//!   marker stands: every later recording counts what it says, not its own record. Counting is a step of its
//!   own that happens once per batch; a crash between the two leaves a marker that the next recording of the
//!   same batch (a redelivery, the dead-letter handler, the sweeper) counts;
//! - exactly one caller wins the claim that moves a job from RUNNING to FINALIZING, and only after the listing
//!   is complete;
//! - a job reaches exactly one terminal status.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::outcome::{JobStatus, TerminalStatus};
use crate::spec::Job;
use crate::usage::Usage;

/// How far the coordinator got: every batch before `next_seq` was sent, and the listing resumes after
/// `start_after` (the last key of the last sent batch, or of a listed page with nothing pending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub start_after: Option<String>,
    pub next_seq: u64,
    pub items_sent: u64,
    /// The hand-over that owns the listing (0: the invocation that started the job). Only
    /// [`JobStore::hand_over`] moves it; a continuation of an older hop is stale.
    #[serde(default)]
    pub hop: u32,
    /// The message that hands the listing to `hop` is known to be sent ([`JobStore::continuation_sent`]).
    /// Until then, a redelivered message of the hop before may send it again.
    #[serde(default)]
    pub hop_sent: bool,
    /// A batch cut short at a hand-over, saved before it was sent: a listing replayed from this checkpoint
    /// (after a crash) cuts the same batch at the same key, so its sequence number keeps its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
    /// In a redrive, the seq of the first batch of items that failed before (see [`crate::redrive`]): the
    /// listing is being read again from the start for them, and batches from here on are redo batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redo_from: Option<u64>,
    /// What the coordinators of the job have sent so far (see [`crate::usage`]): each checkpoint carries the
    /// sum, so that a checkpoint that moves forward never loses what an earlier one said.
    #[serde(default, skip_serializing_if = "Usage::is_empty")]
    pub usage: Usage,
    /// The key ranges of a listing split after its first page (see [`crate::parallel_listing`]), each listed
    /// from its own position; empty for a listing read as one stream. Once split, batches are numbered in the
    /// order pages arrive, so they can only be re-cut from these saved pages, never by reading the listing
    /// again from its start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<KeyRange>,
    /// The coordinator that holds a split listing ([`JobStore::take_listing`]): a save or hand-over that
    /// carries another lease is refused, so two invocations of one hop never number pages at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

pub use crate::batching::{Cut, KeyRange, LoggedPage, NumberedPage};

/// Set once, when the last batch has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingTotals {
    pub batches: u64,
    pub items: u64,
}

impl Checkpoint {
    /// Why saving this checkpoint over `stored` must be refused, if it must: it would take a split listing
    /// from the coordinator that holds its lease, or undo the split. Every store keeps these rules (the
    /// embedded one with this function, DynamoDB with conditions).
    pub fn refused_over(&self, stored: &Checkpoint) -> Option<&'static str> {
        if self.lease != stored.lease {
            Some("another coordinator holds the listing")
        } else if self.ranges.is_empty() && !stored.ranges.is_empty() {
            Some("the listing was split by another coordinator")
        } else {
            None
        }
    }
}

/// The job item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Job,
    /// [`crate::spec::JobSpec::digest`] of the spec, to refuse a job id reused for another spec.
    pub spec_digest: String,
    pub status: JobStatus,
    pub checkpoint: Checkpoint,
    pub listing: Option<ListingTotals>,
    pub created_at_ms: u64,
    /// Set when a batch was sent again with other items than the ones its record counted: the items under
    /// the reader changed while they were listed, and the job can no longer be exact (it ends FAILED, saying
    /// so). The first such batch's seq.
    #[serde(default)]
    pub input_changed: Option<u64>,
    /// When the job reached its terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// What operators changed while it ran (`dmap abort`, `dmap update`).
    #[serde(default, skip_serializing_if = "JobControl::is_empty")]
    pub control: JobControl,
    /// How many times the job was redriven (`dmap redrive`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
}

/// A running job's settings as operators changed them, over its spec's: Step Functions' `UpdateMapRun`
/// (`MaxConcurrency`, `ToleratedFailureCount`, `ToleratedFailurePercentage`) and the abort.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobControl {
    /// When the abort was acknowledged: no batch of the job is processed after it but those already in flight,
    /// the listing stops, and the job ends ABORTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percentage: Option<f64>,
}

impl JobControl {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies `change` (the first abort's time stands).
    pub fn apply(&mut self, change: &ControlChange) {
        match change {
            ControlChange::Abort { at_ms } => {
                self.aborted_at_ms.get_or_insert(*at_ms);
            }
            ControlChange::Update(update) => {
                if let Some(n) = update.max_concurrency {
                    self.max_concurrency = Some(n);
                }
                if let Some(n) = update.tolerated_failure_count {
                    self.tolerated_failure_count = Some(n);
                }
                if let Some(p) = update.tolerated_failure_percentage {
                    self.tolerated_failure_percentage = Some(p);
                }
            }
        }
    }
}

/// A change an operator makes to a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlChange {
    Abort { at_ms: u64 },
    Update(SettingsUpdate),
}

/// `dmap update`'s settings: each one given replaces the job's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsUpdate {
    /// 0: no limit.
    pub max_concurrency: Option<u32>,
    pub tolerated_failure_count: Option<u64>,
    pub tolerated_failure_percentage: Option<f64>,
}

impl JobRecord {
    pub fn new(job: Job, created_at_ms: u64) -> Self {
        Self {
            spec_digest: job.spec.digest(),
            job,
            status: JobStatus::Running,
            checkpoint: Checkpoint::default(),
            listing: None,
            created_at_ms,
            input_changed: None,
            finished_at_ms: None,
            control: JobControl::default(),
            redrives: 0,
        }
    }

    /// Whether the job can be redriven, and if not why (for the refusal's message).
    pub fn redrivable(&self) -> Result<(), String> {
        if !matches!(self.status, JobStatus::Failed | JobStatus::Aborted) {
            return Err(format!(
                "it is {}; only a FAILED or ABORTED job is redriven",
                self.status.as_str()
            ));
        }
        if self.listing.is_none() && self.checkpoint.redo_from.is_some() {
            // Its redo batches left unrecorded could not be told from the items the next pass would batch.
            return Err(
                "it was aborted during a redrive's second pass over its failed items; start a new job".into(),
            );
        }
        if let Some(seq) = self.input_changed {
            return Err(format!(
                "its items changed while they were listed (batch {seq} was sent again with other items); \
                 start a new job"
            ));
        }
        Ok(())
    }

    /// Why a redrive that expected the job as `expected` found it as this record instead.
    pub fn redrive_conflict(&self, expected: &JobRecord) -> String {
        format!(
            "it is {} after {} redrives, not {} after {}",
            self.status.as_str(),
            self.redrives,
            expected.status.as_str(),
            expected.redrives
        )
    }

    /// The record of the job redriven: RUNNING again with one more redrive, the abort and end cleared. A job
    /// whose listing was complete reads its items again from the start for the redo batches, numbered on from
    /// the listing's total; one aborted while listing goes on listing first (see [`crate::redrive`]).
    pub fn redriven(&self) -> Self {
        let mut next = self.clone();
        next.status = JobStatus::Running;
        next.redrives += 1;
        next.finished_at_ms = None;
        next.control.aborted_at_ms = None;
        if let Some(totals) = next.listing.take() {
            next.checkpoint = Checkpoint {
                start_after: None,
                next_seq: totals.batches,
                items_sent: totals.items,
                cut: None,
                redo_from: Some(totals.batches),
                ..next.checkpoint
            };
        }
        next
    }

    /// An abort was acknowledged for the job.
    pub fn abort_requested(&self) -> bool {
        self.control.aborted_at_ms.is_some()
    }

    /// The most batches of the job in flight at once, if limited: the operators' setting, else the spec's
    /// (0 is no limit, as `MaxConcurrency` has it).
    pub fn max_concurrency(&self) -> Option<u32> {
        self.control
            .max_concurrency
            .or(self.job.spec.max_concurrency)
            .filter(|n| *n > 0)
    }

    /// The failure tolerance that decides the job's status: each setting as operators last set it, else the
    /// spec's.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            count: self
                .control
                .tolerated_failure_count
                .or(self.job.spec.tolerated_failure_count),
            percentage: self
                .control
                .tolerated_failure_percentage
                .or(self.job.spec.tolerated_failure_percentage),
        }
    }
}

pub use crate::outcome::Tolerance;

/// What a processed batch contributed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub succeeded: u64,
    pub failed: u64,
    /// The batch's partial result and failures ([`crate::outcome::BatchPart`]).
    pub part: PartRef,
    /// [`crate::message::BatchMessage::items_digest`] of the items this record counted: a batch sent again
    /// with other items (the input changed while it was listed) is told apart from a duplicate by it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub items_digest: String,
    /// The job's redrive that processed the batch (0: its first run).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// Items of the batch that an earlier batch counted failed (a redrive's redo batch): counting this record
    /// takes those failures back, so `failed` adds `failed - redone`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redone: u64,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl BatchRecord {
    /// What counting this record adds to the job's failed items (negative when a redo batch succeeded with
    /// items that had failed).
    pub fn failed_delta(&self) -> i64 {
        self.failed as i64 - self.redone as i64
    }
}

/// Where a batch's part is. A small part travels in the record itself: the record is written anyway, and an
/// object would cost a PUT per batch and a GET at the end (the largest share of the control plane's cost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartRef {
    /// The part's JSON.
    Inline(String),
    /// The key of an object in the job's result bucket holding the part's JSON.
    Object(String),
}

impl Default for PartRef {
    fn default() -> Self {
        Self::Inline(String::new())
    }
}

impl PartRef {
    /// How the part is named in errors: its object key, or "batch N's record".
    pub fn describe(&self, seq: u64) -> String {
        match self {
            Self::Inline(_) => format!("the part in batch {seq}'s record"),
            Self::Object(key) => format!("part {key}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created,
    /// A job with this id exists already (its record is returned).
    Exists(Box<JobRecord>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// This call counted the batch.
    Recorded,
    /// The batch was counted before; nothing changed.
    Duplicate,
}

/// What [`JobStore::record_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub outcome: RecordOutcome,
    /// The record that counts for the batch: the one given, or the one a first recording stored.
    pub record: BatchRecord,
    /// For a store that counts batches in groups, the group this batch was counted in, as it stood right
    /// after: a recorder whose group still lacks batches can skip the full progress read, since the recorder
    /// of the group's last batch makes it.
    pub group: Option<GroupCount>,
}

/// A group of consecutive batches `first..first + len` of which `counted` are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCount {
    pub first: u64,
    pub len: u64,
    pub counted: u64,
}

impl GroupCount {
    /// Every batch of the group below the listing's total `batches` is counted.
    pub fn is_full(&self, batches: u64) -> bool {
        let end = (self.first + self.len).min(batches);
        self.counted >= end.saturating_sub(self.first)
    }
}

/// A consistent read of a job's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub status: JobStatus,
    pub listing: Option<ListingTotals>,
    pub items_sent: u64,
    /// Batches counted; once the listing's total is known, only those below it. A batch at or past it was cut
    /// by an earlier pass of a listing that changed since: it is never finalized, and must not make the job
    /// look complete while a batch below the total is missing.
    pub batches_done: u64,
    /// Items of every batch counted (past the total too: these are for a progress display).
    pub succeeded: u64,
    pub failed: u64,
    /// The job's usage as far as it was carried to the store (see [`crate::usage`]).
    pub usage: Usage,
}

impl Progress {
    /// The listing is complete and every batch it produced has been recorded.
    pub fn is_complete(&self) -> bool {
        self.listing.is_some_and(|l| self.batches_done == l.batches)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("no job \"{0}\"")]
    NotFound(String),
    #[error("job \"{job_id}\": {message}")]
    Conflict { job_id: String, message: String },
    #[error("throttled by the job store")]
    Throttled,
    /// The store refuses the request for good (DynamoDB: an item over its 400 KB limit, or a request it
    /// finds invalid): the same request would be refused again.
    #[error("the job store refuses the request: {0}")]
    Rejected(String),
    #[error("job store: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl JobStoreError {
    /// Worth retrying later (the same call may succeed).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled | Self::Other(_))
    }
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates the job record if no job has this id (a conditional put).
    async fn create_job(&self, record: &JobRecord) -> Result<CreateOutcome, JobStoreError>;

    /// Reads the job record (strongly consistent). `None` if there is no such job.
    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError>;

    /// Reads the job record as [`Self::get_job`] does, but may return a version a moment old (DynamoDB: an
    /// eventually consistent read, half the cost). For reads whose staleness is harmless.
    async fn peek_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.get_job(job_id).await
    }

    /// Saves the coordinator's checkpoint (all but its `hop`, which stays as stored). Only moves forward: a
    /// checkpoint with a lower `next_seq` than the stored one is ignored. Errors: `NotFound`, `Conflict` once
    /// the listing is complete, or once an abort was requested: then the checkpoint is saved all the same (it
    /// says which batches were sent, which the aborted job's outputs hold) and the listing stops. A checkpoint
    /// is refused (`Conflict`) when [`Checkpoint::refused_over`] says so: its lease is not the stored one, or
    /// it has no key ranges where the stored one has.
    async fn save_checkpoint(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), JobStoreError>;

    /// Logs the numbered pages of one group of a split listing, as saved before their batches are sent, under
    /// the first page's seq: logging the same group again replaces it. Errors: `NotFound`.
    async fn log_pages(&self, job_id: &str, pages: &[LoggedPage]) -> Result<(), JobStoreError>;

    /// Every page [`Self::log_pages`] logged for the job, ascending by seq.
    async fn logged_pages(&self, job_id: &str) -> Result<Vec<LoggedPage>, JobStoreError>;

    /// Gives the job's listing to the coordinator `lease` of hop `hop` and returns the record as it now
    /// stands: the saves of any coordinator that held it before are refused from here on, so the taker resumes
    /// from what they saved. `None` when the stored hop is not `hop` (a stale invocation: the listing was
    /// handed on). Errors: `NotFound`, `Conflict` once the listing is complete.
    async fn take_listing(
        &self,
        job_id: &str,
        hop: u32,
        lease: &str,
    ) -> Result<Option<JobRecord>, JobStoreError>;

    /// Hands the listing over to hop `checkpoint.hop`: saves the checkpoint, hop included, if the stored hop
    /// is the one before it, the listing is not complete, `next_seq` does not move back and
    /// [`Checkpoint::refused_over`] does not refuse it. `true` if this
    /// call handed over; `false` if another invocation of the same hop already did (or the listing is
    /// complete), in which case this one must not continue the chain. Errors: `NotFound`.
    async fn hand_over(&self, job_id: &str, checkpoint: &Checkpoint)
    -> Result<bool, JobStoreError>;

    /// Records that the message handing the listing to `hop` was sent (sets `hop_sent` if `hop` is still
    /// the stored hop). Errors: `NotFound`.
    async fn continuation_sent(&self, job_id: &str, hop: u32) -> Result<(), JobStoreError>;

    /// Records that the listing is complete with these totals. Idempotent for the same totals;
    /// `Conflict` for different ones.
    async fn complete_listing(
        &self,
        job_id: &str,
        totals: ListingTotals,
    ) -> Result<(), JobStoreError>;

    /// Counts batch `seq` exactly once: writes its marker unless it has one, then counts what the marker says
    /// unless that was counted (`Recorded` if this call counted it), and with it adds `usage` to the job's.
    /// `usage` is added only by the call that counts (on `Duplicate`, the caller keeps it). Only for batches
    /// of existing jobs (a backend need not check: the check would cost a request per batch).
    async fn record_batch(
        &self,
        job_id: &str,
        seq: u64,
        record: &BatchRecord,
        usage: &Usage,
    ) -> Result<Recorded, JobStoreError>;

    /// Batch `seq`'s record, if it has one (a strongly consistent read of its marker). A batch with a record
    /// may not be counted yet (see the contract above): [`Self::record_batch`] with it makes sure.
    async fn batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError>;

    /// Batch `seq`'s record as [`Self::batch_record`] reads it, but may miss one written a moment ago (DynamoDB:
    /// an eventually consistent read, half the cost).
    async fn peek_batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        self.batch_record(job_id, seq).await
    }

    /// The recorded batches with `from <= seq < to`, ascending by `seq` (at most `to - from`; callers ask for
    /// ranges of about a thousand).
    async fn batch_records(
        &self,
        job_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, BatchRecord)>, JobStoreError>;

    /// A strongly consistent read of status, totals and counters. Errors: `NotFound`.
    async fn progress(&self, job_id: &str) -> Result<Progress, JobStoreError>;

    /// Moves the job from RUNNING to FINALIZING if the listing is complete and no abort was requested. Exactly
    /// one caller gets `true`. Callers must first have seen [`Progress::is_complete`].
    async fn claim_finalization(&self, job_id: &str) -> Result<bool, JobStoreError>;

    /// Moves the job from RUNNING to FINALIZING if an abort was requested (its finalizer then writes what was
    /// done, and the status ABORTED). Exactly one caller gets `true`. Callers must first have let the batches
    /// in flight at the abort end.
    async fn claim_abort(&self, job_id: &str) -> Result<bool, JobStoreError>;

    /// Takes one of the job's `max` concurrency slots for `holder` (a lease until `until_ms`, for a holder
    /// that dies without giving it back): `None` while `max` or more leases are live. How `max_concurrency`
    /// is kept across every worker; a lower `max` than before is kept once the leases above it end.
    async fn acquire_slot(
        &self,
        job_id: &str,
        max: u32,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<u32>, JobStoreError>;

    /// Gives back a slot `holder` took (nothing if its lease has gone to another).
    async fn release_slot(
        &self,
        job_id: &str,
        slot: u32,
        holder: &str,
    ) -> Result<(), JobStoreError>;

    /// Changes a RUNNING job's settings or aborts it; returns the record after the change. `Conflict` when the
    /// job is not RUNNING (FINALIZING is too late to abort or change), `NotFound` when there is none.
    async fn control(
        &self,
        job_id: &str,
        change: &ControlChange,
    ) -> Result<JobRecord, JobStoreError>;

    /// The ids of the jobs that are not terminal, for the sweeper (it may list a job that just finished, or
    /// whose creation failed midway: the sweeper reads each one).
    async fn active_jobs(&self) -> Result<Vec<String>, JobStoreError>;

    /// The ids of the most recently created jobs, newest first, at most `limit` (for `dmap ls`; on DynamoDB
    /// from an index, never a Scan).
    async fn recent_jobs(&self, limit: usize) -> Result<Vec<String>, JobStoreError>;

    /// Forgets a job that [`Self::active_jobs`] listed but that is terminal or does not exist.
    async fn forget_active(&self, job_id: &str) -> Result<(), JobStoreError>;

    /// Notes that the sweeper saw the job's progress as `fingerprint` at `now_ms`; returns since when the job
    /// has shown that fingerprint (`now_ms` when it changed). Errors: `NotFound`.
    async fn note_progress(
        &self,
        job_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<u64, JobStoreError>;

    /// Records that batch `seq` was sent again with other items than its record counted (sets
    /// [`JobRecord::input_changed`] if it is not set). Errors: `NotFound`.
    async fn flag_input_changed(&self, job_id: &str, seq: u64) -> Result<(), JobStoreError>;

    /// Redrives a FAILED or ABORTED job: stores [`JobRecord::redriven`] if the job is still in the status
    /// `expected` shows (its `status` and `redrives`), and returns it. `Conflict` when it is not (another
    /// redrive, or a job not ended), `NotFound` when there is none. The job is listed active again.
    async fn redrive(&self, expected: &JobRecord) -> Result<JobRecord, JobStoreError>;

    /// Moves the job from FINALIZING to a terminal status, adding `usage` (the finalizer's, see
    /// [`crate::usage::Meter::close`]) to the job's. `true` if this call did it, `false` if the job was
    /// already in that status (and nothing was added); `Conflict` if it is in another status.
    async fn finish(
        &self,
        job_id: &str,
        status: TerminalStatus,
        usage: &Usage,
    ) -> Result<bool, JobStoreError>;
}

/// The job record, or `NotFound`: for the steps that only run for a job that exists.
pub async fn require_job(jobs: &dyn JobStore, job_id: &str) -> Result<JobRecord, JobStoreError> {
    jobs.get_job(job_id)
        .await?
        .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))
}
