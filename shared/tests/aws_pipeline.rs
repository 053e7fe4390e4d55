//! The whole pipeline through the AWS adapters against moto: the same outputs as the embedded backends (a
//! listing, an object's rows, an inventory report, inline items), and duplicates delivered by real SQS counted
//! once.

mod common;

use std::time::Duration;

use common::{BUCKET, Env, csv_object, csv_spec, fast_config};
use dmap_core::coordinator::{Rerun, run_listing, start_or_resume};
use dmap_core::outcome::Manifest;
use dmap_core::ports::{OutgoingMessage, RecordOutcome, read_all};
use dmap_core::runner::{self, Chaos, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_core::usage::Usage;
use dmap_core::worker::{self, WorkerConfig};
use dmap_emulator as emulator;

fn aws_config(chaos: Option<Chaos>) -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        visibility_timeout: Duration::from_secs(1),
        receive_wait: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        chaos,
        ..RunnerConfig::default()
    }
}

/// Writes the same objects to the embedded data dir and to the moto bucket of the same name.
async fn dataset(env: &Env, store: &dyn dmap_core::ports::ObjectStore, n: usize) {
    let mut objects: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("w/{:02}/s{i:04}.csv", i % 11),
                csv_object(i).into_bytes(),
            )
        })
        .collect();
    objects.push((
        "w/bad/cell.csv".into(),
        b"STATION,TMAX,TMIN\nA,1,2\nA,warm,3\n".to_vec(),
    ));
    objects.push(("w/bad/header.csv".into(), b"ID,TMAX,TMIN\n1,2,3\n".to_vec()));
    for (key, body) in objects {
        env.write(&key, &body);
        store.put(BUCKET, &key, body).await.expect("upload");
    }
}

/// The moto bucket named as the embedded one, so that manifests compare byte for byte (the tests share one
/// moto: it may exist already).
async fn fresh_bucket(clients: &dmap_core::aws::AwsClients) {
    let _ = clients.s3.delete_bucket().bucket(BUCKET).send().await;
    clients
        .s3
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
}

async fn moto_outputs(deps: &dmap_core::Deps, report: &runner::RunReport) -> [Vec<u8>; 3] {
    let m = &report.manifest;
    let read = |key: String| async move {
        read_all(deps.objects.as_ref(), &m.bucket, &key)
            .await
            .expect("output")
    };
    // The manifest as written but for its usage (the requests of the run, which an embedded run sends none of).
    let mut manifest: Manifest =
        serde_json::from_slice(&read(m.result.replace("result.json", "manifest.json")).await)
            .unwrap();
    assert!(
        manifest.usage.take().is_some(),
        "a run through moto has its usage"
    );
    let mut manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    manifest.push(b'\n');
    [
        manifest,
        read(m.result.clone()).await,
        read(m.failures.clone()).await,
    ]
}

/// Runs `spec` on moto and checks that its manifest and outputs are the embedded run's, byte for byte.
async fn assert_moto_run_equals(
    deps: &dmap_core::Deps,
    env: &Env,
    spec: &serde_json::Value,
    embedded: &runner::RunReport,
) -> runner::RunReport {
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let through_moto = runner::run(deps, job, &aws_config(None), &|_| {})
        .await
        .expect("moto run");
    let mut manifest = through_moto.manifest.clone();
    assert!(manifest.usage.take().is_some());
    assert_eq!(manifest, embedded.manifest);
    assert_eq!(
        moto_outputs(deps, &through_moto).await,
        env.outputs(embedded)
    );
    through_moto
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_and_moto_give_byte_identical_outputs() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 2).await;
    // The embedded bucket and the moto bucket share a name, so even the manifests can be compared byte for byte.
    fresh_bucket(&clients).await;
    let env = Env::new(&fast_config());
    dataset(&env, deps.objects.as_ref(), 240).await;
    let mut spec = csv_spec("w/", 7);
    spec["tolerated_failure_count"] = serde_json::json!(2);

    let embedded = env.run(&spec, &fast_config()).await;
    let through_moto = assert_moto_run_equals(&deps, &env, &spec, &embedded).await;
    assert_eq!(
        (
            through_moto.manifest.items.total,
            through_moto.manifest.items.failed
        ),
        (242, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_through_moto_gives_the_fault_free_result() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 1).await;
    let bucket = emulator::bucket(&clients, "chaos").await;
    for i in 0..60 {
        deps.objects
            .put(
                &bucket,
                &format!("c/k{i:03}.csv"),
                csv_object(i).into_bytes(),
            )
            .await
            .unwrap();
    }
    let mut spec = csv_spec("c/", 3);
    spec["item_reader"]["bucket"] = serde_json::json!(bucket);
    spec["result_writer"]["bucket"] = serde_json::json!(bucket);
    let calm = runner::run(
        &deps,
        JobSpec::parse(spec.to_string().as_bytes()).unwrap(),
        &aws_config(None),
        &|_| {},
    )
    .await
    .expect("calm run");
    spec["job_id"] = serde_json::json!("chaos-through-moto");
    let chaos = Some(Chaos {
        rate: 0.5,
        seed: 11,
    });
    let wild = runner::run(
        &deps,
        JobSpec::parse(spec.to_string().as_bytes()).unwrap(),
        &aws_config(chaos),
        &|_| {},
    )
    .await
    .expect("chaos run");
    let s = wild.stats;
    assert!(
        s.duplicates + s.crashes_before_ack + s.crashes_before_record > 0,
        "{s:?}"
    );
    assert!(
        s.deliveries > wild.manifest.batches.total,
        "SQS redelivered what the crashes left: {s:?}"
    );
    assert_eq!(wild.manifest.items, calm.manifest.items);
    assert_eq!(
        moto_outputs(&deps, &wild).await[1..],
        moto_outputs(&deps, &calm).await[1..]
    );
}

/// A job over `objects` CSV objects under `<prefix>/` of a fresh bucket, `max_items` a batch, started and listed
/// (its batches are in the work queue).
async fn listed_job(
    clients: &dmap_core::aws::AwsClients,
    deps: &dmap_core::Deps,
    prefix: &str,
    objects: usize,
    max_items: u32,
) -> dmap_core::ports::JobRecord {
    let bucket = emulator::bucket(clients, prefix).await;
    for i in 0..objects {
        deps.objects
            .put(
                &bucket,
                &format!("{prefix}/k{i}.csv"),
                csv_object(i).into_bytes(),
            )
            .await
            .unwrap();
    }
    let mut spec = csv_spec(&format!("{prefix}/"), max_items);
    spec["item_reader"]["bucket"] = serde_json::json!(bucket);
    spec["result_writer"]["bucket"] = serde_json::json!(bucket);
    let record = start_or_resume(
        deps,
        JobSpec::parse(spec.to_string().as_bytes()).unwrap(),
        Rerun::Resume,
    )
    .await
    .unwrap();
    run_listing(deps, &record, &|| true).await.unwrap();
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_twice_by_sqs_counts_once() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let record = listed_job(&clients, &deps, "d", 5, 10).await;

    // The coordinator sent one message; send its body again, as a retried send would.
    let first = deps
        .work_queue
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let body = first[0].body.clone();
    deps.work_queue
        .send_batch(&[OutgoingMessage {
            id: "again".into(),
            body: body.clone(),
            group: None,
        }])
        .await
        .unwrap();
    let second = deps
        .work_queue
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(
        second[0].message_id, first[0].message_id,
        "two SQS messages, one batch"
    );

    let message = worker::parse_message(&body).unwrap();
    let a = worker::handle(&deps, WorkerConfig::default(), &message)
        .await
        .unwrap();
    let b = worker::handle(
        &deps,
        WorkerConfig::default(),
        &worker::parse_message(&second[0].body).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        (a.outcome, b.outcome),
        (RecordOutcome::Recorded, RecordOutcome::Duplicate)
    );
    let p = deps.jobs.progress(&record.job.job_id).await.unwrap();
    assert_eq!((p.batches_done, p.succeeded, p.failed), (1, 5, 0));
    // The same record twice, straight to DynamoDB: still once.
    assert_eq!(
        deps.jobs
            .record_batch(&record.job.job_id, 0, &a.record, &Usage::NONE)
            .await
            .unwrap()
            .outcome,
        RecordOutcome::Duplicate
    );
    assert_eq!(
        deps.jobs
            .progress(&record.job.job_id)
            .await
            .unwrap()
            .succeeded,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_an_object_through_moto_equal_the_embedded_run_and_resume_by_range() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 2).await;
    fresh_bucket(&clients).await;
    let env = Env::new(&fast_config());
    let (_, awkward, ragged) = common::awkward_csv(2500);
    env.write("rows/big.csv", &awkward);
    deps.objects
        .put(BUCKET, "rows/big.csv", awkward.into_bytes())
        .await
        .unwrap();
    let spec = serde_json::json!({
        "job_id": "rows-moto",
        "item_reader": { "kind": "s3_object", "bucket": BUCKET, "key": "rows/big.csv", "format": "csv" },
        "item_batcher": { "max_items_per_batch": 50 },
        "processor": { "kind": "csv_aggregate", "group_by": "Station ☀", "columns": ["Température", "Pluie"] },
        "tolerated_failure_count": 100,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let embedded = env.run(&spec, &fast_config()).await;
    assert_eq!(embedded.manifest.items.failed, ragged.len() as u64);

    // On moto, the listing pauses after each page, as a Lambda coordinator out of time does: every hop opens
    // the object with a Range from the byte after the last row sent, and reads its header again.
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let hops = common::list_in_hops(&deps, &job).await;
    assert_eq!(hops, 3, "2,500 rows and their ragged ones: three pages");
    assert_moto_run_equals(&deps, &env, &spec, &embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_report_and_inline_items_through_moto_equal_the_embedded_run() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 2).await;
    fresh_bucket(&clients).await;
    let env = Env::new(&fast_config());
    // 300 objects with keys Inventory form-encodes, 10 of them delete markers, in a report of 3 data files.
    let mut entries = Vec::new();
    for i in 0..300u64 {
        let key = format!("inv/{}/obj {i}+ü%.txt", i % 5);
        let marker = i % 30 == 7;
        if !marker {
            let body = "line\n".repeat(i as usize % 9);
            env.write(&key, &body);
            deps.objects
                .put(BUCKET, &key, body.into_bytes())
                .await
                .unwrap();
        }
        entries.push((key, i % 9 * 5, 1_767_225_600_000 + i as i64, marker));
    }
    let (manifest, files) =
        dmap_core::reader::inventory::write_report(BUCKET, BUCKET, "report/", &entries, 3);
    for (key, body) in files
        .into_iter()
        .chain([("report/manifest.json".into(), manifest)])
    {
        env.write(&key, &body);
        deps.objects.put(BUCKET, &key, body).await.unwrap();
    }
    let inventory = serde_json::json!({
        "job_id": "inventory-moto",
        "item_reader": { "kind": "s3_inventory", "bucket": BUCKET, "manifest_key": "report/manifest.json" },
        "item_batcher": { "max_items_per_batch": 25 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let items: Vec<serde_json::Value> = (0..120)
        .map(|i| serde_json::json!({ "station": format!("S{}", i % 4), "reading": i as f64 / 4.0 }))
        .collect();
    let inline = serde_json::json!({
        "job_id": "inline-moto",
        "item_reader": { "kind": "inline", "items": items },
        "item_batcher": { "max_items_per_batch": 25 },
        "processor": { "kind": "csv_aggregate", "group_by": "station", "columns": ["reading"] },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    for (spec, total) in [(inventory, 290), (inline, 120)] {
        let embedded = env.run(&spec, &fast_config()).await;
        assert_eq!(embedded.manifest.items.succeeded, total, "{spec}");
        assert_moto_run_equals(&deps, &env, &spec, &embedded).await;
    }
}

/// A worker that dies between its record's two writes leaves a marker that is not counted. Batch 0's message
/// comes back, and its worker counts the marker it finds (without processing again); batch 1's message is
/// gone, and the sweeper counts it. Then the job completes, exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_a_crash_left_uncounted_is_counted_by_its_redelivery_or_the_sweeper() {
    use dmap_core::ports::PartRef;
    use dmap_core::sweeper::{Finding, Repair, sweep_job};

    let clients = emulator::clients().await;
    let stack = emulator::stack(&clients, 30).await;
    let deps = emulator::stack_deps(&clients, &stack);
    let table = stack.tables["JobsTable"].clone();
    let record = listed_job(&clients, &deps, "u", 6, 3).await;
    let job_id = record.job.job_id.clone();
    let mut messages = Vec::new();
    while messages.len() < 2 {
        for m in deps
            .work_queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
        {
            messages.push(worker::parse_message(&m.body).unwrap());
        }
    }
    messages.sort_by_key(|m| m.seq);

    // Each batch processed, and its marker written as step 1 of a record writes it (the deps count 4 shards),
    // with no step 2.
    for message in &messages {
        let batch = worker::process(&deps, WorkerConfig::default(), message)
            .await
            .unwrap();
        let PartRef::Inline(part) = &batch.part else {
            panic!("a small part travels in the record")
        };
        let attr = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned());
        let num = |v: u64| aws_sdk_dynamodb::types::AttributeValue::N(v.to_string());
        clients
            .dynamodb
            .put_item()
            .table_name(&table)
            .item("pk", attr(&format!("JOB#{job_id}#S{:03}", message.seq % 4)))
            .item("sk", attr(&format!("BATCH#{:020}", message.seq)))
            .item("succeeded", num(batch.succeeded))
            .item("failed", num(batch.failed))
            .item("part", attr(part))
            .item("digest", attr(&batch.items_digest))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(deps.jobs.progress(&job_id).await.unwrap().batches_done, 0);

    let redelivered = worker::handle(&deps, WorkerConfig::default(), &messages[0])
        .await
        .unwrap();
    assert_eq!(redelivered.outcome, RecordOutcome::Recorded);
    let p = deps.jobs.progress(&job_id).await.unwrap();
    assert_eq!((p.batches_done, p.succeeded), (1, 3));

    let stuck = sweep_job(&deps, None, &job_id, 1, Duration::ZERO)
        .await
        .unwrap()
        .expect("stuck: a batch is not counted");
    assert_eq!(
        (stuck.finding, stuck.repair),
        (Finding::Uncounted(1), Repair::Recounted(1))
    );
    let p = deps.jobs.progress(&job_id).await.unwrap();
    assert_eq!(
        (p.status, p.batches_done, p.succeeded, p.failed),
        (dmap_core::ports::JobStatus::Finalizing, 2, 6, 0)
    );
    let finalized = dmap_core::finalizer::finalize(&deps, Default::default(), &job_id)
        .await
        .unwrap();
    assert_eq!(finalized.manifest.items.succeeded, 6);
}
