//! The `lambda` processor through the whole embedded pipeline, with an in-process function double standing in
//! for Lambda's Invoke API (the real API, with a real function, is `examples/lambda-processor`'s test): each
//! batch's payload is Distributed Map's, `map-results/` has Distributed Map's ResultWriter layout, the reducer's
//! response is `result.json`; a function that raises on one batch fails that batch's items with its error after
//! the Retry policy and the queue's receives; a throttled function loses and fails nothing; a reducer that
//! raises fails the job; chaos changes nothing but the executions' dates.
//!
//! On tokio's paused clock: the function's retry interval, the visibility timeouts and the throttle budget pass
//! in virtual time, so the suite takes a second, not half a minute.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{BUCKET, Env, fast_config};
use dmap_core::function::FunctionConfig;
use dmap_core::map_results::MapResultsConfig;
use dmap_core::outcome::TerminalStatus;
use dmap_core::ports::{FunctionInvoker, InvokeError, ObjectStore, read_all};
use dmap_core::runner::{Chaos, RunReport, RunnerConfig};
use dmap_core::worker::WorkerConfig;
use serde_json::{Value, json};

/// A function written for Distributed Map, in process: `batch` answers each batch with its keys and the sum of
/// its items' sizes (raising on the key `raise_on`); `reducer` reads the ResultWriter manifest and its
/// SUCCEEDED files and sums them. Throttles the first `throttle_first` calls, and counts calls per key.
struct Functions {
    store: Arc<dyn ObjectStore>,
    raise_on: Option<String>,
    reducer_raises: bool,
    throttle_first: AtomicU32,
    throttled: AtomicU32,
    calls_with: Mutex<BTreeMap<String, u32>>,
}

impl Functions {
    fn new(env: &Env) -> Self {
        Self {
            store: env.store.clone(),
            raise_on: None,
            reducer_raises: false,
            throttle_first: AtomicU32::new(0),
            throttled: AtomicU32::new(0),
            calls_with: Mutex::default(),
        }
    }

    async fn batch(&self, payload: Value) -> Result<Value, InvokeError> {
        let items = payload["Items"].as_array().expect("Items").clone();
        assert_eq!(payload["BatchInput"], json!({"Greeting": "hello"}));
        let mut keys = Vec::new();
        let mut bytes = 0;
        for item in &items {
            let key = item["Key"].as_str().expect("Key").to_owned();
            *self
                .calls_with
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default() += 1;
            if self.raise_on.as_deref() == Some(key.as_str()) {
                return Err(InvokeError::Function {
                    error_type: "ValueError".into(),
                    error_message: format!("cannot read {key}"),
                });
            }
            bytes += item["Size"].as_u64().expect("Size");
            keys.push(key);
        }
        Ok(json!({"Keys": keys, "Bytes": bytes}))
    }

    async fn reducer(&self, payload: Value) -> Result<Value, InvokeError> {
        if self.reducer_raises {
            return Err(InvokeError::Function {
                error_type: "KeyError".into(),
                error_message: "no Bytes".into(),
            });
        }
        let details = &payload["ResultWriterDetails"];
        let bucket = details["Bucket"].as_str().unwrap();
        let manifest: Value = read_json(
            self.store.as_ref(),
            bucket,
            details["Key"].as_str().unwrap(),
        )
        .await;
        assert_eq!(manifest["MapRunArn"], payload["MapRunArn"]);
        let (mut objects, mut bytes) = (0, 0);
        for file in manifest["ResultFiles"]["SUCCEEDED"].as_array().unwrap() {
            let records: Value =
                read_json(self.store.as_ref(), bucket, file["Key"].as_str().unwrap()).await;
            for record in records.as_array().unwrap() {
                let output: Value =
                    serde_json::from_str(record["Output"].as_str().unwrap()).unwrap();
                objects += output["Keys"].as_array().unwrap().len();
                bytes += output["Bytes"].as_u64().unwrap();
            }
        }
        Ok(json!({"objects": objects, "bytes": bytes}))
    }
}

async fn read_json(store: &dyn ObjectStore, bucket: &str, key: &str) -> Value {
    serde_json::from_slice(&read_all(store, bucket, key).await.unwrap()).unwrap()
}

#[async_trait]
impl FunctionInvoker for Functions {
    async fn invoke(&self, function: &str, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let left = self.throttle_first.load(Ordering::SeqCst);
        if left > 0
            && self
                .throttle_first
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(InvokeError::Throttled("Rate Exceeded.".into()));
        }
        let payload: Value = serde_json::from_slice(&payload).expect("a JSON payload");
        let response = match function {
            "batch-fn" => self.batch(payload).await,
            "reducer-fn" => self.reducer(payload).await,
            // Rows of a CSV object: Items are the rows' objects, as Distributed Map's CSV reader gives them.
            "rows-fn" => {
                let items = payload["Items"].as_array().expect("Items");
                let sum: u64 = items
                    .iter()
                    .map(|row| {
                        row["n"]
                            .as_str()
                            .expect("a row object")
                            .parse::<u64>()
                            .unwrap()
                    })
                    .sum();
                Ok(json!({"Rows": items.len(), "Sum": sum}))
            }
            other => Err(InvokeError::Refused {
                code: "ResourceNotFoundException".into(),
                message: format!("Function not found: {other}"),
            }),
        }?;
        Ok(serde_json::to_vec(&response).unwrap())
    }
}

fn spec(job_id: &str, max_items: u32, tolerated: u64) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": BUCKET, "prefix": "in/" },
        "item_batcher": { "max_items_per_batch": max_items },
        "processor": {
            "kind": "lambda",
            "function": "batch-fn",
            "batch_input": { "Greeting": "hello" },
            "reducer": "reducer-fn",
            "retry": { "max_attempts": 1, "interval_seconds": 1 }
        },
        "tolerated_failure_count": tolerated,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    })
}

/// 25 objects of sizes 1..=25 under in/: 325 bytes. Written at a fixed time, so that their ETags and
/// LastModified (from the files' modification times) are the same in every environment.
fn env_with_objects(config: &RunnerConfig) -> Env {
    let env = Env::new(config);
    let written = std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    for i in 1..=25 {
        let key = format!("in/k{i:02}");
        env.write(&key, "x".repeat(i));
        let file = std::fs::File::options()
            .write(true)
            .open(env.path().join(BUCKET).join(&key))
            .unwrap();
        file.set_modified(written).unwrap();
    }
    env
}

fn config() -> RunnerConfig {
    RunnerConfig {
        max_receive_count: 3,
        worker: WorkerConfig {
            functions: FunctionConfig {
                throttle_budget: Duration::from_millis(300),
            },
            ..WorkerConfig::default()
        },
        ..fast_config()
    }
    .with_map_results_files(1500)
}

trait SmallFiles {
    fn with_map_results_files(self, bytes: usize) -> Self;
}

impl SmallFiles for RunnerConfig {
    fn with_map_results_files(mut self, bytes: usize) -> Self {
        self.finalizer.map_results = MapResultsConfig { file_bytes: bytes };
        self
    }
}

async fn run(
    env: &mut Env,
    functions: Arc<Functions>,
    spec: Value,
    config: &RunnerConfig,
) -> RunReport {
    env.deps.functions = Some(functions);
    env.run(&spec, config).await
}

/// `map-results/`: the manifest, and every record of its files in order, per status.
fn map_results(env: &Env, report: &RunReport) -> (Value, Vec<Value>, Vec<Value>) {
    let key = report
        .manifest
        .map_results
        .clone()
        .expect("the manifest lists map-results/");
    assert_eq!(
        key,
        format!(
            "results/{}/map-results/manifest.json",
            report.manifest.job_id
        )
    );
    let manifest: Value = serde_json::from_slice(&env.read(&key)).unwrap();
    let records = |status: &str| -> Vec<Value> {
        manifest["ResultFiles"][status]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|file| {
                let body = env.read(file["Key"].as_str().unwrap());
                assert_eq!(file["Size"], body.len(), "{file}");
                assert!(body.len() <= 1500, "a file stays under its size: {file}");
                serde_json::from_slice::<Vec<Value>>(&body).unwrap()
            })
            .collect()
    };
    let (succeeded, failed) = (records("SUCCEEDED"), records("FAILED"));
    (manifest, succeeded, failed)
}

#[tokio::test(start_paused = true)]
async fn batches_go_to_the_function_with_distributed_maps_input_and_results_layout() {
    let config = config();
    let mut env = env_with_objects(&config);
    let functions = Arc::new(Functions::new(&env));
    let report = run(&mut env, functions, spec("dm", 4, 0), &config).await;
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded);
    assert_eq!(
        (m.items.total, m.items.succeeded, m.batches.total),
        (25, 25, 7)
    );

    // result.json is the reducer's response, exactly as returned; a sequential pass gives the same numbers.
    assert_eq!(env.read(&m.result), br#"{"bytes":325,"objects":25}"#);

    let (manifest, succeeded, failed) = map_results(&env, &report);
    assert_eq!(manifest["DestinationBucket"], BUCKET);
    assert_eq!(manifest["MapRunArn"], "arn:aws:states:::mapRun:dmap/dm");
    assert_eq!(manifest["ResultFiles"]["PENDING"], json!([]));
    assert_eq!(manifest["ResultFiles"]["FAILED"], json!([]));
    let files = manifest["ResultFiles"]["SUCCEEDED"].as_array().unwrap();
    assert!(files.len() > 1, "sharded at the file size: {manifest}");
    for (n, file) in files.iter().enumerate() {
        assert_eq!(
            file["Key"],
            format!("results/dm/map-results/SUCCEEDED_{n}.json")
        );
    }
    assert!(failed.is_empty());
    assert_eq!(succeeded.len(), 7, "one record per batch");
    let mut listed = Vec::new();
    for (seq, record) in succeeded.iter().enumerate() {
        assert_eq!(record["Name"], format!("dm#{seq}"));
        assert_eq!(record["Status"], "SUCCEEDED");
        assert_eq!(record["MapRunArn"], manifest["MapRunArn"]);
        for date in ["StartDate", "StopDate"] {
            let date = record[date].as_str().unwrap();
            assert!(
                date.len() == 24 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
                "{date}"
            );
        }
        // Input and Output are JSON text, as Step Functions writes them.
        let input: Value = serde_json::from_str(record["Input"].as_str().unwrap()).unwrap();
        let output: Value = serde_json::from_str(record["Output"].as_str().unwrap()).unwrap();
        assert_eq!(input["BatchInput"], json!({"Greeting": "hello"}));
        let items = input["Items"].as_array().unwrap();
        for item in items {
            let key = item["Key"].as_str().unwrap();
            let size: usize = key[4..].parse().unwrap();
            assert_eq!(item["Size"], size);
            assert_eq!(item["StorageClass"], "STANDARD");
            let etag = item["Etag"].as_str().unwrap();
            assert!(
                etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
                "{etag}"
            );
            assert!(
                item["LastModified"].as_i64().unwrap() > 1_600_000_000,
                "{item}"
            );
            listed.push(key.to_owned());
        }
        assert_eq!(output["Keys"].as_array().unwrap().len(), items.len());
    }
    let expected: Vec<String> = (1..=25).map(|i| format!("in/k{i:02}")).collect();
    assert_eq!(listed, expected, "every item once, in listing order");
    assert!(env.read(&m.failures).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_function_that_raises_on_one_batch_fails_that_batchs_items_with_its_error() {
    let config = config();
    for (tolerated, status) in [(4, TerminalStatus::Succeeded), (3, TerminalStatus::Failed)] {
        let mut env = env_with_objects(&config);
        let functions = Arc::new(Functions {
            raise_on: Some("in/k07".into()),
            ..Functions::new(&env)
        });
        let report = run(
            &mut env,
            functions.clone(),
            spec("raises", 4, tolerated),
            &config,
        )
        .await;
        let m = &report.manifest;
        // Batch 1 (k05..k08) raised every time: 1 + max_attempts invocations per receive, 3 receives.
        assert_eq!((m.items.succeeded, m.items.failed), (21, 4), "{m:?}");
        assert_eq!(m.status, status, "tolerated {tolerated}");
        assert_eq!(functions.calls_with.lock().unwrap()["in/k05"], 2 * 3);
        assert_eq!(functions.calls_with.lock().unwrap()["in/k09"], 1);
        assert_eq!(report.stats.dead_lettered_batches, 1);
        let failed: Vec<Value> = String::from_utf8(env.read(&m.failures))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let keys: Vec<&str> = failed.iter().map(|f| f["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["in/k05", "in/k06", "in/k07", "in/k08"]);
        for f in &failed {
            assert_eq!(f["error"], "ValueError: cannot read in/k07");
        }
        let (manifest, succeeded, failed) = map_results(&env, &report);
        assert_eq!(succeeded.len(), 6);
        assert_eq!(failed.len(), 1);
        assert_eq!(
            manifest["ResultFiles"]["FAILED"][0]["Key"],
            "results/raises/map-results/FAILED_0.json"
        );
        let record = &failed[0];
        assert_eq!(
            (
                &record["Name"],
                &record["Status"],
                &record["Error"],
                &record["Cause"]
            ),
            (
                &json!("raises#1"),
                &json!("FAILED"),
                &json!("ValueError"),
                &json!("cannot read in/k07")
            )
        );
        assert!(record.get("Output").is_none());
        let input: Value = serde_json::from_str(record["Input"].as_str().unwrap()).unwrap();
        assert_eq!(input["Items"].as_array().unwrap().len(), 4);
        // The reducer saw the succeeded batches only.
        assert_eq!(env.read(&m.result), br#"{"bytes":299,"objects":21}"#);
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttled_function_loses_and_fails_nothing() {
    let config = config();
    let mut env = env_with_objects(&config);
    // More throttles than the receives could absorb (7 batches, 2 spare receives each, 2 throttled calls per
    // 300 ms budget): only sending throttled batches again, not spending receives, gets every item through.
    let functions = Arc::new(Functions::new(&env));
    functions.throttle_first.store(40, Ordering::SeqCst);
    let report = run(
        &mut env,
        functions.clone(),
        spec("throttled", 4, 0),
        &config,
    )
    .await;
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded, "{m:?}");
    assert_eq!((m.items.succeeded, m.items.failed), (25, 0));
    assert_eq!(functions.throttled.load(Ordering::SeqCst), 40);
    assert_eq!(report.stats.dead_lettered_batches, 0);
    assert_eq!(env.read(&m.result), br#"{"bytes":325,"objects":25}"#);
}

#[tokio::test(start_paused = true)]
async fn a_reducer_that_raises_fails_the_job_with_its_error() {
    let config = config();
    let mut env = env_with_objects(&config);
    let functions = Arc::new(Functions {
        reducer_raises: true,
        ..Functions::new(&env)
    });
    let report = run(&mut env, functions, spec("bad-reducer", 10, 0), &config).await;
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Failed);
    assert_eq!(m.items.succeeded, 25, "the items themselves succeeded");
    assert_eq!(
        m.error.as_deref(),
        Some("function reducer-fn: KeyError: no Bytes")
    );
}

/// Every output but the executions' dates: manifest.json, result.json, failed.jsonl, and map-results/ without
/// `StartDate`/`StopDate`.
fn outputs_without_dates(env: &Env, report: &RunReport) -> (Vec<Vec<u8>>, Value) {
    let (manifest, mut succeeded, mut failed) = map_results(env, report);
    for record in succeeded.iter_mut().chain(failed.iter_mut()) {
        let record = record.as_object_mut().unwrap();
        record.remove("StartDate");
        record.remove("StopDate");
    }
    (
        env.outputs(report).to_vec(),
        json!({"manifest": manifest, "succeeded": succeeded, "failed": failed}),
    )
}

#[tokio::test(start_paused = true)]
async fn chaos_gives_a_fault_free_runs_outputs() {
    let clean_config = config();
    let mut env = env_with_objects(&clean_config);
    let functions = Arc::new(Functions {
        raise_on: Some("in/k13".into()),
        ..Functions::new(&env)
    });
    let clean = run(&mut env, functions, spec("chaos", 3, 3), &clean_config).await;
    let expected = outputs_without_dates(&env, &clean);
    let mut faults = 0;
    for seed in 0..common::faults::campaign_seeds(4) {
        let config = RunnerConfig {
            chaos: Some(Chaos { rate: 0.3, seed }),
            ..clean_config.clone()
        };
        let mut env = env_with_objects(&config);
        let functions = Arc::new(Functions {
            raise_on: Some("in/k13".into()),
            ..Functions::new(&env)
        });
        let report = run(&mut env, functions, spec("chaos", 3, 3), &config).await;
        faults += report.stats.function_faults + report.stats.duplicates;
        assert_eq!(
            outputs_without_dates(&env, &report),
            expected,
            "seed {seed}"
        );
    }
    assert!(faults > 0, "chaos injected faults");
}

#[tokio::test(start_paused = true)]
async fn rows_reach_the_function_as_objects_and_a_ragged_row_fails_without_it() {
    let config = config();
    let mut env = Env::new(&config);
    let mut csv = String::from("name,n\n");
    for i in 1..=10 {
        csv.push_str(&format!("r{i},{i}\n"));
        if i == 6 {
            csv.push_str("ragged\n"); // line 8
        }
    }
    env.write("in/rows.csv", csv);
    let spec = json!({
        "job_id": "rows",
        "item_reader": { "kind": "s3_object", "bucket": BUCKET, "key": "in/rows.csv", "format": "csv" },
        "item_batcher": { "max_items_per_batch": 4 },
        "processor": { "kind": "lambda", "function": "rows-fn" },
        "tolerated_failure_count": 1,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let functions = Arc::new(Functions::new(&env));
    let report = run(&mut env, functions, spec, &config).await;
    let m = &report.manifest;
    assert_eq!(
        (m.status, m.items.succeeded, m.items.failed),
        (TerminalStatus::Succeeded, 10, 1)
    );
    let (_, succeeded, failed) = map_results(&env, &report);
    assert!(
        failed.is_empty(),
        "the ragged row never reached the function: {failed:?}"
    );
    let (mut rows, mut sum) = (0, 0);
    for record in &succeeded {
        let input: Value = serde_json::from_str(record["Input"].as_str().unwrap()).unwrap();
        for item in input["Items"].as_array().unwrap() {
            assert!(
                item.get("name").is_some() && item.get("n").is_some(),
                "{item}"
            );
        }
        let output: Value = serde_json::from_str(record["Output"].as_str().unwrap()).unwrap();
        rows += output["Rows"].as_u64().unwrap();
        sum += output["Sum"].as_u64().unwrap();
    }
    assert_eq!((rows, sum), (10, 55));
    let failures = String::from_utf8(env.read(&m.failures)).unwrap();
    let line: Value = serde_json::from_str(failures.trim()).unwrap();
    assert_eq!(line["key"], "in/rows.csv#L8");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .starts_with("line 8: 1 fields"),
        "{line}"
    );
}
