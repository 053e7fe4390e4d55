//! `dmap local up` and `dmap run` through S3, SQS and DynamoDB on moto's server, as a user runs them.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{dmap_aws as dmap, local_up};

use dmap_core::aws::S3Store;
use dmap_core::ports::{ObjectStore, read_all};
use dmap_emulator as emulator;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `dmap run SPEC --endpoint-url ENDPOINT --json` with the stack's variables `env`: its JSON summary.
fn run_spec(spec: &std::path::Path, endpoint: &str, env: &[(&str, &str)]) -> Value {
    let run = dmap(
        &[
            "run",
            spec.to_str().unwrap(),
            "--endpoint-url",
            endpoint,
            "--json",
        ],
        env,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_then_run_through_the_emulator_with_stats() {
    let endpoint = emulator::endpoint();
    let prefix = emulator::unique("cli");
    let bucket = emulator::unique("cli-data");
    let exports = local_up(endpoint, &prefix, &bucket);

    let store = S3Store::new(emulator::clients().await.s3, None);
    for i in 0..120 {
        store
            .put(
                &bucket,
                &format!("logs/{:02}/f{i}.log", i % 9),
                format!("line\n{i}\n").into_bytes(),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let spec_json = json!({
        "job_id": "count-logs",
        "item_reader": { "bucket": bucket, "prefix": "logs/" },
        "item_batcher": { "max_items_per_batch": 25 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "out/" }
    });
    std::fs::write(&spec, spec_json.to_string()).unwrap();
    // The endpoint comes from the SDK's standard variable here, not from a flag.
    let mut env = common::env_of(&exports);
    env.push(("AWS_ENDPOINT_URL", endpoint));
    let run = dmap(&["run", spec.to_str().unwrap(), "--stats", "--json"], &env);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["status"], "SUCCEEDED");
    assert_eq!(summary["items"]["total"], 120);
    assert_eq!(
        summary["manifest"],
        format!("s3://{bucket}/out/count-logs/manifest.json")
    );
    let requests = &summary["requests"];
    // A record per batch: a marker put (beside the job's three: registry, index, job) and a group count, no transaction; the parts
    // travel in the markers, so the only objects written are result.json, failed.jsonl and manifest.json.
    assert_eq!(requests["DynamoDB.PutItem"], 5 + 3, "{requests}");
    assert!(
        requests.get("DynamoDB.TransactWriteItems").is_none(),
        "{requests}"
    );
    assert_eq!(requests["S3.PutObject"], 3, "{requests}");
    assert_eq!(
        requests["SQS.SendMessageBatch"], 2,
        "5 batches in one call, and the finalizer's trigger: {requests}"
    );
    assert!(
        requests["S3.GetObject"].as_u64().unwrap() >= 120,
        "{requests}"
    );
    assert!(summary["requests_per_1000_items"].as_f64().unwrap() > 1000.0);

    // The job's usage, as its manifest records it, is every request of the run up to the manifest's own
    // write, counted per job in the workers', coordinator's and finalizer's writes to DynamoDB and summed
    // there: with the requests sent after the manifest, it is exactly what `--stats` counted.
    let usage = &summary["usage"];
    let after = &summary["requests_after_manifest"];
    let count = |v: &Value, op: &str| v.get(op).and_then(Value::as_u64).unwrap_or(0);
    let ops: BTreeSet<&String> = requests
        .as_object()
        .unwrap()
        .keys()
        .chain(usage["requests"].as_object().unwrap().keys())
        .chain(after.as_object().unwrap().keys())
        .collect();
    for op in ops {
        assert_eq!(
            count(&usage["requests"], op) + count(after, op),
            count(requests, op),
            "{op}: usage {usage}, after the manifest {after}, all {requests}"
        );
    }
    // Every object's read is in it; after it, the manifest's write and its read back, the job's final status,
    // and the last polls of the queues and the progress.
    assert_eq!(count(&usage["requests"], "S3.GetObject"), 120, "{usage}");
    assert_eq!(
        (
            count(after, "S3.PutObject"),
            count(after, "S3.GetObject"),
            count(after, "DynamoDB.UpdateItem")
        ),
        (1, 1, 1),
        "{after}"
    );
    let cost = usage["estimated_cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 0.01, "{usage}");
    assert_eq!(usage["prices"], "us-east-1");
    let manifest: Value = serde_json::from_slice(
        &read_all(&store, &bucket, "out/count-logs/manifest.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&manifest["usage"], usage);

    let result: Value = serde_json::from_slice(
        &read_all(&store, &bucket, "out/count-logs/result.json")
            .await
            .unwrap(),
    )
    .unwrap();
    let bytes: usize = (0..120).map(|i| format!("line\n{i}\n").len()).sum();
    assert_eq!(
        result,
        json!({ "objects": 120, "bytes": bytes, "lines": 240 })
    );

    let missing = dmap(
        &[
            "run",
            spec.to_str().unwrap(),
            "--endpoint-url",
            endpoint,
            "--work-queue",
            "no-such-queue",
        ],
        &env,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no-such-queue"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

async fn read(store: &S3Store, bucket: &str, key: &str) -> Vec<u8> {
    read_all(store, bucket, key)
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The `checksum` processor through S3, SQS and DynamoDB: its `outputs/` files are listed in the manifest and
/// hold each object's digest, as `sha2` and `crc32c` compute it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_outputs_through_the_emulator() {
    let endpoint = emulator::endpoint();
    let prefix = emulator::unique("cli-sum");
    let bucket = emulator::unique("cli-sum-data");
    let exports = local_up(endpoint, &prefix, &bucket);
    let env = common::env_of(&exports);

    let store = S3Store::new(emulator::clients().await.s3, None);
    // Empty, 1 byte, and 5 MiB of varied bytes; then small ones, over several batches.
    let mut objects: Vec<(String, Vec<u8>)> = vec![
        ("in/a-empty".into(), Vec::new()),
        ("in/b-one".into(), b"x".to_vec()),
        (
            "in/c-big".into(),
            (0..5u32 << 20)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    objects.extend((0..9).map(|i| (format!("in/d{i}"), format!("object {i}\n").into_bytes())));
    for (key, body) in &objects {
        store.put(&bucket, key, body.clone()).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for algorithm in ["sha256", "crc32c"] {
        let job_id = format!("sums-{algorithm}");
        let spec = dir.path().join(format!("{algorithm}.json"));
        let spec_json = json!({
            "job_id": job_id,
            "item_reader": { "bucket": bucket, "prefix": "in/" },
            "item_batcher": { "max_items_per_batch": 5 },
            "processor": { "kind": "checksum", "algorithm": algorithm },
            "result_writer": { "bucket": bucket, "prefix": "out/" }
        });
        std::fs::write(&spec, spec_json.to_string()).unwrap();
        let summary = run_spec(&spec, endpoint, &env);
        assert_eq!(summary["status"], "SUCCEEDED");
        let output_key = format!("out/{job_id}/outputs/0000000000.jsonl");
        assert_eq!(
            summary["outputs"],
            json!([format!("s3://{bucket}/{output_key}")])
        );
        let manifest: Value = serde_json::from_slice(
            &read(&store, &bucket, &format!("out/{job_id}/manifest.json")).await,
        )
        .unwrap();
        assert_eq!(manifest["outputs"], json!([output_key]));
        let bytes: usize = objects.iter().map(|(_, body)| body.len()).sum();
        let result: Value = serde_json::from_slice(
            &read(&store, &bucket, &format!("out/{job_id}/result.json")).await,
        )
        .unwrap();
        assert_eq!(result, json!({ "objects": objects.len(), "bytes": bytes }));

        let body = String::from_utf8(read(&store, &bucket, &output_key).await).unwrap();
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), objects.len());
        for (line, (key, body)) in lines.iter().zip(&objects) {
            let digest = match algorithm {
                "sha256" => Sha256::digest(body).to_vec(),
                _ => crc32c::crc32c(body).to_be_bytes().to_vec(),
            };
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(line["key"], *key);
            assert_eq!(line["output"]["checksum"], hex, "{algorithm} of {key}");
            assert_eq!(line["output"]["size"], body.len(), "{key}");
        }
    }
}

/// `monthly_high` through S3, SQS and DynamoDB writes the same `result.json` and `failed.jsonl`, byte for byte, as
/// the embedded run of `dmap demo` over the same files (other batch sizes, other backends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_high_through_the_emulator_matches_the_embedded_run() {
    let endpoint = emulator::endpoint();
    let prefix = emulator::unique("cli-mh");
    let bucket = emulator::unique("cli-gsod");
    let exports = local_up(endpoint, &prefix, &bucket);

    // 501 files, the last one broken: 126 stations over four years, a row every three weeks or so, at the
    // demo's keys (failed.jsonl names them).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let demo = dmap(
        &[
            "demo",
            "--objects",
            "501",
            "--days",
            "17",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let demo: Value = serde_json::from_slice(&demo.stdout).unwrap();
    let store = S3Store::new(emulator::clients().await.s3, None);
    let gsod = data.join("dmap-demo/noaa-gsod");
    for year in std::fs::read_dir(&gsod).unwrap() {
        let year = year.unwrap();
        for file in std::fs::read_dir(year.path()).unwrap() {
            let file = file.unwrap();
            let key = format!(
                "noaa-gsod/{}/{}",
                year.file_name().to_str().unwrap(),
                file.file_name().to_str().unwrap()
            );
            store
                .put(&bucket, &key, std::fs::read(file.path()).unwrap())
                .await
                .unwrap();
        }
    }

    let spec = dir.path().join("spec.json");
    let spec_json = json!({
        "job_id": "monthly-high",
        "item_reader": { "bucket": bucket, "prefix": "noaa-gsod/", "suffix": ".csv" },
        "item_batcher": { "max_items_per_batch": 40 },
        "processor": { "kind": "monthly_high" },
        "tolerated_failure_percentage": 1,
        "result_writer": { "bucket": bucket, "prefix": "out/" }
    });
    std::fs::write(&spec, spec_json.to_string()).unwrap();
    let env = common::env_of(&exports);
    let summary = run_spec(&spec, endpoint, &env);
    assert_eq!(
        summary["items"],
        json!({ "total": 501, "succeeded": 500, "failed": 1 })
    );

    let read_local = |field: &str| std::fs::read(demo[field].as_str().unwrap()).unwrap();
    let read_s3 = |name: &'static str| {
        let (store, bucket) = (&store, &bucket);
        async move {
            read_all(store, bucket, &format!("out/monthly-high/{name}"))
                .await
                .unwrap()
        }
    };
    let result = read_s3("result.json").await;
    assert!(
        result == read_local("result"),
        "result.json differs from the embedded run's"
    );
    let months = serde_json::from_slice::<Value>(&result).unwrap();
    assert_eq!(months.as_object().unwrap().len(), 48);
    let failed = String::from_utf8(read_s3("failed.jsonl").await).unwrap();
    assert_eq!(failed.as_bytes(), read_local("failures"));
    assert!(
        failed.contains("row 19: has 9 fields, the header has 28"),
        "{failed}"
    );
}

/// `dmap status`, `ls`, `update` and `abort` on a stack named by `--stack-name` alone (no queue or table flags),
/// while `dmap run` works the job through the emulator in another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_ls_update_and_abort_a_running_job_by_stack_name() {
    const OBJECTS: u64 = 100;
    let endpoint = emulator::endpoint();
    let stack = emulator::unique("ctl");
    let bucket = emulator::unique("ctl-data");
    local_up(endpoint, &stack, &bucket);
    let store = S3Store::new(emulator::clients().await.s3, None);
    for i in 0..OBJECTS {
        store
            .put(
                &bucket,
                &format!("in/f{i:03}"),
                format!("{i}\n").into_bytes(),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let spec_json = json!({
        "job_id": "ctl-1",
        "item_reader": { "bucket": bucket, "prefix": "in/" },
        "item_batcher": { "max_items_per_batch": 1 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "out/" }
    });
    std::fs::write(&spec, spec_json.to_string()).unwrap();
    let backend = ["--stack-name", stack.as_str(), "--endpoint-url", endpoint];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(backend.iter())
            .map(|a| a.to_string())
            .collect()
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dmap(&args, &[])
    };
    let worker = Command::new(env!("CARGO_BIN_EXE_dmap"))
        .args(with(&[
            "run",
            spec.to_str().unwrap(),
            "--json",
            "--concurrency",
            "2",
        ]))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some batches are done.
    let started = std::time::Instant::now();
    let described = loop {
        let status = run(&with(&["status", "ctl-1", "--json"]));
        if status.status.success() {
            let d: Value = serde_json::from_slice(&status.stdout).unwrap();
            if d["batches"]["done"].as_u64().unwrap() >= 5 {
                break d;
            }
        }
        assert!(started.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(described["status"], "RUNNING", "{described}");
    // The cost so far: the requests the recorded batches carried.
    assert!(
        described["usage"]["requests"]["S3.GetObject"]
            .as_u64()
            .unwrap()
            >= 5,
        "{described}"
    );
    assert!(
        described["usage"]["estimated_cost_usd"].as_f64().unwrap() > 0.0,
        "{described}"
    );
    let items = &described["items"];
    assert_eq!(
        items["succeeded"].as_u64().unwrap()
            + items["failed"].as_u64().unwrap()
            + items["pending"].as_u64().unwrap(),
        items["listed"].as_u64().unwrap()
    );

    let updated = run(&with(&["update", "ctl-1", "--max-concurrency", "2"]));
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let ls = run(&with(&["ls", "--json", "--status", "RUNNING"]));
    let listed: Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed[0]["job_id"], "ctl-1", "{listed}");
    assert_eq!(listed[0]["max_concurrency"], 2, "{listed}");

    // The stack's workers are this test's `dmap run` alone: its batches are done within a second.
    let aborted = run(&with(&["abort", "ctl-1", "--finalize-after", "2"]));
    assert!(
        aborted.status.success(),
        "{}",
        String::from_utf8_lossy(&aborted.stderr)
    );
    let watched = run(&with(&["status", "ctl-1", "--watch", "--json"]));
    assert_eq!(
        watched.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let d: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(d["status"], "ABORTED");
    let out = worker.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "ABORTED");
    let done = d["items"]["succeeded"].as_u64().unwrap() + d["items"]["failed"].as_u64().unwrap();
    assert_eq!(summary["items"]["total"], done);
    assert!(done < OBJECTS, "{summary}");
    let all = run(&with(&["ls", "--json"]));
    let listed: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(listed[0]["status"], "ABORTED", "{listed}");

    // Redriven, the same job runs the objects the abort left, and only those, to its end.
    let redriven = run(&with(&[
        "redrive",
        "ctl-1",
        "--json",
        "--concurrency",
        "2",
        "--stats",
    ]));
    assert_eq!(
        redriven.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    let summary: Value = serde_json::from_slice(&redriven.stdout).unwrap();
    assert_eq!(summary["status"], "SUCCEEDED", "{summary}");
    assert_eq!(summary["items"]["total"], OBJECTS, "{summary}");
    // One GetObject per object the abort left (none read twice), and one of the manifest, read back once the
    // job has ended.
    assert_eq!(
        summary["requests"]["S3.GetObject"].as_u64().unwrap_or(0),
        OBJECTS - done + 1,
        "{summary}"
    );
    let d: Value =
        serde_json::from_slice(&run(&with(&["status", "ctl-1", "--json"])).stdout).unwrap();
    assert_eq!(
        (&d["status"], &d["redrives"]),
        (&json!("SUCCEEDED"), &json!(1)),
        "{d}"
    );
    // Both runs' usage, in the manifest and in the store alike; every object read once in all.
    assert_eq!(d["usage"], summary["usage"], "{d}");
    assert_eq!(
        d["usage"]["requests"]["S3.GetObject"].as_u64().unwrap(),
        OBJECTS,
        "{d}"
    );
    let result = read_all(&store, &bucket, "out/ctl-1/result.json")
        .await
        .unwrap();
    let result: Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(result["objects"], OBJECTS, "{result}");
}
