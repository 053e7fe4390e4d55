//! `dmap plan`: its counts are a real run's. On the demo's dataset, embedded: the items and batches of the
//! run that follows. Through S3, SQS and DynamoDB on moto's server: every request it calls exact is what
//! `dmap run --stats` then counts, operation by operation; and the plan writes and sends nothing (the run
//! after it finds no results in its way and no stray batch in its counts).

mod common;

use std::process::Output;

use common::{dmap_aws as dmap, local_up};

use dmap_emulator as emulator;
use serde_json::{Value, json};

fn json_of(output: Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// The demo's dataset (2,001 station-years, one broken): the plan counts what `dmap run` then runs.
#[test]
fn plan_counts_the_demo_datasets_items_and_batches_as_the_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = json_of(dmap(
        &[
            "demo",
            "--objects",
            "2001",
            "--days",
            "9",
            "--json",
            "--data-dir",
            data,
        ],
        &[],
    ));
    let spec = dir.path().join("demo-spec.json");
    let spec = spec.to_str().unwrap();
    let plan = json_of(dmap(
        &[
            "plan",
            spec,
            "--data-dir",
            data,
            "--sample",
            "120",
            "--json",
        ],
        &[],
    ));
    let census = &plan["census"];
    assert_eq!(census["items"], 2001, "{census}");
    assert_eq!(census["items"], demo["items"]["total"]);
    assert_eq!(census["batches"], demo["batches"]["total"], "{census}");
    assert_eq!(census["pages"], 3, "{census}");
    assert!(census.get("extrapolated").is_none());
    // The sample: the first three batches of 50, processed for real.
    assert_eq!(plan["sample"]["items"], 150, "{plan}");
    assert!(plan["sample"]["secs_per_batch"].as_f64().unwrap() > 0.0);
    // Every object is read once by its worker. On the stack (16 ranges) the listing splits after its first
    // page at the year folders still ahead: its three pages and two checks, the split's folder listings, and
    // a partial page more a range; estimated, as the ranges' pages depend on timing.
    // Parts of 50 station-years run near the 8 KiB a marker holds: a part over it would be an object, read
    // back by the finalizer, so the GETs are exact only as far as the sample shows the parts.
    assert_eq!(plan["requests"]["S3.GetObject"]["count"], 2001);
    let ranges = census["ranges"].as_u64().unwrap();
    let reads = census["reads"]["S3.ListObjectsV2"].as_u64().unwrap();
    assert!(ranges >= 2 && reads > 3 + 2, "{census}");
    let lists = &plan["requests"]["S3.ListObjectsV2"];
    assert_eq!(lists["count"], reads + ranges - 1, "{lists}");
    assert_eq!(lists["exact"], false, "{lists}");
    assert!(plan["cost_usd"]["total"].as_f64().unwrap() > 0.0);
    assert!(plan["timeline"]["total_secs"].as_f64().unwrap() > 0.0);

    // A run of the same spec: its manifest counts what the plan counted.
    let run = json_of(dmap(&["run", spec, "--data-dir", data, "--json"], &[]));
    assert_eq!(run["items"]["total"], census["items"]);
    assert_eq!(run["batches"]["total"], census["batches"]);

    // The text form names the bottleneck and the counts.
    let text = dmap(&["plan", spec, "--data-dir", data], &[]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("2,001 (counted)"), "{text}");
    assert!(text.contains("bounded by"), "{text}");
}

/// A plan of a job whose results are already there is refused, as the run would be: before anything.
#[test]
fn plan_refuses_what_the_run_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    std::fs::create_dir_all(dir.path().join("bkt/in")).unwrap();
    std::fs::create_dir_all(dir.path().join("bkt/out/taken")).unwrap();
    std::fs::write(dir.path().join("bkt/in/x.txt"), "x\n").unwrap();
    std::fs::write(dir.path().join("bkt/out/taken/manifest.json"), "{}").unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "job_id": "taken",
            "item_reader": { "bucket": "bkt", "prefix": "in/" },
            "processor": { "kind": "count" },
            "result_writer": { "bucket": "bkt", "prefix": "out/" }
        })
        .to_string(),
    )
    .unwrap();
    let plan = dmap(&["plan", spec.to_str().unwrap(), "--data-dir", data], &[]);
    assert!(!plan.status.success());
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert!(stderr.contains("already exist"), "{stderr}");
}

/// Through moto: the demo's files in a bucket, planned, then run with `--stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_the_requests_of_a_run_through_the_emulator_exactly() {
    let endpoint = emulator::endpoint();
    let stack = emulator::unique("plan");
    let bucket = emulator::unique("plan-data");
    let exports = local_up(endpoint, &stack, &bucket);
    let env = common::env_of(&exports);

    // 1,101 station-years (one broken): two listing pages.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    json_of(dmap(
        &[
            "demo",
            "--objects",
            "1101",
            "--days",
            "3",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    ));
    let gsod = data.join("dmap-demo/noaa-gsod");
    let mut objects = Vec::new();
    for year in std::fs::read_dir(&gsod).unwrap() {
        let year = year.unwrap();
        for file in std::fs::read_dir(year.path()).unwrap() {
            let file = file.unwrap();
            objects.push((
                format!(
                    "noaa-gsod/{}/{}",
                    year.file_name().to_str().unwrap(),
                    file.file_name().to_str().unwrap()
                ),
                std::fs::read(file.path()).unwrap(),
            ));
        }
    }
    emulator::put_objects(&emulator::clients().await.s3, &bucket, objects).await;

    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "job_id": "planned",
            // One stream, as `dmap run` lists by default: the plan then counts its checkpoints exactly.
            "item_reader": { "bucket": bucket, "prefix": "noaa-gsod/", "suffix": ".csv", "list_parallelism": 1 },
            "item_batcher": { "max_items_per_batch": 40 },
            "processor": { "kind": "monthly_high" },
            "tolerated_failure_percentage": 1,
            "result_writer": { "bucket": bucket, "prefix": "out/" }
        })
        .to_string(),
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let plan = json_of(dmap(
        &[
            "plan",
            spec,
            "--endpoint-url",
            endpoint,
            // Every batch sampled: each part is seen, so the objects written and read are exact too.
            "--sample",
            "1101",
            "--json",
        ],
        &env,
    ));
    assert_eq!(plan["census"]["items"], 1101, "{plan}");
    assert_eq!(plan["census"]["batches"], 28, "{plan}");

    // The run after it: nothing of the plan's is in its way (its results' folder is empty) or in its counts.
    let run = json_of(dmap(
        &["run", spec, "--endpoint-url", endpoint, "--stats", "--json"],
        &env,
    ));
    assert_eq!(run["items"]["total"], 1101);
    assert_eq!(run["batches"]["total"], plan["census"]["batches"]);
    let exact = common::exact_requests_match(&plan, &run).len();
    // ListObjectsV2, GetObject, PutObject, SendMessageBatch, PutItem, UpdateItem, DeleteItem and the
    // eventually consistent GetItem.
    assert!(exact >= 8, "{}", plan["requests"]);
}
