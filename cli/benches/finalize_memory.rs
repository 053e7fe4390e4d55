//! Finalize-memory benchmark (`cargo bench -p dmap-cli --bench finalize_memory`): the peak resident memory of a
//! whole embedded `dmap run` whose every item fails in a batch of its own, so the job has as many parts and
//! failures as items, and its finalize is a tree of ranges of 10,000 batches. Prints numbers; asserts only
//! that every item was counted and listed in `failed.jsonl`.
//!
//! Then the same for a result of many groups: one CSV object of N rows, each row a group of its own
//! (`csv_aggregate`), so that past the finalizer's bound of 100,000 groups the result is spilled and written in
//! shards; asserts that the result counts every group (shards and their contents are the tests' concern).
//! CI's run (3,000 rows) stays under the bound.
//!
//! `DMAP_BENCH_SIZES=50000,200000` sets the object counts (the default); `DMAP_BENCH_GROUPS=100000,800000`
//! the rows (the default).

mod common;

use std::path::Path;

use common::dmap_run;
use serde_json::json;

/// `n` small CSV files without the column the job groups by: each item fails, naming it.
fn generate(data: &Path, prefix: &str, n: usize) {
    for i in 0..n {
        let path = data
            .join("bench")
            .join(prefix)
            .join(format!("{:03}", i / 1000))
            .join(format!("obj{i:07}.csv"));
        if i % 1000 == 0 {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        std::fs::write(path, format!("A,B\n{i},1\n")).unwrap();
    }
}

fn main() {
    let sizes = common::sizes(&[50_000, 200_000]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("bench")).unwrap();
    println!("embedded runs, one item a batch, every item failed");
    println!(
        "{:>8} {:>8} {:>12} {:>9} {:>14} {:>16}",
        "objects", "parts", "ranges", "seconds", "peak RSS MiB", "failed.jsonl MiB"
    );
    for n in sizes {
        let prefix = format!("fail{n}/");
        generate(data, &prefix, n);
        let job_id = format!("fail-{n}");
        let spec = json!({
            "job_id": job_id,
            "item_reader": { "bucket": "bench", "prefix": prefix },
            "item_batcher": { "max_items_per_batch": 1 },
            "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX"] },
            "tolerated_failure_percentage": 100,
            "result_writer": { "bucket": "bench", "prefix": "results/" }
        });
        let s = dmap_run(data, &spec);
        assert_eq!(s["items"]["failed"], n, "{s}");
        let failed = data.join(format!("bench/results/{job_id}/failed.jsonl"));
        let lines = std::fs::read_to_string(&failed).unwrap().lines().count();
        assert_eq!(lines, n, "one failure line per item");
        let ranges = std::fs::read_dir(data.join(format!("bench/results/{job_id}/finalize")))
            .map(|d| {
                d.filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".json") && name != "fan-out.json"
                })
                .count()
            })
            .unwrap_or(0);
        println!(
            "{n:>8} {n:>8} {ranges:>12} {:>9.1} {:>14.1} {:>16.1}",
            s["elapsed_seconds"].as_f64().unwrap(),
            s["peak_memory_bytes"].as_f64().unwrap_or(f64::NAN) / 1_048_576.0,
            std::fs::metadata(&failed).unwrap().len() as f64 / 1_048_576.0
        );
        std::fs::remove_dir_all(data.join("bench").join(&prefix)).unwrap();
        std::fs::remove_dir_all(data.join("bench/results")).unwrap();
    }

    println!();
    println!("embedded runs, one CSV object, every row a group of its own, batches of 100 rows");
    println!(
        "{:>8} {:>8} {:>7} {:>9} {:>14}",
        "rows", "groups", "shards", "seconds", "peak RSS MiB"
    );
    let groups = std::env::var("DMAP_BENCH_GROUPS").map_or_else(
        |_| vec![100_000, 800_000],
        |s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect()
        },
    );
    for n in groups {
        let mut csv = String::from("ID,V\n");
        for i in 0..n {
            csv += &format!("g{i:08},{}\n", i % 97);
        }
        std::fs::write(data.join("bench/rows.csv"), csv).unwrap();
        let job_id = format!("groups-{n}");
        let spec = json!({
            "job_id": job_id,
            "item_reader": { "kind": "s3_object", "bucket": "bench", "key": "rows.csv", "format": "csv" },
            "item_batcher": { "max_items_per_batch": 100 },
            "processor": { "kind": "csv_aggregate", "group_by": "ID", "columns": ["V"] },
            "result_writer": { "bucket": "bench", "prefix": "results/" }
        });
        let s = dmap_run(data, &spec);
        assert_eq!(s["items"]["succeeded"], n, "{s}");
        let result: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join(format!("bench/results/{job_id}/result.json"))).unwrap(),
        )
        .unwrap();
        let (groups, shards) = match result.get("sharded") {
            Some(sharded) => (
                sharded["groups"].as_u64().unwrap(),
                sharded["shards"].as_array().unwrap().len(),
            ),
            None => (result["groups"].as_object().unwrap().len() as u64, 0),
        };
        assert_eq!(groups, n as u64, "every row's group");
        println!(
            "{n:>8} {groups:>8} {shards:>7} {:>9.1} {:>14.1}",
            s["elapsed_seconds"].as_f64().unwrap(),
            s["peak_memory_bytes"].as_f64().unwrap_or(f64::NAN) / 1_048_576.0,
        );
        std::fs::remove_dir_all(data.join("bench/results")).unwrap();
    }
}
