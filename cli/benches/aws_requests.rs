//! AWS requests per item (`cargo bench -p dmap-cli --bench aws_requests`): a 10,000-object `dmap run`
//! through S3, SQS and DynamoDB on moto's server, with its requests counted by operation, per 1,000 items, and
//! priced at us-east-1 on-demand rates. Needs moto (`scripts/test` installs it into .venv).
//!
//! `DMAP_BENCH_OBJECTS=N` sets the object count.

use std::process::Command;
use std::time::Instant;

use dmap_core::aws::S3Store;
use dmap_core::ports::ObjectStore;
use dmap_emulator as emulator;
use futures::StreamExt;
use serde_json::{Value, json};

/// us-east-1 on-demand prices (late 2026).
const SQS_PER_REQUEST: f64 = 0.40e-6;
const DYNAMODB_PER_WRU: f64 = 0.625e-6;
const DYNAMODB_PER_RRU: f64 = 0.125e-6;
const S3_PER_LIST_OR_PUT: f64 = 0.005e-3;
const S3_PER_GET: f64 = 0.0004e-3;

fn dmap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dmap"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("dmap runs")
}

#[tokio::main]
async fn main() {
    let objects: usize = std::env::var("DMAP_BENCH_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let endpoint = emulator::endpoint();
    let prefix = emulator::unique("bench");
    let bucket = emulator::unique("bench-data");
    let up = dmap(&[
        "local",
        "up",
        "--endpoint-url",
        endpoint,
        "--stack-name",
        &prefix,
        "--bucket",
        &bucket,
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let store = S3Store::new(emulator::clients().await.s3, None);
    let started = Instant::now();
    futures::stream::iter(0..objects)
        .map(|i| {
            let (store, bucket) = (&store, &bucket);
            async move {
                let body = format!(
                    "STATION,TMAX,TMIN\nS{:02},{}.5,-{}\n",
                    i % 100,
                    i % 40,
                    i % 7
                );
                store
                    .put(
                        bucket,
                        &format!("w/{:03}/o{i:06}.csv", i % 100),
                        body.into_bytes(),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .for_each(|r| async { r.expect("upload") })
        .await;
    eprintln!(
        "uploaded {objects} objects to moto in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let spec_json = json!({
        "job_id": "requests",
        "item_reader": { "bucket": bucket, "prefix": "w/" },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN"] },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    });
    std::fs::write(&spec, spec_json.to_string()).unwrap();
    let names = |suffix: &str| format!("{prefix}-{suffix}");
    let (table, work, dlq, finalize) = (
        names("jobs"),
        names("work"),
        names("work-dlq"),
        names("finalize"),
    );
    let run = dmap(&[
        "run",
        spec.to_str().unwrap(),
        "--endpoint-url",
        endpoint,
        "--stats",
        "--json",
        "--table",
        &table,
        "--work-queue",
        &work,
        "--dead-letter-queue",
        &dlq,
        "--finalize-queue",
        &finalize,
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["items"]["total"], objects);

    let requests = summary["requests"].as_object().unwrap();
    let per_thousand = |n: u64| n as f64 * 1000.0 / objects as f64;
    println!(
        "{objects} objects, {} batches of 100, through moto in {:.1} s",
        summary["batches"]["total"],
        summary["elapsed_seconds"].as_f64().unwrap()
    );
    println!(
        "{:<32} {:>9} {:>16}",
        "operation", "requests", "per 1,000 items"
    );
    let mut control_plane = 0.0;
    let mut gets = 0.0;
    for (operation, n) in requests {
        let n = n.as_u64().unwrap();
        println!("{operation:<32} {n:>9} {:>16.2}", per_thousand(n));
        let n = n as f64;
        control_plane += match operation.as_str() {
            op if op.starts_with("SQS.") => n * SQS_PER_REQUEST,
            // A transaction of two small items costs 2 write units per item; the other writes, one.
            "DynamoDB.TransactWriteItems" => n * 4.0 * DYNAMODB_PER_WRU,
            "DynamoDB.PutItem" | "DynamoDB.UpdateItem" => n * DYNAMODB_PER_WRU,
            // Strongly consistent reads: the job item plus 16 counter shards per progress read.
            "DynamoDB.BatchGetItem" => n * 17.0 * DYNAMODB_PER_RRU,
            "DynamoDB.GetItem" | "DynamoDB.Query" => n * DYNAMODB_PER_RRU,
            "S3.ListObjectsV2" | "S3.PutObject" => n * S3_PER_LIST_OR_PUT,
            "S3.GetObject" => {
                gets += n * S3_PER_GET;
                0.0
            }
            _ => 0.0,
        };
    }
    let total: u64 = requests.values().map(|n| n.as_u64().unwrap()).sum();
    println!("{:<32} {total:>9} {:>16.2}", "all", per_thousand(total));
    let scale = 1e6 / objects as f64;
    println!(
        "\ncost per 1M items, us-east-1 on demand: control plane (SQS, DynamoDB, S3 list/put) ${:.3}; the object GETs ${:.3}",
        control_plane * scale,
        gets * scale
    );
}
