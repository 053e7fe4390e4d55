//! Every sample event in `events/`, through the functions' handlers, against moto, in the order a deployment
//! would see them, with the duplicates it must absorb: the S3 event delivered twice, a worker batch
//! redelivered, a dead-lettered batch whose worker later succeeds, a stale continuation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use dmap_core::Deps;
use dmap_core::aws::resources::create_queue;
use dmap_core::aws::{AwsClients, SqsQueue};
use dmap_core::coordinator::ListParallelism;
use dmap_core::lambda::coordinator::{Coordinator, derive_job_id};
use dmap_core::lambda::{finalizer, worker};
use dmap_core::outcome::Manifest;
use dmap_core::ports::{BatchQueue, read_all};
use dmap_core::worker::WorkerConfig;
use dmap_emulator as emulator;
use serde_json::{Value, json};

fn event(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sqs_event(name: &str) -> SqsEvent {
    serde_json::from_value(event(name)).unwrap_or_else(|e| panic!("{name} is an SQS event: {e}"))
}

async fn manifest(deps: &Deps, job_id: &str) -> Manifest {
    let body = read_all(
        deps.objects.as_ref(),
        "data",
        &format!("results/{job_id}/manifest.json"),
    )
    .await
    .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// A coordinator over `deps` with a fresh continuation queue of its own.
async fn coordinator(
    clients: &AwsClients,
    deps: &Deps,
    allowed: &str,
) -> (Coordinator, Arc<SqsQueue>) {
    let continuation_name = emulator::unique("continue");
    create_queue(&clients.sqs, &continuation_name, HashMap::new())
        .await
        .unwrap();
    let continuation = Arc::new(
        SqsQueue::by_name(clients.sqs.clone(), &continuation_name)
            .await
            .unwrap(),
    );
    let coordinator = Coordinator {
        deps: deps.clone(),
        continuation: continuation.clone(),
        allowed_buckets: vec![allowed.to_owned()],
        result_buckets: vec![allowed.to_owned()],
        jobs_prefix: "jobs/".into(),
        results_prefix: String::new(), // anywhere: these tests write under results/ and out/
        processor_functions: Vec::new(),
        function_arn_prefix: None,
        allowed_tables: Vec::new(),
        list_parallelism: ListParallelism::IN_PROCESS,
    };
    (coordinator, continuation)
}

/// The sample events the test below drives; a new file in `events/` must be added here (and to the test).
const EVENTS: [&str; 7] = [
    "s3-job-created.json",
    "scheduled-sweep.json",
    "direct-invoke.json",
    "continue-listing.json",
    "dead-letter.json",
    "worker-batch.json",
    "finalize.json",
];

#[test]
fn every_file_in_events_is_driven_by_a_handler_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let mut expected = EVENTS.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(files, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_through_its_handler() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    clients
        .s3
        .create_bucket()
        .bucket("data")
        .send()
        .await
        .unwrap();
    let (coordinator, continuation) = coordinator(&clients, &deps, "data").await;
    let always = || true;
    // Read by both jobs: the S3-started one aggregates TMAX and TMIN, the direct invoke's finds the monthly high
    // of TEMP.
    for (station, tmax) in [("USW00023174", "21.5"), ("USW00094728", "30.1")] {
        let csv = format!(
            "STATION,DATE,TEMP,TMAX,TMIN\n{station},2026-07-01,17.0,{tmax},12.0\n{station},2026-07-02,9999.9,,13.5\n"
        );
        deps.objects
            .put("data", &format!("weather/{station}.csv"), csv.into_bytes())
            .await
            .unwrap();
    }
    // The S3-triggered job: the spec object has no job_id, and one item a batch.
    let spec = json!({
        "item_reader": { "bucket": "data", "prefix": "weather/", "suffix": ".csv" },
        "item_batcher": { "max_items_per_batch": 1 },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN"] },
        "tolerated_failure_count": 1,
        "result_writer": { "bucket": "data", "prefix": "results/" }
    });
    deps.objects
        .put(
            "data",
            "jobs/weather 2026.json",
            spec.to_string().into_bytes(),
        )
        .await
        .unwrap();

    // s3-job-created.json, twice: one job, one listing.
    let s3 = event("s3-job-created.json");
    let first = coordinator.handle(s3.clone(), &always).await.unwrap();
    let derived = derive_job_id(
        "data",
        "jobs/weather 2026.json",
        "9f2c1b6e0d4a43b1a2f7c8e5d6b4a3f1",
    );
    assert_eq!(
        first["jobs"],
        json!([{ "job_id": derived, "listing": "complete" }]),
        "{first}"
    );
    let again = coordinator.handle(s3, &always).await.unwrap();
    assert_eq!(
        again["jobs"][0]["job_id"],
        derived.as_str(),
        "a duplicated S3 event resumes the same job"
    );
    assert_eq!(
        deps.work_queue.depth().await.unwrap().visible,
        2,
        "its 2 batches were sent once"
    );

    // continue-listing.json names a job that does not exist yet: dropped, not retried.
    let response = coordinator
        .handle(event("continue-listing.json"), &always)
        .await
        .unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));

    // direct-invoke.json: the payload is the spec; the job id comes back.
    let direct = coordinator
        .handle(event("direct-invoke.json"), &always)
        .await
        .unwrap();
    assert_eq!(
        direct,
        json!({ "job_id": "weather-2026", "listing": "complete" })
    );
    // A stale continuation for a job whose listing is complete changes nothing.
    let response = coordinator
        .handle(event("continue-listing.json"), &always)
        .await
        .unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));
    assert_eq!(
        continuation.depth().await.unwrap().visible,
        0,
        "no hand-over was needed"
    );

    // dead-letter.json: batch 1 of the S3-started job exhausted its receives; its item is recorded as failed.
    let response = finalizer::handle(&deps, Default::default(), &sqs_event("dead-letter.json"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());

    // worker-batch.json, then its redelivery: counted once.
    let config = WorkerConfig::default();
    for _ in 0..2 {
        let response = worker::handle(&deps, config, &sqs_event("worker-batch.json"))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let p = deps.jobs.progress("weather-2026").await.unwrap();
    assert_eq!((p.batches_done, p.succeeded, p.failed), (1, 2, 0));

    // What the coordinators sent, as the event source mapping delivers it (the direct job's batch 0 again,
    // and the dead-lettered batch 1, whose late success is not counted).
    let response = worker::handle(
        &deps,
        config,
        &emulator::drain_as_event(deps.work_queue.clone()).await,
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());

    // finalize.json, then the triggers the completion claims sent.
    let response = finalizer::handle(&deps, Default::default(), &sqs_event("finalize.json"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let response = finalizer::handle(
        &deps,
        Default::default(),
        &emulator::drain_as_event(deps.finalize_queue.clone()).await,
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());

    // The schedule's sweep: both jobs finished, nothing is stuck.
    let swept = coordinator
        .handle(event("scheduled-sweep.json"), &|| true)
        .await
        .unwrap();
    assert_eq!(swept, json!({ "stuck": [] }));

    let direct = manifest(&deps, "weather-2026").await;
    assert_eq!(
        (
            direct.status.as_str(),
            direct.items.total,
            direct.items.succeeded
        ),
        ("SUCCEEDED", 2, 2)
    );
    // Both stations' July high is 17.0: the smaller station's row wins.
    let result = read_all(
        deps.objects.as_ref(),
        "data",
        "results/weather-2026/result.json",
    )
    .await
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap()["2026-07"]["STATION"],
        "USW00023174"
    );
    let s3_job = manifest(&deps, &derived).await;
    assert_eq!(
        (
            s3_job.items.total,
            s3_job.items.succeeded,
            s3_job.items.failed
        ),
        (2, 1, 1)
    );
    assert_eq!(
        s3_job.status.as_str(),
        "SUCCEEDED",
        "one failure is tolerated"
    );
}

#[tokio::test]
async fn a_spec_outside_the_allowed_buckets_or_invalid_is_refused_before_anything_is_written() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let coordinator = Coordinator {
        deps: deps.clone(),
        continuation: deps.work_queue.clone(),
        allowed_buckets: vec!["only-this-one".into()],
        result_buckets: vec!["data".into()],
        jobs_prefix: "jobs/".into(),
        results_prefix: String::new(),
        processor_functions: Vec::new(),
        function_arn_prefix: None,
        allowed_tables: Vec::new(),
        list_parallelism: ListParallelism::IN_PROCESS,
    };
    let err = coordinator
        .handle(event("direct-invoke.json"), &|| true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("item_reader.bucket") && err.contains("not allowed"),
        "{err}"
    );
    let reads_data = Coordinator {
        allowed_buckets: vec!["data".into()],
        result_buckets: vec!["results-only".into()],
        ..coordinator
    };
    let err = reads_data
        .handle(event("direct-invoke.json"), &|| true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("result_writer.bucket") && err.contains("DMAP_RESULT_BUCKETS"),
        "{err}"
    );
    let coordinator = Coordinator {
        result_buckets: vec!["data".into()],
        ..reads_data
    };
    let mut under_jobs = event("direct-invoke.json");
    under_jobs["result_writer"]["prefix"] = json!("jobs/results/");
    let err = coordinator
        .handle(under_jobs, &|| true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("overlaps the jobs prefix"), "{err}");
    let mut bad = event("direct-invoke.json");
    bad["item_batcher"]["max_items_per_batch"] = json!(0);
    let err = coordinator
        .handle(bad, &|| true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("item_batcher.max_items_per_batch"), "{err}");

    // A table is read only when the stack's InputTables lists it.
    let mut scan = event("direct-invoke.json");
    scan["item_reader"] = json!({"kind": "dynamodb_scan", "table": "orders", "segments": 4});
    scan["processor"] = json!({"kind": "count"});
    let err = coordinator
        .handle(scan.clone(), &|| true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("item_reader.table")
            && err.contains("\"orders\"")
            && err.contains("InputTables"),
        "{err}"
    );
    let reads_users = Coordinator {
        allowed_tables: vec!["users".into()],
        ..coordinator
    };
    let err = reads_users
        .handle(scan, &|| true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("DMAP_ALLOWED_TABLES: users"), "{err}");
    let coordinator = Coordinator {
        allowed_tables: Vec::new(),
        ..reads_users
    };

    // The lambda processor: only the functions of ProcessorFunctions, by field, names resolved in the stack's
    // region and account (any version or alias of a listed function is fine).
    let coordinator = Coordinator {
        processor_functions: vec![
            "arn:aws:lambda:us-east-1:123456789012:function:monthly-high".into(),
            "arn:aws:lambda:us-east-1:123456789012:function:reducer".into(),
        ],
        function_arn_prefix: Some("arn:aws:lambda:us-east-1:123456789012:function:".into()),
        ..coordinator
    };
    let with = |processor: Value| {
        let mut spec = event("direct-invoke.json");
        spec["processor"] = processor;
        spec
    };
    for (processor, field) in [
        (
            json!({"kind": "lambda", "function": "other"}),
            "processor.function",
        ),
        (
            json!({"kind": "lambda", "function": "arn:aws:lambda:us-east-1:999999999999:function:monthly-high"}),
            "processor.function",
        ),
        (
            json!({"kind": "lambda", "function": "monthly-high:live", "reducer": "arn:aws:lambda:eu-west-1:123456789012:function:reducer"}),
            "processor.reducer",
        ),
    ] {
        let err = coordinator
            .handle(with(processor.clone()), &|| true)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{field}: function "))
                && err.contains("DMAP_PROCESSOR_FUNCTIONS: arn:aws:lambda:us-east-1:123456789012:function:monthly-high"),
            "{processor}: {err}"
        );
    }
    let none = Coordinator {
        processor_functions: Vec::new(),
        ..coordinator
    };
    let err = none
        .handle(
            with(json!({"kind": "lambda", "function": "monthly-high"})),
            &|| true,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ProcessorFunctions parameter"), "{err}");
    assert!(
        deps.jobs.get_job("weather-2026").await.unwrap().is_none(),
        "no job was created"
    );
    let listed = deps
        .objects
        .list_page("data", "results/weather-2026/", None, None)
        .await;
    assert!(
        listed.map(|page| page.objects.is_empty()).unwrap_or(true),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_handed_over_twice_and_a_duplicated_hand_over_count_every_item_once() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "handover").await;
    let (coordinator, continuation) = coordinator(&clients, &deps, &bucket).await;
    // 2,100 objects: three listing pages.
    emulator::put_objects(
        &clients.s3,
        &bucket,
        (0..2100).map(|i| (format!("h/{:02}/k{i:04}", i % 10), vec![b'x'; i % 7])),
    )
    .await;
    let spec = json!({
        "job_id": "long-listing",
        "item_reader": { "bucket": bucket, "prefix": "h/", "list_parallelism": 16 },
        "item_batcher": { "max_items_per_batch": 100 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "out/" }
    });
    let out_of_time = || false;
    let started = coordinator.handle(spec, &out_of_time).await.unwrap();
    assert_eq!(
        started,
        json!({ "job_id": "long-listing", "listing": "handed over" })
    );

    // Hop 1 is delivered twice (SQS may): the first resumes and hands over again, the second is stale.
    let hop1 = emulator::drain_as_event(continuation.clone()).await;
    assert_eq!(hop1.records.len(), 1);
    let mut twice: Value = serde_json::to_value(&hop1).unwrap();
    let record = twice["Records"][0].clone();
    twice["Records"].as_array_mut().unwrap().push(record);
    twice["Records"][1]["messageId"] = json!("a-duplicate");
    let response = coordinator.handle(twice, &out_of_time).await.unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));
    let hop2 = emulator::drain_as_event(continuation.clone()).await;
    assert_eq!(
        hop2.records.len(),
        1,
        "the stale duplicate did not hand over again"
    );
    assert!(
        hop2.records[0]
            .body
            .as_deref()
            .unwrap()
            .contains("\"hop\":2")
    );
    // Hop 2 has time enough to finish.
    let response = coordinator
        .handle(serde_json::to_value(&hop2).unwrap(), &|| true)
        .await
        .unwrap();
    assert_eq!(response["batchItemFailures"], json!([]));
    assert_eq!(continuation.depth().await.unwrap().visible, 0);

    let response = worker::handle(
        &deps,
        WorkerConfig::default(),
        &emulator::drain_as_event(deps.work_queue.clone()).await,
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    finalizer::handle(
        &deps,
        Default::default(),
        &emulator::drain_as_event(deps.finalize_queue.clone()).await,
    )
    .await
    .unwrap();
    let body = read_all(
        deps.objects.as_ref(),
        &bucket,
        "out/long-listing/manifest.json",
    )
    .await
    .unwrap();
    let manifest: Manifest = serde_json::from_slice(&body).unwrap();
    // Split after its first page (10 batches) into ranges at the folders h/05/ to h/09/, listed across the
    // hops; each range's page ends a batch of its own: 16 more.
    assert_eq!(
        (
            manifest.items.total,
            manifest.items.succeeded,
            manifest.batches.total
        ),
        (2100, 2100, 26)
    );
    let result = read_all(
        deps.objects.as_ref(),
        &bucket,
        "out/long-listing/result.json",
    )
    .await
    .unwrap();
    let bytes: usize = (0..2100).map(|i| i % 7).sum();
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap()["bytes"],
        bytes
    );
}
