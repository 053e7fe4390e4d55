//! Runs a whole job in one process: the coordinator, a pool of workers standing in for the SQS event source
//! mapping (receive up to N messages per invocation, at most `concurrency` invocations at once, delete what
//! succeeded, leave the rest to the visibility timeout), a dead-letter consumer, and the finalizer.
//!
//! Fault injection (`Chaos`) lives here, where the event source mapping's behaviour is played: for a delivered
//! message, a duplicate delivery, a crash before the acknowledgement, or a crash after processing but before
//! the batch is recorded. Faults are a pure function of (seed, batch, receive count), so a seed replays the same
//! faults. A crash is never injected on a message's last allowed receive: chaos alone never dead-letters a
//! batch, so a run under chaos must give exactly the outputs of a fault-free run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Deps;
use crate::coordinator::{preflight, run_listing, start_job};
use crate::dead_letter::{self, DeadLetterOutcome};
use crate::error::PipelineError;
use crate::finalizer::finalize;
use crate::layout::Manifest;
use crate::message::FinalizeMessage;
use crate::ports::{BatchQueue, Progress, ReceivedMessage};
use crate::spec::Job;
use crate::worker::{self, WorkerConfig};

/// How the in-process pool behaves.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Worker invocations at once (the event source mapping's MaximumConcurrency).
    pub concurrency: usize,
    /// Messages per worker invocation (the event source mapping's BatchSize, at most 10).
    pub receive_batch_size: usize,
    /// The work queue's visibility timeout; a worker still busy extends it every half period.
    pub visibility_timeout: Duration,
    /// The work queue's maximum receive count before a message is dead-lettered.
    pub max_receive_count: u32,
    pub worker: WorkerConfig,
    pub chaos: Option<Chaos>,
    /// How often progress is reported (and stop is noticed).
    pub poll_interval: Duration,
    /// How long an idle receive waits. Against SQS make it a long poll (whole seconds): shorter waits are
    /// short polls, each a billed request.
    pub receive_wait: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            receive_batch_size: 10,
            visibility_timeout: Duration::from_secs(2),
            max_receive_count: 5,
            worker: WorkerConfig::default(),
            chaos: None,
            poll_interval: Duration::from_millis(50),
            receive_wait: Duration::from_millis(50),
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
}

#[derive(Debug, Default)]
struct Counters {
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    crashes_before_ack: AtomicU64,
    crashes_before_record: AtomicU64,
    dead_lettered_batches: AtomicU64,
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

struct Pool {
    deps: Deps,
    dead_letter: Arc<dyn BatchQueue>,
    config: LocalConfig,
    counters: Counters,
    stop: watch::Receiver<bool>,
}

/// Runs `job` to its end. Refuses (before writing anything) a job whose buckets are missing or whose results
/// already exist.
pub async fn run(
    deps: &Deps,
    dead_letter: Arc<dyn BatchQueue>,
    job: Job,
    config: &LocalConfig,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    preflight(deps, &job).await?;
    let job_id = job.job_id.clone();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    start_job(deps, job, now_ms).await?;

    let (stop_tx, stop) = watch::channel(false);
    let pool = Arc::new(Pool {
        deps: deps.clone(),
        dead_letter,
        config: config.clone(),
        counters: Counters::default(),
        stop,
    });
    let coordinator = tokio::spawn(coordinate(pool.clone(), job_id.clone()));
    let mut consumers: Vec<JoinHandle<Result<(), PipelineError>>> = (0..config.concurrency.max(1))
        .map(|_| tokio::spawn(pool.clone().work_loop()))
        .collect();
    consumers.push(tokio::spawn(pool.clone().dead_letter_loop()));
    consumers.push(tokio::spawn(pool.clone().finalize_loop()));

    let outcome = pool
        .watch(&job_id, &coordinator, &consumers, on_progress)
        .await;
    let _ = stop_tx.send(true);
    for task in consumers {
        task.await??;
    }
    coordinator.await??;
    outcome?;
    let manifest = finalize(deps, &job_id).await?.manifest;
    Ok(RunReport {
        manifest,
        elapsed: started.elapsed(),
        stats: pool.counters.snapshot(),
    })
}

/// Runs the listing to its end, resuming from the stored checkpoint after a transient error.
async fn coordinate(pool: Arc<Pool>, job_id: String) -> Result<(), PipelineError> {
    let deps = &pool.deps;
    let mut delay = Duration::from_millis(100);
    loop {
        let record = deps
            .jobs
            .get_job(&job_id)
            .await?
            .ok_or_else(|| crate::ports::JobStoreError::NotFound(job_id.clone()))?;
        match run_listing(deps, &record, &|| true).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && delay < Duration::from_secs(10) => {
                tracing::warn!(job_id, error = %e, "coordinator failed; resuming from its checkpoint");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Pool {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Reports progress until the job is terminal; fails if a task failed or the job is stuck.
    async fn watch(
        &self,
        job_id: &str,
        coordinator: &JoinHandle<Result<(), PipelineError>>,
        consumers: &[JoinHandle<Result<(), PipelineError>>],
        on_progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), PipelineError> {
        let stuck_after = (self.config.visibility_timeout * 3).max(Duration::from_secs(3));
        let mut idle_since: Option<Instant> = None;
        loop {
            // Read before the progress: a coordinator that finished before the read and left no listing totals
            // failed (its error is returned when it is joined).
            let coordinator_done = coordinator.is_finished();
            let progress = self.deps.jobs.progress(job_id).await?;
            on_progress(&progress);
            if progress.status.is_terminal() {
                return Ok(());
            }
            if consumers.iter().any(JoinHandle::is_finished)
                || (coordinator_done && progress.listing.is_none())
            {
                return Ok(()); // the failed task's error is returned when it is joined
            }
            let idle = coordinator_done && self.queues_empty().await?;
            idle_since = if idle {
                idle_since.or(Some(Instant::now()))
            } else {
                None
            };
            if let Some(since) = idle_since
                && since.elapsed() > stuck_after
            {
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
    }

    async fn queues_empty(&self) -> Result<bool, PipelineError> {
        Ok(self.deps.work_queue.depth().await?.is_empty()
            && self.dead_letter.depth().await?.is_empty()
            && self.deps.finalize_queue.depth().await?.is_empty())
    }

    /// One slot of the event source mapping: receive, invoke the worker on each message, delete successes.
    async fn work_loop(self: Arc<Self>) -> Result<(), PipelineError> {
        while !self.stopped() {
            let received = self
                .deps
                .work_queue
                .receive(self.config.receive_batch_size, self.config.receive_wait)
                .await?;
            futures::future::join_all(received.iter().map(|m| self.deliver(m))).await;
        }
        Ok(())
    }

    async fn deliver(&self, received: &ReceivedMessage) {
        self.counters.deliveries.fetch_add(1, Ordering::Relaxed);
        let message = match worker::parse_message(&received.body) {
            Ok(message) => message,
            Err(e) => {
                // Left undeleted: it is redelivered until the queue dead-letters it.
                tracing::error!(message_id = %received.message_id, error = %e, "unreadable work message");
                return;
            }
        };
        let fault = self.config.chaos.and_then(|c| {
            c.fault_for(
                message.seq,
                received.receive_count,
                self.config.max_receive_count,
            )
        });
        let deps = &self.deps;
        let config = self.config.worker;
        let acknowledge = match fault {
            None => self
                .with_heartbeat(received, worker::handle(deps, config, &message))
                .await
                .is_ok(),
            Some(Fault::Duplicate) => {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                let (a, b) = self
                    .with_heartbeat(received, async {
                        tokio::join!(
                            worker::handle(deps, config, &message),
                            worker::handle(deps, config, &message)
                        )
                    })
                    .await;
                a.is_ok() && b.is_ok()
            }
            Some(Fault::CrashBeforeAck) => {
                self.counters
                    .crashes_before_ack
                    .fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .with_heartbeat(received, worker::handle(deps, config, &message))
                    .await;
                false
            }
            Some(Fault::CrashBeforeRecord) => {
                self.counters
                    .crashes_before_record
                    .fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .with_heartbeat(received, worker::process(deps, config, &message))
                    .await;
                false
            }
        };
        if acknowledge && let Err(e) = deps.work_queue.delete(&received.receipt_handle).await {
            // Not deleting only means one more (idempotent) delivery.
            tracing::warn!(batch_id = %message.batch_id(), error = %e, "delete failed");
        }
    }

    /// Runs `work`, extending the message's visibility every half timeout while it is busy.
    async fn with_heartbeat<T>(
        &self,
        received: &ReceivedMessage,
        work: impl Future<Output = T>,
    ) -> T {
        let timeout = self.config.visibility_timeout;
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

    async fn dead_letter_loop(self: Arc<Self>) -> Result<(), PipelineError> {
        while !self.stopped() {
            let received = self
                .dead_letter
                .receive(10, self.config.receive_wait)
                .await?;
            for message in received {
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
                        self.dead_letter.delete(&message.receipt_handle).await?;
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "dead letter not handled; will retry");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn finalize_loop(self: Arc<Self>) -> Result<(), PipelineError> {
        let queue = &self.deps.finalize_queue;
        while !self.stopped() {
            for message in queue.receive(1, self.config.receive_wait).await? {
                let trigger = FinalizeMessage::from_body(&message.body)
                    .map_err(|e| PipelineError::MalformedMessage(e.to_string()))?;
                match finalize(&self.deps, &trigger.job_id).await {
                    Ok(_) => queue.delete(&message.receipt_handle).await?,
                    Err(e) if e.is_transient() => {
                        tracing::warn!(job_id = %trigger.job_id, error = %e, "finalizer failed; will retry");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
