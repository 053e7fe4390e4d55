//! Operating jobs with the `dmap` binary on the embedded backend: a run stopped by Ctrl-C and run again ends
//! with the outputs of a run never stopped, `submit`, `status` and `ls` work across processes, and an aborted
//! job redriven ends with the outputs of a run never aborted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{dmap, text};
use serde_json::{Value, json};

/// Rows of a CSV: `rows` readings over 7 stations, every 997th reading not a number (a failed item).
fn readings(rows: usize) -> String {
    let mut csv = String::from("STATION,TEMP\n");
    for i in 0..rows {
        if i % 997 == 0 {
            csv.push_str(&format!("S{},warm\n", i % 7));
        } else {
            csv.push_str(&format!("S{},{}.{}\n", i % 7, i % 41, i % 10));
        }
    }
    csv
}

fn data_dir(csv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/readings.csv"), csv).unwrap();
    dir
}

fn rows_spec(job_id: Option<&str>, per_batch: u32) -> Value {
    let mut spec = json!({
        "item_reader": { "kind": "s3_object", "bucket": "data", "key": "readings.csv", "format": "csv" },
        "item_batcher": { "max_items_per_batch": per_batch },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TEMP"] },
        "tolerated_failure_percentage": 5,
        "result_writer": { "bucket": "data", "prefix": "out/" }
    });
    if let Some(id) = job_id {
        spec["job_id"] = json!(id);
    }
    spec
}

fn write_spec(dir: &Path, spec: &Value) -> String {
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The job journals under a data dir.
fn journals(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join(".dmap/jobs")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every file of the job's outputs folder, by name; not its folders (a tree-shaped finalize's `finalize/`
/// holds merges that name their run).
fn outputs(dir: &Path, job_id: &str) -> Vec<(String, Vec<u8>)> {
    let folder = dir.join("data/out").join(job_id);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_run_stopped_by_ctrl_c_and_run_again_ends_as_a_run_never_stopped() {
    const ROWS: usize = 30_000;
    let csv = readings(ROWS);
    let stopped = data_dir(&csv);
    let data = stopped.path().to_str().unwrap();
    // No job_id: running the same spec again finds the unfinished job by its spec.
    let spec = write_spec(stopped.path(), &rows_spec(None, 2));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmap"))
        .args(["run", &spec, "--data-dir", data, "--concurrency", "1"])
        .args(["--item-concurrency", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once a few hundred batches are recorded, far from the 15,000 of the job.
    let started = Instant::now();
    loop {
        let lines = journals(stopped.path()).first().map_or(0, |j| {
            std::fs::read(j).unwrap().split(|b| *b == b'\n').count()
        });
        if lines > 300 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be stopped"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: sends SIGINT to the child, a process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("run the same command again to resume it"),
        "{}",
        text(&out.stderr)
    );
    let journal = journals(stopped.path());
    assert_eq!(journal.len(), 1);
    let job_id = journal[0].file_stem().unwrap().to_str().unwrap().to_owned();
    let status = dmap(&["status", &job_id, "--data-dir", data, "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let before: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(before["status"], "RUNNING", "{before}");
    let done_before = before["batches"]["done"].as_u64().unwrap();
    assert!((150..15_000).contains(&done_before), "{before}");

    let resumed = dmap(&["run", &spec, "--data-dir", data, "--json"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stderr).contains(&format!("resuming job {job_id}")),
        "{}",
        text(&resumed.stderr)
    );
    let summary: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(summary["job_id"], job_id.as_str());
    assert_eq!(summary["items"]["total"], ROWS as u64);
    assert_eq!(summary["batches"]["total"], (ROWS / 2) as u64);

    // The same job never stopped, in a data dir of its own.
    let clean = data_dir(&csv);
    let clean_spec = write_spec(clean.path(), &rows_spec(Some(&job_id), 2));
    let out = dmap(&[
        "run",
        &clean_spec,
        "--data-dir",
        clean.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (a, b) = (
        outputs(stopped.path(), &job_id),
        outputs(clean.path(), &job_id),
    );
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["failed.jsonl", "manifest.json", "result.json"]);
    assert_eq!(a, b, "byte-identical outputs");
    let failed = String::from_utf8(a[0].1.clone()).unwrap();
    assert_eq!(failed.lines().count(), ROWS.div_ceil(997));

    // Finished: running it again is refused, and says why.
    let again = dmap(&[
        "run",
        &clean_spec,
        "--data-dir",
        clean.path().to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already ran to its end (SUCCEEDED"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn submit_returns_at_once_and_status_and_ls_follow_the_job_from_other_processes() {
    let dir = data_dir(&readings(4_000));
    let data = dir.path().to_str().unwrap();
    let spec = write_spec(dir.path(), &rows_spec(Some("sub-1"), 10));
    let submitted = dmap(&["submit", &spec, "--data-dir", data, "--concurrency", "2"]);
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    assert_eq!(text(&submitted.stdout).trim(), "sub-1");

    // Seen from another process while it runs (or once it is done), the job's counts only add up.
    let status = dmap(&["status", "sub-1", "--data-dir", data, "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let d: Value = serde_json::from_slice(&status.stdout).unwrap();
    let items = &d["items"];
    assert_eq!(
        items["succeeded"].as_u64().unwrap()
            + items["failed"].as_u64().unwrap()
            + items["pending"].as_u64().unwrap(),
        items["listed"].as_u64().unwrap(),
        "{d}"
    );

    let watched = dmap(&["status", "sub-1", "--data-dir", data, "--watch", "--json"]);
    assert_eq!(watched.status.code(), Some(0), "{}", text(&watched.stderr));
    let d: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(d["status"], "SUCCEEDED");
    assert_eq!(
        d["items"],
        json!({ "listed": 4000, "total": 4000, "succeeded": 3995, "failed": 5, "pending": 0 })
    );
    assert_eq!(
        d["batches"],
        json!({ "sent": 400, "total": 400, "done": 400 })
    );
    assert!(d["ended_at_ms"].as_u64().unwrap() >= d["started_at_ms"].as_u64().unwrap());
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/out/sub-1/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["items"]["succeeded"], 3995);

    let text_status = dmap(&["status", "sub-1", "--data-dir", data]);
    let shown = text(&text_status.stdout);
    assert!(shown.starts_with("job sub-1: SUCCEEDED\n"), "{shown}");
    assert!(
        shown.contains("4000 listed of 4000; 3995 succeeded, 5 failed, 0 pending"),
        "{shown}"
    );

    // A second job, then the list: newest first, filtered by status.
    let second = write_spec(dir.path(), &rows_spec(Some("sub-2"), 1000));
    assert!(dmap(&["run", &second, "--data-dir", data]).status.success());
    let ls = dmap(&["ls", "--data-dir", data, "--json"]);
    let listed: Value = serde_json::from_slice(&ls.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sub-2", "sub-1"]);
    let limited = dmap(&["ls", "--data-dir", data, "--json", "--limit", "1"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&limited.stdout).unwrap()[0]["job_id"],
        "sub-2"
    );
    let running = dmap(&["ls", "--data-dir", data, "--json", "--status", "running"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&running.stdout).unwrap(),
        json!([])
    );
    let table = text(&dmap(&["ls", "--data-dir", data]).stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.lines().nth(2).unwrap().starts_with("sub-1 "),
        "{table}"
    );

    let missing = dmap(&["status", "nope", "--data-dir", data]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no job \"nope\""));
}

#[test]
fn submit_refuses_a_bad_spec_before_anything_runs() {
    let dir = data_dir(&readings(10));
    let data = dir.path().to_str().unwrap();
    let mut spec = rows_spec(Some("bad"), 10);
    spec["item_reader"]["key"] = json!("no-such.csv");
    let spec = write_spec(dir.path(), &spec);
    let out = dmap(&["submit", &spec, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-such.csv"),
        "{}",
        text(&out.stderr)
    );
    assert!(journals(dir.path()).is_empty(), "no job was created");
}

#[test]
fn update_and_abort_a_submitted_job_from_other_processes() {
    let dir = data_dir(&readings(40_000));
    let data = dir.path().to_str().unwrap();
    let spec = write_spec(dir.path(), &rows_spec(Some("ctl"), 2));
    let submitted = dmap(&["submit", &spec, "--data-dir", data, "--concurrency", "2"]);
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));

    let updated = dmap(&[
        "update",
        "ctl",
        "--data-dir",
        data,
        "--max-concurrency",
        "1",
        "--tolerated-failure-count",
        "40",
    ]);
    assert!(updated.status.success(), "{}", text(&updated.stderr));
    assert_eq!(
        text(&updated.stdout).trim(),
        "job ctl: max concurrency 1, tolerated failures 40 items / 5%"
    );
    let status = dmap(&["status", "ctl", "--data-dir", data, "--json"]);
    let d: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (&d["max_concurrency"], &d["tolerated_failure_count"]),
        (&json!(1), &json!(40)),
        "{d}"
    );

    let aborted = dmap(&["abort", "ctl", "--data-dir", data]);
    assert!(aborted.status.success(), "{}", text(&aborted.stderr));
    assert!(
        text(&aborted.stdout).contains("abort requested"),
        "{}",
        text(&aborted.stdout)
    );
    let watched = dmap(&["status", "ctl", "--data-dir", data, "--watch", "--json"]);
    assert_eq!(
        watched.status.code(),
        Some(4),
        "ABORTED: {}",
        text(&watched.stderr)
    );
    let d: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(d["status"], "ABORTED");
    let done = d["items"]["succeeded"].as_u64().unwrap() + d["items"]["failed"].as_u64().unwrap();
    assert!(done < 40_000, "{d}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/out/ctl/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "ABORTED");
    assert_eq!(manifest["items"]["total"], done);
    assert_eq!(
        manifest["tolerated_failure_count"], 40,
        "the setting in force"
    );
    // The job's process ends with the job, saying so: its last line comes once it has stopped its mappings,
    // which may be a moment after the store says ABORTED.
    let log_path = dir.path().join(".dmap/jobs/ctl.log");
    let said = |log: &str| log.contains("\"status\":\"ABORTED\"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut log = std::fs::read_to_string(&log_path).unwrap();
    while !said(&log) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        log = std::fs::read_to_string(&log_path).unwrap();
    }
    assert!(said(&log), "{log}");

    // Ended: neither an update nor an abort moves it.
    let late = dmap(&["abort", "ctl", "--data-dir", data]);
    assert_eq!(late.status.code(), Some(1));
    assert!(
        text(&late.stderr).contains("it is ABORTED"),
        "{}",
        text(&late.stderr)
    );
}

#[test]
fn an_interrupted_job_aborted_ends_at_once_with_what_was_done() {
    let dir = data_dir(&readings(20_000));
    let data = dir.path().to_str().unwrap();
    let spec = write_spec(dir.path(), &rows_spec(Some("halted"), 2));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmap"))
        .args(["run", &spec, "--data-dir", data, "--concurrency", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = dir.path().join(".dmap/jobs/halted.jsonl");
    let started = Instant::now();
    while std::fs::read(&journal).map_or(0, |j| j.split(|b| *b == b'\n').count()) < 100 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // No process runs it: the abort finalizes it there and then.
    let aborted = dmap(&["abort", "halted", "--data-dir", data]);
    assert!(aborted.status.success(), "{}", text(&aborted.stderr));
    assert!(
        text(&aborted.stdout).starts_with("job halted: ABORTED with "),
        "{}",
        text(&aborted.stdout)
    );
    let status = dmap(&["status", "halted", "--data-dir", data, "--json"]);
    let d: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(d["status"], "ABORTED");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/out/halted/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["status"], "ABORTED");
    assert_eq!(manifest["items"]["succeeded"], d["items"]["succeeded"]);
    assert_eq!(manifest["items"]["failed"], d["items"]["failed"]);
    assert!(manifest["items"]["total"].as_u64().unwrap() < 20_000);
    // Running the spec again does not resume an aborted job.
    let again = dmap(&["run", &spec, "--data-dir", data]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already ran to its end (ABORTED"),
        "{}",
        text(&again.stderr)
    );

    // Redriven, it runs the rows the abort left and its failed ones again, and ends as a run never aborted.
    let redriven = dmap(&["redrive", "halted", "--data-dir", data, "--json"]);
    assert_eq!(
        redriven.status.code(),
        Some(0),
        "{}",
        text(&redriven.stderr)
    );
    let summary: Value = serde_json::from_slice(&redriven.stdout).unwrap();
    assert_eq!(summary["status"], "SUCCEEDED", "{summary}");
    let status = dmap(&["status", "halted", "--data-dir", data]);
    assert!(
        text(&status.stdout).contains("redrives: 1"),
        "{}",
        text(&status.stdout)
    );
    let clean = write_spec(dir.path(), &rows_spec(Some("clean"), 2));
    let clean = dmap(&["run", &clean, "--data-dir", data]);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    let (redriven, clean) = (outputs(dir.path(), "halted"), outputs(dir.path(), "clean"));
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&redriven),
        ["failed.jsonl", "manifest.json", "result.json"]
    );
    assert_eq!(names(&redriven), names(&clean));
    for ((name, a), (_, b)) in redriven.iter().zip(&clean) {
        if name == "manifest.json" {
            let mut a: Value = serde_json::from_slice(a).unwrap();
            let b: Value = serde_json::from_slice(b).unwrap();
            assert_eq!(a["redrives"], 1);
            a["redrives"].take();
            let strip = |mut m: Value| {
                let o = m.as_object_mut().unwrap();
                o.retain(|k, v| !v.is_null() && k != "job_id" && k != "result" && k != "failures");
                m
            };
            // Batches differ (the redo batches), the counts and status do not.
            let (mut a, mut b) = (strip(a), strip(b));
            a["batches"].take();
            b["batches"].take();
            assert_eq!(a, b);
        } else {
            assert!(a == b, "{name} differs from a clean run's");
        }
    }
    // It SUCCEEDED: there is nothing left to redrive.
    let again = dmap(&["redrive", "halted", "--data-dir", data]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("it is SUCCEEDED"),
        "{}",
        text(&again.stderr)
    );
}
