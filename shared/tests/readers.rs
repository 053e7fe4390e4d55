//! The item readers beyond a listing, end to end on the embedded backends: the rows of a CSV object, the lines
//! of a JSON Lines object, the elements of a JSON array, and inline items; their results against a plain
//! sequential pass, their failed items by line, a hand-over in the middle of an object, and the refusals of
//! inputs that are not there.

mod common;

use std::time::Duration;

use common::{BUCKET, Env, awkward_csv, drain, fast_config};
use dmap_core::coordinator::{ListingOutcome, Rerun, run_listing, start_or_resume};
use dmap_core::embedded::{EmbeddedQueue, QueueConfig};
use dmap_core::finalizer::{FinalizerConfig, finalize};
use dmap_core::outcome::TerminalStatus;
use dmap_core::processor::Item;
use dmap_core::spec::{JobSpec, ProcessorSpec};
use serde_json::{Value, json};

fn lines_of(env: &Env, key: &str) -> Vec<Value> {
    String::from_utf8(env.read(key))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn result_of(env: &Env, report: &dmap_core::runner::RunReport) -> Value {
    serde_json::from_slice(&env.read(&report.manifest.result)).unwrap()
}

/// The aggregate of a plain CSV object through the processor as one item: the sequential pass.
fn sequential(processor: &Value, csv: &str) -> Value {
    let processor: ProcessorSpec = serde_json::from_value(processor.clone()).unwrap();
    let processed = processor
        .process(Item::Object {
            key: "plain.csv",
            size: None,
            body: &mut csv.as_bytes(),
        })
        .unwrap();
    processed.result.to_result_json()
}

fn object_spec(job_id: &str, key: &str, format: &str, processor: Value) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "kind": "s3_object", "bucket": BUCKET, "key": key, "format": format },
        "item_batcher": { "max_items_per_batch": 7 },
        "processor": processor,
        "tolerated_failure_count": 100,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    })
}

fn aggregate() -> Value {
    json!({ "kind": "csv_aggregate", "group_by": "Station ☀", "columns": ["Température", "Pluie"] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_aggregate_as_a_sequential_pass_and_ragged_rows_fail_by_line() {
    let config = fast_config();
    let env = Env::new(&config);
    let (plain, awkward, ragged) = awkward_csv(300);
    env.write("in/awkward.csv", &awkward);
    let report = env
        .run(
            &object_spec("rows", "in/awkward.csv", "csv", aggregate()),
            &config,
        )
        .await;
    let m = &report.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded, "{m:?}");
    assert_eq!((m.items.total, m.items.succeeded), (306, 300));
    assert_eq!(result_of(&env, &report), sequential(&aggregate(), &plain));
    let failed = lines_of(&env, &m.failures);
    let keys: Vec<&str> = failed.iter().map(|f| f["key"].as_str().unwrap()).collect();
    let expected: Vec<String> = ragged
        .iter()
        .map(|l| format!("in/awkward.csv#L{l}"))
        .collect();
    assert_eq!(keys, expected);
    for (failure, line) in failed.iter().zip(&ragged) {
        let error = failure["error"].as_str().unwrap();
        assert!(error.contains(&format!("line {line}")), "{error}");
    }

    // The same rows counted: items, not objects.
    let counted = env
        .run(
            &object_spec(
                "rows-count",
                "in/awkward.csv",
                "csv",
                json!({"kind": "count"}),
            ),
            &config,
        )
        .await;
    assert_eq!(result_of(&env, &counted), json!({"items": 300}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_json_arrays_are_items_and_bad_ones_fail_alone() {
    let config = fast_config();
    let env = Env::new(&config);
    let mut plain = String::from("Station ☀,Température,Pluie\n");
    let (mut jsonl, mut elements) = (String::new(), Vec::new());
    for i in 0..120 {
        let record = json!({ "Station ☀": format!("S{}", i % 4), "Température": i % 17, "Pluie": format!("{}.5", i % 3) });
        plain.push_str(&format!("S{},{},{}.5\n", i % 4, i % 17, i % 3));
        jsonl.push_str(&format!("{record}\n"));
        elements.push(record.to_string());
        if i == 40 {
            jsonl.push_str("{\"Station ☀\": \n"); // line 42: not JSON
            jsonl.push_str("   \n"); // blank: skipped
            elements.push(
                "{\"nested\": [1, {\"b\": \"]}\\\"\"}], \"Station ☀\": \"X\", \"Pluie\": true}"
                    .into(),
            );
        }
    }
    env.write("in/rows.jsonl", &jsonl);
    env.write("in/rows.json", format!("[\n{}\n]\n", elements.join(",\n")));
    let expected = sequential(&aggregate(), &plain);

    let lines = env
        .run(
            &object_spec("lines", "in/rows.jsonl", "jsonl", aggregate()),
            &config,
        )
        .await;
    assert_eq!(result_of(&env, &lines), expected);
    let failed = lines_of(&env, &lines.manifest.failures);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["key"], "in/rows.jsonl#L42");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("line 42"),
        "{}",
        failed[0]
    );

    let array = env
        .run(
            &object_spec("array", "in/rows.json", "json", aggregate()),
            &config,
        )
        .await;
    assert_eq!(result_of(&env, &array), expected);
    let failed = lines_of(&env, &array.manifest.failures);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["key"], "in/rows.json#[41]");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("Pluie"),
        "{}",
        failed[0]
    );

    let counted = env
        .run(
            &object_spec(
                "array-count",
                "in/rows.json",
                "json",
                json!({"kind": "count"}),
            ),
            &config,
        )
        .await;
    assert_eq!(result_of(&env, &counted), json!({"items": 121}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_items_are_the_specs_own() {
    let config = fast_config();
    let env = Env::new(&config);
    let items: Vec<Value> = (0..2500)
        .map(|i| json!({"Station ☀": format!("S{}", i % 3), "Température": i}))
        .collect();
    let mut spec = json!({
        "job_id": "inline",
        "item_reader": { "kind": "inline", "items": items },
        "item_batcher": { "max_items_per_batch": 100 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let report = env.run(&spec, &config).await;
    assert_eq!(result_of(&env, &report), json!({"items": 2500}));
    assert_eq!(report.manifest.batches.total, 25);

    spec["job_id"] = json!("inline-aggregate");
    spec["item_reader"]["items"] = json!([{"Station ☀": "A", "Température": 1.5}, "not a record", {"Station ☀": "A", "Température": "2"}]);
    spec["processor"] = aggregate();
    spec["tolerated_failure_count"] = json!(1);
    let report = env.run(&spec, &config).await;
    let groups = &result_of(&env, &report)["groups"];
    assert_eq!(groups["A"]["rows"], 2);
    assert_eq!(groups["A"]["columns"]["Température"]["sum"], 3.5);
    let failed = lines_of(&env, &report.manifest.failures);
    assert_eq!(failed[0]["key"], "items[1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_mid_object_resumes_at_a_record_boundary_and_counts_every_row_once() {
    let mut env = Env::new(&fast_config());
    // An unbounded work queue: this test holds every message before draining.
    env.deps.work_queue = EmbeddedQueue::new(QueueConfig::new("work", Duration::from_secs(30)));
    let (plain, awkward, ragged) = awkward_csv(4000);
    env.write("in/big.csv", &awkward);
    let spec = object_spec("handed-over", "in/big.csv", "csv", aggregate());
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let initial = start_or_resume(&env.deps, job, Rerun::Resume)
        .await
        .unwrap();

    // Pauses after its first page (a Lambda out of time), twice (a duplicate invocation), then resumes from
    // the stored checkpoint: the read restarts at the byte after the last row sent, inside quoted newlines'
    // territory, and the header is read again from the object's start.
    let first = run_listing(&env.deps, &initial, &|| false).await.unwrap();
    let ListingOutcome::Paused(checkpoint) = first else {
        panic!("expected a pause, got {first:?}")
    };
    assert_eq!(checkpoint.items_sent, 1000);
    let position = checkpoint.start_after.clone().unwrap();
    let offset: usize = position.split(':').next().unwrap().parse().unwrap();
    assert!(
        awkward[..offset].ends_with("\r\n"),
        "a record boundary: {position}"
    );
    let repeated = run_listing(&env.deps, &initial, &|| false).await.unwrap();
    assert_eq!(repeated, ListingOutcome::Paused(checkpoint));
    let stored = env
        .deps
        .jobs
        .get_job(&initial.job.job_id)
        .await
        .unwrap()
        .unwrap();
    let mut hops = 1;
    let mut record = stored;
    loop {
        let outcome = run_listing(&env.deps, &record, &|| false).await.unwrap();
        hops += 1;
        match outcome {
            ListingOutcome::Paused(_) => {
                record = env
                    .deps
                    .jobs
                    .get_job(&initial.job.job_id)
                    .await
                    .unwrap()
                    .unwrap();
            }
            ListingOutcome::Complete { totals, .. } => {
                assert_eq!(totals.items, 4000 + ragged.len() as u64);
                break;
            }
            ListingOutcome::Aborted => panic!("nothing aborted the job"),
            ListingOutcome::TakenOver => panic!("one coordinator at a time"),
        }
    }
    assert!(hops >= 4, "{hops} hops");
    drain(&env).await;
    let finished = finalize(&env.deps, FinalizerConfig::default(), &initial.job.job_id)
        .await
        .unwrap();
    let m = finished.manifest;
    assert_eq!(
        (m.items.total, m.items.succeeded, m.items.failed),
        (4000 + ragged.len() as u64, 4000, ragged.len() as u64)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&env.read(&m.result)).unwrap(),
        sequential(&aggregate(), &plain)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_are_not_there_or_not_the_format_are_refused_before_anything_is_written() {
    let config = fast_config();
    let env = Env::new(&config);
    env.write("in/object.json", "{\"not\": \"an array\"}");
    env.write("in/dup.csv", "A,B,A\n1,2,3\n");
    let cases = [
        (
            object_spec("a", "in/missing.csv", "csv", json!({"kind": "count"})),
            "item_reader.key: no object s3://data/in/missing.csv",
        ),
        (
            object_spec("b", "in/object.json", "json", json!({"kind": "count"})),
            "item_reader.key",
        ),
        (
            object_spec("c", "in/dup.csv", "csv", json!({"kind": "count"})),
            "item_reader.key",
        ),
        (
            json!({
                "item_reader": { "kind": "s3_object", "bucket": "no-such-bucket", "key": "k", "format": "jsonl" },
                "processor": { "kind": "count" },
                "result_writer": { "bucket": BUCKET }
            }),
            "item_reader.bucket: no bucket \"no-such-bucket\"",
        ),
    ];
    for (spec, expected) in cases {
        let err = env.try_run(&spec, &config).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(
        !env.path().join(BUCKET).join("results").exists(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_report_yields_exactly_the_objects_it_lists_filters_included() {
    let config = fast_config();
    let env = Env::new(&config);
    // 600 objects in the report (keys needing encoding among them), written under src/; 20 of them delete
    // markers; one listed object gone by the time it is read; objects not in the report are not items.
    let day = 86_400_000i64;
    let mut entries = Vec::new();
    for i in 0..600u64 {
        let key = format!("src/{:02}/obj {i}+ü%.txt", i % 7);
        let marker = i % 30 == 29;
        if !marker && i != 10 {
            env.write(&key, "y".repeat(i as usize % 50));
        }
        entries.push((
            key,
            i % 50,
            1_767_225_600_000 + (i as i64 % 10) * day,
            marker,
        ));
    }
    env.write("src/not-listed.txt", "zz");
    let (manifest, files) = dmap_core::reader::inventory::write_report(
        BUCKET,
        BUCKET,
        "inventory/2026-01-01T00-00Z/",
        &entries,
        4,
    );
    assert_eq!(files.len(), 4);
    env.write("inventory/2026-01-01T00-00Z/manifest.json", &manifest);
    for (key, body) in &files {
        env.write(key, body);
    }
    let spec = |job_id: &str, filters: Value| {
        let mut reader = json!({ "kind": "s3_inventory", "bucket": BUCKET,
                                 "manifest_key": "inventory/2026-01-01T00-00Z/manifest.json" });
        reader
            .as_object_mut()
            .unwrap()
            .extend(filters.as_object().unwrap().clone());
        json!({
            "job_id": job_id,
            "item_reader": reader,
            "item_batcher": { "max_items_per_batch": 9 },
            "processor": { "kind": "count" },
            "tolerated_failure_count": 1,
            "result_writer": { "bucket": BUCKET, "prefix": "results/" }
        })
    };
    let all = env.run(&spec("inventory", json!({})), &config).await;
    let m = &all.manifest;
    assert_eq!(
        (m.items.total, m.items.succeeded, m.items.failed),
        (580, 579, 1)
    );
    let expected_bytes: u64 = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| !e.3 && *i != 10)
        .map(|(_, e)| e.1)
        .sum();
    assert_eq!(result_of(&env, &all)["bytes"], expected_bytes);
    let failed = lines_of(&env, &m.failures);
    assert_eq!(failed[0]["key"], "src/03/obj 10+ü%.txt");

    // Filters: sizes 10..=20 inclusive, modified strictly after day 2 and before day 8, under src/1*.
    let filtered = env
        .run(
            &spec(
                "inventory-filtered",
                json!({ "prefix": "src/0", "suffix": ".txt", "min_size": 10, "max_size": 20,
                        "modified_after": "2026-01-03T00:00:00Z", "modified_before": "2026-01-09T00:00:00+00:00" }),
            ),
            &config,
        )
        .await;
    let selected = entries
        .iter()
        .enumerate()
        .filter(|(i, (_, size, modified, marker))| {
            let day_of = (modified - 1_767_225_600_000) / day;
            !marker && (10..=20).contains(size) && day_of > 2 && day_of < 8 && *i != 10
        })
        .count() as u64;
    assert!(selected > 10, "{selected}");
    assert_eq!(filtered.manifest.items.total, selected);
    assert_eq!(result_of(&env, &filtered)["objects"], selected);

    // A report in another format, one that is not a manifest, and one that is not there, are refused naming
    // the field.
    let orc = String::from_utf8(manifest)
        .unwrap()
        .replace("\"CSV\"", "\"Parquet\"");
    env.write("inventory/parquet/manifest.json", orc);
    let mut parquet = spec("parquet", json!({}));
    parquet["item_reader"]["manifest_key"] = json!("inventory/parquet/manifest.json");
    let err = env
        .try_run(&parquet, &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("item_reader.manifest_key") && err.contains("\"Parquet\""),
        "{err}"
    );
    env.write("inventory/garbled/manifest.json", "{\"sourceBucket\": ");
    let mut garbled = spec("garbled", json!({}));
    garbled["item_reader"]["manifest_key"] = json!("inventory/garbled/manifest.json");
    let err = env
        .try_run(&garbled, &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("item_reader.manifest_key") && err.contains("not an S3 Inventory manifest"),
        "{err}"
    );
    let mut missing = spec("missing", json!({}));
    missing["item_reader"]["manifest_key"] = json!("inventory/none/manifest.json");
    let err = env
        .try_run(&missing, &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("item_reader.manifest_key: no object s3://data/inventory/none/manifest.json"),
        "{err}"
    );
}
