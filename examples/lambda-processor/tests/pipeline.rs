//! A whole dmap job on the `lambda` processor, as a Distributed Map user would run it: S3, SQS and DynamoDB are
//! moto's, the batch function and the reducer are this crate's binaries on a local Invoke API (`cargo lambda
//! watch`), reached through dmap's `LambdaInvoker`. The job's `result.json` (the reducer's response) and its
//! `map-results/` equal a sequential pass over the same objects; a batch holding a file the function cannot read
//! is retried, then its items fail with the function's `errorType: errorMessage`; a throttled function loses
//! and fails nothing; chaos changes nothing but the executions' dates.

mod common;

use std::time::Duration;

use common::{InvokeApi, ThrottlingProxy, lambda_client};
use dmap_core::Deps;
use dmap_core::aws::{AwsClients, LambdaInvoker};
use dmap_core::outcome::{Manifest, TerminalStatus};
use dmap_core::ports::read_all;
use dmap_core::processor::{MonthlyHighProcessor, Processor};
use dmap_core::runner::{self, Chaos, RunReport, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_core::worker::WorkerConfig;
use dmap_example_lambda_processor::monthly_high_of;
use serde_json::{Value, json};

const BATCH_FUNCTION: &str = "gsod-monthly-high";
const REDUCER: &str = "gsod-monthly-high-reducer";
const STATIONS: usize = 30;

/// A GSOD-shaped daily summary for station `i`: a few days in three months, with ties and missing values
/// across stations, so that the winners depend on every file.
fn station_csv(i: usize) -> String {
    let mut csv = String::from("\"STATION\",\"DATE\",\"NAME\",\"TEMP\"\n");
    for (month, day) in [(1, 3), (1, 17), (2, 9), (3, 21)] {
        let temp = match (i * 7 + month * 3 + day) % 11 {
            0 => "9999.9".to_owned(),
            t => format!("{}.{}", 40 + t * 3 + month, (i + day) % 10),
        };
        csv.push_str(&format!(
            "\"{i:011}\",\"2021-{month:02}-{day:02}\",\"STATION {i}\",\"{temp}\"\n"
        ));
    }
    csv
}

fn key(i: usize) -> String {
    format!("noaa-gsod/2021/{i:011}.csv")
}

struct Setup {
    clients: AwsClients,
    bucket: String,
    deps: Deps,
    api: InvokeApi,
}

/// moto with a fresh stack (queues, table) and a bucket of station files, and the Invoke API serving both
/// functions (whose own S3 is moto's).
async fn setup(extra: &[(&str, &str)]) -> Setup {
    let clients = dmap_emulator::clients().await;
    let bucket = dmap_emulator::bucket(&clients, "dm").await;
    let deps = dmap_emulator::aws_deps(&clients, 1).await;
    let objects = (0..STATIONS)
        .map(|i| (key(i), station_csv(i)))
        .chain(extra.iter().map(|(k, b)| (k.to_string(), b.to_string())));
    for (key, body) in objects {
        deps.objects
            .put(&bucket, &key, body.into_bytes())
            .await
            .expect("upload");
    }
    let api = InvokeApi::start(
        &[
            (BATCH_FUNCTION, env!("CARGO_BIN_EXE_gsod-monthly-high")),
            (REDUCER, env!("CARGO_BIN_EXE_gsod-monthly-high-reducer")),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_S3", dmap_emulator::endpoint()),
            ("RUST_LOG", "warn"),
        ],
    );
    Setup {
        clients,
        bucket,
        deps,
        api,
    }
}

/// dmap's function port on the Invoke API at `endpoint`, as `AWS_ENDPOINT_URL_LAMBDA` would configure it.
fn invoker(endpoint: &str) -> LambdaInvoker {
    LambdaInvoker::new(lambda_client(endpoint))
}

fn spec(job_id: &str, bucket: &str, tolerated: u64) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": bucket, "prefix": "noaa-gsod/" },
        "item_batcher": { "max_items_per_batch": 7 },
        "processor": {
            "kind": "lambda",
            "function": BATCH_FUNCTION,
            "batch_input": { "Bucket": bucket },
            "reducer": REDUCER,
            "retry": { "max_attempts": 1, "interval_seconds": 1 }
        },
        "tolerated_failure_count": tolerated,
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    })
}

fn config(chaos: Option<Chaos>) -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        visibility_timeout: Duration::from_secs(1),
        receive_wait: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        chaos,
        ..RunnerConfig::default()
    }
}

async fn run(
    setup: &Setup,
    functions: LambdaInvoker,
    spec: Value,
    config: &RunnerConfig,
) -> RunReport {
    let deps = Deps {
        functions: Some(std::sync::Arc::new(functions)),
        ..setup.deps.clone()
    };
    let job = JobSpec::parse(spec.to_string().as_bytes()).expect("a valid spec");
    runner::run(&deps, job, config, &|_| {})
        .await
        .expect("the job runs")
}

async fn read(setup: &Setup, key: &str) -> Vec<u8> {
    read_all(setup.deps.objects.as_ref(), &setup.bucket, key)
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

async fn read_json(setup: &Setup, key: &str) -> Value {
    serde_json::from_slice(&read(setup, key).await).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// `map-results/`: its manifest, and the records of its SUCCEEDED and FAILED files, in order.
async fn map_results(setup: &Setup, manifest: &Manifest) -> (Value, Vec<Value>, Vec<Value>) {
    let key = manifest
        .map_results
        .as_deref()
        .expect("the manifest lists map-results/");
    assert_eq!(
        key,
        format!("results/{}/map-results/manifest.json", manifest.job_id)
    );
    let results = read_json(setup, key).await;
    let mut records = [Vec::new(), Vec::new()];
    for (status, records) in ["SUCCEEDED", "FAILED"].iter().zip(&mut records) {
        for file in results["ResultFiles"][status]
            .as_array()
            .expect("a list of files")
        {
            let body = read(setup, file["Key"].as_str().unwrap()).await;
            assert_eq!(file["Size"], body.len(), "{file}");
            records.extend(serde_json::from_slice::<Vec<Value>>(&body).unwrap());
        }
    }
    let [succeeded, failed] = records;
    (results, succeeded, failed)
}

/// The objects of the bucket's `noaa-gsod/`, as a sequential pass reads them: in key order.
async fn objects(setup: &Setup) -> Vec<(String, Vec<u8>)> {
    let listed = setup
        .clients
        .s3
        .list_objects_v2()
        .bucket(&setup.bucket)
        .prefix("noaa-gsod/")
        .send()
        .await
        .unwrap();
    let mut objects = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_owned();
        objects.push((key.clone(), read(setup, &key).await));
    }
    objects
}

/// The job's result.json (the reducer's response, exactly as returned) is a sequential pass's result over
/// `objects`.
async fn assert_result_is_a_sequential_pass(
    setup: &Setup,
    m: &Manifest,
    objects: &[(String, Vec<u8>)],
) {
    let sequential = monthly_high_of(
        &MonthlyHighProcessor::default(),
        objects.iter().map(|(k, b)| (k, b)),
    )
    .unwrap();
    let result: Value = serde_json::from_slice(&read(setup, &m.result).await).unwrap();
    assert_eq!(
        result,
        MonthlyHighProcessor::result_json(&sequential.monthly_high)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_through_the_function_equals_a_sequential_pass() {
    let setup = setup(&[]).await;
    let report = run(
        &setup,
        invoker(&setup.api.endpoint()),
        spec("dm", &setup.bucket, 0),
        &config(None),
    )
    .await;
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded, "{m:?}");
    assert_eq!(
        (m.items.total, m.items.succeeded, m.batches.total),
        (30, 30, 5)
    );

    // result.json is the reducer's response, exactly as returned: a sequential pass's result.
    let objects = objects(&setup).await;
    assert_result_is_a_sequential_pass(&setup, m, &objects).await;

    // map-results/: Distributed Map's shapes, one record per batch, each Output the batch's own pass.
    let (results, succeeded, failed) = map_results(&setup, m).await;
    assert_eq!(results["DestinationBucket"], setup.bucket.as_str());
    assert_eq!(results["MapRunArn"], "arn:aws:states:::mapRun:dmap/dm");
    assert_eq!(results["ResultFiles"]["PENDING"], json!([]));
    assert_eq!(results["ResultFiles"]["FAILED"], json!([]));
    assert_eq!(
        results["ResultFiles"]["SUCCEEDED"][0]["Key"],
        "results/dm/map-results/SUCCEEDED_0.json"
    );
    assert!(failed.is_empty());
    assert_eq!(succeeded.len(), 5);
    let mut seen = Vec::new();
    for (seq, record) in succeeded.iter().enumerate() {
        assert_eq!(record["Name"], format!("dm#{seq}"));
        assert_eq!(record["Status"], "SUCCEEDED");
        assert!(record["StartDate"].is_string() && record["StopDate"].is_string());
        let input: Value =
            serde_json::from_str(record["Input"].as_str().expect("Input is JSON text")).unwrap();
        let output: Value =
            serde_json::from_str(record["Output"].as_str().expect("Output is JSON text")).unwrap();
        assert_eq!(input["BatchInput"], json!({"Bucket": setup.bucket}));
        let keys: Vec<&str> = input["Items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                assert_eq!(item["StorageClass"], "STANDARD");
                assert!(item["Etag"].as_str().unwrap().starts_with('"'), "{item}");
                item["Key"].as_str().unwrap()
            })
            .collect();
        let batch = objects
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(k, b)| (k, b));
        let expected = monthly_high_of(&MonthlyHighProcessor::default(), batch).unwrap();
        assert_eq!(
            output,
            serde_json::to_value(&expected).unwrap(),
            "batch {seq}"
        );
        seen.extend(keys.iter().map(|k| k.to_string()));
    }
    let listed: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(seen, listed, "every object once, in listing order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_function_raises_on_is_retried_then_its_items_fail_with_its_error() {
    let broken = "noaa-gsod/2021/00000000012.broken.csv";
    let setup = setup(&[(
        broken,
        "\"STATION\",\"DATE\",\"TEMP\"\n\"X\",\"2021-01-01\",\"warm\"\n",
    )])
    .await;
    // The broken file sorts into batch 1 (the 8th..14th keys): its 7 items fail, within a tolerance of 7.
    for (job, tolerated, status) in [
        ("raises-ok", 7, TerminalStatus::Succeeded),
        ("raises-fail", 6, TerminalStatus::Failed),
    ] {
        let report = run(
            &setup,
            invoker(&setup.api.endpoint()),
            spec(job, &setup.bucket, tolerated),
            &config(None),
        )
        .await;
        let m = &report.manifest;
        assert_eq!(
            (m.items.total, m.items.succeeded, m.items.failed),
            (31, 24, 7),
            "{m:?}"
        );
        assert_eq!(m.status, status, "{job}");
        assert_eq!(report.stats.dead_lettered_batches, 1);
        let failures = String::from_utf8(read(&setup, &m.failures).await).unwrap();
        let lines: Vec<Value> = failures
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        assert!(lines.iter().any(|l| l["key"] == broken));
        for line in &lines {
            let error = line["error"].as_str().unwrap();
            assert!(
                error.starts_with("InvalidObject: ") && error.contains(broken),
                "{error}"
            );
        }
        let (_, succeeded, failed) = map_results(&setup, m).await;
        assert_eq!((succeeded.len(), failed.len()), (4, 1));
        assert_eq!(failed[0]["Name"], format!("{job}#1"));
        assert_eq!(failed[0]["Status"], "FAILED");
        assert_eq!(failed[0]["Error"], "InvalidObject");
        assert!(failed[0]["Cause"].as_str().unwrap().contains(broken));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_function_loses_and_fails_nothing() {
    let setup = setup(&[]).await;
    // Lambda answers the first 40 invocations with TooManyRequestsException; each attempt waits out throttling
    // for at most a second, then the batch is sent again rather than spending a receive.
    let proxy = ThrottlingProxy::start(&setup.api.endpoint(), 40);
    let mut config = config(None);
    config.worker = WorkerConfig {
        functions: dmap_core::function::FunctionConfig {
            throttle_budget: Duration::from_secs(1),
        },
        ..config.worker
    };
    let report = run(
        &setup,
        invoker(proxy.endpoint()),
        spec("throttled", &setup.bucket, 0),
        &config,
    )
    .await;
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded, "{m:?}");
    assert_eq!((m.items.succeeded, m.items.failed), (30, 0));
    assert_eq!(report.stats.dead_lettered_batches, 0);
    assert_eq!(proxy.throttled(), 40);
    assert!(
        proxy.forwarded() >= 6,
        "every batch and the reducer got through"
    );
    let objects = objects(&setup).await;
    assert_result_is_a_sequential_pass(&setup, m, &objects).await;
}

/// Every output of a job with its id replaced and the executions' dates removed: what must not change
/// whatever the faults.
async fn outputs(setup: &Setup, report: &RunReport) -> String {
    let m = &report.manifest;
    let (results, mut succeeded, mut failed) = map_results(setup, m).await;
    for record in succeeded.iter_mut().chain(failed.iter_mut()) {
        let record = record.as_object_mut().unwrap();
        record.remove("StartDate");
        record.remove("StopDate");
    }
    // Every field but the usage, which counts the run's requests (a run with faults sends more).
    let mut manifest: Value = serde_json::from_slice(
        &read(setup, &m.result.replace("result.json", "manifest.json")).await,
    )
    .unwrap();
    manifest.as_object_mut().unwrap().remove("usage");
    let all = json!({
        "manifest": manifest,
        "result": String::from_utf8(read(setup, &m.result).await).unwrap(),
        "failed": String::from_utf8(read(setup, &m.failures).await).unwrap(),
        "map-results": results,
        "succeeded": succeeded,
        "failed-executions": failed,
    });
    all.to_string().replace(&m.job_id, "<job>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_gives_a_fault_free_runs_outputs() {
    let broken = "noaa-gsod/2021/00000000020.broken.csv";
    let setup = setup(&[(broken, "not a CSV with a header")]).await;
    let calm = run(
        &setup,
        invoker(&setup.api.endpoint()),
        spec("run-0", &setup.bucket, 7),
        &config(None),
    )
    .await;
    assert_eq!(calm.manifest.items.failed, 7);
    let expected = outputs(&setup, &calm).await;
    // One seed: each is a whole run through moto (about 10 s); the fault campaigns cover many seeds.
    for seed in [1] {
        let chaos = Some(Chaos { rate: 0.3, seed });
        // Ids of one length: the files' sizes in map-results/manifest.json count them.
        let job = format!("run-{seed}");
        let report = run(
            &setup,
            invoker(&setup.api.endpoint()),
            spec(&job, &setup.bucket, 7),
            &config(chaos),
        )
        .await;
        assert!(
            report.stats.function_faults + report.stats.duplicates > 0,
            "seed {seed}: {:?}",
            report.stats
        );
        assert_eq!(outputs(&setup, &report).await, expected, "seed {seed}");
    }
}
