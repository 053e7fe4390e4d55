//! An in-process job store with the job store port's conditional semantics (the ones the DynamoDB adapter gets
//! from condition expressions): every operation is one atomic step under a lock, so a marker here is counted
//! as it is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::outcome::TerminalStatus;
use crate::ports::{
    BatchRecord, Checkpoint, CreateOutcome, JobRecord, JobStatus, JobStore, JobStoreError,
    ListingTotals, Progress, RecordOutcome, Recorded,
};

#[derive(Debug)]
struct JobState {
    record: JobRecord,
    batches: BTreeMap<u64, BatchRecord>,
    succeeded: u64,
    failed: u64,
    /// The sweeper's last fingerprint of the job and since when it has shown it.
    swept: Option<(String, u64)>,
}

/// The embedded job store.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<String, JobState>>,
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, JobState>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_job<T>(
        &self,
        job_id: &str,
        f: impl FnOnce(&mut JobState) -> Result<T, JobStoreError>,
    ) -> Result<T, JobStoreError> {
        let mut jobs = self.lock();
        let job = jobs
            .get_mut(job_id)
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_owned()))?;
        f(job)
    }
}

fn conflict(job_id: &str, message: impl Into<String>) -> JobStoreError {
    JobStoreError::Conflict {
        job_id: job_id.to_owned(),
        message: message.into(),
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create_job(&self, record: &JobRecord) -> Result<CreateOutcome, JobStoreError> {
        let mut jobs = self.lock();
        if let Some(existing) = jobs.get(&record.job.job_id) {
            return Ok(CreateOutcome::Exists(Box::new(existing.record.clone())));
        }
        jobs.insert(
            record.job.job_id.clone(),
            JobState {
                record: record.clone(),
                batches: BTreeMap::new(),
                succeeded: 0,
                failed: 0,
                swept: None,
            },
        );
        Ok(CreateOutcome::Created)
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        Ok(self.lock().get(job_id).map(|j| j.record.clone()))
    }

    async fn save_checkpoint(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.listing.is_some() {
                return Err(conflict(job_id, "the listing is already complete"));
            }
            let stored = &job.record.checkpoint;
            if checkpoint.next_seq >= stored.next_seq {
                let (hop, hop_sent) = (stored.hop, stored.hop_sent);
                job.record.checkpoint = Checkpoint {
                    hop,
                    hop_sent,
                    ..checkpoint.clone()
                };
            }
            Ok(())
        })
    }

    async fn hand_over(
        &self,
        job_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            let stored = &job.record.checkpoint;
            let ok = job.record.listing.is_none()
                && checkpoint.hop == stored.hop + 1
                && checkpoint.next_seq >= stored.next_seq;
            if ok {
                job.record.checkpoint = Checkpoint {
                    hop_sent: false,
                    ..checkpoint.clone()
                };
            }
            Ok(ok)
        })
    }

    async fn continuation_sent(&self, job_id: &str, hop: u32) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.checkpoint.hop == hop {
                job.record.checkpoint.hop_sent = true;
            }
            Ok(())
        })
    }

    async fn complete_listing(
        &self,
        job_id: &str,
        totals: ListingTotals,
    ) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| match job.record.listing {
            Some(existing) if existing == totals => Ok(()),
            Some(existing) => Err(conflict(
                job_id,
                format!("listing already completed with {existing:?}, not {totals:?}"),
            )),
            None => {
                job.record.listing = Some(totals);
                job.record.checkpoint.next_seq = totals.batches;
                job.record.checkpoint.items_sent = totals.items;
                Ok(())
            }
        })
    }

    async fn record_batch(
        &self,
        job_id: &str,
        seq: u64,
        record: &BatchRecord,
    ) -> Result<Recorded, JobStoreError> {
        // The marker and the counters change under one lock: a marker here is always counted.
        self.with_job(job_id, |job| {
            if let Some(stored) = job.batches.get(&seq) {
                return Ok(Recorded {
                    outcome: RecordOutcome::Duplicate,
                    record: stored.clone(),
                    group: None,
                });
            }
            job.batches.insert(seq, record.clone());
            job.succeeded += record.succeeded;
            job.failed += record.failed;
            Ok(Recorded {
                outcome: RecordOutcome::Recorded,
                record: record.clone(),
                group: None,
            })
        })
    }

    async fn batch_record(
        &self,
        job_id: &str,
        seq: u64,
    ) -> Result<Option<BatchRecord>, JobStoreError> {
        self.with_job(job_id, |job| Ok(job.batches.get(&seq).cloned()))
    }

    async fn batch_records(
        &self,
        job_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, BatchRecord)>, JobStoreError> {
        self.with_job(job_id, |job| {
            Ok(job
                .batches
                .range(from..to.max(from))
                .map(|(seq, r)| (*seq, r.clone()))
                .collect())
        })
    }

    async fn progress(&self, job_id: &str) -> Result<Progress, JobStoreError> {
        self.with_job(job_id, |job| {
            Ok(Progress {
                status: job.record.status,
                listing: job.record.listing,
                items_sent: job.record.checkpoint.items_sent,
                batches_done: match job.record.listing {
                    Some(totals) => job.batches.range(..totals.batches).count() as u64,
                    None => job.batches.len() as u64,
                },
                succeeded: job.succeeded,
                failed: job.failed,
            })
        })
    }

    async fn claim_finalization(&self, job_id: &str) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            if job.record.status == JobStatus::Running && job.record.listing.is_some() {
                job.record.status = JobStatus::Finalizing;
                Ok(true)
            } else {
                Ok(false)
            }
        })
    }

    async fn active_jobs(&self) -> Result<Vec<String>, JobStoreError> {
        let mut ids: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, job)| !job.record.status.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn forget_active(&self, _job_id: &str) -> Result<(), JobStoreError> {
        Ok(()) // active_jobs reads the statuses themselves
    }

    async fn note_progress(
        &self,
        job_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<u64, JobStoreError> {
        self.with_job(job_id, |job| match &job.swept {
            Some((seen, since)) if seen == fingerprint => Ok(*since),
            _ => {
                job.swept = Some((fingerprint.to_owned(), now_ms));
                Ok(now_ms)
            }
        })
    }

    async fn flag_input_changed(&self, job_id: &str, seq: u64) -> Result<(), JobStoreError> {
        self.with_job(job_id, |job| {
            job.record.input_changed.get_or_insert(seq);
            Ok(())
        })
    }

    async fn finish(&self, job_id: &str, status: TerminalStatus) -> Result<bool, JobStoreError> {
        self.with_job(job_id, |job| {
            let target = JobStatus::from(status);
            match job.record.status {
                JobStatus::Finalizing => {
                    job.record.status = target;
                    Ok(true)
                }
                s if s == target => Ok(false),
                s => Err(conflict(
                    job_id,
                    format!("cannot move from {} to {}", s.as_str(), target.as_str()),
                )),
            }
        })
    }
}
