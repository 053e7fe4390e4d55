//! Redrive, on the embedded backends (with the persistent job store) and through moto: a job that FAILED
//! because some objects were unreadable, redriven once they are fixed, ends as a clean run over the fixed data
//! ends, and no succeeded item is read twice; an ABORTED job redriven runs what it left, and only that.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::failure_store::FailureStore;
use common::faults::{Faults, FaultyJobStore, NO_FAULTS};
use common::{BUCKET, Env, csv_object, fast_config};
use dmap_core::Deps;
use dmap_core::clock::now_ms;
use dmap_core::coordinator::{ListingOutcome, run_listing};
use dmap_core::describe::describe;
use dmap_core::embedded::MemoryJobStore;
use dmap_core::outcome::{JobStatus, Manifest, TerminalStatus};
use dmap_core::ports::{ControlChange, JobStore, StoreError, read_all};
use dmap_core::redrive;
use dmap_core::runner::{self, RunReport, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_emulator as emulator;
use serde_json::{Value, json};

fn denied(bucket: &str, key: &str) -> StoreError {
    StoreError::Denied {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        code: "AccessDenied".to_owned(),
        message: "Access Denied".to_owned(),
    }
}

/// `objects` CSV objects under `<prefix>/` behind a store that counts every read (and fails those asked).
async fn dataset(deps: &Deps, bucket: &str, prefix: &str, objects: usize) -> Arc<FailureStore> {
    for i in 0..objects {
        deps.objects
            .put(bucket, &key(prefix, i), csv_object(i).into_bytes())
            .await
            .unwrap();
    }
    Arc::new(FailureStore::wrap(deps.objects.clone()))
}

fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}/k{i:03}.csv")
}

fn spec(job_id: &str, bucket: &str, prefix: &str, per_batch: u32) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": bucket, "prefix": format!("{prefix}/") },
        "item_batcher": { "max_items_per_batch": per_batch },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN"] },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    })
}

async fn run(deps: &Deps, spec: &Value, config: &RunnerConfig) -> RunReport {
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    runner::run(deps, job, config, &|_| {}).await.unwrap()
}

/// Redrives the job as `dmap redrive` does, and runs it to its end.
async fn redrive_and_run(deps: &Deps, job_id: &str, config: &RunnerConfig) -> RunReport {
    // A runner whose queues die with it sends the unrecorded batches again itself.
    let record = redrive::reopen(deps, job_id, !config.queues_die_with_process)
        .await
        .unwrap();
    assert_eq!(record.status, JobStatus::Running);
    runner::run(deps, record.job, config, &|_| {})
        .await
        .unwrap()
}

/// result.json and failed.jsonl of a finished job.
async fn outputs(deps: &Deps, bucket: &str, m: &Manifest) -> [Vec<u8>; 2] {
    let read =
        |key: String| async move { read_all(deps.objects.as_ref(), bucket, &key).await.unwrap() };
    [read(m.result.clone()).await, read(m.failures.clone()).await]
}

fn reads_since(before: &HashMap<String, u32>, after: &HashMap<String, u32>, key: &str) -> u32 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}

/// Three objects are unreadable (two in one batch): the job FAILS. Fixed and redriven, it SUCCEEDS with the
/// outputs of a clean run over the fixed data, the fixed objects read once more and no other read again.
async fn a_failed_job_redriven_after_a_fix_ends_as_a_clean_run(
    deps: Deps,
    bucket: &str,
    config: RunnerConfig,
) {
    const OBJECTS: usize = 24;
    let unreadable = [3, 10, 11].map(|i| key("fix", i));
    let store = dataset(&deps, bucket, "fix", OBJECTS).await;
    for k in &unreadable {
        store.fail_get(k, denied);
    }
    let deps = Deps {
        objects: store.clone(),
        ..deps
    };
    let failed = run(&deps, &spec("fix-job", bucket, "fix", 4), &config).await;
    let m = &failed.manifest;
    assert_eq!(m.status, TerminalStatus::Failed);
    assert_eq!((m.items.succeeded, m.items.failed), (21, 3));
    let failures = String::from_utf8(outputs(&deps, bucket, m).await[1].clone()).unwrap();
    assert!(failures.contains("AccessDenied"), "{failures}");

    let before = store.all_attempts();
    for k in &unreadable {
        store.heal(k);
    }
    let redriven = redrive_and_run(&deps, "fix-job", &config).await;
    let m = &redriven.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded, "{m:?}");
    assert_eq!(
        (m.items.total, m.items.succeeded, m.items.failed),
        (24, 24, 0)
    );
    assert_eq!(m.redrives, 1);
    // The 6 batches of the first run and one redo batch of the 3 items.
    assert_eq!(m.batches.total, 7);
    let after = store.all_attempts();
    for i in 0..OBJECTS {
        let k = key("fix", i);
        let again = reads_since(&before, &after, &k);
        let expected = u32::from(unreadable.contains(&k));
        assert_eq!(again, expected, "{k} read {again} times by the redrive");
    }
    let p = deps.jobs.progress("fix-job").await.unwrap();
    assert_eq!(
        (p.status, p.succeeded, p.failed, p.batches_done),
        (JobStatus::Succeeded, 24, 0, 7)
    );
    let d = describe(deps.jobs.as_ref(), "fix-job", now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.redrives, d.items.failed), (1, 0));

    // A clean run over the fixed data writes the same outputs.
    let clean = run(&deps, &spec("fix-clean", bucket, "fix", 4), &config).await;
    assert_eq!(clean.manifest.items, m.items);
    assert_eq!(clean.manifest.status, m.status);
    assert_eq!(
        outputs(&deps, bucket, &clean.manifest).await,
        outputs(&deps, bucket, m).await
    );

    // Only a FAILED or ABORTED job is redriven.
    let refused = redrive::reopen(&deps, "fix-job", true).await.unwrap_err();
    assert!(refused.to_string().contains("SUCCEEDED"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_redriven_after_a_fix_ends_as_a_clean_run_on_the_embedded_backends() {
    let mut env = Env::new(&fast_config());
    env.deps.jobs = Arc::new(MemoryJobStore::persistent(env.path().join(".dmap/jobs")));
    a_failed_job_redriven_after_a_fix_ends_as_a_clean_run(env.deps.clone(), BUCKET, fast_config())
        .await;
}

fn moto_config(concurrency: usize) -> RunnerConfig {
    RunnerConfig {
        concurrency,
        visibility_timeout: Duration::from_secs(30),
        receive_wait: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
        queues_die_with_process: false,
        ..RunnerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_redriven_after_a_fix_ends_as_a_clean_run_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "rd").await;
    a_failed_job_redriven_after_a_fix_ends_as_a_clean_run(deps, &bucket, moto_config(4)).await;
}

/// A redrive's process dies in the redo pass, its queue (and the redo batches in it) lost with it: run again,
/// the job sends those redo batches again, the same items under the same seqs, and ends as a clean run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_whose_queue_was_lost_in_its_redo_pass_resends_the_redo_batches() {
    const OBJECTS: usize = 30;
    let config = fast_config();
    let mut env = Env::new(&config);
    env.deps.jobs = Arc::new(MemoryJobStore::persistent(env.path().join(".dmap/jobs")));
    let unreadable = [2, 9, 17, 25].map(|i| key("lost", i));
    let store = dataset(&env.deps, BUCKET, "lost", OBJECTS).await;
    for k in &unreadable {
        store.fail_get(k, denied);
    }
    let deps = Deps {
        objects: store.clone(),
        ..env.deps.clone()
    };
    let failed = run(&deps, &spec("lost-job", BUCKET, "lost", 3), &config).await;
    assert_eq!(failed.manifest.items.failed, 4);
    for k in &unreadable {
        store.heal(k);
    }
    let record = redrive::reopen(&deps, "lost-job", false).await.unwrap();
    // The redo pass sends into a queue that is then lost.
    let doomed = Deps {
        work_queue: Env::new(&config).deps.work_queue.clone(),
        ..deps.clone()
    };
    let listed = run_listing(&doomed, &record, &|| true).await.unwrap();
    let ListingOutcome::Complete { totals, .. } = listed else {
        panic!("{listed:?}")
    };
    // 10 batches of 3, then the 4 failed items in redo batches of 3.
    assert_eq!((totals.batches, totals.items), (12, OBJECTS as u64));
    let before = store.all_attempts();
    let report = runner::run(&deps, record.job, &config, &|_| {})
        .await
        .unwrap();
    let m = &report.manifest;
    assert_eq!(
        (m.status, m.items.succeeded, m.items.failed, m.batches.total),
        (TerminalStatus::Succeeded, OBJECTS as u64, 0, 12)
    );
    let after = store.all_attempts();
    for i in 0..OBJECTS {
        let k = key("lost", i);
        let expected = u32::from(unreadable.contains(&k));
        assert_eq!(reads_since(&before, &after, &k), expected, "{k}");
    }
    let clean = run(&deps, &spec("lost-clean", BUCKET, "lost", 3), &config).await;
    assert_eq!(
        outputs(&deps, BUCKET, &clean.manifest).await,
        outputs(&deps, BUCKET, m).await
    );
}

/// Right after a redrive, an eventually consistent read of the job may still show it FAILED: a worker that
/// reads that must not drop the redrive's batches as those of an ended job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_of_a_redriven_job_drops_none_of_its_batches() {
    let config = fast_config();
    let mut env = Env::new(&config);
    let faults = Faults::new(1, NO_FAULTS);
    env.deps.jobs = Arc::new(FaultyJobStore {
        inner: Arc::new(MemoryJobStore::new()),
        faults: faults.clone(),
    });
    let store = dataset(&env.deps, BUCKET, "stale", 12).await;
    store.fail_get(&key("stale", 5), denied);
    let deps = Deps {
        objects: store.clone(),
        ..env.deps.clone()
    };
    let failed = run(&deps, &spec("stale-job", BUCKET, "stale", 4), &config).await;
    assert_eq!(failed.manifest.status, TerminalStatus::Failed);
    faults.stale_reads(deps.jobs.get_job("stale-job").await.unwrap().unwrap());
    store.heal(&key("stale", 5));
    // A dropped batch would leave the job RUNNING without end.
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        redrive_and_run(&deps, "stale-job", &config),
    )
    .await
    .expect("the redriven job ends");
    assert_eq!(
        (report.manifest.status, report.manifest.items.succeeded),
        (TerminalStatus::Succeeded, 12)
    );
}

/// A job aborted midway, one of its objects unreadable: redriven once the object is fixed, it processes the
/// items the abort left and the failed one, and ends as a clean run; every other object was read once in all.
async fn an_aborted_job_redriven_runs_what_it_left(
    deps: Deps,
    control: Arc<dyn JobStore>,
    bucket: &str,
    config: RunnerConfig,
    read_delay: Duration,
) {
    const OBJECTS: usize = 120;
    let broken = key("ab", 1);
    let store = dataset(&deps, bucket, "ab", OBJECTS).await;
    store.fail_get(&broken, denied);
    store.slow(read_delay);
    let deps = Deps {
        objects: store.clone(),
        ..deps
    };
    let job = JobSpec::parse(spec("ab-job", bucket, "ab", 2).to_string().as_bytes()).unwrap();
    let running = deps.clone();
    let first_config = config.clone();
    let first =
        tokio::spawn(async move { runner::run(&running, job, &first_config, &|_| {}).await });
    // Aborted midway, once the unreadable object's batch is recorded (under load, its batch may still be in
    // flight after the first 20 reads, and a batch ending after the abort is not recorded).
    loop {
        let failed = deps.jobs.progress("ab-job").await.map_or(0, |p| p.failed);
        if store.all_attempts().values().sum::<u32>() >= 20 && failed >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    control
        .control("ab-job", &ControlChange::Abort { at_ms: now_ms() })
        .await
        .unwrap();
    let aborted = first.await.unwrap().unwrap().manifest;
    assert_eq!(aborted.status, TerminalStatus::Aborted);
    assert!(aborted.items.total < OBJECTS as u64, "{:?}", aborted.items);
    assert_eq!(aborted.items.failed, 1, "{:?}", aborted.items);

    store.heal(&broken);
    store.slow(Duration::ZERO);
    let redriven = redrive_and_run(&deps, "ab-job", &config).await;
    let m = &redriven.manifest;
    assert_eq!(m.status, TerminalStatus::Succeeded, "{m:?}");
    assert_eq!(
        (m.items.total, m.items.succeeded, m.items.failed, m.redrives),
        (OBJECTS as u64, OBJECTS as u64, 0, 1)
    );
    let reads = store.all_attempts();
    for i in 0..OBJECTS {
        let k = key("ab", i);
        let expected = if k == broken { 2 } else { 1 };
        assert_eq!(reads.get(&k).copied(), Some(expected), "{k}");
    }
    let clean = run(&deps, &spec("ab-clean", bucket, "ab", 2), &config).await;
    assert_eq!(clean.manifest.items, m.items);
    assert_eq!(
        outputs(&deps, bucket, &clean.manifest).await,
        outputs(&deps, bucket, m).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_job_redriven_runs_what_it_left_on_the_embedded_backends() {
    let mut env = Env::new(&fast_config());
    let journals = env.path().join(".dmap/jobs");
    env.deps.jobs = Arc::new(MemoryJobStore::persistent(&journals));
    // `dmap abort` from another process: a store of its own over the same journals.
    let control = Arc::new(MemoryJobStore::persistent(&journals));
    // One batch at a time: the abort, once the unreadable object's batch is recorded, always lands midway.
    let config = RunnerConfig {
        concurrency: 1,
        receive_batch_size: 1,
        ..fast_config()
    };
    an_aborted_job_redriven_runs_what_it_left(
        env.deps.clone(),
        control,
        BUCKET,
        config,
        Duration::from_millis(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_job_redriven_runs_what_it_left_through_moto() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 30).await;
    let bucket = emulator::bucket(&clients, "ra").await;
    an_aborted_job_redriven_runs_what_it_left(
        deps.clone(),
        deps.jobs.clone(),
        &bucket,
        moto_config(4),
        Duration::from_millis(50),
    )
    .await;
}
