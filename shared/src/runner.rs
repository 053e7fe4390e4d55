//! Runs a whole job in one process: the coordinator, and the event source mappings the template defines,
//! played by [`crate::esm`] over in-process handlers: `concurrency` mappings of the work queue onto the worker
//! (receive up to N messages per invocation, delete what succeeded, leave the rest to the visibility
//! timeout), one of the dead-letter queue onto the dead-letter handler, one of the finalize queue onto the
//! finalizer. The same runner drives `dmap run` on the embedded backends and on AWS.
//!
//! Fault injection ([`Chaos`]) is a wrapper around the worker's delivery: for a delivered message, a duplicate
//! delivery, a crash before the acknowledgement, or a crash after processing but before the batch is recorded.
//! Faults are a pure function of (seed, batch, receive count), so a seed replays the same faults. A crash is
//! never injected on a message's last allowed receive: chaos alone never dead-letters a batch, so a run under
//! chaos must give exactly the outputs of a fault-free run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Deps;
use crate::clock::now_ms;
use crate::completion::trigger_finalizer;
use crate::coordinator::{Rerun, run_listing, start_or_resume};
use crate::dead_letter::{self, DeadLetterOutcome};
use crate::error::PipelineError;
use crate::esm::{
    Ack, EachMessage, EventSourceMapping, HandleMessage, InvokeError, PollError, Ramp,
};
use crate::finalizer::{self, FinalizerConfig, finalize};
use crate::message::{BatchMessage, FinalizeMessage};
use crate::outcome::Manifest;
use crate::ports::{
    BatchQueue, FunctionInvoker, InvokeError as FunctionError, JobStatus, Progress,
    ReceivedMessage, require_job,
};
use crate::spec::Job;
use crate::sweeper::{Repair, resend_unrecorded, sweep_job};
use crate::worker::{self, WorkerConfig};

/// How the runner plays the event source mappings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Worker invocations at once (the event source mapping's MaximumConcurrency).
    pub concurrency: usize,
    /// Messages per worker invocation (the event source mapping's BatchSize, at most 10).
    pub receive_batch_size: usize,
    /// Messages of one invocation handled at once (the worker function handles 4).
    pub message_concurrency: usize,
    /// The work queue mapping's scaling: `None` starts every invocation slot at once; `Some` starts them as a
    /// standard-mode mapping adds them, from the run's start (the scale model plays AWS's this way).
    pub ramp: Option<Ramp>,
    /// The work queue's visibility timeout; a worker still busy extends it every half period.
    pub visibility_timeout: Duration,
    /// The work queue's maximum receive count before a message is dead-lettered.
    pub max_receive_count: u32,
    pub worker: WorkerConfig,
    pub finalizer: FinalizerConfig,
    pub chaos: Option<Chaos>,
    /// How often progress is reported (and stop is noticed).
    pub poll_interval: Duration,
    /// Every how many polls the counters are read; the polls between read the job item alone (its status and
    /// listing totals). Against DynamoDB a counter read queries every shard: cheap once, not once a second.
    pub count_every: u32,
    /// How long an idle receive waits. Against SQS make it a long poll (whole seconds): shorter waits are
    /// short polls, each a billed request.
    pub receive_wait: Duration,
    /// How long every queue must be idle, the job unfinished, before the sweeper looks at it. Longer than a
    /// visibility timeout or two: a crashed delivery comes back after one.
    pub idle_before_sweep: Duration,
    /// The queues die with this process (the embedded ones): a job resumed by a new run sends again the
    /// batches an earlier run sent and did not record. Durable queues (SQS) still hold them.
    pub queues_die_with_process: bool,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            receive_batch_size: 10,
            message_concurrency: 10,
            ramp: None,
            visibility_timeout: Duration::from_secs(2),
            max_receive_count: 5,
            worker: WorkerConfig::default(),
            finalizer: FinalizerConfig::default(),
            chaos: None,
            poll_interval: Duration::from_millis(50),
            count_every: 1,
            receive_wait: Duration::from_millis(50),
            idle_before_sweep: Duration::from_secs(6),
            queues_die_with_process: true,
        }
    }
}

/// Fault injection: with probability `rate`, one fault per delivered work-queue message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chaos {
    pub rate: f64,
    pub seed: u64,
}

/// A fault injected into one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The message is handled twice, concurrently, as two consumers receiving the same message would.
    Duplicate,
    /// The worker processes and records the batch, then dies before deleting the message.
    CrashBeforeAck,
    /// The worker writes the batch's part, then dies before recording it.
    CrashBeforeRecord,
}

impl Chaos {
    /// The fault for one delivery: a pure function of seed, batch and receive count.
    pub fn fault_for(&self, seq: u64, receive_count: u32, max_receive_count: u32) -> Option<Fault> {
        let mix =
            self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(receive_count) << 48);
        let mut rng = StdRng::seed_from_u64(mix);
        if rng.random::<f64>() >= self.rate {
            return None;
        }
        let fault = match rng.random_range(0..3) {
            0 => Fault::Duplicate,
            1 => Fault::CrashBeforeAck,
            _ => Fault::CrashBeforeRecord,
        };
        let last_receive = receive_count >= max_receive_count;
        Some(if last_receive {
            Fault::Duplicate
        } else {
            fault
        })
    }
}

/// Faults injected and dead letters handled during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub deliveries: u64,
    pub duplicates: u64,
    pub crashes_before_ack: u64,
    pub crashes_before_record: u64,
    pub dead_lettered_batches: u64,
    /// Times the sweeper found the job stuck (every queue idle, the job not finished) and repaired it.
    pub sweeper_repairs: u64,
    /// Invocations of a user's function that chaos throttled, or whose response it lost after the function ran.
    pub function_faults: u64,
}

#[derive(Debug, Default)]
struct Counters {
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    crashes_before_ack: AtomicU64,
    crashes_before_record: AtomicU64,
    dead_lettered_batches: AtomicU64,
    sweeper_repairs: AtomicU64,
    function_faults: AtomicU64,
    /// Work and dead-letter deliveries being handled now: an aborted job ends once those in flight at the
    /// abort have.
    in_flight: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RunStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RunStats {
            deliveries: get(&self.deliveries),
            duplicates: get(&self.duplicates),
            crashes_before_ack: get(&self.crashes_before_ack),
            crashes_before_record: get(&self.crashes_before_record),
            dead_lettered_batches: get(&self.dead_lettered_batches),
            sweeper_repairs: get(&self.sweeper_repairs),
            function_faults: get(&self.function_faults),
        }
    }
}

/// The outcome of a local run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub manifest: Manifest,
    pub elapsed: Duration,
    pub stats: RunStats,
}

/// Runs `job` to its end. Refuses (before writing anything) a job whose buckets are missing or whose results
/// already exist. `deps` must hold the work queue's dead-letter queue: the runner consumes it.
pub async fn run(
    deps: &Deps,
    job: Job,
    config: &RunnerConfig,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let dead_letter = deps.dead_letter.clone().ok_or_else(|| {
        PipelineError::Refused("the runner needs the work queue's dead-letter queue".into())
    })?;
    let job_id = job.job_id.clone();
    // This process runs this job: what it sends outside a job's handler (queue polls, progress reads) is the
    // job's.
    deps.usage.run_job(&job_id);
    let record =
        retry_transient(|| start_or_resume(deps, job.clone(), Rerun::RefuseIfOutputsExist)).await?;
    // A job that had begun (on a persistent job store, in a process that ended before the job did): the
    // batches that process sent and did not record were lost with its queues.
    let resumed = config.queues_die_with_process
        && record.status == JobStatus::Running
        && !record.abort_requested()
        && record.checkpoint.next_seq > 0;

    let (stop_tx, stop) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let chaotic;
    let deps = match (config.chaos, &deps.functions) {
        (Some(chaos), Some(functions)) => {
            chaotic = Deps {
                functions: Some(Arc::new(ChaosInvoker {
                    inner: functions.clone(),
                    chaos,
                    calls: AtomicU64::new(0),
                    counters: counters.clone(),
                })),
                ..deps.clone()
            };
            &chaotic
        }
        _ => deps,
    };
    let pool = Arc::new(Pool {
        deps: deps.clone(),
        config: config.clone(),
        counters: counters.clone(),
        stop,
    });
    let coordinator = tokio::spawn(coordinate(deps.clone(), job_id.clone(), resumed));
    let delivery = WorkerDelivery {
        deps: deps.clone(),
        config: config.worker,
        visibility_timeout: config.visibility_timeout,
        counters: counters.clone(),
    };
    let work: Arc<dyn HandleMessage> = match config.chaos {
        None => Arc::new(delivery),
        Some(chaos) => Arc::new(ChaosDelivery {
            inner: delivery,
            chaos,
            max_receive_count: config.max_receive_count,
            counters: counters.clone(),
        }),
    };
    let work_mapping = EventSourceMapping::new(
        deps.work_queue.clone(),
        config.receive_batch_size,
        config.receive_wait,
    );
    // Slots the ramp never reaches are not started (slot 0 always is).
    let mut consumers: Vec<JoinHandle<Result<(), PipelineError>>> = (0..config.concurrency.max(1))
        .filter_map(|slot| match config.ramp {
            None => Some(Duration::ZERO),
            Some(ramp) => ramp.slot_starts_after(slot as u32),
        })
        .map(|starts_after| {
            let play = pool.clone().play(
                work_mapping.clone(),
                EachMessage::at_most(work.clone(), config.message_concurrency),
                MappingKind::Work,
            );
            let mut stop = pool.stop.clone();
            tokio::spawn(async move {
                if starts_after.is_zero() {
                    return play.await;
                }
                // A slot the mapping would add after the run ends is never used.
                tokio::select! {
                    _ = tokio::time::sleep(starts_after) => play.await,
                    _ = async { drop(stop.wait_for(|stopped| *stopped).await) } => Ok(()),
                }
            })
        })
        .collect();
    consumers.push(tokio::spawn(pool.clone().play(
        EventSourceMapping::new(dead_letter.clone(), 10, config.receive_wait),
        EachMessage::new(Arc::new(DeadLetterDelivery {
            deps: deps.clone(),
            counters: counters.clone(),
        }) as Arc<dyn HandleMessage>),
        MappingKind::Other,
    )));
    consumers.push(tokio::spawn(pool.clone().play(
        EventSourceMapping::new(deps.finalize_queue.clone(), 1, config.receive_wait),
        EachMessage::new(Arc::new(FinalizeDelivery {
            deps: deps.clone(),
            config: config.finalizer,
        }) as Arc<dyn HandleMessage>),
        MappingKind::Other,
    )));

    let outcome = pool
        .watch(&job_id, &dead_letter, &coordinator, &consumers, on_progress)
        .await;
    let _ = stop_tx.send(true);
    for task in consumers {
        task.await??;
    }
    coordinator.await??;
    outcome?;
    let manifest = retry_transient(|| finalize(deps, config.finalizer, &job_id))
        .await?
        .manifest;
    Ok(RunReport {
        manifest,
        elapsed: started.elapsed(),
        stats: counters.snapshot(),
    })
}

/// Repairs by the sweeper before a run that is still stuck is reported as such.
const MAX_REPAIRS: u64 = 20;

/// Attempts at a step that fails transiently before the run gives up on it.
const STEP_ATTEMPTS: u32 = 30;

/// Runs `step` until it succeeds or fails for good, with capped exponential backoff between transient
/// failures (as Lambda's retries and the queues' redeliveries would).
async fn retry_transient<T, F, Fut>(mut step: F) -> Result<T, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PipelineError>>,
{
    let mut delay = Duration::from_millis(20);
    for attempt in 1.. {
        match step().await {
            Err(e) if e.is_transient() && attempt < STEP_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "step failed; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
    unreachable!("the loop returns")
}

/// Runs the listing to its end, resuming from the stored checkpoint after a transient error. For a `resumed`
/// job, first sends again the batches sent before that have no record.
async fn coordinate(deps: Deps, job_id: String, resumed: bool) -> Result<(), PipelineError> {
    if resumed {
        let resent = retry_transient(|| async {
            let record = require_job(deps.jobs.as_ref(), &job_id).await?;
            resend_unrecorded(&deps, &record).await
        })
        .await?;
        tracing::info!(
            job_id,
            resent,
            "resumed: sent again the batches left unrecorded"
        );
    }
    retry_transient(|| async {
        let record = require_job(deps.jobs.as_ref(), &job_id).await?;
        run_listing(&deps, &record, &|| true).await
    })
    .await
    .map(drop)
}

/// The runner's shared state: what every mapping it plays reads.
struct Pool {
    deps: Deps,
    config: RunnerConfig,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
}

/// Which mapping a loop plays (the work queue's deliveries are counted).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MappingKind {
    Work,
    Other,
}

impl Pool {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Plays one event source mapping until the run stops. A failed receive or a handler's permanent error
    /// ends the run (it is returned when the task is joined); a failed delete only means one more delivery,
    /// which every handler absorbs.
    async fn play(
        self: Arc<Self>,
        mapping: EventSourceMapping,
        target: EachMessage<Arc<dyn HandleMessage>>,
        kind: MappingKind,
    ) -> Result<(), PipelineError> {
        while !self.stopped() {
            match mapping.poll_once(&target).await {
                Ok(polled) => {
                    if kind == MappingKind::Work {
                        self.counters
                            .deliveries
                            .fetch_add(polled.received as u64, Ordering::Relaxed);
                    }
                }
                Err(PollError::Delete(e)) => tracing::warn!(error = %e, "delete failed"),
                // Lambda's pollers retry a failed receive; so does this one.
                Err(PollError::Receive(e)) if e.is_transient() => {
                    tracing::warn!(error = %e, "receive failed");
                    tokio::time::sleep(self.config.poll_interval).await;
                }
                Err(PollError::Receive(e)) => return Err(e.into()),
                Err(PollError::Invoke(e)) => return Err(into_pipeline_error(e)),
            }
        }
        Ok(())
    }

    /// Reports progress until the job is terminal; fails if a task failed or the job is stuck. When every queue
    /// has been idle for a while and the job is not finished, the sweeper looks at it and repairs what it can
    /// (a lost finalize trigger, batches that were never delivered, a claim never made); the run fails as stuck
    /// only when it can repair nothing.
    async fn watch(
        &self,
        job_id: &str,
        dead_letter: &Arc<dyn BatchQueue>,
        coordinator: &JoinHandle<Result<(), PipelineError>>,
        consumers: &[JoinHandle<Result<(), PipelineError>>],
        on_progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), PipelineError> {
        let stuck_after = self.config.idle_before_sweep;
        let mut idle_since: Option<Instant> = None;
        let mut last: Option<Progress> = None;
        for poll in 0u32.. {
            // Read before the progress: a coordinator that finished before the read and left no listing totals
            // failed (its error is returned when it is joined).
            let coordinator_done = coordinator.is_finished();
            let count = idle_since.is_some() || poll % self.config.count_every.max(1) == 0;
            let read = match require_job(self.deps.jobs.as_ref(), job_id).await {
                // The last report of a job shows its final counts.
                Ok(job) if count || job.status.is_terminal() || last.is_none() => self
                    .deps
                    .jobs
                    .progress(job_id)
                    .await
                    .map(|progress| (job, progress)),
                Ok(job) => {
                    let progress = Progress {
                        status: job.status,
                        listing: job.listing,
                        items_sent: job.checkpoint.items_sent,
                        ..last.clone().expect("not the first poll")
                    };
                    Ok((job, progress))
                }
                Err(e) => Err(e),
            };
            let (job, progress) = match read {
                Ok(read) => read,
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(self.config.poll_interval).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            on_progress(&progress);
            last = Some(progress.clone());
            if progress.status.is_terminal() {
                return Ok(());
            }
            if consumers.iter().any(JoinHandle::is_finished)
                || (coordinator_done && progress.listing.is_none() && !job.abort_requested())
            {
                return Ok(()); // the failed task's error is returned when it is joined
            }
            // Aborted: the workers drop the job's batches; once the listing has stopped and the batches in flight
            // at the abort are done, the job is finalized with what they recorded. Only where this process's
            // workers are all the job's: on durable queues others may hold its batches, and the abort's
            // delayed trigger ends the job past the longest a worker runs.
            if job.abort_requested()
                && progress.status == JobStatus::Running
                && self.config.queues_die_with_process
                && coordinator_done
                && self.counters.in_flight.load(Ordering::SeqCst) == 0
                && self.deps.jobs.claim_abort(job_id).await?
            {
                trigger_finalizer(&self.deps, job_id).await?;
            }
            let idle = coordinator_done && self.queues_empty(dead_letter).await.unwrap_or(false);
            idle_since = if idle {
                idle_since.or(Some(Instant::now()))
            } else {
                None
            };
            if let Some(since) = idle_since
                && since.elapsed() > stuck_after
            {
                let swept = sweep_job(&self.deps, None, job_id, now_ms(), Duration::ZERO).await;
                let repairs = self.counters.sweeper_repairs.load(Ordering::Relaxed);
                match swept {
                    // A job that needs repair after repair is stuck for good: say so.
                    Ok(Some(stuck))
                        if stuck.repair != Repair::Reported && repairs < MAX_REPAIRS =>
                    {
                        self.counters
                            .sweeper_repairs
                            .fetch_add(1, Ordering::Relaxed);
                        idle_since = None;
                        continue;
                    }
                    Ok(None) => {
                        idle_since = None;
                        continue;
                    }
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(self.config.poll_interval).await;
                        continue;
                    }
                    _ => {}
                }
                return Err(PipelineError::Inconsistent {
                    job_id: job_id.to_owned(),
                    message: format!(
                        "stuck in {} with every queue empty ({} of {:?} batches recorded)",
                        progress.status.as_str(),
                        progress.batches_done,
                        progress.listing.map(|l| l.batches)
                    ),
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
        unreachable!("the polls end before u32::MAX")
    }

    async fn queues_empty(&self, dead_letter: &Arc<dyn BatchQueue>) -> Result<bool, PipelineError> {
        Ok(self.deps.work_queue.depth().await?.is_empty()
            && dead_letter.depth().await?.is_empty()
            && self.deps.finalize_queue.depth().await?.is_empty())
    }
}

/// A handler's permanent error, carried through the mapping's [`InvokeError`], back as the pipeline error it
/// was.
fn into_pipeline_error(e: InvokeError) -> PipelineError {
    match e.0.downcast::<PipelineError>() {
        Ok(e) => *e,
        Err(other) => PipelineError::MalformedMessage(other.to_string()),
    }
}

/// The worker, as the work queue's mapping invokes it in this process: one message = one batch. The runner's
/// visibility timeouts are short, so a busy worker extends its message's visibility every half timeout.
struct WorkerDelivery {
    deps: Deps,
    config: WorkerConfig,
    visibility_timeout: Duration,
    counters: Arc<Counters>,
}

/// Counts a delivery in flight while it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How far a delivery gets (the chaos wrapper stops some short).
#[derive(Clone, Copy)]
enum Steps {
    /// Process, record, and acknowledge when that succeeded.
    All,
    /// Process and record, then die before the acknowledgement.
    CrashBeforeAck,
    /// Process and write the part, then die before recording it.
    CrashBeforeRecord,
}

impl WorkerDelivery {
    async fn deliver(
        &self,
        received: &ReceivedMessage,
        message: &BatchMessage,
        steps: Steps,
    ) -> Ack {
        let (deps, config) = (&self.deps, self.config);
        let _in_flight = InFlight::new(&self.counters.in_flight);
        let succeeded = match steps {
            Steps::CrashBeforeRecord => {
                let _ = self
                    .with_heartbeat(received, worker::process(deps, config, message))
                    .await;
                false
            }
            Steps::All | Steps::CrashBeforeAck => {
                let handled = self
                    .with_heartbeat(received, worker::handle(deps, config, message))
                    .await;
                handled.is_ok() && matches!(steps, Steps::All)
            }
        };
        if succeeded { Ack::Delete } else { Ack::Retry }
    }

    /// Runs `work`, extending the message's visibility every half timeout while it is busy.
    async fn with_heartbeat<T>(
        &self,
        received: &ReceivedMessage,
        work: impl Future<Output = T>,
    ) -> T {
        let timeout = self.visibility_timeout;
        let period = timeout / 2;
        let mut beats = tokio::time::interval_at(Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = beats.tick() => {
                    // Failing to extend only risks a duplicate delivery, which the record absorbs.
                    if let Err(e) = self.deps.work_queue.change_visibility(&received.receipt_handle, timeout).await {
                        tracing::debug!(error = %e, "could not extend visibility");
                    }
                }
            }
        }
    }
}

/// Parses a work message; an unreadable one is left undeleted, so the queue dead-letters it in the end.
fn parse_work_message(received: &ReceivedMessage) -> Option<BatchMessage> {
    worker::parse_message(&received.body)
        .inspect_err(|e| {
            tracing::error!(message_id = %received.message_id, error = %e, "unreadable work message");
        })
        .ok()
}

#[async_trait]
impl HandleMessage for WorkerDelivery {
    async fn handle(&self, received: &ReceivedMessage) -> Result<Ack, InvokeError> {
        Ok(match parse_work_message(received) {
            Some(message) => self.deliver(received, &message, Steps::All).await,
            None => Ack::Retry,
        })
    }
}

/// Fault injection around the worker's delivery: what [`Chaos`] picks for a delivery happens to it.
struct ChaosDelivery {
    inner: WorkerDelivery,
    chaos: Chaos,
    max_receive_count: u32,
    counters: Arc<Counters>,
}

#[async_trait]
impl HandleMessage for ChaosDelivery {
    async fn handle(&self, received: &ReceivedMessage) -> Result<Ack, InvokeError> {
        let Some(message) = parse_work_message(received) else {
            return Ok(Ack::Retry);
        };
        let fault =
            self.chaos
                .fault_for(message.seq, received.receive_count, self.max_receive_count);
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        let inner = &self.inner;
        Ok(match fault {
            None => inner.deliver(received, &message, Steps::All).await,
            Some(Fault::Duplicate) => {
                count(&self.counters.duplicates);
                let (a, b) = tokio::join!(
                    inner.deliver(received, &message, Steps::All),
                    inner.deliver(received, &message, Steps::All)
                );
                if a == Ack::Delete && b == Ack::Delete {
                    Ack::Delete
                } else {
                    Ack::Retry
                }
            }
            Some(Fault::CrashBeforeAck) => {
                count(&self.counters.crashes_before_ack);
                inner
                    .deliver(received, &message, Steps::CrashBeforeAck)
                    .await
            }
            Some(Fault::CrashBeforeRecord) => {
                count(&self.counters.crashes_before_record);
                inner
                    .deliver(received, &message, Steps::CrashBeforeRecord)
                    .await
            }
        })
    }
}

/// Fault injection around users' functions: with the chaos rate, an invocation is throttled (the function does
/// not run), or its response is lost after the function ran (a connection cut), as Lambda can do to any call.
/// Never a function error: that would fail items, and a run under chaos must give a fault-free run's outputs.
struct ChaosInvoker {
    inner: Arc<dyn FunctionInvoker>,
    chaos: Chaos,
    calls: AtomicU64,
    counters: Arc<Counters>,
}

#[async_trait]
impl FunctionInvoker for ChaosInvoker {
    async fn invoke(&self, function: &str, payload: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rng =
            StdRng::seed_from_u64(self.chaos.seed ^ call.wrapping_mul(0xD1B5_4A32_D192_ED03));
        if rng.random::<f64>() >= self.chaos.rate {
            return self.inner.invoke(function, payload).await;
        }
        self.counters
            .function_faults
            .fetch_add(1, Ordering::Relaxed);
        if rng.random_bool(0.5) {
            return Err(FunctionError::Throttled("injected by chaos".into()));
        }
        self.inner.invoke(function, payload).await?;
        Err(FunctionError::Unavailable(
            "injected by chaos: the response was lost after the function ran".into(),
        ))
    }
}

/// The dead-letter handler (the finalizer function's second trigger on AWS).
struct DeadLetterDelivery {
    deps: Deps,
    counters: Arc<Counters>,
}

#[async_trait]
impl HandleMessage for DeadLetterDelivery {
    async fn handle(&self, message: &ReceivedMessage) -> Result<Ack, InvokeError> {
        let _in_flight = InFlight::new(&self.counters.in_flight);
        match dead_letter::handle(&self.deps, &message.body).await {
            Ok(outcome) => {
                if let DeadLetterOutcome::Orphaned(why) = &outcome {
                    tracing::error!(message_id = %message.message_id, why, "dropping dead letter");
                }
                if matches!(outcome, DeadLetterOutcome::RecordedFailed { .. }) {
                    self.counters
                        .dead_lettered_batches
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ack::Delete)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "dead letter not handled; will retry");
                Ok(Ack::Retry)
            }
            Err(e) => Err(InvokeError::new(e)),
        }
    }
}

/// The finalizer, on the finalize queue's triggers and range merges.
struct FinalizeDelivery {
    deps: Deps,
    config: FinalizerConfig,
}

#[async_trait]
impl HandleMessage for FinalizeDelivery {
    async fn handle(&self, message: &ReceivedMessage) -> Result<Ack, InvokeError> {
        let trigger = FinalizeMessage::from_body(&message.body)
            .map_err(|e| InvokeError::new(PipelineError::MalformedMessage(e.to_string())))?;
        match finalizer::handle(&self.deps, self.config, &trigger).await {
            Ok(_) => Ok(Ack::Delete),
            Err(e) if e.is_transient() => {
                tracing::warn!(job_id = %trigger.job_id, error = %e, "finalizer failed; will retry");
                Ok(Ack::Retry)
            }
            Err(e) => Err(InvokeError::new(e)),
        }
    }
}
