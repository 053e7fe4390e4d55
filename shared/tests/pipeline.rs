//! End-to-end runs of the whole pipeline on the embedded backends: exact results for many sizes and batch
//! sizes, identical outputs under injected faults, awkward keys, malformed objects, poison batches, resumed
//! listings and refused sends.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BUCKET, Env, RefusingQueue, csv_object, csv_spec, drain, fast_config, size};
use dmap_core::coordinator::{ListingOutcome, Rerun, run_listing, start_or_resume};
use dmap_core::embedded::{EmbeddedQueue, QueueConfig};
use dmap_core::finalizer::{FinalizerConfig, finalize};
use dmap_core::outcome::TerminalStatus;
use dmap_core::ports::JobStatus;
use dmap_core::processor::{CsvAggregateProcessor, Item};
use dmap_core::runner::{Chaos, RunnerConfig};
use dmap_core::spec::{JobSpec, ProcessorSpec};
use serde_json::{Value, json};

/// The plain sequential computation: every matching file under the prefix in key order, through the processor,
/// merged one by one. Returns the result JSON and the failed keys.
fn sequential(env: &Env, prefix: &str, processor: &ProcessorSpec) -> (Value, Vec<String>) {
    let root = env.path().join(BUCKET);
    let mut keys: Vec<String> = walk(&root)
        .into_iter()
        .filter(|k| k.starts_with(prefix) && k.ends_with(".csv"))
        .collect();
    keys.sort();
    let mut result = processor.empty();
    let mut failed = Vec::new();
    for key in keys {
        let mut file = std::fs::File::open(root.join(&key)).unwrap();
        let item = Item::Object {
            key: &key,
            size: None,
            body: &mut file,
        };
        match processor.process(item) {
            Ok(processed) => result.merge(processed.result).unwrap(),
            Err(_) => failed.push(key),
        }
    }
    (result.to_result_json(), failed)
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, key)) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push((entry.path(), format!("{key}{name}/")));
            } else {
                out.push(format!("{key}{name}"));
            }
        }
    }
    out
}

fn failed_keys(env: &Env, report: &dmap_core::runner::RunReport) -> Vec<String> {
    String::from_utf8(env.read(&report.manifest.failures))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn result_json(env: &Env, report: &dmap_core::runner::RunReport) -> Value {
    serde_json::from_slice(&env.read(&report.manifest.result)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_equal_a_sequential_pass_for_every_size_and_batch_size() {
    let config = fast_config();
    let env = Env::new(&config);
    // The largest: 12 listing pages and 120 folders in CI, crossing the local store's walks of 10 pages.
    let big = size(25_000, 12_000);
    let sizes = [0usize, 1, 999, 1000, 1001, big];
    for n in sizes {
        for i in 0..n {
            // Nested folders of up to 100 files, so that listing crosses folder boundaries mid-page.
            env.write(&format!("n{n}/{:03}/obj{i:05}.csv", i / 100), csv_object(i));
        }
    }
    env.write("n1000/not-an-item.txt", "ignored: no .csv suffix");
    let processor = ProcessorSpec::CsvAggregate(CsvAggregateProcessor {
        group_by: "STATION".into(),
        columns: vec!["TMAX".into(), "TMIN".into()],
    });
    for n in sizes {
        let prefix = format!("n{n}/");
        let (expected, expected_failed) = sequential(&env, &prefix, &processor);
        assert!(expected_failed.is_empty());
        for max_items in [1u32, 7, 100] {
            if n == big && max_items != 100 {
                continue; // covered below with a count job, to keep the suite quick
            }
            let report = env.run(&csv_spec(&prefix, max_items), &config).await;
            let m = &report.manifest;
            assert_eq!(
                m.status,
                TerminalStatus::Succeeded,
                "n={n} batch={max_items}"
            );
            assert_eq!(
                (m.items.total, m.items.succeeded, m.items.failed),
                (n as u64, n as u64, 0)
            );
            assert_eq!(
                m.batches.total,
                n.div_ceil(max_items as usize) as u64,
                "n={n} batch={max_items}"
            );
            assert_eq!(
                result_json(&env, &report),
                expected,
                "n={n} batch={max_items}"
            );
        }
    }
    // The largest prefix's objects in batches of 1 and 7, counted, against an independent count of bytes and lines.
    let files: Vec<String> = (0..big).map(csv_object).collect();
    let bytes: usize = files.iter().map(String::len).sum();
    let lines: usize = files.iter().map(|f| f.matches('\n').count()).sum();
    for max_items in [1u32, 7] {
        let spec = json!({
            "job_id": format!("count-{max_items}"),
            "item_reader": { "bucket": BUCKET, "prefix": format!("n{big}/") },
            "item_batcher": { "max_items_per_batch": max_items },
            "processor": { "kind": "count" },
            "result_writer": { "bucket": BUCKET, "prefix": "count-results/" }
        });
        let report = env.run(&spec, &config).await;
        assert_eq!(report.manifest.items.total, big as u64);
        assert_eq!(
            report.manifest.batches.total,
            (big as u64).div_ceil(max_items.into())
        );
        assert_eq!(
            result_json(&env, &report),
            json!({ "objects": big, "bytes": bytes, "lines": lines })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_runs_give_the_fault_free_outputs() {
    let base = fast_config();
    let make = || {
        let env = Env::new(&base);
        for i in 0..300 {
            env.write(&format!("w/{:02}/s{i:04}.csv", i % 17), csv_object(i));
        }
        env.write("w/bad/header.csv", "ID,TMAX,TMIN\n1,2,3\n");
        env.write("w/bad/cell.csv", "STATION,TMAX,TMIN\nA,1,2\nA,warm,3\n");
        env
    };
    let mut spec = csv_spec("w/", 7);
    spec["tolerated_failure_count"] = json!(2);
    let baseline_env = make();
    let baseline = baseline_env.run(&spec, &base).await;
    assert_eq!(baseline.manifest.items.failed, 2);
    let expected = baseline_env.outputs(&baseline);

    let mut totals = [0u64; 3];
    for (seed, rate) in (1..=16u64)
        .map(|s| (s, 0.3))
        .chain([(101, 0.9), (102, 0.9)])
    {
        let env = make();
        let config = RunnerConfig {
            chaos: Some(Chaos { rate, seed }),
            ..base.clone()
        };
        let report = env.run(&spec, &config).await;
        let s = report.stats;
        assert_eq!(
            env.outputs(&report),
            expected,
            "seed {seed}: outputs differ from the fault-free run"
        );
        assert_eq!(
            env.store.puts_of("/manifest.json"),
            1,
            "seed {seed}: the manifest is written once"
        );
        assert_eq!(env.store.puts_of("/result.json"), 1, "seed {seed}");
        assert_eq!(env.store.puts_of("/failed.jsonl"), 1, "seed {seed}");
        assert_eq!(s.dead_lettered_batches, 0, "seed {seed}");
        assert!(
            s.deliveries > report.manifest.batches.total,
            "seed {seed}: faults cause redeliveries"
        );
        let progress = env
            .deps
            .jobs
            .progress(&report.manifest.job_id)
            .await
            .unwrap();
        assert_eq!(progress.status, JobStatus::Succeeded);
        assert_eq!(
            progress.succeeded + progress.failed,
            302,
            "every item counted once"
        );
        totals[0] += s.duplicates;
        totals[1] += s.crashes_before_ack;
        totals[2] += s.crashes_before_record;
    }
    assert!(
        totals.iter().all(|&t| t > 20),
        "every kind of fault was injected many times: {totals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_spaces_plus_percent_unicode_and_deep_prefixes_work() {
    let config = fast_config();
    let env = Env::new(&config);
    let keys = [
        "odd keys/a b+c%20d.csv",
        "odd keys/plus+sign.csv",
        "odd keys/percent%2Fslash%.csv",
        "odd keys/日本語/データ.csv",
        "odd keys/émoji 🌧/x.csv",
        "odd keys/a/b/c/d/e/f/g/h/i/j/deep.csv",
        "odd keys/a-b.csv",
        "odd keys/a0.csv",
    ];
    for (i, key) in keys.iter().enumerate() {
        env.write(key, csv_object(i));
    }
    env.write("odd keys/bad + broken%.csv", "STATION,TMAX,TMIN\nA,x,1\n");
    let mut spec = csv_spec("odd keys/", 3);
    spec["tolerated_failure_count"] = json!(1);
    let report = env.run(&spec, &config).await;
    assert_eq!(report.manifest.items.total, 9);
    assert_eq!(report.manifest.items.failed, 1);
    assert_eq!(failed_keys(&env, &report), ["odd keys/bad + broken%.csv"]);
    let processor = ProcessorSpec::CsvAggregate(CsvAggregateProcessor {
        group_by: "STATION".into(),
        columns: vec!["TMAX".into(), "TMIN".into()],
    });
    assert_eq!(
        result_json(&env, &report),
        sequential(&env, "odd keys/", &processor).0
    );
    let failure: Value = serde_json::from_slice(&env.read(&report.manifest.failures)).unwrap();
    assert!(
        failure["error"].as_str().unwrap().contains("row 2"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_fail_alone_and_the_tolerance_decides() {
    let config = fast_config();
    let env = Env::new(&config);
    for i in 0..40 {
        env.write(&format!("m/good{i:02}.csv"), csv_object(i));
    }
    let bad = [
        (
            "m/bad-header.csv",
            b"NAME,TMAX,TMIN\nA,1,2\n".to_vec(),
            "STATION",
        ),
        (
            "m/bad-number.csv",
            b"STATION,TMAX,TMIN\nA,1,2\nA,2,\nA,3,cold\n".to_vec(),
            "row 4, column \"TMIN\"",
        ),
        (
            "m/bad-utf8.csv",
            b"STATION,TMAX,TMIN\nA,\xff\xfe,2\n".to_vec(),
            "UTF-8",
        ),
    ];
    for (key, body, _) in &bad {
        env.write(key, body);
    }
    let processor = ProcessorSpec::CsvAggregate(CsvAggregateProcessor {
        group_by: "STATION".into(),
        columns: vec!["TMAX".into(), "TMIN".into()],
    });
    let (expected, expected_failed) = sequential(&env, "m/", &processor);
    assert_eq!(expected_failed.len(), 3);

    let cases: [(Option<u64>, Option<f64>, TerminalStatus); 6] = [
        (None, None, TerminalStatus::Failed),
        (Some(3), None, TerminalStatus::Succeeded),
        (Some(2), None, TerminalStatus::Failed),
        (None, Some(10.0), TerminalStatus::Succeeded), // 3 of 43 is 6.98%
        (None, Some(5.0), TerminalStatus::Failed),
        (Some(3), Some(5.0), TerminalStatus::Failed),
    ];
    for (i, (count, pct, status)) in cases.into_iter().enumerate() {
        let mut spec = csv_spec("m/", 4);
        spec["job_id"] = json!(format!("tolerance-{i}"));
        if let Some(c) = count {
            spec["tolerated_failure_count"] = json!(c);
        }
        if let Some(p) = pct {
            spec["tolerated_failure_percentage"] = json!(p);
        }
        let report = env.run(&spec, &config).await;
        assert_eq!(report.manifest.status, status, "case {i}");
        assert_eq!(
            (
                report.manifest.items.succeeded,
                report.manifest.items.failed
            ),
            (40, 3)
        );
        assert_eq!(
            result_json(&env, &report),
            expected,
            "the good objects' result stays exact"
        );
        let lines: Vec<Value> = String::from_utf8(env.read(&report.manifest.failures))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        for (key, _, names) in &bad {
            let line = lines
                .iter()
                .find(|l| l["key"] == *key)
                .unwrap_or_else(|| panic!("{key} is listed"));
            let error = line["error"].as_str().unwrap();
            assert!(error.contains(key) && error.contains(names), "{error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_batch_is_dead_lettered_and_the_job_still_finishes() {
    let config = RunnerConfig {
        visibility_timeout: Duration::from_millis(100),
        max_receive_count: 2,
        ..fast_config()
    };
    let env = Env::new(&config);
    for i in 0..20 {
        env.write(&format!("p/o{i:02}.csv"), csv_object(i));
    }
    env.store
        .throttled_keys
        .lock()
        .unwrap()
        .insert("p/o07.csv".into());
    let mut spec = csv_spec("p/", 5);
    spec["tolerated_failure_count"] = json!(5);
    let report = env.run(&spec, &config).await;
    assert_eq!(report.stats.dead_lettered_batches, 1);
    assert_eq!(
        report.manifest.status,
        TerminalStatus::Succeeded,
        "5 failures are tolerated"
    );
    assert_eq!(
        (
            report.manifest.items.succeeded,
            report.manifest.items.failed
        ),
        (15, 5)
    );
    assert_eq!(
        failed_keys(&env, &report),
        [
            "p/o05.csv",
            "p/o06.csv",
            "p/o07.csv",
            "p/o08.csv",
            "p/o09.csv"
        ]
    );
    assert!(
        String::from_utf8(env.read(&report.manifest.failures))
            .unwrap()
            .contains("dead-lettered")
    );

    // The same poison batch with no tolerance: FAILED, not stuck.
    spec["job_id"] = json!("poison-strict");
    spec.as_object_mut()
        .unwrap()
        .remove("tolerated_failure_count");
    let report = env.run(&spec, &config).await;
    assert_eq!(report.manifest.status, TerminalStatus::Failed);
}

/// Drains the work queue through the worker and the finalize queue through the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_resumed_and_repeated_listing_counts_every_item_once() {
    let mut env = Env::new(&fast_config());
    // An unbounded work queue: this test holds every message before draining.
    env.deps.work_queue = EmbeddedQueue::new(QueueConfig::new("work", Duration::from_secs(30)));
    for i in 0..2500 {
        env.write(&format!("r/{:02}/k{i:04}.csv", i % 13), csv_object(i));
    }
    let job = JobSpec::parse(csv_spec("r/", 30).to_string().as_bytes()).unwrap();
    let initial = start_or_resume(&env.deps, job, Rerun::Resume)
        .await
        .unwrap();

    // First run: pauses after its first page (a Lambda running out of time).
    let first = run_listing(&env.deps, &initial, &|| false).await.unwrap();
    let ListingOutcome::Paused(checkpoint) = first else {
        panic!("expected a pause, got {first:?}")
    };
    assert_eq!(
        checkpoint.next_seq, 34,
        "1,000 keys make 33 full batches; at the pause the last 10 are cut into a 34th, so the next hop \
         starts after the page"
    );
    assert_eq!(checkpoint.items_sent, 1000);
    // A duplicate invocation that never saw the checkpoint re-sends the same first page, then pauses.
    let repeated = run_listing(&env.deps, &initial, &|| false).await.unwrap();
    assert_eq!(repeated, ListingOutcome::Paused(checkpoint));
    // The continuation resumes from the stored checkpoint and finishes.
    let stored = env
        .deps
        .jobs
        .get_job(&initial.job.job_id)
        .await
        .unwrap()
        .unwrap();
    let done = run_listing(&env.deps, &stored, &|| true).await.unwrap();
    let ListingOutcome::Complete { totals, .. } = done else {
        panic!("expected completion, got {done:?}")
    };
    assert_eq!((totals.batches, totals.items), (84, 2500));

    let handled = drain(&env).await;
    assert_eq!(handled, 84 + 34, "the repeated first page was sent twice");
    let finished = finalize(&env.deps, FinalizerConfig::default(), &initial.job.job_id)
        .await
        .unwrap();
    assert!(
        !finished.wrote,
        "the finalizer already ran; running it again writes nothing"
    );
    let m = finished.manifest;
    assert_eq!(
        (m.status, m.items.total, m.items.succeeded, m.batches.total),
        (TerminalStatus::Succeeded, 2500, 2500, 84)
    );
    let processor = ProcessorSpec::CsvAggregate(CsvAggregateProcessor {
        group_by: "STATION".into(),
        columns: vec!["TMAX".into(), "TMIN".into()],
    });
    assert_eq!(
        serde_json::from_slice::<Value>(&env.read(&m.result)).unwrap(),
        sequential(&env, "r/", &processor).0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_queue_refuses_are_sent_again() {
    let config = fast_config();
    let mut env = Env::new(&config);
    let refusing = Arc::new(RefusingQueue {
        inner: env.deps.work_queue.clone(),
        seen: Mutex::default(),
        refused: Mutex::default(),
    });
    env.deps.work_queue = refusing.clone();
    for i in 0..250 {
        env.write(&format!("q/k{i:03}.csv"), csv_object(i));
    }
    let report = env.run(&csv_spec("q/", 10), &config).await;
    assert_eq!(
        *refusing.refused.lock().unwrap(),
        25,
        "every batch was refused once"
    );
    assert_eq!(
        (report.manifest.items.total, report.manifest.batches.total),
        (250, 25)
    );
    assert_eq!(report.manifest.status, TerminalStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_refused_before_writing_when_results_exist_or_buckets_are_missing() {
    let config = fast_config();
    let mut env = Env::new(&config);
    for i in 0..5 {
        env.write(&format!("x/k{i}.csv"), csv_object(i));
    }
    let spec = csv_spec("x/", 2);
    let first = env.run(&spec, &config).await;
    let before = env.outputs(&first);
    let puts = env.store.puts.lock().unwrap().len();
    // The job store has the job: it ran to its end.
    let err = env.try_run(&spec, &config).await.unwrap_err().to_string();
    assert!(
        err.contains("already ran to its end (SUCCEEDED") && err.contains("job_id"),
        "{err}"
    );
    // A job store without it (another data dir's, say): the outputs refuse it.
    env.deps.jobs = std::sync::Arc::new(dmap_core::embedded::MemoryJobStore::new());
    let err = env.try_run(&spec, &config).await.unwrap_err().to_string();
    assert!(
        err.contains("already exist") && err.contains("job_id"),
        "{err}"
    );
    assert_eq!(
        env.store.puts.lock().unwrap().len(),
        puts,
        "nothing was written"
    );
    assert_eq!(env.outputs(&first), before);

    let mut spec = csv_spec("x/", 2);
    spec["job_id"] = json!("other");
    spec["item_reader"]["bucket"] = json!("no-such-bucket");
    let err = env.try_run(&spec, &config).await.unwrap_err().to_string();
    assert!(
        err.contains("item_reader.bucket") && err.contains("no-such-bucket"),
        "{err}"
    );
    spec["item_reader"]["bucket"] = json!(BUCKET);
    spec["result_writer"]["bucket"] = json!("no-results-bucket");
    let err = env.try_run(&spec, &config).await.unwrap_err().to_string();
    assert!(err.contains("result_writer.bucket"), "{err}");
    assert_eq!(
        env.store.puts.lock().unwrap().len(),
        puts,
        "nothing was written"
    );
    assert!(
        env.deps.jobs.get_job("other").await.unwrap().is_none(),
        "no job was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_modification_filters_select_the_items() {
    let config = fast_config();
    let env = Env::new(&config);
    // Object i (1..=12) has i bytes and was last modified at 2026-01-(i+1)T00:00:00Z (the embedded store's
    // LastModified is the file's modification time).
    for i in 1..=12u64 {
        let key = format!("f/k{i:02}.log");
        env.write(&key, "x".repeat(i as usize));
        let file = std::fs::File::options()
            .write(true)
            .open(env.path().join(BUCKET).join(&key))
            .unwrap();
        let modified = std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + i * 86_400);
        file.set_modified(modified).unwrap();
    }
    let spec = json!({
        "job_id": "filtered",
        "item_reader": {
            "bucket": BUCKET,
            "prefix": "f/",
            "min_size": 3,
            "max_size": 10,
            "modified_after": "2026-01-05T00:00:00Z",
            "modified_before": "2026-01-11T01:00:00+01:00"
        },
        "item_batcher": { "max_items_per_batch": 2 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let report = env.run(&spec, &config).await;
    // Sizes 3..=10 and modified strictly between Jan 5 and Jan 11: objects 5..=9.
    assert_eq!(report.manifest.items.total, 5, "{:?}", report.manifest);
    assert_eq!(report.manifest.batches.total, 3);
    assert_eq!(
        result_json(&env, &report),
        json!({"objects": 5, "bytes": 35, "lines": 5})
    );
}
