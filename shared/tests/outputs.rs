//! Per-item outputs through the whole embedded pipeline, with the `checksum` processor that emits them: digests
//! equal to `sha2` and `crc32c` computed here; files of whole batches in item order, cut at their size and
//! named by their first batch; every succeeded item's line exactly once, and no failed item's, under chaos and
//! port faults, in files byte-identical to a fault-free run's and exactly the ones the manifest lists.
//!
//! The chaos test runs 10 seeds; `DMAP_FAULT_SEEDS=N` runs N, as it does for `fault_campaign`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::failure_store::FailureStore;
use common::faults::{CAMPAIGN_RATES, Faults, campaign_seeds, inject};
use common::{BUCKET, Env, csv_spec, drain_work, fast_config, take_finalize_messages};
use dmap_core::finalizer::FinalizerConfig;
use dmap_core::outcome::{Manifest, TerminalStatus};
use dmap_core::ports::StoreError;
use dmap_core::runner::{Chaos, RunReport, RunnerConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn checksum_spec(job_id: &str, prefix: &str, processor: Value, max_items: u32) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": BUCKET, "prefix": prefix },
        "item_batcher": { "max_items_per_batch": max_items },
        "processor": processor,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files under the job's `outputs/`, by name and content, in the manifest's order; checks first that the
/// folder holds exactly the files the manifest lists, no other.
fn output_files(env: &Env, manifest: &Manifest) -> Vec<(String, Vec<u8>)> {
    let dir = format!("results/{}/outputs/", manifest.job_id);
    let on_disk: BTreeSet<String> = match std::fs::read_dir(env.path().join(BUCKET).join(&dir)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    let listed: Vec<String> = manifest
        .outputs
        .iter()
        .map(|key| {
            key.strip_prefix(&dir)
                .unwrap_or_else(|| panic!("{key} is not under {dir}"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        on_disk,
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        "the files under {dir} are the manifest's"
    );
    listed
        .into_iter()
        .map(|name| {
            let body = env.read(&format!("{dir}{name}"));
            (name, body)
        })
        .collect()
}

/// Every line of `files`, in order: the item's key and its output.
fn lines(files: &[(String, Vec<u8>)]) -> Vec<(String, Value)> {
    files
        .iter()
        .flat_map(|(_, body)| std::str::from_utf8(body).unwrap().lines())
        .map(|line| {
            let mut line: Value = serde_json::from_str(line).unwrap();
            let key = line["key"].as_str().unwrap().to_owned();
            assert_eq!(line.as_object().unwrap().len(), 2, "{line}");
            (key, line["output"].take())
        })
        .collect()
}

fn result_json(env: &Env, report: &RunReport) -> Value {
    serde_json::from_slice(&env.read(&report.manifest.result)).unwrap()
}

/// Bytes that look random (a multi-MiB object must not be one repeated byte, which a wrong chunking could
/// still digest right).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_equal_sha2_and_crc32c_computed_directly() {
    let config = fast_config();
    let env = Env::new(&config);
    // Listed in key order: empty, 1 byte, 5 MiB and one byte more (past any read buffer's multiple).
    let objects = [
        ("c/a-empty", Vec::new()),
        ("c/b-one-byte", b"x".to_vec()),
        ("c/c-five-mib", noise((5 << 20) + 1)),
    ];
    for (key, body) in &objects {
        env.write(key, body);
    }
    let bytes: usize = objects.iter().map(|(_, body)| body.len()).sum();
    // sha256 is the default algorithm.
    for (job_id, processor) in [
        ("sha256", json!({ "kind": "checksum" })),
        (
            "crc32c",
            json!({ "kind": "checksum", "algorithm": "crc32c" }),
        ),
    ] {
        let report = env
            .run(&checksum_spec(job_id, "c/", processor, 2), &config)
            .await;
        let m = &report.manifest;
        assert_eq!(m.status, TerminalStatus::Succeeded);
        assert_eq!((m.items.succeeded, m.batches.total), (3, 2));
        assert_eq!(
            result_json(&env, &report),
            json!({ "objects": 3, "bytes": bytes })
        );
        assert_eq!(
            m.outputs,
            [format!("results/{job_id}/outputs/0000000000.jsonl")],
            "both batches in one file"
        );
        let lines = lines(&output_files(&env, m));
        assert_eq!(lines.len(), objects.len());
        for ((key, output), (expected_key, body)) in lines.iter().zip(&objects) {
            assert_eq!(key, expected_key);
            let digest = match job_id {
                "sha256" => Sha256::digest(body).to_vec(),
                _ => crc32c::crc32c(body).to_be_bytes().to_vec(),
            };
            assert_eq!(
                *output,
                json!({
                    "algorithm": job_id,
                    "checksum": hex(&digest),
                    "base64": BASE64.encode(&digest),
                    "size": body.len(),
                }),
                "{job_id} of {key}"
            );
        }
    }
}

fn denied(bucket: &str, key: &str) -> StoreError {
    StoreError::Denied {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        code: "AccessDenied".into(),
        message: "Access Denied".into(),
    }
}

/// A small bound, so that a job of a few dozen items writes several files.
fn small_files() -> FinalizerConfig {
    FinalizerConfig {
        output_file_bytes: 1000,
        ..FinalizerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_hold_whole_batches_in_item_order_named_by_their_first_batch() {
    let config = RunnerConfig {
        finalizer: small_files(),
        ..fast_config()
    };
    let mut env = Env::new(&config);
    let keys: Vec<String> = (0..30).map(|i| format!("m/k{i:02}")).collect();
    for key in &keys {
        env.write(key, format!("body of {key}"));
    }
    // Batch 4 (k08, k09) fails whole and k13 alone: a batch without lines starts no file.
    let store = Arc::new(FailureStore::new(env.store.inner.clone()));
    for key in ["m/k08", "m/k09", "m/k13"] {
        store.fail_get(key, denied);
    }
    env.deps.objects = store;
    let mut spec = checksum_spec("small", "m/", json!({ "kind": "checksum" }), 2);
    spec["tolerated_failure_count"] = json!(3);
    let report = env.run(&spec, &config).await;
    let m = &report.manifest;
    assert_eq!((m.items.succeeded, m.items.failed), (27, 3));
    let files = output_files(&env, m);
    assert!(files.len() > 2, "{:?}", m.outputs);

    let succeeded: Vec<&String> = keys
        .iter()
        .filter(|k| !["m/k08", "m/k09", "m/k13"].contains(&k.as_str()))
        .collect();
    let all = lines(&files);
    assert_eq!(
        all.iter().map(|(key, _)| key).collect::<Vec<_>>(),
        succeeded,
        "every succeeded item once, in item order"
    );
    let batch_of = |key: &str| key["m/k".len()..].parse::<u64>().unwrap() / 2;
    let mut next_line = 0;
    for (i, (name, body)) in files.iter().enumerate() {
        let file_lines = lines(std::slice::from_ref(&(name.clone(), body.clone())));
        let first = batch_of(&file_lines[0].0);
        assert_eq!(
            *name,
            format!("{first:010}.jsonl"),
            "named by its first batch"
        );
        // Cut at the first batch boundary at or past the bound: without its last batch, a file is under it.
        let last = batch_of(&file_lines.last().unwrap().0);
        let last_batch_bytes: usize = std::str::from_utf8(body)
            .unwrap()
            .lines()
            .zip(&file_lines)
            .filter(|(_, (key, _))| batch_of(key) == last)
            .map(|(line, _)| line.len() + 1)
            .sum();
        assert!(
            body.len() - last_batch_bytes < small_files().output_file_bytes,
            "{name}"
        );
        if i + 1 < files.len() {
            assert!(body.len() >= small_files().output_file_bytes, "{name}");
        }
        next_line += file_lines.len();
    }
    assert_eq!(next_line, all.len());
    assert!(
        !files.iter().any(|(name, _)| name == "0000000004.jsonl"),
        "batch 4 has no lines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_without_outputs_write_none_and_their_manifest_does_not_mention_them() {
    let config = fast_config();
    let env = Env::new(&config);
    for i in 0..5 {
        env.write(&format!("n/k{i}.csv"), "STATION,TMAX\nS1,1.5\n");
    }
    let report = env.run(&csv_spec("n/", 2), &config).await;
    assert!(report.manifest.outputs.is_empty());
    assert!(output_files(&env, &report.manifest).is_empty());
    let [manifest, ..] = env.outputs(&report);
    assert!(
        !String::from_utf8(manifest).unwrap().contains("outputs"),
        "the manifest keeps the bytes it had before outputs existed"
    );
}

const OBJECTS: usize = 40;
const DENIED: [&str; 3] = ["f/k03", "f/k17", "f/k18"];

fn chaos_config(chaos: Option<Chaos>) -> RunnerConfig {
    RunnerConfig {
        // Transient faults alone must never exhaust a batch's receives.
        max_receive_count: 1_000,
        idle_before_sweep: Duration::from_millis(300),
        chaos,
        finalizer: small_files(),
        ..fast_config()
    }
}

/// An environment holding the chaos test's objects, with [`DENIED`] refused for good.
fn chaos_env(config: &RunnerConfig) -> Env {
    let mut env = Env::new(config);
    for i in 0..OBJECTS {
        env.write(&format!("f/k{i:02}"), format!("object {i}\n").repeat(i));
    }
    let store = Arc::new(FailureStore::new(env.store.inner.clone()));
    for key in DENIED {
        store.fail_get(key, denied);
    }
    env.deps.objects = store;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_chaos_and_faults_every_succeeded_item_has_one_line_in_the_same_files() {
    let seeds = campaign_seeds(10);
    let mut spec = checksum_spec(
        "audit",
        "f/",
        json!({ "kind": "checksum", "algorithm": "crc32c" }),
        3,
    );
    spec["tolerated_failure_count"] = json!(DENIED.len());
    let calm = chaos_env(&chaos_config(None));
    let report = calm.run(&spec, &chaos_config(None)).await;
    let expected = (calm.outputs(&report), output_files(&calm, &report.manifest));
    assert!(expected.1.len() > 1, "several files");
    let succeeded: Vec<String> = (0..OBJECTS)
        .map(|i| format!("f/k{i:02}"))
        .filter(|k| !DENIED.contains(&k.as_str()))
        .collect();

    let mut injected = 0;
    for seed in 0..seeds {
        let config = chaos_config(Some(Chaos { rate: 0.3, seed }));
        let mut env = chaos_env(&config);
        let faults = Faults::new(seed, CAMPAIGN_RATES);
        inject(&mut env.deps, &faults);
        let report = tokio::time::timeout(Duration::from_secs(60), env.try_run(&spec, &config))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: the run did not end"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let files = output_files(&env, &report.manifest);
        let keys: Vec<String> = lines(&files).into_iter().map(|(key, _)| key).collect();
        assert_eq!(
            keys, succeeded,
            "seed {seed}: each succeeded item once, no failed one"
        );
        assert_eq!(
            (env.outputs(&report), files),
            expected,
            "seed {seed}: the outputs differ from a fault-free run's"
        );
        let s = report.stats;
        injected += s.duplicates + s.crashes_before_ack + s.crashes_before_record;
    }
    assert!(injected > 0, "chaos injected faults");
}

/// Where the parts are must not show in the outputs: parts carried in the batch records (the default), parts
/// written as objects (`inline_part_bytes: 0`), and a mix of the two give byte-identical outputs, and only the
/// objects' runs write part objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_in_records_and_parts_as_objects_give_byte_identical_outputs() {
    let mut spec = checksum_spec(
        "where-parts",
        "f/",
        json!({ "kind": "checksum", "algorithm": "sha256" }),
        3,
    );
    spec["tolerated_failure_count"] = json!(DENIED.len());
    let mut runs = Vec::new();
    // Parts as objects first: the median of their sizes then makes the mix.
    let mut inline_sizes = vec![0, dmap_core::worker::INLINE_PART_BYTES];
    while let Some(inline_part_bytes) = inline_sizes.pop() {
        let mut config = chaos_config(None);
        config.worker.inline_part_bytes = inline_part_bytes;
        let env = chaos_env(&config);
        let report = env.run(&spec, &config).await;
        let parts_dir = env.path().join(BUCKET).join("results/where-parts/parts");
        let mut sizes: Vec<u64> = std::fs::read_dir(&parts_dir)
            .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).collect())
            .unwrap_or_default();
        sizes.sort_unstable();
        if inline_part_bytes == 0 {
            inline_sizes.push(sizes[sizes.len() / 2] as usize);
        }
        runs.push((
            inline_part_bytes,
            sizes.len(),
            env.outputs(&report),
            output_files(&env, &report.manifest),
        ));
    }
    let (_, in_records, outputs, files) = &runs[0];
    assert_eq!(*in_records, 0, "parts in the records write no part object");
    assert!(
        files.len() > 1 && !outputs[2].is_empty(),
        "outputs and failures to compare"
    );
    for (inline_part_bytes, part_objects, other_outputs, other_files) in &runs[1..] {
        assert!(
            *part_objects > 0,
            "inline_part_bytes {inline_part_bytes}: part objects"
        );
        assert_eq!(
            (other_outputs, other_files),
            (outputs, files),
            "inline_part_bytes {inline_part_bytes}: the outputs differ"
        );
    }
    assert!(
        runs[2].1 < runs[1].1,
        "a mix: some parts in records, some objects ({} of {})",
        runs[2].1,
        runs[1].1
    );
}

/// `range_batches` for a tree of `ranges`-ish ranges over the chaos test's 14 batches.
fn tree_config(range_batches: u64, chaos: Option<Chaos>) -> RunnerConfig {
    let mut config = chaos_config(chaos);
    config.finalizer.range_batches = range_batches;
    config
}

/// The range merges a tree-shaped finalize left under the job's `finalize/`.
fn range_merges(env: &Env, job_id: &str) -> Vec<String> {
    let dir = env
        .path()
        .join(BUCKET)
        .join(format!("results/{job_id}/finalize"));
    let mut merges: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".json") && name != "fan-out.json")
                .collect()
        })
        .unwrap_or_default();
    merges.sort();
    merges
}

/// A job finalized as a tree (its ranges merged by messages of their own, then their results) writes the same
/// bytes as one process merging every part: `result.json`, `failed.jsonl`, `manifest.json`, and `outputs/` files
/// cut at the same lines although files span ranges; under chaos and port faults too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_shaped_finalize_writes_the_bytes_one_process_writes() {
    let mut spec = checksum_spec(
        "tree",
        "f/",
        json!({ "kind": "checksum", "algorithm": "crc32c" }),
        3,
    );
    spec["tolerated_failure_count"] = json!(DENIED.len());
    let one = chaos_env(&tree_config(u64::MAX, None));
    let report = one.run(&spec, &tree_config(u64::MAX, None)).await;
    assert_eq!(report.manifest.batches.total, 14);
    assert!(range_merges(&one, "tree").is_empty(), "one process");
    let expected = (one.outputs(&report), output_files(&one, &report.manifest));
    assert!(
        expected.1.len() > 2 && !expected.0[2].is_empty(),
        "files and failures"
    );

    for (range_batches, chaos) in [
        (2, None),
        (5, None),
        (1, Some(Chaos { rate: 0.3, seed: 1 })),
    ] {
        let config = tree_config(range_batches, chaos);
        let mut env = chaos_env(&config);
        if chaos.is_some() {
            inject(&mut env.deps, &Faults::new(1, CAMPAIGN_RATES));
        }
        let report = tokio::time::timeout(Duration::from_secs(60), env.try_run(&spec, &config))
            .await
            .unwrap_or_else(|_| panic!("ranges of {range_batches}: the run did not end"))
            .unwrap_or_else(|e| panic!("ranges of {range_batches}: {e}"));
        assert_eq!(
            range_merges(&env, "tree").len() as u64,
            14u64.div_ceil(range_batches),
            "ranges of {range_batches}: a merge per range"
        );
        assert_eq!(
            (env.outputs(&report), output_files(&env, &report.manifest)),
            expected,
            "ranges of {range_batches}: the outputs differ from one process's"
        );
    }
}

/// The tree's messages, one at a time: a trigger sends a merge per range, and a repeated trigger sends none
/// while they run; a range merged twice (a redelivery) changes nothing; the last range to end triggers the
/// finalizer, which merges the ranges' results (merging again one that is not this run's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trees_messages_are_idempotent_and_the_last_range_triggers_the_root() {
    use dmap_core::finalizer::{Handled, handle};
    use dmap_core::message::FinalizeMessage;
    use dmap_core::worker::WorkerConfig;

    let config = tree_config(4, None);
    let env = chaos_env(&config);
    let mut spec = checksum_spec("steps", "f/", json!({ "kind": "checksum" }), 3);
    spec["tolerated_failure_count"] = json!(DENIED.len());
    list_and_work(&env, &spec, WorkerConfig::default()).await;
    let trigger = take_finalize_messages(&env).await;
    assert_eq!(
        trigger,
        vec![FinalizeMessage {
            job_id: "steps".into(),
            range: None,
            resend: false,
        }],
        "the completion claim's trigger"
    );
    let finalizer = config.finalizer;
    let handled = handle(&env.deps, finalizer, &trigger[0]).await.unwrap();
    assert_eq!(
        handled,
        Handled::RangesPending { ranges: 4 },
        "14 batches in 4s"
    );
    let ranges = take_finalize_messages(&env).await;
    assert_eq!(
        ranges.iter().map(|m| m.range).collect::<Vec<_>>(),
        (0..4).map(Some).collect::<Vec<_>>()
    );
    // A repeated trigger (the sweeper's, a duplicate) while the merges run sends none again.
    handle(&env.deps, finalizer, &trigger[0]).await.unwrap();
    assert!(
        take_finalize_messages(&env).await.is_empty(),
        "no merge sent twice"
    );

    for (i, range) in ranges.iter().enumerate().rev() {
        assert_eq!(
            handle(&env.deps, finalizer, range).await.unwrap(),
            Handled::RangeMerged { range: i as u64 }
        );
        let sent = take_finalize_messages(&env).await;
        if i > 0 {
            assert!(sent.is_empty(), "range {i} is not the last to end");
        } else {
            assert_eq!(sent, trigger, "the last range triggers the root");
        }
    }
    let merge_of_1 = env.read("results/steps/finalize/0000000004.json");
    handle(&env.deps, finalizer, &ranges[1]).await.unwrap();
    assert_eq!(
        env.read("results/steps/finalize/0000000004.json"),
        merge_of_1,
        "a range merged again writes the same"
    );
    take_finalize_messages(&env).await; // its trigger again: every range is merged
    // A merge another run of the job id left (or a torn one) is merged again by the root, never joined.
    env.write("results/steps/finalize/0000000008.json", b"{\"run\": 1}");
    let Handled::Finalized(done) = handle(&env.deps, finalizer, &trigger[0]).await.unwrap() else {
        panic!("the root merges")
    };
    assert!(done.wrote);
    assert_eq!(
        (done.manifest.items.succeeded, done.manifest.items.failed),
        (37, 3)
    );
    // A range message for a finished job is dropped.
    handle(&env.deps, finalizer, &ranges[2]).await.unwrap();
    let Handled::Finalized(again) = handle(&env.deps, finalizer, &trigger[0]).await.unwrap() else {
        panic!("finished")
    };
    assert!(!again.wrote);
}

/// Starts `spec`'s job, lists it whole, and hands every batch to a worker with `worker`'s settings, in this
/// task: the job is then FINALIZING, its trigger in the finalize queue.
async fn list_and_work(env: &Env, spec: &Value, worker: dmap_core::worker::WorkerConfig) {
    use dmap_core::coordinator::{ListingOutcome, Rerun, run_listing, start_or_resume};
    use dmap_core::spec::JobSpec;
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let initial = start_or_resume(&env.deps, job, Rerun::Resume)
        .await
        .unwrap();
    let listed = run_listing(&env.deps, &initial, &|| true).await.unwrap();
    assert!(
        matches!(listed, ListingOutcome::Complete { .. }),
        "{listed:?}"
    );
    drain_work(env, worker).await;
}

/// A range that cannot be merged (a part no longer readable) fails the job with the reason, as one process's
/// finalizing would; it does not leave it FINALIZING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_that_cannot_be_merged_fails_the_job() {
    use dmap_core::finalizer::{Handled, handle};
    use dmap_core::ports::JobStatus;

    let config = tree_config(4, None);
    let env = chaos_env(&config);
    let mut spec = checksum_spec("broken", "f/", json!({ "kind": "checksum" }), 3);
    spec["tolerated_failure_count"] = json!(DENIED.len());
    let worker = dmap_core::worker::WorkerConfig {
        inline_part_bytes: 0,
        ..Default::default()
    };
    list_and_work(&env, &spec, worker).await;
    // A part of range 1 (batches 4..8) made unreadable.
    let parts = env.path().join(BUCKET).join("results/broken/parts");
    let part = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("0000000005.")
        })
        .expect("batch 5's part");
    std::fs::write(&part, "not a part").unwrap();
    let trigger = take_finalize_messages(&env).await.remove(0);
    let finalizer = config.finalizer;
    assert_eq!(
        handle(&env.deps, finalizer, &trigger).await.unwrap(),
        Handled::RangesPending { ranges: 4 }
    );
    let ranges = take_finalize_messages(&env).await;
    assert_eq!(
        handle(&env.deps, finalizer, &ranges[1]).await.unwrap(),
        Handled::RangeMerged { range: 1 }
    );
    let record = env.deps.jobs.get_job("broken").await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Failed);
    let manifest: Value =
        serde_json::from_slice(&env.read("results/broken/manifest.json")).unwrap();
    let error = manifest["error"].as_str().unwrap();
    assert!(error.contains("unreadable"), "{error}");
    // The other ranges' messages are dropped; the trigger answers with the manifest.
    handle(&env.deps, finalizer, &ranges[0]).await.unwrap();
    let Handled::Finalized(done) = handle(&env.deps, finalizer, &trigger).await.unwrap() else {
        panic!("finished")
    };
    assert!(!done.wrote);
}

/// A result of more groups than a merge holds (`result_groups`) is spilled in shards by group and written as
/// `result-<shard>.json`, which `result.json` indexes: the shards hold every group once, each as one process
/// holding them all computes it; one process and a tree (under chaos too) write the same bytes, and no shard
/// holds more than a share of the groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_of_many_groups_is_written_in_shards_that_hold_each_group_once() {
    const STATIONS: usize = 400;
    let mut csv = String::from("station,t\n");
    for i in 0..600 {
        csv += &format!("s{:03},{i}\n", i % STATIONS);
    }
    let spec = json!({
        "job_id": "groups",
        "item_reader": { "kind": "s3_object", "bucket": BUCKET, "key": "rows.csv", "format": "csv" },
        "item_batcher": { "max_items_per_batch": 10 },
        "processor": { "kind": "csv_aggregate", "group_by": "station", "columns": ["t"] },
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let config = |range_batches: u64, result_groups: usize, chaos: Option<Chaos>| {
        let mut config = tree_config(range_batches, chaos);
        config.finalizer.result_groups = result_groups;
        config
    };
    let whole_env = Env::new(&config(u64::MAX, usize::MAX, None));
    whole_env.write("rows.csv", &csv);
    let whole = result_json(
        &whole_env,
        &whole_env
            .run(&spec, &config(u64::MAX, usize::MAX, None))
            .await,
    );
    let whole = whole["groups"].as_object().expect("groups").clone();
    assert_eq!(whole.len(), STATIONS);
    assert!(
        !whole_env
            .path()
            .join(BUCKET)
            .join("results/groups/finalize/groups")
            .exists(),
        "nothing spilled under the bound"
    );

    let mut first: Option<Vec<Vec<u8>>> = None;
    for (range_batches, result_groups, chaos) in [
        (u64::MAX, 50, None),
        (7, 50, None),
        (7, 30, Some(Chaos { rate: 0.3, seed: 3 })),
    ] {
        let what = format!("ranges of {range_batches}, {result_groups} groups held");
        let config = config(range_batches, result_groups, chaos);
        let env = Env::new(&config);
        env.write("rows.csv", &csv);
        let report = tokio::time::timeout(Duration::from_secs(60), env.try_run(&spec, &config))
            .await
            .unwrap_or_else(|_| panic!("{what}: the run did not end"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(report.manifest.items.succeeded, 600, "{what}");
        let index = result_json(&env, &report);
        let sharded = &index["sharded"];
        assert_eq!(sharded["groups"], json!(STATIONS), "{what}: {index}");
        let shards = sharded["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), 32, "{what}");
        let mut seen = serde_json::Map::new();
        let mut bytes = vec![env.read(&report.manifest.result)];
        for shard in shards {
            let key = shard["key"].as_str().expect("key");
            let body = env.read(key);
            let groups = serde_json::from_slice::<Value>(&body).expect("a shard is JSON")["groups"]
                .as_object()
                .expect("groups")
                .clone();
            assert_eq!(shard["groups"], json!(groups.len()), "{what}: {key}");
            assert!(groups.len() < STATIONS / 4, "{what}: {key} holds a share");
            for (name, group) in groups {
                assert!(
                    seen.insert(name.clone(), group).is_none(),
                    "{what}: {name} twice"
                );
            }
            bytes.push(body);
        }
        assert_eq!(seen, whole, "{what}: the shards are the whole result");
        let spills = std::fs::read_dir(
            env.path()
                .join(BUCKET)
                .join("results/groups/finalize/groups"),
        )
        .map(|d| d.count())
        .unwrap_or(0);
        assert!(spills >= 32, "{what}: merges spilled ({spills} objects)");
        match &first {
            None => first = Some(bytes),
            Some(first) => assert!(first == &bytes, "{what}: other bytes than the first run's"),
        }
    }
}
