//! The `dmap` binary as a user runs it: exit codes, messages, the JSON summary, and the demo.

mod common;

use std::path::Path;

use common::{dmap, text};
use serde_json::{Value, json};

fn write(root: &Path, rel: &str, body: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// A data dir with bucket `data`: 30 good CSVs and `bad` broken ones under `in/`.
fn dataset(bad: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..30 {
        write(
            dir.path(),
            &format!("data/in/s{i:02}.csv"),
            &format!("STATION,TMAX\nS{},{}.5\nS{},\n", i % 4, i, i % 3),
        );
    }
    for i in 0..bad {
        write(
            dir.path(),
            &format!("data/in/broken{i}.csv"),
            "STATION,TMAX\nS1,hot\n",
        );
    }
    dir
}

fn spec_file(dir: &Path, spec: &Value) -> String {
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

fn spec(job_id: &str) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": "data", "prefix": "in/", "suffix": ".csv" },
        "item_batcher": { "max_items_per_batch": 4 },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX"] },
        "result_writer": { "bucket": "data", "prefix": "out/" }
    })
}

#[test]
fn run_succeeds_and_prints_a_one_line_summary() {
    let dir = dataset(0);
    let spec = spec_file(dir.path(), &spec("ok"));
    let out = dmap(&["run", &spec, "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("ok SUCCEEDED: 30 items (30 succeeded, 0 failed) in 8 batches"),
        "{stdout}"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/out/ok/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "SUCCEEDED");
    assert_eq!(manifest["result"], "out/ok/result.json");
    assert_eq!(
        std::fs::read(dir.path().join("data/out/ok/failed.jsonl")).unwrap(),
        b""
    );
}

#[test]
fn a_failed_job_exits_3_and_the_json_summary_says_why() {
    let dir = dataset(2);
    let spec = spec_file(dir.path(), &spec("strict"));
    let out = dmap(&[
        "run",
        &spec,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(summary["status"], "FAILED");
    assert_eq!(
        summary["items"],
        json!({ "total": 32, "succeeded": 30, "failed": 2 })
    );
    let failures = std::fs::read_to_string(summary["failures"].as_str().unwrap()).unwrap();
    assert_eq!(failures.lines().count(), 2);
    assert!(
        failures.contains("in/broken0.csv") && failures.contains("row 2"),
        "{failures}"
    );
}

#[test]
fn a_bad_spec_exits_1_names_the_field_and_writes_nothing() {
    let dir = dataset(0);
    let mut bad = spec("bad");
    bad["item_batcher"]["max_items_per_batch"] = json!(0);
    let spec = spec_file(dir.path(), &bad);
    let out = dmap(&["run", &spec, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("item_batcher.max_items_per_batch"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("data/out").exists(), "nothing is written");
}

#[test]
fn missing_inputs_and_existing_results_exit_1() {
    let dir = dataset(0);
    let spec = spec_file(dir.path(), &spec("twice"));
    let data = dir.path().to_str().unwrap();
    let out = dmap(&["run", &spec, "--data-dir", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--data-dir"),
        "{}",
        text(&out.stderr)
    );
    let out = dmap(&["run", "/no/such/spec.json", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/no/such/spec.json"));

    assert!(dmap(&["run", &spec, "--data-dir", data]).status.success());
    let manifest = std::fs::read(dir.path().join("data/out/twice/manifest.json")).unwrap();
    let out = dmap(&["run", &spec, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already ran to its end"),
        "{}",
        text(&out.stderr)
    );
    // Without the job's record (another data dir's job store, say), its outputs still refuse it.
    std::fs::remove_dir_all(dir.path().join(".dmap")).unwrap();
    let out = dmap(&["run", &spec, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exist"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.path().join("data/out/twice/manifest.json")).unwrap(),
        manifest
    );
}

#[test]
fn chaos_gives_the_same_result_and_reports_its_faults() {
    let dir = dataset(1);
    let data = dir.path().to_str().unwrap();
    let mut calm = spec("calm");
    calm["tolerated_failure_count"] = json!(1);
    let out = dmap(&["run", &spec_file(dir.path(), &calm), "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut wild = calm.clone();
    wild["job_id"] = json!("wild");
    let out = dmap(&[
        "run",
        &spec_file(dir.path(), &wild),
        "--data-dir",
        data,
        "--json",
        "--chaos",
        "0.6",
        "--seed",
        "7",
        "--visibility-timeout",
        "0.2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let faults = &summary["faults"];
    let injected: u64 = ["duplicates", "crashes_before_ack", "crashes_before_record"]
        .iter()
        .map(|k| faults[k].as_u64().unwrap())
        .sum();
    assert!(injected > 0, "{summary}");
    let read = |job: &str, file: &str| {
        std::fs::read(dir.path().join(format!("data/out/{job}/{file}"))).unwrap()
    };
    assert_eq!(read("calm", "result.json"), read("wild", "result.json"));
    assert_eq!(read("calm", "failed.jsonl"), read("wild", "failed.jsonl"));

    let out = dmap(&["run", "x.json", "--data-dir", data, "--chaos", "1.0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a rate outside [0, 1) is a usage error"
    );
}

#[test]
fn demo_generates_runs_and_reports_findings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dmap(&[
        "demo",
        "--objects",
        "600",
        "--days",
        "30",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("SUCCEEDED: 600 items (599 succeeded, 1 failed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("generated 600 station-year files (150 stations")
            && stdout.contains("the hottest station-day of 48 months")
            && stdout.contains("  2024-07  ")
            && stdout.contains("items/s"),
        "{stdout}"
    );
    let spec: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo-spec.json")).unwrap()).unwrap();
    assert_eq!(spec["processor"]["kind"], "monthly_high");
    assert!(
        dir.path()
            .join("dmap-demo/noaa-gsod/2024/01150099999.csv")
            .is_file(),
        "file 599 is station 149's for 2024"
    );
}
