//! The `dynamodb_scan` reader against moto's DynamoDB, through the real SDK: a table of 10,000 items (2,500 in
//! CI: `common::size`) scanned
//! with 1, 4 and 16 segments gives the same aggregate, equal to one computed from the items written, every
//! item counted once; a listing that dies in the middle of a round resumes inside it; a throttled scan spends
//! its capacity at the rate asked; a missing table, and any table on the embedded backend, are refused by
//! field before anything is written.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{BUCKET, Env, fast_config, size};
use dmap_core::Deps;
use dmap_core::coordinator::{Rerun, run_listing, start_or_resume};
use dmap_core::error::PipelineError;
use dmap_core::ports::{ScanPage, ScanRequest, TableError, TableInfo, TableReader, read_all};
use dmap_core::runner::{self, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_emulator as emulator;
use serde_json::{Value, json};

/// The table's items: 1,700 still make six 300-item batches and give each of 16 segments about 100 items.
fn items() -> usize {
    size(10_000, 1_700)
}

fn moto_config() -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        visibility_timeout: Duration::from_secs(2),
        receive_wait: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        ..RunnerConfig::default()
    }
}

async fn results_bucket(clients: &dmap_core::aws::AwsClients) -> String {
    emulator::bucket(clients, "scan-results").await
}

fn scan_spec(job_id: &str, table: &str, segments: u32, bucket: &str) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "kind": "dynamodb_scan", "table": table, "segments": segments },
        "item_batcher": { "max_items_per_batch": 300 },
        "processor": { "kind": "csv_aggregate", "group_by": "pk", "columns": ["n"] },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    })
}

/// The aggregate the items `emulator::table` wrote must give: per partition key, the rows and the sum of `n`.
fn expected_groups(items: usize) -> BTreeMap<String, (u64, u64)> {
    let mut groups = BTreeMap::new();
    for i in 0..items {
        let group = groups.entry(format!("p{:02}", i % 97)).or_insert((0, 0));
        group.0 += 1;
        group.1 += i as u64;
    }
    groups
}

fn groups_of(result: &Value) -> BTreeMap<String, (u64, u64)> {
    result["groups"]
        .as_object()
        .expect("groups")
        .iter()
        .map(|(group, stats)| {
            let sum = &stats["columns"]["n"]["sum"];
            (
                group.clone(),
                (
                    stats["rows"].as_u64().unwrap(),
                    sum.as_u64()
                        .or_else(|| sum.as_f64().map(|f| f as u64))
                        .unwrap(),
                ),
            )
        })
        .collect()
}

async fn result_json(deps: &Deps, report: &runner::RunReport) -> Vec<u8> {
    read_all(
        deps.objects.as_ref(),
        &report.manifest.bucket,
        &report.manifest.result,
    )
    .await
    .expect("result.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_scanned_with_1_4_or_16_segments_counts_every_item_once() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 5).await;
    let items = items();
    let table = emulator::table(&clients, "scan", items).await;
    let bucket = results_bucket(&clients).await;
    let mut results = Vec::new();
    for segments in [1, 4, 16] {
        let spec = scan_spec(&format!("scan-{segments}"), &table, segments, &bucket);
        let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
        let report = runner::run(&deps, job, &moto_config(), &|_| {})
            .await
            .expect("the scan runs");
        let m = &report.manifest;
        assert_eq!(
            (m.items.total, m.items.succeeded, m.items.failed),
            (items as u64, items as u64, 0),
            "{segments} segments"
        );
        let result = result_json(&deps, &report).await;
        let parsed: Value = serde_json::from_slice(&result).unwrap();
        assert_eq!(
            groups_of(&parsed),
            expected_groups(items),
            "{segments} segments: every item once"
        );
        results.push(result);
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "the segments change nothing in result.json"
    );
}

/// The real table reader, failing every request after the first `ok` ones: a coordinator that dies in the
/// middle of its listing.
struct FailingAfter {
    inner: Arc<dyn TableReader>,
    ok: AtomicU32,
}

#[async_trait]
impl TableReader for FailingAfter {
    async fn describe(&self, table: &str) -> Result<TableInfo, TableError> {
        self.inner.describe(table).await
    }

    async fn scan_page(&self, request: ScanRequest<'_>) -> Result<ScanPage, TableError> {
        if self
            .ok
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(TableError::Unavailable("the coordinator died".into()));
        }
        self.inner.scan_page(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_dies_mid_round_resumes_inside_the_round_and_hands_over_cleanly() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 5).await;
    // moto's Scan reads the whole table for each request: a small table keeps this test's 150 scans quick.
    let items = 1000;
    let table = emulator::table(&clients, "scan-resume", items).await;
    let bucket = results_bucket(&clients).await;

    // Seven segments of over 90 items each, batches of 31: a round reads 16 batches' worth shared among the seven,
    // 70 items of each, in one request each. The round's 490 items make 15 full batches and leave 25 pending;
    // the coordinator dies reading the next round, with its checkpoint inside the first.
    let mut spec = scan_spec("scan-resume", &table, 7, &bucket);
    spec["item_batcher"]["max_items_per_batch"] = json!(31);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let dying = Deps {
        tables: Some(Arc::new(FailingAfter {
            inner: deps.tables.clone().unwrap(),
            ok: AtomicU32::new(7),
        })),
        ..deps.clone()
    };
    let record = start_or_resume(&dying, job.clone(), Rerun::Resume)
        .await
        .unwrap();
    let err = run_listing(&dying, &record, &|| true).await.unwrap_err();
    assert!(matches!(err, PipelineError::Table(_)), "{err}");
    let record = deps.jobs.get_job("scan-resume").await.unwrap().unwrap();
    let checkpoint = &record.checkpoint;
    assert_eq!(
        (checkpoint.next_seq, checkpoint.items_sent),
        (15, 465),
        "the first round's full batches"
    );
    let position = checkpoint.start_after.as_deref().unwrap();
    assert!(
        position.starts_with("465@"),
        "inside the round, after the items sent: {position}"
    );

    // Resumed: the round is read again, the items sent skipped; the rest of the job runs.
    let report = runner::run(&deps, job, &moto_config(), &|_| {})
        .await
        .expect("the resumed job runs");
    let m = &report.manifest;
    assert_eq!((m.items.total, m.items.succeeded), (1000, 1000));
    let result: Value = serde_json::from_slice(&result_json(&deps, &report).await).unwrap();
    assert_eq!(groups_of(&result), expected_groups(items));

    // A hand-over after every round (a Lambda coordinator out of time): each hop starts at a round's start.
    // 40 segments of about 25 items are read 16 at a time, up to 30 items of each per round: three rounds at
    // least, more where a segment holds over 30; nothing is counted twice.
    let mut spec = scan_spec("scan-hops", &table, 40, &bucket);
    spec["item_batcher"]["max_items_per_batch"] = json!(30);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let hops = common::list_in_hops(&deps, &job).await;
    assert!(hops >= 3, "40 segments, 16 at a time: {hops} rounds");
    let report = runner::run(&deps, job, &moto_config(), &|_| {})
        .await
        .expect("the handed-over job runs");
    assert_eq!(report.manifest.items.succeeded, 1000);
    let result: Value = serde_json::from_slice(&result_json(&deps, &report).await).unwrap();
    assert_eq!(groups_of(&result), expected_groups(items));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_scan_spends_capacity_at_the_rate_asked() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 5).await;
    let table = emulator::table(&clients, "scan-slow", 300).await;
    let bucket = results_bucket(&clients).await;
    let mut spec = scan_spec("scan-slow", &table, 2, &bucket);
    let rate = 4.0;
    spec["item_reader"]["max_read_units_per_second"] = json!(rate as u32);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let scans = || {
        // Strongly consistent or not, a Scan (an eventually consistent one is counted apart).
        clients
            .usage
            .requests()
            .iter()
            .filter(|(operation, _)| operation.starts_with("DynamoDB.Scan"))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let before = scans();
    let record = start_or_resume(&deps, job.clone(), Rerun::Resume)
        .await
        .unwrap();
    let started = Instant::now();
    run_listing(&deps, &record, &|| true).await.unwrap();
    let listing = started.elapsed().as_secs_f64();
    // moto reports one unit per Scan: each request after the first waits for the one before to be paid back.
    let scans = scans() - before;
    assert!(
        scans >= 4,
        "requests sized by the capacity per item: {scans}"
    );
    let floor = (scans - 1) as f64 / rate;
    assert!(
        listing >= floor * 0.95,
        "{scans} scans at {rate} units/s took {listing:.2} s, less than {floor:.2} s"
    );
    let report = runner::run(&deps, job, &moto_config(), &|_| {})
        .await
        .expect("the throttled job runs");
    assert_eq!(report.manifest.items.succeeded, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_or_the_embedded_backend_is_refused_before_anything_is_written() {
    let clients = emulator::clients().await;
    let deps = emulator::aws_deps(&clients, 5).await;
    let bucket = results_bucket(&clients).await;
    let spec = scan_spec("scan-missing", "no-such-table", 4, &bucket);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let err = runner::run(&deps, job, &moto_config(), &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "item_reader.table: no table \"no-such-table\"");
    assert!(deps.jobs.get_job("scan-missing").await.unwrap().is_none());

    let env = Env::new(&fast_config());
    let spec = scan_spec("scan-embedded", "orders", 4, BUCKET);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let err = runner::run(&env.deps, job, &fast_config(), &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("item_reader.kind: \"dynamodb_scan\" needs the DynamoDB API"),
        "{err}"
    );
    assert!(
        env.deps
            .jobs
            .get_job("scan-embedded")
            .await
            .unwrap()
            .is_none()
    );
}
