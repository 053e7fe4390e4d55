//! The rows of one large CSV object (`cargo bench -p dmap-cli --bench object_rows`): a generated CSV of
//! `DMAP_BENCH_CSV_MB` MiB (default 2,048: 2 GiB) with quoted fields, some holding newlines, aggregated by
//! `dmap run` through the `s3_object` reader on the embedded backends. Prints the time, rows/s, MiB/s and the
//! run's peak resident memory, which must stay flat in the object's size (the object is streamed, never held).
//! Asserts only that every row was counted.

mod common;

use std::io::{BufWriter, Write};
use std::time::Instant;

use serde_json::json;

fn main() {
    let mib: u64 = std::env::var("DMAP_BENCH_CSV_MB")
        .ok()
        .map(|s| s.trim().parse().expect("a number of MiB"))
        .unwrap_or(2048);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("bench/rows")).unwrap();
    let path = data.join("bench/rows/readings.csv");

    let started = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
    out.write_all(b"station,date,note,temperature,rain,wind,sky\n")
        .unwrap();
    let (mut written, mut rows) = (0u64, 0u64);
    while written < mib << 20 {
        let note = if rows % 50 == 0 {
            "\"a note, \"\"quoted\"\",\nover two lines\""
        } else {
            "plain"
        };
        // About 100 bytes a row, 500 stations: a weather log's shape.
        let line = format!(
            "S{:04},2026-{:02}-{:02},{note},{}.{},{}.{},{},\"light breeze from the north-west, clear\"\n",
            rows % 500,
            rows % 12 + 1,
            rows % 28 + 1,
            rows % 45,
            rows % 10,
            rows % 7,
            rows % 3,
            rows % 60,
        );
        out.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        rows += 1;
    }
    out.flush().unwrap();
    drop(out);
    println!(
        "generated {rows} rows, {:.0} MiB, in {:.1} s",
        written as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64()
    );

    let spec = json!({
        "job_id": "object-rows",
        "item_reader": { "kind": "s3_object", "bucket": "bench", "key": "rows/readings.csv", "format": "csv" },
        "item_batcher": { "max_items_per_batch": 1000 },
        "processor": { "kind": "csv_aggregate", "group_by": "station", "columns": ["temperature", "rain", "wind"] },
        "result_writer": { "bucket": "bench", "prefix": "results/" }
    });
    let summary = common::dmap_run(data, &spec);
    assert_eq!(summary["items"]["total"], rows, "{summary}");
    let seconds = summary["elapsed_seconds"].as_f64().unwrap();
    println!("s3_object csv_aggregate, 1,000 rows a batch, embedded");
    println!(
        "{:>10} {:>10} {:>9} {:>12} {:>9} {:>14}",
        "MiB", "rows", "seconds", "rows/s", "MiB/s", "peak RSS MiB"
    );
    println!(
        "{:>10.0} {rows:>10} {seconds:>9.2} {:>12.0} {:>9.1} {:>14.1}",
        written as f64 / 1_048_576.0,
        rows as f64 / seconds,
        written as f64 / 1_048_576.0 / seconds,
        summary["peak_memory_bytes"].as_f64().unwrap_or(f64::NAN) / 1_048_576.0
    );
}
