//! The failure modes real AWS has and an emulator hides, one test each, named after the item of the hardening
//! issue it reproduces. Each drives the real handlers or the runner over the embedded backends, with a
//! fault-injecting wrapper around a port where the fault needs one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use common::faults::{Faults, FaultyJobStore, FaultyQueue, FaultyStore, NO_FAULTS};
use common::{BUCKET, Env, csv_spec, fast_config};
use dmap_core::Deps;
use dmap_core::coordinator::ListParallelism;
use dmap_core::embedded::{EmbeddedQueue, EmbeddedQueues, LocalDirStore, QueueConfig};
use dmap_core::esm::sqs_event;
use dmap_core::lambda::coordinator::Coordinator;
use dmap_core::ports::{BatchQueue, ReceivedMessage};
use serde_json::{Value, json};

/// A coordinator over the embedded backends, with a continuation queue; `faults` fails its store's calls.
struct Setup {
    _dir: tempfile::TempDir,
    faults: Arc<Faults>,
    deps: Deps,
    continuation: Arc<EmbeddedQueue>,
    coordinator: Coordinator,
}

fn setup(keys: impl IntoIterator<Item = String>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let inner = LocalDirStore::new(dir.path());
    inner.create_bucket(BUCKET).unwrap();
    for key in keys {
        let path = dir.path().join(BUCKET).join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "STATION,TMAX\nS1,1.5\n").unwrap();
    }
    let faults = Faults::new(0, NO_FAULTS);
    let store = Arc::new(FaultyStore {
        inner: Arc::new(inner),
        faults: faults.clone(),
    });
    let deps = Deps::embedded(
        store,
        EmbeddedQueues {
            visibility_timeout: Duration::from_secs(60),
            max_receive_count: 5,
            backlog_limit: None,
        },
    );
    let continuation = EmbeddedQueue::new(QueueConfig::new("continue", Duration::from_secs(60)));
    let coordinator = Coordinator {
        deps: deps.clone(),
        continuation: continuation.clone(),
        allowed_buckets: vec![BUCKET.into()],
        result_buckets: vec![BUCKET.into()],
        jobs_prefix: "jobs/".into(),
        results_prefix: "results/".into(),
        processor_functions: Vec::new(),
        function_arn_prefix: None,
        allowed_tables: Vec::new(),
        list_parallelism: ListParallelism::IN_PROCESS,
    };
    Setup {
        _dir: dir,
        faults,
        deps,
        continuation,
        coordinator,
    }
}

const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:continue";

/// Every message waiting in `queue`, received (not deleted).
async fn receive_all(queue: &dyn BatchQueue) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let got = queue.receive(10, Duration::from_millis(10)).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

fn event_of(messages: &[ReceivedMessage]) -> Value {
    let event: SqsEvent = serde_json::from_value(sqs_event(QUEUE_ARN, messages)).unwrap();
    serde_json::to_value(event).unwrap()
}

/// Hands continuation messages to the coordinator (each out of time after one page) until none is left;
/// returns how many invocations it took. A message the handler lists as failed is delivered again.
async fn follow_hand_overs(s: &Setup, limit: usize) -> usize {
    let out_of_time = || false;
    for invocation in 1..=limit {
        let Some(message) = receive_all(s.continuation.as_ref()).await.pop() else {
            return invocation - 1;
        };
        let response = s
            .coordinator
            .handle(event_of(std::slice::from_ref(&message)), &out_of_time)
            .await
            .unwrap();
        if response["batchItemFailures"] == json!([]) {
            s.continuation
                .delete(&message.receipt_handle)
                .await
                .unwrap();
        } else {
            // As the queue would after the visibility timeout.
            s.continuation
                .change_visibility(&message.receipt_handle, Duration::ZERO)
                .await
                .unwrap();
        }
    }
    panic!("the listing was still handed over after {limit} invocations");
}

fn spec(prefix: &str, suffix: &str, job_id: &str) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": BUCKET, "prefix": prefix, "suffix": suffix },
        "item_batcher": { "max_items_per_batch": 30 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    })
}

/// Item 1: a continuation that saves a checkpoint and then fails (here the next page's listing is throttled
/// after the SDK's retries) is redelivered with its old position, and must resume, not be dropped.
#[tokio::test]
async fn continuation_redelivered_after_checkpoint_resumes() {
    let s = setup((0..2500).map(|i| format!("c/k{i:04}.csv")));
    let out_of_time = || false;
    let started = s
        .coordinator
        .handle(spec("c/", ".csv", "redelivered"), &out_of_time)
        .await
        .unwrap();
    assert_eq!(started["listing"], "handed over");
    // The second hop lists page 2 and saves its checkpoint; its prefetch of page 3 (its second listing call)
    // is throttled, so the invocation fails after the checkpoint.
    s.faults.force_after("list_page", 1);
    follow_hand_overs(&s, 10).await;
    let record = s.deps.jobs.get_job("redelivered").await.unwrap().unwrap();
    let totals = record.listing.expect("the listing completed");
    assert_eq!(totals.items, 2500);
    assert_eq!(
        totals.batches,
        34 + 50,
        "the first hand-over cut 1,000 keys into 33 batches and one of 10; then 1,500 keys in 30s"
    );
}

/// Item 2: with a suffix that matches few keys among many, a hop that cuts no batch must still move the
/// listing forward, or every hop lists the same pages again until the hop limit.
#[tokio::test]
async fn sparse_suffix_listing_advances_every_hop() {
    let keys = (0..4000).map(|i| {
        if i % 1500 == 7 {
            format!("s/k{i:04}.json")
        } else {
            format!("s/k{i:04}.parquet")
        }
    });
    let s = setup(keys);
    let out_of_time = || false;
    s.coordinator
        .handle(spec("s/", ".json", "sparse"), &out_of_time)
        .await
        .unwrap();
    let hops = follow_hand_overs(&s, 20).await;
    assert!(hops <= 4, "4,000 keys are 4 pages: {hops} hand-overs");
    let record = s.deps.jobs.get_job("sparse").await.unwrap().unwrap();
    let totals = record.listing.expect("the listing completed");
    assert_eq!(totals.items, 3, "k0007, k1507 and k3007");
    // Every sent batch is on the work queue, and together they hold the three keys once each.
    let mut items: Vec<String> = receive_all(s.deps.work_queue.as_ref())
        .await
        .iter()
        .flat_map(|m| {
            let body: Value = serde_json::from_str(&m.body).unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    items.sort();
    items.dedup();
    assert_eq!(items, ["s/k0007.json", "s/k1507.json", "s/k3007.json"]);
}

/// Item 3: a result that overflows when the finalizer merges the parts fails for good; the job must end
/// FAILED with the reason in its manifest, not stay FINALIZING (or fail the run) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_merge_overflow_fails_the_job_with_the_reason() {
    let config = fast_config();
    let env = Env::new(&config);
    // Decimal's largest value: one object sums fine, two overflow.
    let huge = "79228162514264337593543950335";
    for name in ["a", "b"] {
        env.write(
            &format!("o/{name}.csv"),
            format!("STATION,TMAX\nS1,{huge}\n"),
        );
    }
    let mut spec = csv_spec("o/", 1);
    spec["processor"]["columns"] = json!(["TMAX"]);
    let report = env.try_run(&spec, &config).await.expect("the job ends");
    let manifest: Value = serde_json::from_slice(
        &env.read(&format!("results/{}/manifest.json", report.manifest.job_id)),
    )
    .unwrap();
    assert_eq!(manifest["status"], "FAILED");
    let error = manifest["error"].as_str().expect("the reason");
    assert!(
        error.contains("TMAX") && error.contains("overflows"),
        "{error}"
    );
    assert_eq!(manifest["items"]["total"], 2);
}

/// Item 3, in the worker: an item whose result overflows the batch's fails alone, instead of failing the
/// whole batch on every receive until it is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_overflows_its_batch_fails_alone() {
    let config = fast_config();
    let env = Env::new(&config);
    let huge = "79228162514264337593543950335";
    for name in ["a", "b", "c"] {
        let value = if name == "c" { "-1" } else { huge };
        env.write(
            &format!("o/{name}.csv"),
            format!("STATION,TMAX\nS1,{value}\n"),
        );
    }
    let mut spec = csv_spec("o/", 10);
    spec["processor"]["columns"] = json!(["TMAX"]);
    spec["tolerated_failure_count"] = json!(1);
    let report = env.run(&spec, &config).await;
    assert_eq!(report.stats.dead_lettered_batches, 0);
    let failed =
        String::from_utf8(env.read(&format!("results/{}/failed.jsonl", report.manifest.job_id)))
            .unwrap();
    assert_eq!(failed.lines().count(), 1, "{failed}");
    assert!(
        failed.contains("o/b.csv") && failed.contains("overflows"),
        "{failed}"
    );
    assert_eq!(
        (
            report.manifest.items.succeeded,
            report.manifest.items.failed
        ),
        (2, 1)
    );
}

/// Item 5: a batch recorded before and delivered again (its acknowledgement lost) after its object changed
/// must not be processed again, nor overwrite the part its record points to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_recorded_batch_keeps_its_part() {
    use dmap_core::coordinator::{Rerun, run_listing, start_or_resume};
    use dmap_core::finalizer::{FinalizerConfig, finalize};
    use dmap_core::spec::JobSpec;
    use dmap_core::worker::{self, WorkerConfig};

    let env = Env::new(&fast_config());
    env.write("r/a.csv", "STATION,TMAX\nS1,1.5\n");
    let mut spec = csv_spec("r/", 10);
    spec["processor"]["columns"] = json!(["TMAX"]);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    let record = start_or_resume(&env.deps, job, Rerun::Resume)
        .await
        .unwrap();
    run_listing(&env.deps, &record, &|| true).await.unwrap();
    let received = env
        .deps
        .work_queue
        .receive(1, Duration::from_millis(100))
        .await
        .unwrap();
    let message = worker::parse_message(&received[0].body).unwrap();
    worker::handle(&env.deps, WorkerConfig::default(), &message)
        .await
        .unwrap();
    // The object changes; the message comes back.
    env.write("r/a.csv", "STATION,TMAX\nS1,not a number\n");
    worker::handle(&env.deps, WorkerConfig::default(), &message)
        .await
        .unwrap();
    let done = finalize(&env.deps, FinalizerConfig::default(), &job_id)
        .await
        .expect("the parts agree with their records");
    assert_eq!(done.manifest.items.succeeded, 1);
    let result: Value =
        serde_json::from_slice(&env.read(&format!("results/{job_id}/result.json"))).unwrap();
    assert_eq!(result["groups"]["S1"]["columns"]["TMAX"]["sum"], json!(1.5));
}

/// Item 10: one throttled read (after the SDK's own retries) is retried for that item, not by sending the
/// whole batch back through the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_read_is_retried_for_the_item_alone() {
    let config = fast_config();
    let env = Env::new(&config);
    for i in 0..20 {
        env.write(&format!("t/k{i:02}.csv"), "STATION,TMAX\nS1,1.5\n");
    }
    // Every object's first read is throttled.
    env.store
        .throttled_once
        .lock()
        .unwrap()
        .extend((0..20).map(|i| format!("t/k{i:02}.csv")));
    let mut spec = csv_spec("t/", 10);
    spec["processor"]["columns"] = json!(["TMAX"]);
    let report = env.run(&spec, &config).await;
    assert_eq!(report.manifest.items.succeeded, 20);
    assert_eq!(
        report.stats.deliveries, report.manifest.batches.total,
        "no batch was delivered twice"
    );
    // The second read of each object repeats the first: a retry, not a request the item needs (the other
    // reads are the items' first and the finalizer's).
    let reads = env.store.reads_as.lock().unwrap().clone();
    assert_eq!(reads.get("S3.GetObject (retry)"), Some(&20), "{reads:?}");
    assert!(reads["S3.GetObject"] >= 20, "{reads:?}");
}

/// Item 10: a worker near its invocation's timeout starts no new message; the ones not started are reported
/// for redelivery instead of being cut off by the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_near_its_deadline_leaves_the_rest_for_redelivery() {
    use dmap_core::lambda::worker::{handle_until, worker_time_left};
    use dmap_core::worker::WorkerConfig;
    use std::time::SystemTime;

    let env = Env::new(&fast_config());
    let job = dmap_core::spec::JobSpec::parse(csv_spec("d/", 10).to_string().as_bytes()).unwrap();
    let body = dmap_core::message::BatchMessage::new(&job, 0, vec!["d/a.csv".into()]).to_body();
    let messages: Vec<ReceivedMessage> = (0..3)
        .map(|i| ReceivedMessage {
            message_id: format!("m{i}"),
            receipt_handle: format!("r{i}"),
            body: body.clone(),
            receive_count: 1,
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(sqs_event(QUEUE_ARN, &messages)).unwrap();
    let now = SystemTime::now();
    let deadline = now + Duration::from_secs(5);
    let response = handle_until(&env.deps, WorkerConfig::default(), &event, &|| {
        // A 60 s invocation that has run 55 s.
        worker_time_left(deadline, now - Duration::from_secs(55), now)
    })
    .await
    .unwrap();
    let left: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(left, ["m0", "m1", "m2"]);
    assert!(worker_time_left(now + Duration::from_secs(60), now, now));
    // An emulator's placeholder deadline (cargo lambda watch: 600,000 ms since the epoch) holds nothing back.
    assert!(worker_time_left(
        SystemTime::UNIX_EPOCH + Duration::from_secs(600),
        now,
        now
    ));
    // A short invocation still starts its messages.
    assert!(worker_time_left(now + Duration::from_secs(3), now, now));
    assert!(!worker_time_left(
        now + Duration::from_secs(3),
        now,
        now + Duration::from_millis(2500)
    ));
}

/// Item 11: an asynchronous invoke without `job_id` is retried by Lambda with the same request id; the retry
/// must resume the job the first attempt started.
#[tokio::test]
async fn a_retried_invoke_without_a_job_id_resumes_the_same_job() {
    let s = setup((0..5).map(|i| format!("i/k{i}.csv")));
    let mut spec = spec("i/", ".csv", "unused");
    spec.as_object_mut().unwrap().remove("job_id");
    let keep_going = || true;
    let first = s
        .coordinator
        .handle_invocation(spec.clone(), Some("req-1"), &keep_going)
        .await
        .unwrap();
    let retry = s
        .coordinator
        .handle_invocation(spec.clone(), Some("req-1"), &keep_going)
        .await
        .unwrap();
    assert_eq!(first["job_id"], retry["job_id"]);
    let other = s
        .coordinator
        .handle_invocation(spec, Some("req-2"), &keep_going)
        .await
        .unwrap();
    assert_ne!(
        first["job_id"], other["job_id"],
        "another invoke is another job"
    );
}

/// `queue`, losing the first message sent to it (accepted, never delivered).
fn loses_its_first_message(queue: Arc<dyn BatchQueue>) -> Arc<dyn BatchQueue> {
    let faults = Faults::new(0, NO_FAULTS);
    faults.force("lose");
    Arc::new(FaultyQueue {
        inner: queue,
        faults,
    })
}

/// Item 4: a job whose finalize trigger is lost stays FINALIZING with every queue empty; the sweeper finds it
/// and triggers the finalizer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_finalize_message_is_lost_is_repaired_by_the_sweeper() {
    let config = dmap_core::runner::RunnerConfig {
        idle_before_sweep: Duration::from_millis(500),
        ..fast_config()
    };
    let mut env = Env::new(&config);
    for i in 0..5 {
        env.write(&format!("l/k{i}.csv"), "STATION,TMAX\nS1,1.5\n");
    }
    env.deps.finalize_queue = loses_its_first_message(env.deps.finalize_queue.clone());
    let mut spec = csv_spec("l/", 2);
    spec["processor"]["columns"] = json!(["TMAX"]);
    let report = env.try_run(&spec, &config).await.expect("the job ends");
    assert_eq!(report.manifest.items.succeeded, 5);
    assert_eq!(report.stats.sweeper_repairs, 1);
}

/// Item 4, on AWS's schedule: the sweeper reports a job only once its progress has stood still for the bound,
/// then re-triggers its lost finalize; a finished job and a registry entry with no job are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_waits_for_the_bound_then_repairs() {
    use dmap_core::sweeper::{Finding, Repair, sweep};

    let config = fast_config();
    let mut env = Env::new(&config);
    env.write("w/a.csv", "STATION,TMAX\nS1,1.5\n");
    env.deps.finalize_queue = loses_its_first_message(env.deps.finalize_queue.clone());
    let deps = env.deps.clone();
    let mut spec = csv_spec("w/", 2);
    spec["processor"]["columns"] = json!(["TMAX"]);
    // Run the pipeline by hand up to the lost trigger.
    let job = dmap_core::spec::JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    let record =
        dmap_core::coordinator::start_or_resume(&deps, job, dmap_core::coordinator::Rerun::Resume)
            .await
            .unwrap();
    dmap_core::coordinator::run_listing(&deps, &record, &|| true)
        .await
        .unwrap();
    let message = receive_all(deps.work_queue.as_ref()).await.remove(0);
    let batch = dmap_core::worker::parse_message(&message.body).unwrap();
    dmap_core::worker::handle(&deps, dmap_core::worker::WorkerConfig::default(), &batch)
        .await
        .unwrap();
    assert!(
        receive_all(deps.finalize_queue.as_ref()).await.is_empty(),
        "the trigger was lost"
    );

    let minute = 60_000;
    let bound = Duration::from_secs(30 * 60);
    let t0 = 1_000 * minute;
    assert_eq!(
        sweep(&deps, None, t0, bound).await.unwrap(),
        [],
        "first seen now"
    );
    assert_eq!(
        sweep(&deps, None, t0 + 29 * minute, bound).await.unwrap(),
        []
    );
    let stuck = sweep(&deps, None, t0 + 31 * minute, bound).await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].job_id, job_id);
    assert_eq!(
        (stuck[0].finding.clone(), stuck[0].repair.clone()),
        (Finding::FinalizeLost, Repair::FinalizerTriggered)
    );
    let trigger = receive_all(deps.finalize_queue.as_ref()).await;
    assert_eq!(trigger.len(), 1, "the sweeper sent a trigger");
    dmap_core::finalizer::finalize(&deps, Default::default(), &job_id)
        .await
        .unwrap();
    assert_eq!(
        sweep(&deps, None, t0 + 90 * minute, bound).await.unwrap(),
        [],
        "finished"
    );
}

/// Lists 10 objects in batches of 2, dies before the checkpoint, delivers that pass's batches to the worker,
/// lets `change` alter the input, lists again to the end, delivers the second pass's batches, and runs the
/// finalizer.
async fn two_passes(
    change: impl FnOnce(&Env),
) -> (Env, String, Result<dmap_core::outcome::Manifest, String>) {
    use dmap_core::coordinator::{Rerun, run_listing, start_or_resume};
    use dmap_core::worker::{self, WorkerConfig};

    let mut env = Env::new(&fast_config());
    for i in 0..10 {
        env.write(&format!("c/k{i}.csv"), "STATION,TMAX\nS1,1.5\n");
    }
    // The coordinator dies between sending a page's batches and saving its checkpoint.
    let faults = Faults::new(0, NO_FAULTS);
    faults.force("save_checkpoint");
    env.deps.jobs = Arc::new(FaultyJobStore {
        inner: env.deps.jobs.clone(),
        faults,
    });
    let mut spec = csv_spec("c/", 2);
    spec["processor"]["columns"] = json!(["TMAX"]);
    let job = dmap_core::spec::JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let job_id = job.job_id.clone();
    let record = start_or_resume(&env.deps, job, Rerun::Resume)
        .await
        .unwrap();
    assert!(
        run_listing(&env.deps, &record, &|| true).await.is_err(),
        "died before the checkpoint"
    );
    // The first pass's batches are processed and recorded before the listing is repeated.
    let deliver = |deps: dmap_core::Deps| async move {
        for message in receive_all(deps.work_queue.as_ref()).await {
            let batch = worker::parse_message(&message.body).unwrap();
            worker::handle(&deps, WorkerConfig::default(), &batch)
                .await
                .unwrap();
        }
    };
    deliver(env.deps.clone()).await;
    change(&env);
    let record = env.deps.jobs.get_job(&job_id).await.unwrap().unwrap();
    run_listing(&env.deps, &record, &|| true).await.unwrap();
    deliver(env.deps.clone()).await;
    let finalized = dmap_core::finalizer::finalize(&env.deps, Default::default(), &job_id)
        .await
        .map(|f| f.manifest)
        .map_err(|e| e.to_string());
    (env, job_id, finalized)
}

/// Item 6: batches of an earlier pass past the final listing's total (objects were deleted from the end)
/// never count, and the job still completes with the items the listing has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_past_the_listings_total_never_count() {
    let (_env, _job_id, manifest) = two_passes(|env| {
        for i in 6..10 {
            std::fs::remove_file(env.path().join(BUCKET).join(format!("c/k{i}.csv"))).unwrap();
        }
    })
    .await;
    let manifest = manifest.expect("the job was claimed and finalized");
    assert_eq!(
        (manifest.items.total, manifest.batches.total),
        (6, 3),
        "the second listing's 6 items in 3 batches"
    );
}

/// Item 6: a batch sent again with other items (an object was deleted before the listing was repeated)
/// does not mix two versions of the input silently: the first version stands, and the job ends FAILED
/// saying that its input changed while it was listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_with_other_items_fails_the_job_with_the_reason() {
    let (env, job_id, manifest) = two_passes(|env| {
        std::fs::remove_file(env.path().join(BUCKET).join("c/k1.csv")).unwrap();
    })
    .await;
    let manifest = manifest.expect("the job ends");
    assert_eq!(manifest.status, dmap_core::outcome::TerminalStatus::Failed);
    let error = manifest.error.expect("the reason");
    assert!(error.contains("changed while they were listed"), "{error}");
    assert!(
        env.deps
            .jobs
            .get_job(&job_id)
            .await
            .unwrap()
            .unwrap()
            .status
            .is_terminal()
    );
}

/// Item 10: the messages of one worker invocation share its item concurrency, so the reads in flight per
/// invocation stay within it however many messages the event source mapping hands over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invocation_reads_at_most_its_item_concurrency_at_once() {
    use dmap_core::lambda::worker;
    use dmap_core::worker::WorkerConfig;

    let env = Env::new(&fast_config());
    for i in 0..40 {
        env.write(&format!("g/k{i:02}.csv"), "STATION,TMAX\nS1,1.5\n");
    }
    *env.store.read_delay.lock().unwrap() = Duration::from_millis(5);
    let mut spec = csv_spec("g/", 10);
    spec["processor"]["columns"] = json!(["TMAX"]);
    let job = dmap_core::spec::JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let record = dmap_core::coordinator::start_or_resume(
        &env.deps,
        job,
        dmap_core::coordinator::Rerun::Resume,
    )
    .await
    .unwrap();
    dmap_core::coordinator::run_listing(&env.deps, &record, &|| true)
        .await
        .unwrap();
    let messages = receive_all(env.deps.work_queue.as_ref()).await;
    assert_eq!(messages.len(), 4);
    let event: SqsEvent = serde_json::from_value(sqs_event(QUEUE_ARN, &messages)).unwrap();
    let config = WorkerConfig {
        item_concurrency: 8,
        ..WorkerConfig::default()
    };
    let response = worker::handle(&env.deps, config, &event).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let most = env.store.reads.lock().unwrap().1;
    assert!((2..=8).contains(&most), "{most} reads at once");
}
