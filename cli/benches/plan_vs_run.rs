//! `dmap plan` against the run it predicts, at a million objects (`cargo bench -p dmap-cli --bench
//! plan_vs_run`): a `count` job over 1,000,000 objects in S3 on moto's server, planned with `dmap plan`, then
//! run with `dmap run --stats` through S3, SQS and DynamoDB. It prints the plan's census beside the run's
//! totals, and each request count the plan calls exact beside the run's, and fails if one differs. It takes
//! about 40 minutes on 2 cores: moto answers a GetObject in some 2 ms of Python, and each object is read once.
//!
//! The objects go into moto in-process (`tools/moto_server.py`'s seeding route), and moto's listing there finds
//! a page by bisection: stock moto sorts every key of the bucket for each page, hours a listing at this size.
//! The listing is one stream (`list_parallelism: 1`), as `dmap run` lists by default: a split listing's pages
//! depend on timing, so the plan estimates them rather than counting them.
//!
//! `DMAP_BENCH_OBJECTS=N` sets the object count; `DMAP_BENCH_SAMPLE=N` the items the plan processes for real;
//! `DMAP_BENCH_WORKERS` and `DMAP_BENCH_ITEM_CONCURRENCY` the run's `--concurrency` and `--item-concurrency`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{dmap_aws, exact_requests_match, local_up};
use dmap_emulator as emulator;
use serde_json::{Value, json};

fn json_of(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn main() {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |n| n.parse().expect("a number"))
    };
    let objects = number("DMAP_BENCH_OBJECTS", 1_000_000);
    let sample = number("DMAP_BENCH_SAMPLE", 1_000).min(objects);
    // Few requests at once: moto answers one at a time, and hundreds of waiting connections only slow it.
    let workers = number("DMAP_BENCH_WORKERS", 4).to_string();
    let item_concurrency = number("DMAP_BENCH_ITEM_CONCURRENCY", 4).to_string();

    let endpoint = emulator::endpoint();
    let stack = emulator::unique("million");
    let bucket = emulator::unique("million-data");
    let exports = local_up(endpoint, &stack, &bucket);
    let env = common::env_of(&exports);

    let started = Instant::now();
    emulator::seed_objects(&bucket, "data/", objects, 7, "one");
    eprintln!(
        "seeded {objects} objects into moto in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "job_id": "million",
            "item_reader": { "bucket": bucket, "prefix": "data/", "list_parallelism": 1 },
            "processor": { "kind": "count" },
            "result_writer": { "bucket": bucket, "prefix": "out/" }
        })
        .to_string(),
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let sample = sample.to_string();

    let started = Instant::now();
    let plan = json_of(dmap_aws(
        &[
            "plan",
            spec,
            "--endpoint-url",
            endpoint,
            "--sample",
            &sample,
            "--json",
        ],
        &env,
    ));
    let plan_secs = started.elapsed().as_secs_f64();
    let census = &plan["census"];
    eprintln!(
        "planned in {plan_secs:.1} s: {} items, {} batches, {} listing pages",
        census["items"], census["batches"], census["pages"]
    );

    let started = Instant::now();
    let run = json_of(dmap_aws(
        &[
            "run",
            spec,
            "--endpoint-url",
            endpoint,
            "--stats",
            "--json",
            "--concurrency",
            &workers,
            "--item-concurrency",
            &item_concurrency,
        ],
        &env,
    ));
    let run_secs = started.elapsed().as_secs_f64();

    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(census["items"], objects, "{census}");
    assert!(census.get("extrapolated").is_none(), "{census}");
    assert_eq!(run["items"]["total"], census["items"], "{run}");
    assert_eq!(run["items"]["succeeded"], census["items"], "{run}");
    assert_eq!(run["batches"]["total"], census["batches"], "{run}");
    let lines = exact_requests_match(&plan, &run);

    println!(
        "\n{objects} objects through moto: plan {plan_secs:.0} s (sample {sample} items), run {run_secs:.0} s"
    );
    println!(
        "items: plan {} (counted), run {}; batches: plan {}, run {}",
        census["items"], run["items"]["total"], census["batches"], run["batches"]["total"]
    );
    println!(
        "requests the plan calls exact ({}), each equal to the run's:",
        lines.len()
    );
    for line in &lines {
        println!("  {line}");
    }
    println!("requests the plan estimates (timing decides), beside the run's:");
    for (op, predicted) in plan["requests"].as_object().unwrap() {
        if predicted["exact"] != true {
            let ran = run["requests"].get(op).and_then(Value::as_u64).unwrap_or(0);
            println!(
                "  {op:<42} plan ~{:>11}   run {ran:>12}",
                predicted["count"]
            );
        }
    }
    println!(
        "the plan's time on AWS for it: {:.0} s; its cost: ${:.4}",
        plan["timeline"]["total_secs"].as_f64().unwrap_or(0.0),
        plan["cost_usd"]["total"].as_f64().unwrap_or(0.0)
    );
}
