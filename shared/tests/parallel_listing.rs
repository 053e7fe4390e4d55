//! Parallel listing: 1,000,000 keys behind a store that answers each list request in 100 ms (tokio's paused
//! clock: virtual time) list at least 10x faster as 16 key ranges than as one stream; both send the same
//! items, each in exactly one batch number (a number sent twice carries the same items), numbered densely; a
//! listing whose one range fails mid-way resumes every range at its own saved position, that range included,
//! and lists nothing twice but the pages in flight. A full embedded run of a split listing counts every item
//! once.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Env, csv_object, csv_spec, fast_config, size};
use dmap_core::Deps;
use dmap_core::coordinator::{ListingOutcome, Rerun, run_listing, start_or_resume};
use dmap_core::embedded::EmbeddedQueues;
use dmap_core::message::BatchMessage;
use dmap_core::ports::{
    BatchQueue, ListPage, ObjectMeta, ObjectReader, ObjectStore, OutgoingMessage, QueueDepth,
    QueueError, ReceivedMessage, SendFailure, StoreError,
};
use dmap_core::spec::JobSpec;
use serde_json::json;

const LATENCY: Duration = Duration::from_millis(100);

/// A bucket of keys in memory whose every list request takes [`LATENCY`]; it notes where each request
/// started, and can fail the requests inside one key range after a number of them.
struct SlowKeys {
    keys: Vec<String>,
    starts: Mutex<Vec<String>>,
    /// (after, upto, requests left before they fail)
    failing: Mutex<Option<(String, String, u32)>>,
}

impl SlowKeys {
    fn new(n: usize) -> Arc<Self> {
        // 1,000 keys a folder, as date- or id-partitioned data is laid out.
        Self::with_keys((0..n).map(|i| format!("in/{:04}/{:06}.csv", i / 1000, i)))
    }

    /// Keys in no folder: numbered objects, as many exports name them.
    fn flat(n: usize) -> Arc<Self> {
        Self::with_keys((0..n).map(|i| format!("in/part-{i:07}.json")))
    }

    fn with_keys(keys: impl Iterator<Item = String>) -> Arc<Self> {
        let mut keys: Vec<String> = keys.collect();
        keys.sort();
        Arc::new(Self {
            keys,
            starts: Mutex::default(),
            failing: Mutex::default(),
        })
    }

    fn requests(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn first_after(&self, after: &str) -> usize {
        self.keys.partition_point(|k| k.as_str() <= after)
    }
}

#[async_trait]
impl ObjectStore for SlowKeys {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        tokio::time::sleep(LATENCY).await;
        let after = continuation.or(start_after).unwrap_or_default().to_owned();
        self.starts.lock().unwrap().push(after.clone());
        if let Some((from, upto, left)) = self.failing.lock().unwrap().as_mut()
            && after.as_str() >= from.as_str()
            && after.as_str() < upto.as_str()
        {
            if *left == 0 {
                return Err(StoreError::Other("the range's lister died".into()));
            }
            *left -= 1;
        }
        if bucket != "data" {
            return Err(StoreError::NoSuchBucket {
                bucket: bucket.into(),
            });
        }
        let objects: Vec<ObjectMeta> = self.keys[self.first_after(&after)..]
            .iter()
            .filter(|k| k.starts_with(prefix))
            .take(1000)
            .map(|k| ObjectMeta::new(k.clone(), 10, "e", 0))
            .collect();
        let next = (objects.len() == 1000 && self.keys.last() != objects.last().map(|o| &o.key))
            .then(|| objects.last().unwrap().key.clone());
        Ok(ListPage { objects, next })
    }

    /// As S3's ListObjectsV2 with a delimiter: one request.
    async fn list_folders(
        &self,
        _bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        tokio::time::sleep(LATENCY).await;
        let mut folders: Vec<String> = Vec::new();
        for key in &self.keys[self.first_after(start_after.unwrap_or_default())..] {
            if let Some(folder) = dmap_core::ports::folder_of(prefix, key)
                && folders.last().is_none_or(|f| f != folder)
            {
                folders.push(folder.to_owned());
                if folders.len() == 1000 {
                    break;
                }
            }
        }
        Ok(folders)
    }

    async fn get_from(&self, _: &str, key: &str, _: u64) -> Result<ObjectReader, StoreError> {
        Err(StoreError::NotFound {
            bucket: "data".into(),
            key: key.into(),
        })
    }

    async fn put(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The work queue: keeps what each batch number was sent with.
#[derive(Default)]
struct Sent {
    batches: Mutex<BTreeMap<u64, Vec<String>>>,
    resent: Mutex<u64>,
}

#[async_trait]
impl BatchQueue for Sent {
    async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let mut batches = self.batches.lock().unwrap();
        for m in messages {
            let batch = BatchMessage::from_body(&m.body).unwrap();
            let keys: Vec<String> = batch.items.iter().map(|i| i.key().to_owned()).collect();
            if let Some(before) = batches.insert(batch.seq, keys.clone()) {
                assert_eq!(
                    before, keys,
                    "batch {} sent again with other items",
                    batch.seq
                );
                *self.resent.lock().unwrap() += 1;
            }
        }
        Ok(Vec::new())
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        Ok(QueueDepth::default())
    }
}

fn deps(store: Arc<SlowKeys>, sent: Arc<Sent>) -> Deps {
    Deps {
        work_queue: sent,
        ..Deps::embedded(
            store,
            EmbeddedQueues {
                visibility_timeout: Duration::from_secs(60),
                max_receive_count: 5,
                backlog_limit: None,
            },
        )
    }
}

fn job(parallelism: u32) -> dmap_core::spec::Job {
    let spec = json!({
        "job_id": format!("list-{parallelism}"),
        "item_reader": { "bucket": "data", "prefix": "in/", "list_parallelism": parallelism },
        "item_batcher": { "max_items_per_batch": 100 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": "data", "prefix": "results/" }
    });
    JobSpec::parse(spec.to_string().as_bytes()).unwrap()
}

/// Every key in exactly one batch number, the numbers dense from 0.
fn assert_each_key_once(sent: &Sent, n: usize) -> Vec<String> {
    let batches = sent.batches.lock().unwrap();
    assert_eq!(
        batches.keys().copied().collect::<Vec<_>>(),
        (0..batches.len() as u64).collect::<Vec<_>>(),
        "batch numbers are dense"
    );
    let mut keys: Vec<String> = batches.values().flatten().cloned().collect();
    keys.sort();
    let len = keys.len();
    keys.dedup();
    assert_eq!((len, keys.len()), (n, n), "every key once");
    keys
}

/// Lists the job to its end; the virtual time it took.
async fn list(deps: &Deps, parallelism: u32) -> (Duration, u64) {
    let started = tokio::time::Instant::now();
    let record = start_or_resume(deps, job(parallelism), Rerun::Resume)
        .await
        .unwrap();
    let ListingOutcome::Complete { totals, .. } =
        run_listing(deps, &record, &|| true).await.unwrap()
    else {
        panic!("the listing completes");
    };
    (started.elapsed(), totals.items)
}

#[tokio::test(start_paused = true)]
async fn sixteen_ranges_list_ten_times_faster_and_send_the_same_items() {
    let n = 1_000_000;
    let store = SlowKeys::new(n);
    let (one, sixteen) = (Arc::new(Sent::default()), Arc::new(Sent::default()));
    let (t1, items1) = list(&deps(store.clone(), one.clone()), 1).await;
    let requests1 = store.requests();
    let (t16, items16) = list(&deps(store.clone(), sixteen.clone()), 16).await;
    let requests16 = store.requests() - requests1;
    println!(
        "{n} keys, {LATENCY:?} a list request: 1 stream {t1:.1?} ({requests1} requests), 16 ranges {t16:.1?} \
         ({requests16} requests): {:.1}x",
        t1.as_secs_f64() / t16.as_secs_f64()
    );
    assert_eq!((items1, items16), (n as u64, n as u64));
    assert_eq!(
        assert_each_key_once(&one, n),
        assert_each_key_once(&sixteen, n),
        "the same items"
    );
    assert!(
        t1.as_secs_f64() >= 10.0 * t16.as_secs_f64(),
        "16 ranges {t16:?}, one stream {t1:?}"
    );
    // One more page per range, the one past its end that shows it ended.
    assert!(requests16 <= requests1 + 16, "{requests16} vs {requests1}");
}

/// Keys in no folder are split at boundaries sampled with StartAfter: as fast, the same items.
#[tokio::test(start_paused = true)]
async fn a_listing_with_no_folders_splits_at_sampled_boundaries() {
    let n = 500_000;
    let store = SlowKeys::flat(n);
    let (one, sixteen) = (Arc::new(Sent::default()), Arc::new(Sent::default()));
    let (t1, _) = list(&deps(store.clone(), one.clone()), 1).await;
    let requests1 = store.requests();
    let deps16 = deps(store.clone(), sixteen.clone());
    let (t16, items) = list(&deps16, 16).await;
    let requests16 = store.requests() - requests1;
    let ranges = deps16
        .jobs
        .get_job("list-16")
        .await
        .unwrap()
        .unwrap()
        .checkpoint
        .ranges;
    println!(
        "{n} keys in no folder: 1 stream {t1:.1?} ({requests1} requests), {} ranges {t16:.1?} \
         ({requests16} requests): {:.1}x",
        ranges.len(),
        t1.as_secs_f64() / t16.as_secs_f64()
    );
    assert_eq!(items, n as u64);
    println!(
        "{:?}",
        ranges.iter().map(|r| r.after.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(ranges.len(), 16, "{ranges:?}");
    assert_eq!(
        assert_each_key_once(&one, n),
        assert_each_key_once(&sixteen, n)
    );
    assert!(
        t1.as_secs_f64() >= 10.0 * t16.as_secs_f64(),
        "16 ranges {t16:?}, one stream {t1:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_range_that_fails_mid_way_resumes_at_its_own_position() {
    let n = size(200_000, 100_000);
    let store = SlowKeys::new(n);
    let sent = Arc::new(Sent::default());
    let deps = deps(store.clone(), sent.clone());
    let job = job(16);
    // The listing splits after its first page; the fifth range fails after three pages.
    let record = start_or_resume(&deps, job.clone(), Rerun::Resume)
        .await
        .unwrap();
    let probe = dmap_core::parallel_listing::split(
        store.as_ref(),
        match &job.spec.item_reader {
            dmap_core::spec::ItemReader::S3List(r) => r,
            _ => unreachable!(),
        },
        "in/0000/000999.csv",
        16,
    )
    .await
    .unwrap();
    let failing = &probe[4];
    *store.failing.lock().unwrap() =
        Some((failing.after.clone(), failing.upto.clone().unwrap(), 3));
    let err = run_listing(&deps, &record, &|| true).await.unwrap_err();
    assert!(err.to_string().contains("died"), "{err}");
    let stored = deps.jobs.get_job(&job.job_id).await.unwrap().unwrap();
    let ranges = stored.checkpoint.ranges.clone();
    assert_eq!(ranges.len(), 16);
    assert_eq!(
        (ranges[4].after.as_str(), ranges[4].upto.as_deref()),
        (ranges[4].after.as_str(), failing.upto.as_deref())
    );
    assert!(
        ranges[4].after > failing.after && !ranges[4].done,
        "the failed range kept its progress: {:?}",
        ranges[4]
    );
    let listed_before = store.requests();
    *store.failing.lock().unwrap() = None;
    let ListingOutcome::Complete { totals, .. } =
        run_listing(&deps, &stored, &|| true).await.unwrap()
    else {
        panic!("the listing completes");
    };
    assert_eq!(totals.items, n as u64);
    assert_each_key_once(&sent, n);
    // Every range that was not done went on from where it was saved, none from its start.
    let starts = store.starts.lock().unwrap()[listed_before..].to_vec();
    for range in ranges.iter().filter(|r| !r.done) {
        let from = range
            .sending
            .as_ref()
            .map_or(range.after.as_str(), |_| range.after.as_str());
        assert!(
            starts.iter().any(|s| s == from),
            "range after {from} resumed elsewhere"
        );
    }
    // Beyond the pages: the first (before the split), in each run the page past each range's end that shows
    // it ended, and the pages each range had read ahead, numbered or was reading when the listing failed.
    let pages = n.div_ceil(1000);
    assert!(
        store.requests() <= pages + 1 + 2 * 16 + 2 * 16,
        "{} list requests for {pages} pages",
        store.requests()
    );
    println!(
        "resumed: {} list requests for {pages} pages, {} batches sent twice",
        store.requests(),
        sent.resent.lock().unwrap()
    );
}

/// Two coordinators of the same hop at once (a duplicated S3 event or continuation): the last to take the
/// listing's lease numbers on from what the other saved, the other stops at its next save without sending
/// what it numbered, and every key is still in exactly one batch number.
#[tokio::test(start_paused = true)]
async fn two_coordinators_of_one_hop_number_every_key_once() {
    let n = 100_000;
    let store = SlowKeys::new(n);
    let sent = Arc::new(Sent::default());
    let deps = deps(store.clone(), sent.clone());
    let record = start_or_resume(&deps, job(16), Rerun::Resume)
        .await
        .unwrap();
    let second = async {
        // A little later: the first has split the listing and numbered some pages by then. The second's
        // save of its own split is refused (the first holds the listing); like a retried invocation, it
        // reads the job again and takes the listing over.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let mut record = record.clone();
        let mut refused = 0;
        loop {
            match run_listing(&deps, &record, &|| true).await {
                Ok(outcome) => break (outcome, refused),
                Err(e) => {
                    assert!(e.to_string().contains("coordinator"), "{e}");
                    refused += 1;
                    record = deps.jobs.get_job("list-16").await.unwrap().unwrap();
                }
            }
        }
    };
    let (first, second) = tokio::join!(run_listing(&deps, &record, &|| true), second);
    let first = first.unwrap();
    assert!(
        matches!(first, ListingOutcome::TakenOver),
        "the first gave way: {first:?}"
    );
    let (second, refused) = second;
    assert_eq!(refused, 1, "the second's first save was refused once");
    let ListingOutcome::Complete { totals, .. } = second else {
        panic!("the second completes: {second:?}");
    };
    assert_eq!(totals.items, n as u64);
    assert_each_key_once(&sent, n);
}

/// Batches lost before they were recorded (an embedded run's in-memory queues, gone with its process; messages
/// SQS lost) are sent again from the logged pages: every one, with the items it was first sent with.
#[tokio::test(start_paused = true)]
async fn unrecorded_batches_of_a_split_listing_are_sent_again_as_they_were() {
    let n = 50_000;
    let store = SlowKeys::new(n);
    let first = Arc::new(Sent::default());
    let deps = deps(store.clone(), first.clone());
    let (_, items) = list(&deps, 16).await;
    assert_eq!(items, n as u64);
    let record = deps.jobs.get_job("list-16").await.unwrap().unwrap();
    assert!(!record.checkpoint.ranges.is_empty(), "the listing split");
    let again = Arc::new(Sent::default());
    let resent = dmap_core::sweeper::resend_unrecorded(
        &Deps {
            work_queue: again.clone(),
            ..deps.clone()
        },
        &record,
    )
    .await
    .unwrap();
    let sent = first.batches.lock().unwrap().clone();
    assert_eq!(resent, sent.len() as u64);
    assert_eq!(*again.batches.lock().unwrap(), sent, "the same batches");
}

/// A split listing through the whole embedded pipeline: every item counted once, the result equal to one
/// stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_listing_runs_end_to_end_and_counts_every_item_once() {
    let config = fast_config();
    let env = Env::new(&config);
    let n = 3_500;
    for i in 0..n {
        env.write(&format!("p/{:02}/obj{i:05}.csv", i / 100), csv_object(i));
    }
    let mut results = Vec::new();
    for parallelism in [1, 16] {
        let mut spec = csv_spec("p/", 7);
        spec["job_id"] = json!(format!("split-{parallelism}"));
        spec["item_reader"]["list_parallelism"] = json!(parallelism);
        spec["result_writer"]["prefix"] = json!(format!("results/{parallelism}/"));
        let report = env.run(&spec, &config).await;
        let m = &report.manifest;
        assert_eq!((m.items.total, m.items.succeeded), (n as u64, n as u64));
        let record = env.deps.jobs.get_job(&m.job_id).await.unwrap().unwrap();
        assert_eq!(record.checkpoint.ranges.is_empty(), parallelism == 1);
        results.push(env.read(&m.result));
    }
    assert_eq!(results[0], results[1], "the same result.json");
}

/// `dmap plan` on a listing longer than it reads: it stops at its page limit and extrapolates from where the
/// last page's first key stands in the key span: within 2%, whether the keys are numbered in no folder or
/// spread over 1,000-key folders. A listing the plan reads whole is counted exactly.
#[tokio::test(start_paused = true)]
async fn a_plan_extrapolates_a_listing_longer_than_it_reads() {
    use dmap_core::plan::{PlanOptions, census};
    let n = size(1_000_000, 200_000);
    for store in [SlowKeys::flat(n), SlowKeys::new(n)] {
        let deps = deps(store, Arc::new(Sent::default()));
        let options = PlanOptions {
            max_pages: 20,
            ..PlanOptions::default()
        };
        let (counted, _) = census(&deps, &job(1), &options).await.unwrap();
        let extrapolated = counted.extrapolated.clone().expect("extrapolated");
        assert_eq!(
            (extrapolated.items_read, extrapolated.pages_read),
            (20_000, 20)
        );
        let error = (counted.items as f64 - n as f64).abs() / n as f64;
        assert!(error < 0.02, "{n} keys, estimated {counted:?}");
        assert!(
            (counted.batches as f64 - (n / 100) as f64).abs() / ((n / 100) as f64) < 0.02,
            "{counted:?}"
        );
    }
    let deps = deps(SlowKeys::flat(12_345), Arc::new(Sent::default()));
    let (counted, _) = census(&deps, &job(1), &PlanOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (counted.items, counted.batches, counted.pages),
        (12_345, 124, 13)
    );
    assert!(counted.extrapolated.is_none());
    // The listing's 13 pages, its check of the input and of the results' folder.
    assert_eq!(counted.reads["S3.ListObjectsV2"], 15, "{counted:?}");
    // On 16 ranges, a listing whose rest fits one page has nothing to split: the coordinator reads on as one
    // stream from its checkpoint, which the plan marks (1), and so no longer calls its batches exact.
    let short = self::deps(SlowKeys::flat(1_500), Arc::new(Sent::default()));
    let (counted, _) = census(&short, &job(16), &PlanOptions::default())
        .await
        .unwrap();
    assert_eq!((counted.items, counted.ranges), (1_500, 1), "{counted:?}");
}

/// The census of a listing split into ranges counts the split's requests as the listing waits for them, in
/// rounds of requests sent at once (every request here takes the same 100 ms: the rounds are the split's time),
/// and the items of its longest range, which ends the listing.
#[tokio::test(start_paused = true)]
async fn a_plan_counts_the_splits_rounds_and_its_longest_range() {
    use dmap_core::plan::{PlanOptions, census};
    let keys = SlowKeys::flat(12_345);
    let deps = deps(keys.clone(), Arc::new(Sent::default()));
    let started = tokio::time::Instant::now();
    let (alone, _) = census(&deps, &job(1), &PlanOptions::default())
        .await
        .unwrap();
    let alone_time = started.elapsed();
    let keys = SlowKeys::flat(12_345);
    let deps = self::deps(keys.clone(), Arc::new(Sent::default()));
    let started = tokio::time::Instant::now();
    let (split, _) = census(&deps, &job(16), &PlanOptions::default())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(split.ranges > 1, "{split:?}");
    // The split's requests: those past the one-stream census's.
    let requests = split.reads["S3.ListObjectsV2"] - alone.reads["S3.ListObjectsV2"];
    assert!(
        split.split_rounds >= 2 && split.split_rounds < requests,
        "{} rounds of {requests} requests: {split:?}",
        split.split_rounds
    );
    // The split added its rounds' time to the one-stream census's, and nothing more.
    assert_eq!(
        took.saturating_sub(alone_time),
        LATENCY * split.split_rounds as u32,
        "{split:?}"
    );
    // Every range past the first page's has some of the 11,345 keys left; the longest at least its share.
    let rest = 12_345 - 1_000;
    assert!(
        split.longest_range_items >= rest / split.ranges && split.longest_range_items < rest,
        "{split:?}"
    );
}
