//! Fault-injecting wrappers around the three ports, in the style of mountpoint-s3's `failure_client.rs`: each
//! call may fail before it does anything (a throttle, a timeout), a write may take effect and still report a
//! failure (the caller died, or lost the response, right after it: a crash between two steps), a send may
//! lose a message or deliver one twice, a receive may fail. Every fault is transient, as AWS's are; whether a
//! call is hit is drawn from one seeded generator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dmap_core::ports::{
    BatchQueue, BatchRecord, Checkpoint, CreateOutcome, JobRecord, JobStore, JobStoreError,
    ListPage, ListingTotals, LoggedPage, ObjectReader, ObjectStore, OutgoingMessage, Progress,
    QueueDepth, QueueError, ReceivedMessage, Recorded, SendFailure, StoreError, TerminalStatus,
};
use dmap_core::usage::Usage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How often each kind of fault strikes (a probability per call).
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    /// A call fails before doing anything.
    pub before: f64,
    /// A write takes effect, then reports a failure.
    pub after: f64,
    /// A sent message is silently lost.
    pub lost: f64,
    /// A received message is delivered a second time.
    pub duplicated: f64,
}

/// The faults injected, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub before: u64,
    pub after: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// One seeded source of faults, shared by the wrappers of one run. Besides the random ones, a test can
/// force one fault on the next call of a named operation ([`Faults::force`]).
pub struct Faults {
    rng: Mutex<StdRng>,
    pub rates: FaultRates,
    pub counts: Mutex<FaultCounts>,
    /// Forced faults: the operation, and how many of its calls to let through first.
    forced: Mutex<Vec<(&'static str, u32)>>,
    /// Operations that take this long (a slow service), besides any fault: by operation, or by port.
    latency: Mutex<Vec<(&'static str, Duration)>>,
    /// The calls made, by operation.
    calls: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// What eventually consistent reads of a job return (a version a moment old), by job id.
    stale: Mutex<std::collections::HashMap<String, JobRecord>>,
}

/// No random faults: only the forced ones.
pub const NO_FAULTS: FaultRates = FaultRates {
    before: 0.0,
    after: 0.0,
    lost: 0.0,
    duplicated: 0.0,
};

/// The fault rates of the seeded campaigns (`fault_campaign.rs`, `outputs.rs`): a few percent of every call.
pub const CAMPAIGN_RATES: FaultRates = FaultRates {
    before: 0.03,
    after: 0.03,
    lost: 0.03,
    duplicated: 0.03,
};

/// How many seeds a campaign runs: `DMAP_FAULT_SEEDS`, else `default` (CI's size; set it higher for a bench).
pub fn campaign_seeds(default: u64) -> u64 {
    std::env::var("DMAP_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Wraps every port of `deps` (the object store, both queues, the job store) so that `faults` hit them all.
pub fn inject(deps: &mut dmap_core::Deps, faults: &Arc<Faults>) {
    deps.objects = Arc::new(FaultyStore {
        inner: deps.objects.clone(),
        faults: faults.clone(),
    });
    deps.work_queue = Arc::new(FaultyQueue {
        inner: deps.work_queue.clone(),
        faults: faults.clone(),
    });
    deps.finalize_queue = Arc::new(FaultyQueue {
        inner: deps.finalize_queue.clone(),
        faults: faults.clone(),
    });
    deps.jobs = Arc::new(FaultyJobStore {
        inner: deps.jobs.clone(),
        faults: faults.clone(),
    });
}

impl Faults {
    pub fn new(seed: u64, rates: FaultRates) -> Arc<Self> {
        Arc::new(Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            rates,
            counts: Mutex::default(),
            forced: Mutex::default(),
            latency: Mutex::default(),
            calls: Mutex::default(),
            stale: Mutex::default(),
        })
    }

    /// Eventually consistent reads of `record`'s job return `record` from now on, whatever is stored.
    pub fn stale_reads(&self, record: JobRecord) {
        self.stale
            .lock()
            .unwrap()
            .insert(record.job.job_id.clone(), record);
    }

    /// Every call of `op` takes `delay` first: `op` is a job store method (`"record_batch"`), an object store
    /// or queue call (`"list_page"`, `"get"`, `"put"`, `"send_batch"`, `"receive"`, `"delete"`,
    /// `"change_visibility"`), or a whole port (`"store"`, `"queue"`, `"jobs"`) for its calls without a delay
    /// of their own.
    pub fn slow(&self, op: &'static str, delay: Duration) {
        self.latency.lock().unwrap().push((op, delay));
    }

    fn latency(&self, port: &str, op: &str) -> Option<Duration> {
        let latency = self.latency.lock().unwrap();
        let of = |name: &str| latency.iter().find(|(o, _)| *o == name).map(|(_, d)| *d);
        of(op).or_else(|| of(port))
    }

    /// The calls made so far, by operation (a queue's and the job store's by method name).
    pub fn calls(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap().clone()
    }

    /// A call of `port`'s `op` begins: it is counted, waits its latency, and is hit by a fault or not.
    async fn enter(&self, port: &str, op: &'static str) -> bool {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        if let Some(delay) = self.latency(port, op) {
            tokio::time::sleep(delay).await;
        }
        self.before(op)
    }

    /// The next call of `op` fails before doing anything (`"save_checkpoint"`, `"list_page"`…), or, for
    /// `"lose"`, the next message sent is lost.
    pub fn force(&self, op: &'static str) {
        self.force_after(op, 0);
    }

    /// Like [`Self::force`], for the call of `op` after the next `skip` ones.
    pub fn force_after(&self, op: &'static str, skip: u32) {
        self.forced.lock().unwrap().push((op, skip));
    }

    fn forced(&self, op: &str) -> bool {
        let mut forced = self.forced.lock().unwrap();
        let Some(i) = forced.iter().position(|(f, _)| *f == op) else {
            return false;
        };
        match &mut forced[i].1 {
            0 => {
                forced.remove(i);
                true
            }
            skip => {
                *skip -= 1;
                false
            }
        }
    }

    fn strikes(&self, rate: f64) -> bool {
        rate > 0.0 && self.rng.lock().unwrap().random::<f64>() < rate
    }

    fn before(&self, op: &str) -> bool {
        let hit = self.forced(op) || self.strikes(self.rates.before);
        self.counts.lock().unwrap().before += u64::from(hit);
        hit
    }

    fn after(&self) -> bool {
        let hit = self.strikes(self.rates.after);
        self.counts.lock().unwrap().after += u64::from(hit);
        hit
    }

    fn lost(&self) -> bool {
        let hit = self.forced("lose") || self.strikes(self.rates.lost);
        self.counts.lock().unwrap().lost += u64::from(hit);
        hit
    }

    fn duplicated(&self) -> bool {
        let hit = self.strikes(self.rates.duplicated);
        self.counts.lock().unwrap().duplicated += u64::from(hit);
        hit
    }
}

fn cut_off() -> Box<dyn std::error::Error + Send + Sync> {
    "the connection was cut after the request was sent".into()
}

// ------------------------------------------------------------------------------------------- object store

pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        if self.faults.enter("store", "list_page").await {
            return Err(StoreError::Throttled);
        }
        self.inner
            .list_page(bucket, prefix, start_after, continuation)
            .await
    }

    /// One request, as S3 answers it (a delimiter listing), whatever the wrapped store does.
    async fn list_folders(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        if self.faults.enter("store", "list_folders").await {
            return Err(StoreError::Throttled);
        }
        self.inner.list_folders(bucket, prefix, start_after).await
    }

    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        if self.faults.enter("store", "get").await {
            return Err(StoreError::Throttled);
        }
        self.inner.get_from(bucket, key, offset).await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        if self.faults.enter("store", "put").await {
            return Err(StoreError::Throttled);
        }
        self.inner.put(bucket, key, body).await?;
        if self.faults.after() {
            return Err(StoreError::Other(cut_off()));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------- queue

pub struct FaultyQueue {
    pub inner: Arc<dyn BatchQueue>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl BatchQueue for FaultyQueue {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendFailure>, QueueError> {
        if self.faults.enter("queue", "send_batch").await {
            return Err(QueueError::Throttled);
        }
        let mut kept = Vec::new();
        let mut failures = Vec::new();
        for m in messages {
            if self.faults.lost() {
                continue; // accepted, never delivered
            }
            if self.faults.before("send_entry") {
                failures.push(SendFailure {
                    id: m.id.clone(),
                    code: "InternalError".into(),
                    message: "injected".into(),
                    sender_fault: false,
                });
            } else {
                kept.push(m.clone());
            }
        }
        failures.extend(self.inner.send_batch(&kept).await?);
        if self.faults.after() {
            return Err(QueueError::Other(cut_off()));
        }
        Ok(failures)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        if self.faults.enter("queue", "receive").await {
            return Err(QueueError::Throttled);
        }
        let received = self.inner.receive(max, wait).await?;
        for m in &received {
            if self.faults.duplicated() {
                // SQS delivers a message twice now and then: a second copy of the same body.
                let copy = OutgoingMessage {
                    id: "dup".into(),
                    body: m.body.clone(),
                    group: None,
                };
                self.inner.send_batch(&[copy]).await?;
            }
        }
        Ok(received)
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        if self.faults.enter("queue", "delete").await {
            return Err(QueueError::Throttled);
        }
        self.inner.delete(receipt_handle).await
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        if self.faults.enter("queue", "change_visibility").await {
            return Err(QueueError::Throttled);
        }
        self.inner.change_visibility(receipt_handle, timeout).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.depth().await
    }
}

// --------------------------------------------------------------------------------------------- job store

pub struct FaultyJobStore {
    pub inner: Arc<dyn JobStore>,
    pub faults: Arc<Faults>,
}

impl FaultyJobStore {
    async fn before(&self, op: &'static str) -> Result<(), JobStoreError> {
        if self.faults.enter("jobs", op).await {
            Err(JobStoreError::Throttled)
        } else {
            Ok(())
        }
    }

    /// A write's outcome, unless the caller "dies" right after it.
    fn after<T>(&self, outcome: Result<T, JobStoreError>) -> Result<T, JobStoreError> {
        let outcome = outcome?;
        if self.faults.after() {
            return Err(JobStoreError::Other(cut_off()));
        }
        Ok(outcome)
    }
}

#[async_trait]
impl JobStore for FaultyJobStore {
    async fn peek_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        let stale = self.faults.stale.lock().unwrap().get(job_id).cloned();
        match stale {
            Some(record) => Ok(Some(record)),
            None => self.inner.peek_job(job_id).await,
        }
    }
    async fn create_job(&self, record: &JobRecord) -> Result<CreateOutcome, JobStoreError> {
        self.before("create_job").await?;
        self.after(self.inner.create_job(record).await)
    }
    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.before("get_job").await?;
        self.inner.get_job(job_id).await
    }
    async fn save_checkpoint(&self, job_id: &str, cp: &Checkpoint) -> Result<(), JobStoreError> {
        self.before("save_checkpoint").await?;
        self.after(self.inner.save_checkpoint(job_id, cp).await)
    }
    async fn log_pages(&self, job_id: &str, pages: &[LoggedPage]) -> Result<(), JobStoreError> {
        self.before("log_pages").await?;
        self.after(self.inner.log_pages(job_id, pages).await)
    }
    async fn logged_pages(&self, job_id: &str) -> Result<Vec<LoggedPage>, JobStoreError> {
        self.before("logged_pages").await?;
        self.after(self.inner.logged_pages(job_id).await)
    }
    async fn take_listing(
        &self,
        job_id: &str,
        hop: u32,
        lease: &str,
    ) -> Result<Option<JobRecord>, JobStoreError> {
        self.before("take_listing").await?;
        self.after(self.inner.take_listing(job_id, hop, lease).await)
    }
    async fn hand_over(&self, job_id: &str, cp: &Checkpoint) -> Result<bool, JobStoreError> {
        self.before("hand_over").await?;
        self.after(self.inner.hand_over(job_id, cp).await)
    }
    async fn continuation_sent(&self, job_id: &str, hop: u32) -> Result<(), JobStoreError> {
        self.before("continuation_sent").await?;
        self.after(self.inner.continuation_sent(job_id, hop).await)
    }
    async fn complete_listing(
        &self,
        job_id: &str,
        totals: ListingTotals,
    ) -> Result<(), JobStoreError> {
        self.before("complete_listing").await?;
        self.after(self.inner.complete_listing(job_id, totals).await)
    }
    async fn record_batch(
        &self,
        job_id: &str,
        seq: u64,
        record: &BatchRecord,
        usage: &Usage,
    ) -> Result<Recorded, JobStoreError> {
        self.before("record_batch").await?;
        self.after(self.inner.record_batch(job_id, seq, record, usage).await)
    }
    async fn batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        self.before("batch_record").await?;
        self.inner.batch_record(job_id, seq).await
    }
    async fn batch_records(
        &self,
        job_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, BatchRecord)>, JobStoreError> {
        self.before("batch_records").await?;
        self.inner.batch_records(job_id, from, to).await
    }
    async fn progress(&self, job_id: &str) -> Result<Progress, JobStoreError> {
        self.before("progress").await?;
        self.inner.progress(job_id).await
    }
    async fn claim_finalization(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.before("claim_finalization").await?;
        self.after(self.inner.claim_finalization(job_id).await)
    }
    async fn active_jobs(&self) -> Result<Vec<String>, JobStoreError> {
        self.before("active_jobs").await?;
        self.inner.active_jobs().await
    }
    async fn claim_abort(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.before("claim_abort").await?;
        self.inner.claim_abort(job_id).await
    }
    async fn control(
        &self,
        job_id: &str,
        change: &dmap_core::ports::ControlChange,
    ) -> Result<JobRecord, JobStoreError> {
        self.before("control").await?;
        self.inner.control(job_id, change).await
    }
    async fn redrive(&self, expected: &JobRecord) -> Result<JobRecord, JobStoreError> {
        self.before("redrive").await?;
        self.inner.redrive(expected).await
    }
    async fn acquire_slot(
        &self,
        job_id: &str,
        max: u32,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<u32>, JobStoreError> {
        self.before("acquire_slot").await?;
        self.inner
            .acquire_slot(job_id, max, holder, now_ms, until_ms)
            .await
    }
    async fn release_slot(
        &self,
        job_id: &str,
        slot: u32,
        holder: &str,
    ) -> Result<(), JobStoreError> {
        self.before("release_slot").await?;
        self.inner.release_slot(job_id, slot, holder).await
    }
    async fn recent_jobs(&self, limit: usize) -> Result<Vec<String>, JobStoreError> {
        self.before("recent_jobs").await?;
        self.inner.recent_jobs(limit).await
    }
    async fn forget_active(&self, job_id: &str) -> Result<(), JobStoreError> {
        self.before("forget_active").await?;
        self.after(self.inner.forget_active(job_id).await)
    }
    async fn note_progress(
        &self,
        job_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<u64, JobStoreError> {
        self.before("note_progress").await?;
        self.inner.note_progress(job_id, fingerprint, now_ms).await
    }
    async fn flag_input_changed(&self, job_id: &str, seq: u64) -> Result<(), JobStoreError> {
        self.before("flag_input_changed").await?;
        self.after(self.inner.flag_input_changed(job_id, seq).await)
    }
    async fn finish(
        &self,
        job_id: &str,
        status: TerminalStatus,
        usage: &Usage,
    ) -> Result<bool, JobStoreError> {
        self.before("finish").await?;
        self.after(self.inner.finish(job_id, status, usage).await)
    }
}
