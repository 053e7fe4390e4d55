//! Operating jobs, on the embedded backends (with the persistent job store) and through moto: a job's
//! description follows a scripted run step by step with its true counts, `recent_jobs` lists the newest
//! first, and the persistent store brings a job back in another store (another process's) as it was left.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use common::faults::{Faults, FaultyJobStore, NO_FAULTS};
use common::{BUCKET, Env, csv_object, csv_spec, fast_config, size};
use dmap_core::Deps;
use dmap_core::clock::now_ms;
use dmap_core::coordinator::{ListingOutcome, Rerun, run_listing, start_or_resume};
use dmap_core::describe::{BatchesView, ItemsView, JobDescription, describe};
use dmap_core::embedded::MemoryJobStore;
use dmap_core::finalizer::{FinalizerConfig, finalize};
use dmap_core::outcome::{JobStatus, TerminalStatus};
use dmap_core::ports::{
    ControlChange, JobRecord, JobStore, ListPage, ObjectReader, ObjectStore, ReceivedMessage,
    SettingsUpdate, StoreError, read_all,
};
use dmap_core::runner::{self, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_core::usage::Usage;
use dmap_core::worker::{self, WorkerConfig};
use dmap_emulator as emulator;
use serde_json::{Value, json};

/// Good objects and broken ones (a header without the aggregated columns: each fails its item).
const GOOD: usize = 20;
const BROKEN: usize = 2;
const PER_BATCH: u32 = 4;

async fn put_dataset(deps: &Deps, bucket: &str, prefix: &str) {
    for i in 0..GOOD {
        let key = format!("{prefix}/k{i:02}.csv");
        deps.objects
            .put(bucket, &key, csv_object(i).into_bytes())
            .await
            .unwrap();
    }
    for i in 0..BROKEN {
        let key = format!("{prefix}/k{i:02}-broken.csv");
        deps.objects
            .put(bucket, &key, b"ID,TMAX,TMIN\n1,2,3\n".to_vec())
            .await
            .unwrap();
    }
}

async fn described(deps: &Deps, job_id: &str) -> JobDescription {
    describe(deps.jobs.as_ref(), job_id, now_ms())
        .await
        .unwrap()
        .expect("the job exists")
}

async fn receive_all(deps: &Deps, n: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    for _ in 0..50 {
        if got.len() >= n {
            break;
        }
        got.extend(
            deps.work_queue
                .receive(10, Duration::from_secs(30))
                .await
                .unwrap(),
        );
    }
    assert_eq!(got.len(), n, "every batch was sent once");
    got
}

/// Starts a job, lists it, processes its batches one by one and finalizes it, checking after every step that
/// the description says what is true at that point: the items listed, succeeded, failed and pending, the
/// batches sent and done, the status and the times.
async fn status_follows_a_scripted_run(deps: &Deps, bucket: &str, prefix: &str) {
    put_dataset(deps, bucket, prefix).await;
    let mut spec = csv_spec(&format!("{prefix}/"), PER_BATCH);
    spec["item_reader"]["bucket"] = json!(bucket);
    spec["result_writer"]["bucket"] = json!(bucket);
    spec["tolerated_failure_count"] = json!(BROKEN);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    let before = now_ms();
    let record = start_or_resume(deps, job, Rerun::Resume).await.unwrap();

    let d = described(deps, &job_id).await;
    assert_eq!(d.status, JobStatus::Running);
    assert_eq!(
        (d.items, d.batches, d.listing_complete),
        (
            ItemsView {
                listed: 0,
                total: None,
                succeeded: 0,
                failed: 0,
                pending: 0
            },
            BatchesView {
                sent: 0,
                total: None,
                done: 0
            },
            false
        )
    );
    assert!(d.started_at_ms >= before && d.ended_at_ms.is_none() && d.eta_seconds.is_none());

    let listed = run_listing(deps, &record, &|| true).await.unwrap();
    assert!(matches!(listed, ListingOutcome::Complete { .. }));
    let items = (GOOD + BROKEN) as u64;
    let batches = items.div_ceil(PER_BATCH.into());
    let d = described(deps, &job_id).await;
    assert_eq!(
        (d.status, d.items, d.batches),
        (
            JobStatus::Running,
            ItemsView {
                listed: items,
                total: Some(items),
                succeeded: 0,
                failed: 0,
                pending: items
            },
            BatchesView {
                sent: batches,
                total: Some(batches),
                done: 0
            }
        )
    );

    let messages = receive_all(deps, batches as usize).await;
    let (mut succeeded, mut failed) = (0, 0);
    for (done, m) in messages.iter().enumerate() {
        let message = worker::parse_message(&m.body).unwrap();
        let handled = worker::handle(deps, WorkerConfig::default(), &message)
            .await
            .unwrap();
        // What this batch truly holds: its broken objects fail, the others succeed.
        let broken = message
            .items
            .iter()
            .filter(|item| item.key().ends_with("-broken.csv"))
            .count() as u64;
        assert_eq!(
            (handled.record.succeeded, handled.record.failed),
            (message.items.len() as u64 - broken, broken)
        );
        succeeded += handled.record.succeeded;
        failed += handled.record.failed;
        let d = described(deps, &job_id).await;
        let last = done + 1 == messages.len();
        assert_eq!(
            (d.items, d.batches.done),
            (
                ItemsView {
                    listed: items,
                    total: Some(items),
                    succeeded,
                    failed,
                    pending: items - succeeded - failed
                },
                done as u64 + 1
            ),
            "after batch {done}"
        );
        // The last batch's recorder claims the job for the finalizer.
        let expected = if last {
            JobStatus::Finalizing
        } else {
            JobStatus::Running
        };
        assert_eq!(d.status, expected, "after batch {done}");
        assert_eq!(d.eta_seconds.is_some(), !last && d.items_per_second > 0.0);
    }
    assert_eq!((succeeded, failed), (GOOD as u64, BROKEN as u64));

    let finalized = finalize(deps, FinalizerConfig::default(), &job_id)
        .await
        .unwrap();
    let d = described(deps, &job_id).await;
    assert_eq!(d.status, JobStatus::Succeeded);
    assert_eq!(
        (d.items.succeeded, d.items.failed, d.items.pending),
        (
            finalized.manifest.items.succeeded,
            finalized.manifest.items.failed,
            0
        )
    );
    let ended = d.ended_at_ms.expect("an end time");
    assert!(ended >= d.started_at_ms && ended <= now_ms());
    assert_eq!(d.elapsed_seconds, (ended - d.started_at_ms) as f64 / 1000.0);
    assert_eq!(d.eta_seconds, None);
    // A terminal job's elapsed time stays put.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        described(deps, &job_id).await.elapsed_seconds,
        d.elapsed_seconds
    );
}

fn persistent(env: &mut Env, dir: &std::path::Path) {
    env.deps.jobs = Arc::new(MemoryJobStore::persistent(dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_scripted_run_on_the_embedded_backends() {
    let mut env = Env::new(&fast_config());
    let journals = env.path().join(".dmap/jobs");
    persistent(&mut env, &journals);
    status_follows_a_scripted_run(&env.deps, BUCKET, "scripted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_a_scripted_run_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "st").await;
    status_follows_a_scripted_run(&deps, &bucket, "scripted").await;
}

/// Creates jobs `ids` in order (each a millisecond after the last) and checks `recent_jobs`.
async fn recent_jobs_come_newest_first(jobs: &dyn JobStore) {
    let ids = ["ls-a", "ls-b", "ls-c", "ls-d"];
    for (i, id) in ids.iter().enumerate() {
        let spec = json!({
            "job_id": id,
            "item_reader": { "kind": "inline", "items": [1] },
            "processor": { "kind": "count" },
            "result_writer": { "bucket": BUCKET, "prefix": "out/" }
        });
        let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
        jobs.create_job(&JobRecord::new(job, 1_000 + i as u64))
            .await
            .unwrap();
    }
    assert_eq!(
        jobs.recent_jobs(10).await.unwrap(),
        ["ls-d", "ls-c", "ls-b", "ls-a"]
    );
    assert_eq!(jobs.recent_jobs(2).await.unwrap(), ["ls-d", "ls-c"]);
}

#[tokio::test]
async fn recent_jobs_come_newest_first_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    recent_jobs_come_newest_first(&MemoryJobStore::new()).await;
    recent_jobs_come_newest_first(&MemoryJobStore::persistent(dir.path())).await;
    // And from another store over the same journals, as `dmap ls` in another process.
    assert_eq!(
        MemoryJobStore::persistent(dir.path())
            .recent_jobs(3)
            .await
            .unwrap(),
        ["ls-d", "ls-c", "ls-b"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_jobs_come_newest_first_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    recent_jobs_come_newest_first(deps.jobs.as_ref()).await;
}

/// A job left halfway by one store is found as it was by another over the same folder (a new process), which
/// can then go on writing it; a line a crash cut short is ignored and cut off; two writers are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_job_is_found_as_it_was_left_by_another_store() {
    let mut env = Env::new(&fast_config());
    let journals = env.path().join(".dmap/jobs");
    persistent(&mut env, &journals);
    let deps = &env.deps;
    put_dataset(deps, BUCKET, "left").await;
    let job = JobSpec::parse(csv_spec("left/", PER_BATCH).to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    let record = start_or_resume(deps, job, Rerun::Resume).await.unwrap();
    run_listing(deps, &record, &|| true).await.unwrap();
    for m in receive_all(deps, 6).await.iter().take(3) {
        worker::handle(
            deps,
            WorkerConfig::default(),
            &worker::parse_message(&m.body).unwrap(),
        )
        .await
        .unwrap();
    }
    let left = described(deps, &job_id).await;
    let left_record = deps.jobs.get_job(&job_id).await.unwrap().unwrap();
    let left_batches = deps.jobs.batch_records(&job_id, 0, 100).await.unwrap();
    assert_eq!(left_batches.len(), 3);

    // A reader sees what the writer wrote, and follows it as it goes on.
    let reader = MemoryJobStore::persistent(&journals);
    assert_eq!(
        reader.get_job(&job_id).await.unwrap(),
        Some(left_record.clone())
    );
    assert_eq!(
        describe(&reader, &job_id, now_ms())
            .await
            .unwrap()
            .unwrap()
            .items,
        left.items
    );
    assert_eq!(
        reader.batch_records(&job_id, 0, 100).await.unwrap(),
        left_batches
    );
    // It cannot write while the writer holds the job.
    let refused = reader
        .record_batch(&job_id, 99, &left_batches[0].1, &Usage::NONE)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("another process"), "{refused}");

    // The writer goes away mid-line, as a crash would leave it.
    drop(env.deps);
    let journal = journals.join(format!("{job_id}.jsonl"));
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(b"{\"change\":\"batch\",\"seq\":7,\"rec");
    std::fs::write(&journal, &bytes).unwrap();

    let next = MemoryJobStore::persistent(&journals);
    assert_eq!(next.get_job(&job_id).await.unwrap(), Some(left_record));
    assert_eq!(
        next.batch_records(&job_id, 0, 100).await.unwrap(),
        left_batches
    );
    let (seq, record) = (left_batches[0].0 + 100, left_batches[0].1.clone());
    next.record_batch(&job_id, seq, &record, &Usage::NONE)
        .await
        .unwrap();
    // Written after the cut: a third store reads every line.
    let third = MemoryJobStore::persistent(&journals);
    assert_eq!(
        third.batch_records(&job_id, 0, 1000).await.unwrap().len(),
        4
    );
    let p = third.progress(&job_id).await.unwrap();
    assert_eq!(
        p.succeeded + p.failed,
        left.items.succeeded + left.items.failed + record.succeeded + record.failed
    );
}

/// An object store that holds every read for `delay`, and counts reads: in flight now, the most at once
/// since the last reset, all of them.
struct Gauge {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
    now: AtomicUsize,
    peak: AtomicUsize,
    reads: AtomicU64,
}

impl Gauge {
    fn wrap(deps: &mut Deps, delay: Duration) -> Arc<Self> {
        let gauge = Arc::new(Self {
            inner: deps.objects.clone(),
            delay,
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
        });
        deps.objects = gauge.clone();
        gauge
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// The most reads at once since the last call.
    fn take_peak(&self) -> usize {
        self.peak
            .swap(self.now.load(Ordering::SeqCst), Ordering::SeqCst)
    }

    async fn wait_for_reads(&self, n: u64) {
        let start = Instant::now();
        while self.reads() < n {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "reads stalled at {}",
                self.reads()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait]
impl ObjectStore for Gauge {
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
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let read = self.inner.get_from(bucket, key, offset).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        read
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put(bucket, key, body).await
    }
}

/// `objects` small objects under `<prefix>/`, and a `count` job over them, one object a batch unless `per_batch`.
async fn count_job(
    deps: &Deps,
    bucket: &str,
    prefix: &str,
    objects: usize,
    per_batch: u32,
) -> Value {
    for i in 0..objects {
        deps.objects
            .put(
                bucket,
                &format!("{prefix}/o{i:04}"),
                csv_object(i).into_bytes(),
            )
            .await
            .unwrap();
    }
    json!({
        "job_id": format!("{prefix}-job"),
        "item_reader": { "bucket": bucket, "prefix": format!("{prefix}/") },
        "item_batcher": { "max_items_per_batch": per_batch },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    })
}

fn pool(concurrency: usize, visibility: Duration) -> RunnerConfig {
    RunnerConfig {
        concurrency,
        // One message a delivery: a worker has one batch in flight.
        receive_batch_size: 1,
        visibility_timeout: visibility,
        poll_interval: Duration::from_millis(20),
        receive_wait: Duration::from_millis(20),
        worker: WorkerConfig {
            item_concurrency: 1,
            ..WorkerConfig::default()
        },
        ..RunnerConfig::default()
    }
}

/// `max_concurrency` 3 holds under 16 workers, and `update` to 6 takes effect while the job runs.
async fn max_concurrency_holds_and_changes_mid_run(
    mut deps: Deps,
    control: Arc<dyn JobStore>,
    bucket: &str,
    config: RunnerConfig,
    read_delay: Duration,
) {
    const OBJECTS: usize = 160;
    let mut spec = count_job(&deps, bucket, "limited", OBJECTS, 1).await;
    spec["max_concurrency"] = json!(3);
    // Reads held long enough that a batch's time is its read's: reads at once are batches at once.
    let gauge = Gauge::wrap(&mut deps, read_delay);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    let run = tokio::spawn(async move { runner::run(&deps, job, &config, &|_| {}).await });

    gauge.wait_for_reads(40).await;
    let limited = gauge.take_peak();
    let changed = control
        .control(
            &job_id,
            &ControlChange::Update(SettingsUpdate {
                max_concurrency: Some(6),
                ..SettingsUpdate::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(changed.max_concurrency(), Some(6));
    // Workers waiting for a slot read the limit again within half a second; then the peak over 40 reads.
    tokio::time::sleep(Duration::from_millis(600)).await;
    gauge.take_peak();
    let reads = gauge.reads();
    assert!(
        reads + 40 < OBJECTS as u64,
        "the job ran ahead of the test: {reads} reads"
    );
    gauge.wait_for_reads(reads + 40).await;
    let raised = gauge.take_peak();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.manifest.items.succeeded, OBJECTS as u64);
    assert!(
        (2..=3).contains(&limited),
        "16 workers, at most 3 batches at once (and the limit, not the workers, held them): {limited}"
    );
    assert!(
        (4..=6).contains(&raised),
        "after the update, at most 6 at once and more than 3: {raised}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_holds_and_changes_mid_run_on_the_embedded_backends() {
    let mut env = Env::new(&fast_config());
    let journals = env.path().join(".dmap/jobs");
    persistent(&mut env, &journals);
    // `dmap update` from another process: a store of its own over the same journals.
    let control = Arc::new(MemoryJobStore::persistent(&journals));
    max_concurrency_holds_and_changes_mid_run(
        env.deps.clone(),
        control,
        BUCKET,
        pool(16, Duration::from_secs(2)),
        Duration::from_millis(60),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_holds_and_changes_mid_run_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "mc").await;
    let mut config = pool(16, Duration::from_secs(30));
    config.receive_wait = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(200);
    max_concurrency_holds_and_changes_mid_run(
        deps.clone(),
        deps.jobs.clone(),
        &bucket,
        config,
        Duration::from_millis(250),
    )
    .await;
}

/// An abort during a large job: one terminal status, ABORTED; the outputs count exactly the batches recorded;
/// after the abort is acknowledged, only the batches in flight are processed.
async fn an_abort_ends_a_large_job(
    mut deps: Deps,
    control: Arc<dyn JobStore>,
    bucket: &str,
    config: RunnerConfig,
) {
    // The abort lands at the 60th read with four batches in flight: 200 leave most of the job unread.
    const OBJECTS: usize = 200;
    let spec = count_job(&deps, bucket, "aborted", OBJECTS, 2).await;
    let gauge = Gauge::wrap(&mut deps, Duration::from_millis(20));
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    // Batches in flight at most: each worker's deliveries are handled at once.
    let in_flight = (config.concurrency * config.receive_batch_size) as u64;
    let running = deps.clone();
    let run = tokio::spawn(async move { runner::run(&running, job, &config, &|_| {}).await });

    gauge.wait_for_reads(60).await;
    let acknowledged = control
        .control(&job_id, &ControlChange::Abort { at_ms: now_ms() })
        .await
        .unwrap();
    assert!(acknowledged.abort_requested());
    let reads_at_abort = gauge.reads();
    let report = run.await.unwrap().unwrap();
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Aborted);

    let records = deps.jobs.batch_records(&job_id, 0, 10_000).await.unwrap();
    let recorded: u64 = records.iter().map(|(_, r)| r.succeeded + r.failed).sum();
    assert_eq!(
        m.items.total, recorded,
        "the outputs count what was recorded"
    );
    assert_eq!(m.batches.total, records.len() as u64);
    assert!(
        m.items.total < OBJECTS as u64 && m.items.total >= 58,
        "{:?}",
        m.items
    );
    let p = deps.jobs.progress(&job_id).await.unwrap();
    assert_eq!(
        (p.status, p.succeeded + p.failed),
        (JobStatus::Aborted, recorded)
    );
    // Only the batches in flight at the abort read after it, two objects a batch.
    let after = gauge.reads() - reads_at_abort;
    assert!(after <= 2 * in_flight, "{after} reads after the abort");
    let result = read_all(deps.objects.as_ref(), bucket, &m.result)
        .await
        .unwrap();
    let result: Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(result["objects"], recorded, "{result}");
    let d = described(&deps, &job_id).await;
    assert_eq!(d.status, JobStatus::Aborted);
    assert!(d.ended_at_ms.is_some());
    // One terminal status: no abort, update or second finalize moves it.
    let again = control
        .control(&job_id, &ControlChange::Abort { at_ms: now_ms() })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("only a RUNNING job"), "{again}");
    let refinalized = finalize(&deps, FinalizerConfig::default(), &job_id)
        .await
        .unwrap();
    assert!(!refinalized.wrote);
    assert_eq!(refinalized.manifest, *m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_ends_a_large_job_on_the_embedded_backends() {
    let mut env = Env::new(&fast_config());
    let journals = env.path().join(".dmap/jobs");
    persistent(&mut env, &journals);
    let control = Arc::new(MemoryJobStore::persistent(&journals));
    an_abort_ends_a_large_job(
        env.deps.clone(),
        control,
        BUCKET,
        pool(4, Duration::from_secs(2)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_ends_a_large_job_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "ab").await;
    let mut config = pool(4, Duration::from_secs(30));
    config.receive_wait = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(200);
    an_abort_ends_a_large_job(deps.clone(), deps.jobs.clone(), &bucket, config).await;
}

/// Fair share: with a 100,000-item job running, a 100-item job started after it finishes before the big one
/// is a quarter done: the queue delivers the jobs' batches in turns, not the big one's backlog first.
async fn a_small_job_is_not_held_behind_a_big_ones_backlog(
    mut deps: Deps,
    bucket: &str,
    config: RunnerConfig,
    record_latency: Duration,
) {
    // The small job ends with under 2,000 of the big one's items done, whatever its size: a quarter of it
    // leaves a wide margin at CI's size too.
    let big_items = size(100_000, 30_000);
    // Each record takes a while (a slow store): the big job's backlog builds as its listing runs ahead.
    let faults = Faults::new(0, NO_FAULTS);
    faults.slow("record_batch", record_latency);
    deps.jobs = Arc::new(FaultyJobStore {
        inner: deps.jobs.clone(),
        faults,
    });
    let rows = |n: usize| {
        let mut csv = String::from("station,v\n");
        for i in 0..n {
            csv.push_str(&format!("s{},{}\n", i % 13, i % 97));
        }
        csv.into_bytes()
    };
    deps.objects
        .put(bucket, "fair/big.csv", rows(big_items))
        .await
        .unwrap();
    deps.objects
        .put(bucket, "fair/small.csv", rows(100))
        .await
        .unwrap();
    let spec = |id: &str, key: &str, per_batch: u32| {
        json!({
            "job_id": id,
            "item_reader": { "kind": "s3_object", "bucket": bucket, "key": key, "format": "csv" },
            "item_batcher": { "max_items_per_batch": per_batch },
            "processor": { "kind": "csv_aggregate", "group_by": "station", "columns": ["v"] },
            "result_writer": { "bucket": bucket, "prefix": "results/" }
        })
    };
    let big = JobSpec::parse(spec("fair-big", "fair/big.csv", 100).to_string().as_bytes()).unwrap();
    let small = JobSpec::parse(
        spec("fair-small", "fair/small.csv", 100)
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let (big_deps, big_config) = (deps.clone(), config.clone());
    let big_run =
        tokio::spawn(async move { runner::run(&big_deps, big, &big_config, &|_| {}).await });
    // The small job starts once the big one runs and has a backlog of a third of its items.
    let start = Instant::now();
    loop {
        let p = deps.jobs.progress("fair-big").await;
        if let Ok(p) = p
            && p.batches_done > 0
            && p.items_sent >= big_items as u64 / 3
        {
            eprintln!(
                "fair share: the small job starts with the big one {} of {big_items} items done, {} listed",
                p.succeeded + p.failed,
                p.items_sent
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the big job did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let small_report = runner::run(&deps, small, &config, &|_| {}).await.unwrap();
    let big_then = deps.jobs.progress("fair-big").await.unwrap();
    assert_eq!(small_report.manifest.items.succeeded, 100);
    let big_done = big_then.succeeded + big_then.failed;
    eprintln!(
        "fair share: the small job ended with the big one {big_done} of {big_items} items done"
    );
    assert!(
        big_done < big_items as u64 / 4,
        "the small job ended with the big one {big_done} of {big_items} items done"
    );
    // The big job has shown what it had to: it is aborted rather than waited for.
    deps.jobs
        .control("fair-big", &ControlChange::Abort { at_ms: now_ms() })
        .await
        .unwrap();
    let big_report = big_run.await.unwrap().unwrap();
    assert_eq!(big_report.manifest.status, TerminalStatus::Aborted);
    assert!(big_report.manifest.items.succeeded >= big_done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_job_is_not_held_behind_a_big_ones_backlog_on_the_embedded_backends() {
    let env = Env::new(&fast_config());
    let config = pool(2, Duration::from_secs(2));
    a_small_job_is_not_held_behind_a_big_ones_backlog(
        env.deps.clone(),
        BUCKET,
        config,
        Duration::from_millis(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_job_is_not_held_behind_a_big_ones_backlog_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "fair").await;
    // One worker a runner: moto lists not much faster than a worker records.
    let mut config = pool(1, Duration::from_secs(30));
    config.receive_wait = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(100);
    a_small_job_is_not_held_behind_a_big_ones_backlog(
        deps,
        &bucket,
        config,
        Duration::from_millis(30),
    )
    .await;
}
