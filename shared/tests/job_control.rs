//! Operating jobs, on the embedded backends (with the persistent job store) and through moto: a job's
//! description follows a scripted run step by step with its true counts, `recent_jobs` lists the newest
//! first, and the persistent store brings a job back in another store (another process's) as it was left.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{BUCKET, Env, csv_object, csv_spec, fast_config};
use dmap_core::Deps;
use dmap_core::clock::now_ms;
use dmap_core::coordinator::{ListingOutcome, Rerun, run_listing, start_or_resume};
use dmap_core::describe::{BatchesView, ItemsView, JobDescription, describe};
use dmap_core::embedded::MemoryJobStore;
use dmap_core::finalizer::{FinalizerConfig, finalize};
use dmap_core::outcome::JobStatus;
use dmap_core::ports::{JobRecord, JobStore, ReceivedMessage};
use dmap_core::spec::JobSpec;
use dmap_core::worker::{self, WorkerConfig};
use dmap_emulator as emulator;
use serde_json::json;

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
        .record_batch(&job_id, 99, &left_batches[0].1)
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
    next.record_batch(&job_id, seq, &record).await.unwrap();
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
