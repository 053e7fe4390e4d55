//! Embedded-run benchmark (`cargo bench -p dmap-cli --bench embedded`): throughput and peak resident memory
//! of `dmap run` as the object count grows, and the `count` processor's read throughput against `cat` over
//! the same files. Prints numbers; asserts nothing (targets live in the closing notes, not in timed tests).
//!
//! `DMAP_BENCH_SIZES=10000,50000` sets the object counts (default 10,000, 50,000 and 100,000).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::dmap_run;
use serde_json::{Value, json};

fn generate(data: &Path, prefix: &str, n: usize, per_folder: Option<usize>) {
    for i in 0..n {
        let folder = per_folder
            .map(|p| format!("{:05}/", i / p))
            .unwrap_or_default();
        let path = data
            .join("bench")
            .join(prefix)
            .join(folder)
            .join(format!("obj{i:07}.csv"));
        if i == 0 || per_folder.is_some_and(|p| i % p == 0) {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        let body = format!(
            "STATION,TMAX,TMIN\nS{:02},{}.5,-{}\nS{:02},,{}\n",
            i % 100,
            i % 40,
            i % 7,
            (i + 1) % 100,
            i % 9
        );
        std::fs::write(path, body).unwrap();
    }
}

fn spec(job_id: &str, prefix: &str, processor: Value) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": "bench", "prefix": prefix },
        "processor": processor,
        "result_writer": { "bucket": "bench", "prefix": "results/" }
    })
}

fn mib(bytes: &Value) -> f64 {
    bytes.as_f64().unwrap_or(f64::NAN) / 1_048_576.0
}

fn main() {
    let sizes = common::sizes(&[10_000, 50_000, 100_000]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("bench")).unwrap();
    let csv =
        json!({ "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN"] });

    println!("embedded csv_aggregate runs, 100 items a batch, 8 workers");
    println!(
        "{:>8}  {:<22} {:>9} {:>12} {:>14}",
        "objects", "layout", "seconds", "items/s", "peak RSS MiB"
    );
    let mut runs: Vec<(usize, &str, String)> = sizes
        .iter()
        .map(|&n| (n, "nested, 1,000 a folder", format!("nested{n}/")))
        .collect();
    let largest = *sizes.iter().max().unwrap();
    runs.push((largest, "flat, one folder", format!("flat{largest}/")));
    for (n, layout, prefix) in runs {
        generate(
            data,
            &prefix,
            n,
            layout.starts_with("nested").then_some(1000),
        );
        let s = dmap_run(
            data,
            &spec(
                &format!("run-{}", prefix.trim_end_matches('/')),
                &prefix,
                csv.clone(),
            ),
        );
        assert_eq!(s["items"]["total"], n);
        println!(
            "{n:>8}  {layout:<22} {:>9.2} {:>12.0} {:>14.1}",
            s["elapsed_seconds"].as_f64().unwrap(),
            s["items_per_second"].as_f64().unwrap(),
            mib(&s["peak_memory_bytes"])
        );
        std::fs::remove_dir_all(data.join("bench").join(&prefix)).unwrap();
        std::fs::remove_dir_all(data.join("bench/results")).unwrap();
    }

    // Read throughput: 256 objects of 4 MiB (1 GiB, so a run's fixed cost does not dominate), page-cached,
    // through `count` vs `cat`.
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat(65_536);
    for i in 0..256 {
        let path = data.join(format!("bench/big/obj{i:03}.txt"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(path)
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
    let total_mb = 256.0 * line.len() as f64 / 1e6;
    let cat = || {
        let started = Instant::now();
        let status = Command::new("sh")
            .args([
                "-c",
                &format!("cat {}/bench/big/* > /dev/null", data.display()),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        started.elapsed().as_secs_f64()
    };
    cat(); // warm the page cache
    let cat_secs = cat();
    let s = dmap_run(
        data,
        &spec("read-throughput", "big/", json!({ "kind": "count" })),
    );
    assert_eq!(s["items"]["total"], 256);
    let dmap_secs = s["elapsed_seconds"].as_f64().unwrap();
    println!(
        "\nread throughput over {total_mb:.0} MB (256 objects, page cache warm): dmap count {:.0} MB/s, cat {:.0} MB/s",
        total_mb / dmap_secs,
        total_mb / cat_secs
    );
}
