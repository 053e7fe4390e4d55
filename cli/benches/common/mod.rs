//! What the benchmarks share: a job run by the `dmap` binary on the embedded backends.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `spec` (written beside the data as `<job_id>.json`) with `dmap run --data-dir data --json` and returns
/// its JSON summary; panics with dmap's error output if the run fails.
pub fn dmap_run(data: &Path, spec: &Value) -> Value {
    let spec_path = data.join(format!("{}.json", spec["job_id"].as_str().unwrap()));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dmap"))
        .args([
            "run",
            spec_path.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ])
        .output()
        .expect("dmap runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON summary")
}

/// The object counts a benchmark runs: `DMAP_BENCH_SIZES` (`10000,50000`), else `default`.
#[allow(dead_code)] // not every benchmark takes sizes
pub fn sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("DMAP_BENCH_SIZES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}
