//! Test helpers: an embedded environment in a temp dir, object generators, and wrappers that count or
//! inject faults around any port.

#![allow(dead_code)]

pub mod failure_store;
pub mod faults;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dmap_core::Deps;
use dmap_core::embedded::{EmbeddedQueues, LocalDirStore};
use dmap_core::finalizer::{FinalizerConfig, finalize};
use dmap_core::message::FinalizeMessage;
use dmap_core::ports::{
    BatchQueue, ListPage, ObjectReader, ObjectStore, OutgoingMessage, QueueDepth, QueueError,
    ReceivedMessage, SendFailure, StoreError,
};
use dmap_core::runner::{self, RunReport, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_core::worker::{self, WorkerConfig};

pub const BUCKET: &str = "data";

/// A suite's size: `full` (the size it was written for) when `DMAP_TEST_FULL` is set, else `ci`, a size that
/// still crosses the same page, batch and segment boundaries but keeps CI's run of every suite inside its
/// budget. `DMAP_TEST_FULL=1 scripts/test` runs them all at full size.
pub fn size(full: usize, ci: usize) -> usize {
    if std::env::var_os("DMAP_TEST_FULL").is_some() {
        full
    } else {
        ci
    }
}

/// An object store that counts puts per key, can throttle reads of chosen keys forever, and notes the most
/// reads in flight at once (each read held for `read_delay`, so concurrency shows).
pub struct TestStore {
    pub inner: LocalDirStore,
    pub puts: Mutex<HashMap<String, u32>>,
    pub throttled_keys: Mutex<HashSet<String>>,
    /// Keys whose next read is throttled, once.
    pub throttled_once: Mutex<HashSet<String>>,
    pub read_delay: Mutex<Duration>,
    /// Reads in flight now, and the most seen at once.
    pub reads: Mutex<(usize, usize)>,
    /// Reads started, by the name the request meter would count each under (a repeat is a retry).
    pub reads_as: Mutex<HashMap<String, u32>>,
}

impl TestStore {
    pub fn puts_of(&self, key_suffix: &str) -> u32 {
        let puts = self.puts.lock().unwrap();
        puts.iter()
            .filter(|(k, _)| k.ends_with(key_suffix))
            .map(|(_, n)| n)
            .sum()
    }
}

#[async_trait]
impl ObjectStore for TestStore {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.inner
            .list_page(bucket, prefix, start_after, continuation)
            .await
    }
    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        *self
            .reads_as
            .lock()
            .unwrap()
            .entry(dmap_core::usage::counted_as("S3.GetObject").into_owned())
            .or_default() += 1;
        if self.throttled_keys.lock().unwrap().contains(key)
            || self.throttled_once.lock().unwrap().remove(key)
        {
            return Err(StoreError::Throttled);
        }
        {
            let mut reads = self.reads.lock().unwrap();
            reads.0 += 1;
            reads.1 = reads.1.max(reads.0);
        }
        let delay = *self.read_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let body = self.inner.get_from(bucket, key, offset).await;
        self.reads.lock().unwrap().0 -= 1;
        body
    }
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        *self.puts.lock().unwrap().entry(key.to_owned()).or_default() += 1;
        self.inner.put(bucket, key, body).await
    }
}

/// A queue that refuses every entry the first time it is sent (as SendMessageBatch does under load, with 200).
pub struct RefusingQueue {
    pub inner: Arc<dyn BatchQueue>,
    pub seen: Mutex<HashSet<String>>,
    pub refused: Mutex<u32>,
}

#[async_trait]
impl BatchQueue for RefusingQueue {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let mut accepted = Vec::new();
        let mut failures = Vec::new();
        for m in messages {
            if self.seen.lock().unwrap().insert(m.body.clone()) {
                *self.refused.lock().unwrap() += 1;
                failures.push(SendFailure {
                    id: m.id.clone(),
                    code: "InternalError".into(),
                    message: "try again".into(),
                    sender_fault: false,
                });
            } else {
                accepted.push(m.clone());
            }
        }
        failures.extend(self.inner.send_batch(&accepted).await?);
        Ok(failures)
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt_handle).await
    }
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.inner.change_visibility(receipt_handle, timeout).await
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.depth().await
    }
}

/// Everything one embedded run needs, in a temp dir of its own.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<TestStore>,
    pub deps: Deps,
}

impl Env {
    pub fn new(config: &RunnerConfig) -> Self {
        Self::with_data(tempfile::tempdir().expect("tempdir"), config)
    }

    /// An environment over an existing data directory (sharing one generated dataset across runs).
    pub fn with_data(dir: tempfile::TempDir, config: &RunnerConfig) -> Self {
        let inner = LocalDirStore::new(dir.path());
        inner.create_bucket(BUCKET).expect("bucket");
        let store = Arc::new(TestStore {
            inner,
            puts: Mutex::default(),
            throttled_keys: Mutex::default(),
            throttled_once: Mutex::default(),
            read_delay: Mutex::default(),
            reads: Mutex::default(),
            reads_as: Mutex::default(),
        });
        let deps = Deps::embedded(
            store.clone(),
            EmbeddedQueues {
                visibility_timeout: config.visibility_timeout,
                max_receive_count: config.max_receive_count,
                backlog_limit: None,
            },
        );
        Self { dir, store, deps }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, key: &str, body: impl AsRef<[u8]>) {
        let path = self.path().join(BUCKET).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    pub fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.path().join(BUCKET).join(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    pub async fn run(&self, spec: &serde_json::Value, config: &RunnerConfig) -> RunReport {
        self.try_run(spec, config).await.expect("the job runs")
    }

    pub async fn try_run(
        &self,
        spec: &serde_json::Value,
        config: &RunnerConfig,
    ) -> Result<RunReport, dmap_core::PipelineError> {
        let job = JobSpec::parse(spec.to_string().as_bytes())?;
        runner::run(&self.deps, job, config, &|_| {}).await
    }

    /// manifest.json, result.json and failed.jsonl of a finished run, as bytes.
    pub fn outputs(&self, report: &RunReport) -> [Vec<u8>; 3] {
        let m = &report.manifest;
        [
            self.read(&m.result.replace("result.json", "manifest.json")),
            self.read(&m.result),
            self.read(&m.failures),
        ]
    }
}

/// Rows as a plain CSV (the sequential pass reads it) and as an awkward one: a byte order mark, CRLF line ends,
/// quoted fields holding commas, quotes and newlines, blank lines, and ragged rows, whose lines are returned.
pub fn awkward_csv(rows: usize) -> (String, String, Vec<u64>) {
    let mut plain = String::from("Station ☀,Note,Température,Pluie\n");
    let mut awkward = String::from("\u{feff}Station ☀,Note,Température,Pluie\r\n");
    let mut line = 2u64;
    let mut ragged = Vec::new();
    for i in 0..rows {
        let station = format!("S{}", i % 5);
        let temp = format!("{}.{}", i % 37, i % 10);
        let rain = if i % 4 == 0 {
            String::new()
        } else {
            format!("-{}", i % 3)
        };
        plain.push_str(&format!("{station},n,{temp},{rain}\n"));
        let note = match i % 3 {
            0 => "\"a, \"\"quoted\"\"\nnote\nover three lines\"".to_owned(),
            1 => "plain".to_owned(),
            _ => "\"\"".to_owned(),
        };
        awkward.push_str(&format!("{station},{note},{temp},{rain}\r\n"));
        line += 1 + note.matches('\n').count() as u64;
        if i % 10 == 9 {
            awkward.push_str("\r\n");
            line += 1;
        }
        if i % 50 == 25 {
            awkward.push_str("S9,too,few\r\n");
            ragged.push(line);
            line += 1;
        }
    }
    (plain, awkward, ragged)
}

/// Delivers every message of the work queue to the worker, then every finalize trigger to the finalizer, in
/// this task (no runner): the batches handled.
pub async fn drain(env: &Env) -> u64 {
    let handled = drain_work(env, WorkerConfig::default()).await;
    for m in env
        .deps
        .finalize_queue
        .receive(10, Duration::from_millis(50))
        .await
        .unwrap()
    {
        let trigger = FinalizeMessage::from_body(&m.body).unwrap();
        finalize(&env.deps, FinalizerConfig::default(), &trigger.job_id)
            .await
            .unwrap();
        env.deps
            .finalize_queue
            .delete(&m.receipt_handle)
            .await
            .unwrap();
    }
    handled
}

/// Delivers every message of the work queue to the worker (with `config`), in this task: the batches handled.
pub async fn drain_work(env: &Env, config: WorkerConfig) -> u64 {
    let mut handled = 0;
    loop {
        let got = env
            .deps
            .work_queue
            .receive(10, Duration::from_millis(50))
            .await
            .unwrap();
        if got.is_empty() {
            return handled;
        }
        for m in got {
            let message = worker::parse_message(&m.body).unwrap();
            worker::handle(&env.deps, config, &message).await.unwrap();
            env.deps.work_queue.delete(&m.receipt_handle).await.unwrap();
            handled += 1;
        }
    }
}

/// Takes every message of the finalize queue off it, in this task.
pub async fn take_finalize_messages(env: &Env) -> Vec<FinalizeMessage> {
    let mut all = Vec::new();
    loop {
        let got = env
            .deps
            .finalize_queue
            .receive(10, Duration::from_millis(50))
            .await
            .unwrap();
        if got.is_empty() {
            return all;
        }
        for m in got {
            env.deps
                .finalize_queue
                .delete(&m.receipt_handle)
                .await
                .unwrap();
            all.push(FinalizeMessage::from_body(&m.body).unwrap());
        }
    }
}

/// A small weather-like CSV for object `i`: a header and a few rows with some empty cells.
pub fn csv_object(i: usize) -> String {
    let mut s = String::from("STATION,DATE,TMAX,TMIN\n");
    for day in 0..(i % 4 + 1) {
        let tmax = if (i + day).is_multiple_of(9) {
            String::new()
        } else {
            format!("{}.{}", (i * 7 + day) % 40, i % 10)
        };
        s.push_str(&format!(
            "S{:02},2026-01-{:02},{tmax},-{}.5\n",
            i % 13,
            day + 1,
            (i + day) % 11
        ));
    }
    s
}

pub fn csv_spec(prefix: &str, max_items: u32) -> serde_json::Value {
    serde_json::json!({
        "job_id": format!("job-{}-{max_items}", prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
        "item_reader": { "bucket": BUCKET, "prefix": prefix, "suffix": ".csv" },
        "item_batcher": { "max_items_per_batch": max_items },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN"] },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    })
}

pub fn fast_config() -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        visibility_timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(10),
        receive_wait: Duration::from_millis(10),
        ..RunnerConfig::default()
    }
}

/// Starts (or resumes) the job and lists it one page per hop, as a Lambda coordinator out of time after every
/// page does, until the listing is complete; the hops it took.
pub async fn list_in_hops(deps: &Deps, job: &dmap_core::spec::Job) -> u32 {
    use dmap_core::coordinator::{Rerun, run_listing, start_or_resume};
    let mut record = start_or_resume(deps, job.clone(), Rerun::Resume)
        .await
        .unwrap();
    let mut hops = 0;
    while record.listing.is_none() {
        run_listing(deps, &record, &|| false).await.unwrap();
        record = deps.jobs.get_job(&job.job_id).await.unwrap().unwrap();
        hops += 1;
    }
    hops
}
