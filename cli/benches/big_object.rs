//! One very large object through the worker (`cargo bench -p dmap-cli --bench big_object`): a sparse file of
//! `DMAP_BENCH_BIG_MB` MiB (default 5,120: 5 GiB) read by `dmap run` on the embedded backends with `count` and
//! with `checksum`, beside `cat` of the same file to `/dev/null`. Prints each one's time, MiB/s and, for the runs,
//! their peak resident memory, which must stay flat in the object's size: the worker streams an object through
//! the processor and never holds it. Asserts only what the runs counted.

mod common;

use std::process::Command;
use std::time::Instant;

use serde_json::json;

fn main() {
    let mib: u64 = std::env::var("DMAP_BENCH_BIG_MB")
        .ok()
        .map(|s| s.trim().parse().expect("a number of MiB"))
        .unwrap_or(5120);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("bench/big")).unwrap();
    let path = data.join("bench/big/zeros.bin");
    // Sparse: no disk is written, and reading it costs what reading cached pages does.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();

    let started = Instant::now();
    let cat = Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat runs");
    assert!(cat.success());
    let cat_seconds = started.elapsed().as_secs_f64();

    println!("one {mib} MiB object (sparse), embedded");
    println!(
        "{:>10} {:>9} {:>9} {:>14}",
        "what", "seconds", "MiB/s", "peak RSS MiB"
    );
    println!(
        "{:>10} {cat_seconds:>9.2} {:>9.0} {:>14}",
        "cat",
        mib as f64 / cat_seconds,
        "-"
    );
    for processor in [
        json!({ "kind": "count" }),
        json!({ "kind": "checksum", "algorithm": "sha256" }),
    ] {
        let kind = processor["kind"].as_str().unwrap().to_owned();
        let spec = json!({
            "job_id": format!("big-{kind}"),
            "item_reader": { "bucket": "bench", "prefix": "big/" },
            "processor": processor,
            "result_writer": { "bucket": "bench", "prefix": "results/" }
        });
        let summary = common::dmap_run(data, &spec);
        assert_eq!(summary["items"]["succeeded"], 1, "{summary}");
        if kind == "count" {
            let result: serde_json::Value = serde_json::from_slice(
                &std::fs::read(data.join("bench/results/big-count/result.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(result["bytes"], mib << 20, "{result}");
        }
        let seconds = summary["elapsed_seconds"].as_f64().unwrap();
        println!(
            "{kind:>10} {seconds:>9.2} {:>9.0} {:>14.1}",
            mib as f64 / seconds,
            summary["peak_memory_bytes"].as_f64().unwrap_or(f64::NAN) / 1_048_576.0
        );
    }
}
