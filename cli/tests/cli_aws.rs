//! `dmap local up` and `dmap run` through S3, SQS and DynamoDB on moto's server, as a user runs them.

use std::process::{Command, Output};

use dmap_core::aws::S3Store;
use dmap_core::ports::{ObjectStore, read_all};
use dmap_emulator as emulator;
use serde_json::{Value, json};

fn dmap(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dmap"));
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("dmap runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_then_run_through_the_emulator_with_stats() {
    let endpoint = emulator::endpoint();
    let prefix = emulator::unique("cli");
    let bucket = emulator::unique("cli-data");
    let up = dmap(
        &[
            "local",
            "up",
            "--endpoint-url",
            endpoint,
            "--stack-name",
            &prefix,
            "--bucket",
            &bucket,
        ],
        &[],
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    // `local up` prints the names as `export NAME=value` lines for `dmap run`.
    let exports: Vec<(String, String)> = String::from_utf8(up.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(exports.len(), 5, "{exports:?}");
    assert!(
        exports
            .iter()
            .any(|(k, v)| k == "DMAP_WORK_QUEUE" && *v == format!("{prefix}-work"))
    );

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
    let mut env: Vec<(&str, &str)> = exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
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
    assert_eq!(
        requests["DynamoDB.TransactWriteItems"], 5,
        "one exactly-once record per batch: {requests}"
    );
    assert_eq!(
        requests["SQS.SendMessageBatch"], 2,
        "5 batches in one call, and the finalizer's trigger: {requests}"
    );
    assert!(
        requests["S3.GetObject"].as_u64().unwrap() >= 120,
        "{requests}"
    );
    assert!(summary["requests_per_1000_items"].as_f64().unwrap() > 1000.0);

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
