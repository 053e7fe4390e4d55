//! The scale model (`cargo bench -p dmap-core --bench scale_model`): the real runner, coordinator, workers and
//! finalizer run a whole `s3_list` job over the embedded ports, each request held for the latency
//! `plan::Model::AWS` gives its AWS operation (a ListObjectsV2 page 300 ms, a GET or PUT 100 ms, an SQS request
//! 20 ms, a DynamoDB request 10 ms, a Query page 50 ms), on tokio's paused clock: the time that passes is the
//! virtual time the requests take, the CPU's own time is not counted. The work queue mapping ramps as a
//! standard-mode mapping does (5 invocations, then 300 more a minute, up to WorkerMaxConcurrency 1,000); an
//! invocation takes 10 messages and handles 4 at once, as the worker function does.
//!
//! Beside the run, `dmap plan`'s prediction for the same job, counted in full (no extrapolation) and timed from
//! a sample of 1,000 items processed on the same slow ports. It prints both makespans and their ratio, which
//! must stay within 20%, and the requests each made.
//!
//! The input is made up as it is read: `DMAP_BENCH_SCALE_ITEMS` numbered objects (default `1000000,10000000`,
//! a run each), 100 a batch, listed in 16 ranges, counted by the `count` processor.

#[allow(dead_code)]
#[path = "../tests/common/faults.rs"]
mod faults;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use dmap_core::Deps;
use dmap_core::embedded::{EmbeddedQueues, LocalDirStore};
use dmap_core::plan::{self, Deployment, Model, PlanOptions};
use dmap_core::ports::{ListPage, ObjectMeta, ObjectReader, ObjectStore, StoreError};
use dmap_core::runner::{self, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_core::worker::{MESSAGE_CONCURRENCY, WorkerConfig, message_item_concurrency};
use faults::{Faults, NO_FAULTS};

const INPUT: &str = "data";
const FOLDER: &str = "objects/";
/// Each made-up object's body: one line.
const BODY: &[u8] = b"1\n";

/// The input bucket: `n` objects `objects/000000000`, `objects/000000001`…, made up as they are listed and
/// read (ten million real objects would not fit in memory). Every other bucket is `inner`'s.
struct Numbered {
    n: u64,
    inner: Arc<dyn ObjectStore>,
}

fn key(i: u64) -> String {
    format!("{FOLDER}{i:09}")
}

impl Numbered {
    /// The first object whose key is not `before` (keys of one length sort as their numbers).
    fn first_not(&self, before: impl Fn(&str) -> bool) -> u64 {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&key(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[async_trait]
impl ObjectStore for Numbered {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        if bucket != INPUT {
            return self
                .inner
                .list_page(bucket, prefix, start_after, continuation)
                .await;
        }
        let after = continuation.or(start_after).unwrap_or_default();
        // The keys under `prefix` are one run of numbers: from the first past `after` and at or past `prefix`.
        let from = self
            .first_not(|k| k <= after)
            .max(self.first_not(|k| k < prefix));
        let objects: Vec<ObjectMeta> = (from..self.n)
            .map(key)
            .take_while(|k| k.starts_with(prefix))
            .take(1000)
            .map(|k| ObjectMeta::new(k, BODY.len() as u64, "e", 0))
            .collect();
        let end = from + objects.len() as u64;
        let more = end < self.n && key(end).starts_with(prefix);
        let next = (objects.len() == 1000 && more).then(|| objects.last().unwrap().key.clone());
        Ok(ListPage { objects, next })
    }

    /// The keys are in no folder: one ListObjectsV2 with a delimiter finds none.
    async fn list_folders(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        if bucket != INPUT {
            return self.inner.list_folders(bucket, prefix, start_after).await;
        }
        Ok(Vec::new())
    }

    async fn get_from(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectReader, StoreError> {
        if bucket != INPUT {
            return self.inner.get_from(bucket, key, offset).await;
        }
        let offset = (offset as usize).min(BODY.len());
        Ok(Box::new(&BODY[offset..]))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put(bucket, key, body).await
    }
}

/// The embedded ports with the input made up, every request held for its AWS operation's latency and counted.
fn slow_deps(n: u64, results: &std::path::Path, model: &Model) -> (Deps, Arc<Faults>) {
    let numbered = Numbered {
        n,
        inner: Arc::new(LocalDirStore::new(results)),
    };
    let mut deps = Deps::embedded(
        Arc::new(numbered),
        EmbeddedQueues {
            visibility_timeout: Duration::from_secs(300),
            max_receive_count: 5,
            backlog_limit: None,
        },
    );
    let faults = Faults::new(0, NO_FAULTS);
    let secs = Duration::from_secs_f64;
    faults.slow("list_page", secs(model.list_page_secs));
    faults.slow("list_folders", secs(model.list_page_secs));
    faults.slow("store", secs(model.s3_request_secs));
    faults.slow("queue", secs(model.sqs_request_secs));
    faults.slow("jobs", secs(model.dynamodb_request_secs));
    faults.slow("batch_records", secs(model.dynamodb_query_page_secs));
    faults::inject(&mut deps, &faults);
    (deps, faults)
}

fn sizes() -> Vec<u64> {
    std::env::var("DMAP_BENCH_SCALE_ITEMS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("DMAP_BENCH_SCALE_ITEMS: numbers"))
        .collect()
}

fn main() {
    for n in sizes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(scale(n));
    }
}

async fn scale(n: u64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir(dir.path().join("results")).expect("the results bucket");
    // The finalizer's trigger is a message on the finalize queue, received at once by its long poll.
    let model = Model {
        finalize_trigger_secs: 2.0 * Model::AWS.sqs_request_secs,
        ..Model::AWS
    };
    let deployment = Deployment {
        worker_max_concurrency: 1000,
        ..Deployment::default()
    };
    let job = JobSpec::parse(
        format!(
            r#"{{"job_id": "scale-{n}",
                "item_reader": {{"bucket": "{INPUT}", "prefix": "{FOLDER}", "list_parallelism": 16}},
                "item_batcher": {{"max_items_per_batch": 100}},
                "processor": {{"kind": "count"}},
                "result_writer": {{"bucket": "results", "prefix": "out/"}}}}"#
        )
        .as_bytes(),
    )
    .expect("a valid spec");

    let cpu = std::time::Instant::now();
    let (deps, _) = slow_deps(n, dir.path(), &model);
    let planned = plan::plan(
        &deps,
        &job,
        &PlanOptions {
            max_pages: u64::MAX,
            sample_items: 1000,
            // The sample's reads wait the injected latency, as a worker's cross the network.
            remote_reads: true,
            deployment,
            model,
            ..PlanOptions::default()
        },
    )
    .await
    .expect("the job plans");
    let plan_cpu = cpu.elapsed();

    let cpu = std::time::Instant::now();
    let (deps, faults) = slow_deps(n, dir.path(), &model);
    let config = RunnerConfig {
        concurrency: deployment.worker_max_concurrency as usize,
        receive_batch_size: deployment.worker_batch_size as usize,
        message_concurrency: MESSAGE_CONCURRENCY,
        ramp: Some(model.esm_ramp()),
        visibility_timeout: Duration::from_secs(300),
        // The worker function shares its item concurrency among the messages it handles at once.
        worker: WorkerConfig {
            item_concurrency: message_item_concurrency(deployment.item_concurrency as usize),
            ..WorkerConfig::default()
        },
        // The job's end is seen within 100 ms; its counters are read once a second.
        poll_interval: Duration::from_millis(100),
        count_every: 10,
        receive_wait: Duration::from_secs(1),
        idle_before_sweep: Duration::from_secs(120),
        ..RunnerConfig::default()
    };
    // The makespan: from the run's start to the first report of the job's end (reports come every 100 ms).
    let started = tokio::time::Instant::now();
    let (listed, processed, ended) = (OnceLock::new(), OnceLock::new(), OnceLock::new());
    let report = runner::run(&deps, job, &config, &|progress| {
        let at = || started.elapsed().as_secs_f64();
        if let Some(totals) = progress.listing {
            listed.get_or_init(at);
            if progress.batches_done >= totals.batches {
                processed.get_or_init(at);
            }
        }
        if progress.status.is_terminal() {
            ended.get_or_init(at);
        }
    })
    .await
    .expect("the job runs");
    let run_cpu = cpu.elapsed();
    assert_eq!(
        report.manifest.items.succeeded, n,
        "every item counted once"
    );

    let simulated = *ended.get().expect("the job ended");
    let phase = |at: &OnceLock<f64>| at.get().map_or("?".to_owned(), |t| format!("{t:.1}"));
    let predicted = planned.timeline.total_secs;
    let ratio = predicted / simulated;
    println!(
        "scale model, {n} objects, 100 a batch, 16 ranges, WorkerMaxConcurrency 1,000 (virtual time)\n\
         \x20 simulated makespan  {simulated:>9.1} s   ({:.0} s of CPU)  listed by {} s, processed by {} s\n\
         \x20 dmap plan predicts  {predicted:>9.1} s   ({:.0} s of CPU)  listing {:.1} s, ramp-up {:.1} s, \
         processing {:.1} s, finalize {:.1} s, bound: {}; split in {} rounds, the longest range {} items\n\
         \x20 predicted / simulated: {ratio:.3}",
        run_cpu.as_secs_f64(),
        phase(&listed),
        phase(&processed),
        plan_cpu.as_secs_f64(),
        planned.timeline.listing_secs,
        planned.timeline.ramp_up_secs,
        planned.timeline.processing_secs,
        planned.timeline.finalize_secs,
        planned.timeline.bottleneck.as_str(),
        planned.census.split_rounds,
        planned.census.longest_range_items,
    );
    println!("  the run's requests, by port call:");
    for (op, count) in faults.calls() {
        println!("    {op:<24} {count:>12}");
    }
    println!("  the plan's requests:");
    for (op, count) in &planned.requests {
        let mark = if count.exact { "=" } else { "~" };
        println!("    {op:<32} {mark} {:>12}", count.count);
    }
    assert!(
        (0.8..=1.2).contains(&ratio),
        "the plan's makespan ({predicted:.1} s) is not within 20% of the simulated run's ({simulated:.1} s)"
    );
}
