//! AWS requests per item (`cargo bench -p dmap-cli --bench aws_requests`): a 20,000-object `dmap run`
//! through S3, SQS and DynamoDB on moto's server at 100 and at 500 items per batch, with its requests counted
//! by operation, per 1,000 items, and priced at us-east-1 on-demand rates next to Step Functions Distributed
//! Map's and S3 Batch Operations' at the same batch size. Needs moto (`scripts/test` installs it into .venv).
//!
//! DynamoDB bills by item size, which moto does not report: the job's items are read back after each run and
//! sized by DynamoDB's rules, and each write and read is priced from the sizes of the items it touches.
//!
//! A job's own requests (creating it, checking its outputs, writing result, failures and manifest, the progress
//! bar's reads) are spread over its items like the rest: 20,000 objects keep them a small share.
//!
//! `DMAP_BENCH_OBJECTS=N` sets the object count; `DMAP_BENCH_BATCHES=100,500` the batch sizes.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;

use dmap_core::aws::S3Store;
use dmap_core::ports::ObjectStore;
use dmap_core::usage::Prices;
use dmap_emulator as emulator;
use futures::StreamExt;
use serde_json::{Value, json};

/// Step Functions: a Standard state transition per child execution, and an Express request per child.
const SFN_PER_TRANSITION: f64 = 0.025e-3;
const SFN_EXPRESS_PER_REQUEST: f64 = 1.0e-6;
/// Distributed Map's children's Express duration for a million items: ~$0.32 at 100 items a batch, less its
/// 10,000 children's transitions and requests ($0.26). It follows the work done, not the batch count.
const SFN_EXPRESS_DURATION_PER_MILLION: f64 = 0.06;
/// S3 Batch Operations invoking a Lambda per object, per million objects, at any batch size.
const S3_BATCH_OPERATIONS_PER_MILLION: f64 = 1.45;

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
        .unwrap_or(20_000);
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

    let batch_sizes: Vec<u64> = std::env::var("DMAP_BENCH_BATCHES")
        .unwrap_or_else(|_| "100,500".into())
        .split(',')
        .map(|n| n.trim().parse().expect("DMAP_BENCH_BATCHES: numbers"))
        .collect();
    let dynamodb = emulator::clients().await.dynamodb;
    let mut summary_lines = Vec::new();
    for batch in batch_sizes {
        let job_id = format!("requests-{batch}");
        let (control_plane, gets) =
            run_and_price(&dynamodb, &prefix, &bucket, &job_id, batch, objects).await;
        let children = 1e6 / batch as f64;
        let distributed_map = children * (SFN_PER_TRANSITION + SFN_EXPRESS_PER_REQUEST)
            + SFN_EXPRESS_DURATION_PER_MILLION;
        summary_lines.push(format!(
            "{batch:>5} items a batch: dmap ${control_plane:.4} (object GETs ${gets:.3} more); Step Functions Distributed Map ~${distributed_map:.2}; S3 Batch Operations ~${S3_BATCH_OPERATIONS_PER_MILLION:.2}"
        ));
    }
    println!("\ncontrol plane per 1M items, us-east-1 on demand (orchestration only):");
    for line in summary_lines {
        println!("{line}");
    }
}

/// Runs the job `job_id` over the uploaded objects at `batch` items a batch, prints its requests by operation,
/// and returns the control plane's cost and the object GETs' per million items.
async fn run_and_price(
    dynamodb: &aws_sdk_dynamodb::Client,
    prefix: &str,
    bucket: &str,
    job_id: &str,
    batch: u64,
    objects: usize,
) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let spec_json = json!({
        "job_id": job_id,
        "item_reader": { "bucket": bucket, "prefix": "w/" },
        "item_batcher": { "max_items_per_batch": batch },
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
        emulator::endpoint(),
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
    let batches = summary["batches"]["total"].as_u64().unwrap();
    let sizes = ItemSizes::read(dynamodb, &table, job_id).await;

    let requests = summary["requests"].as_object().unwrap();
    let per_thousand = |n: u64| n as f64 * 1000.0 / objects as f64;
    println!(
        "\n{objects} objects, {batches} batches of {batch}, through moto in {:.1} s",
        summary["elapsed_seconds"].as_f64().unwrap()
    );
    println!(
        "DynamoDB items: a batch marker {:.0} bytes ({:.1} write units), a group counter {:.0} bytes, the job {:.0} bytes",
        sizes.marker_bytes(),
        sizes.marker_wru(),
        sizes.group_bytes(),
        sizes.job
    );
    println!(
        "{:<32} {:>9} {:>16}",
        "operation", "requests", "per 1,000 items"
    );
    // dmap's prices, from its one table (us-east-1, on demand); DynamoDB's by the sizes read back.
    let prices = Prices::us_east_1();
    let (sqs_per_request, dynamodb_per_wru, dynamodb_per_rru) = (
        prices.sqs_per_request,
        prices.dynamodb_per_write_unit,
        prices.dynamodb_per_read_unit,
    );
    let mut control_plane = 0.0;
    let mut gets = 0.0;
    for (operation, n) in requests {
        let n = n.as_u64().unwrap();
        println!("{operation:<32} {n:>9} {:>16.2}", per_thousand(n));
        let n = n as f64;
        // A retry is billed as the request it repeats.
        let operation = operation
            .strip_suffix(dmap_core::usage::RETRY)
            .unwrap_or(operation);
        control_plane += match operation {
            op if op.starts_with("SQS.") => n * sqs_per_request,
            // The markers, then the job's own items at the job item's size.
            "DynamoDB.PutItem" => {
                let markers = (sizes.markers.len() as f64).min(n);
                (markers * sizes.marker_wru() + (n - markers) * wru(sizes.job)) * dynamodb_per_wru
            }
            // A group count per batch, then checkpoints and status moves of the job item.
            "DynamoDB.UpdateItem" => {
                let groups = (batches as f64).min(n);
                (groups * wru(sizes.group_bytes()) + (n - groups) * wru(sizes.job))
                    * dynamodb_per_wru
            }
            "DynamoDB.DeleteItem" => n * dynamodb_per_wru,
            "DynamoDB.TransactWriteItems" => n * 4.0 * dynamodb_per_wru,
            // Reads of items under 4 KB: a unit strongly consistent, half a unit eventually.
            "DynamoDB.GetItem" => n * dynamodb_per_rru,
            "DynamoDB.GetItem (eventually consistent)" => n * 0.5 * dynamodb_per_rru,
            "DynamoDB.BatchGetItem" => n * 17.0 * dynamodb_per_rru,
            // A unit a Query at least; the finalizer's Queries also read every marker once, parts and all.
            "DynamoDB.Query" => {
                let markers: f64 = sizes.markers.iter().sum();
                (n + (markers / 4096.0).ceil()) * dynamodb_per_rru
            }
            "S3.ListObjectsV2" | "S3.PutObject" => n * prices.s3_per_put_or_list,
            "S3.GetObject" => {
                gets += n * prices.s3_per_get;
                0.0
            }
            _ => 0.0,
        };
    }
    let total: u64 = requests.values().map(|n| n.as_u64().unwrap()).sum();
    println!("{:<32} {total:>9} {:>16.2}", "all", per_thousand(total));
    let scale = 1e6 / objects as f64;
    println!(
        "cost per 1M items at {batch} a batch: control plane (SQS, DynamoDB, S3 list/put) ${:.4}; the object GETs ${:.3}",
        control_plane * scale,
        gets * scale
    );
    (control_plane * scale, gets * scale)
}

/// Write units of an item of `bytes` (one per KB started).
fn wru(bytes: f64) -> f64 {
    (bytes / 1024.0).ceil().max(1.0)
}

/// The sizes of a job's DynamoDB items, by DynamoDB's rules (attribute names and values).
struct ItemSizes {
    markers: Vec<f64>,
    groups: Vec<f64>,
    job: f64,
}

impl ItemSizes {
    async fn read(client: &aws_sdk_dynamodb::Client, table: &str, job_id: &str) -> Self {
        let mut sizes = Self {
            markers: Vec::new(),
            groups: Vec::new(),
            job: 0.0,
        };
        let mut start = None;
        loop {
            let out = client
                .scan()
                .table_name(table)
                .filter_expression("begins_with(pk, :job)")
                .expression_attribute_values(":job", AttributeValue::S(format!("JOB#{job_id}")))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan the jobs table");
            for item in out.items() {
                let sk = item
                    .get("sk")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                let bytes = item_bytes(item);
                if sk.starts_with("BATCH#") {
                    sizes.markers.push(bytes);
                } else if sk.starts_with("GROUP#") {
                    sizes.groups.push(bytes);
                } else if sk == "JOB" {
                    sizes.job = bytes;
                }
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return sizes,
            }
        }
    }

    fn marker_bytes(&self) -> f64 {
        mean(&self.markers)
    }

    fn marker_wru(&self) -> f64 {
        mean(&self.markers.iter().map(|b| wru(*b)).collect::<Vec<_>>())
    }

    /// The groups' largest: a count is billed at the item's size when it is written.
    fn group_bytes(&self) -> f64 {
        self.groups.iter().copied().fold(0.0, f64::max)
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// An item's size as DynamoDB bills it: each attribute's name and value; a number about one byte per two
/// digits, plus one.
fn item_bytes(item: &HashMap<String, AttributeValue>) -> f64 {
    fn value(v: &AttributeValue) -> usize {
        let number = |n: &str| n.len().div_ceil(2) + 1;
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => number(n),
            AttributeValue::Ns(ns) => ns.iter().map(|n| number(n)).sum(),
            AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>()
            }
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum::<usize>() as f64
}
