//! The port conformance suite: one contract, run against every backend. A backend passes only if it behaves
//! like the AWS service on each point the pipeline relies on.
//!
//! Each backend's test file (`conformance_embedded.rs`, `conformance_aws.rs`) provides three fixtures and
//! instantiates the whole suite with [`conformance_suite!`], so no contract can be left out for one backend.

#![allow(dead_code)]

/// Every contract of the suite as a test, against the backend whose fixtures are in scope:
/// `async fn object_store() -> StoreFixture`, `async fn queues() -> QueuePair` and
/// `async fn job_store() -> Arc<dyn JobStore>`.
macro_rules! conformance_suite {
    () => {
        #[tokio::test]
        async fn object_store_round_trip() {
            let f = object_store().await;
            conformance::object_store_round_trip(f.store.as_ref(), &f.bucket, &f.missing).await;
        }

        #[tokio::test]
        async fn object_store_lists_in_key_order() {
            let f = object_store().await;
            conformance::object_store_lists_in_key_order(f.store.as_ref(), &f.bucket).await;
        }

        #[tokio::test]
        async fn object_store_reads_from_an_offset() {
            let f = object_store().await;
            conformance::object_store_reads_from_an_offset(f.store.as_ref(), &f.bucket, &f.missing)
                .await;
        }

        #[tokio::test]
        async fn object_store_writes_in_chunks() {
            let f = object_store().await;
            conformance::object_store_writes_in_chunks(f.store.clone(), &f.bucket).await;
        }

        #[tokio::test]
        async fn object_store_paginates() {
            let f = object_store().await;
            conformance::object_store_paginates(f.store.as_ref(), &f.bucket).await;
        }

        #[tokio::test]
        async fn queue_delivers_and_deletes() {
            conformance::queue_delivers_and_deletes(&queues().await).await;
        }

        #[tokio::test]
        async fn queue_deletes_many_at_once() {
            conformance::queue_deletes_many_at_once(&queues().await).await;
        }

        #[tokio::test]
        async fn queue_redelivers_after_the_visibility_timeout() {
            conformance::queue_redelivers_after_the_visibility_timeout(&queues().await).await;
        }

        #[tokio::test]
        async fn queue_dead_letters_after_max_receives() {
            conformance::queue_dead_letters_after_max_receives(&queues().await).await;
        }

        #[tokio::test]
        async fn queue_refuses_bad_sends() {
            conformance::queue_refuses_bad_sends(&queues().await).await;
        }

        job_store_suite!();
    };
}

/// The job store's part of the suite alone, for a second job store over the same backend (the embedded
/// store in memory and persistent). Calls `job_store()` in scope.
macro_rules! job_store_suite {
    () => {
        #[tokio::test]
        async fn job_store_creates_once() {
            conformance::job_store_creates_once(job_store().await.as_ref(), "job-create").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_counts_each_batch_once() {
            conformance::job_store_counts_each_batch_once(job_store().await, "job-count").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_claims_once_after_listing() {
            conformance::job_store_claims_once_after_listing(job_store().await, "job-claim").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_hands_each_hop_over_once() {
            conformance::job_store_hands_each_hop_over_once(job_store().await, "job-hop").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn job_store_leases_a_split_listing_to_its_last_taker() {
            conformance::job_store_leases_a_split_listing_to_its_last_taker(
                job_store().await,
                "job-lease",
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_counts_only_batches_below_the_total() {
            conformance::job_store_counts_only_batches_below_the_total(
                job_store().await,
                "job-past",
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_redrives_an_ended_job_once() {
            conformance::job_store_redrives_an_ended_job_once(job_store().await, "job-redrive")
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_keeps_a_jobs_usage() {
            conformance::job_store_keeps_a_jobs_usage(job_store().await, "job-usage").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn job_store_counts_racing_records_exactly() {
            conformance::job_store_counts_racing_records_exactly(job_store().await, "job-race")
                .await;
        }
    };
}

/// An object store to hold to the contract: `bucket` exists and is empty, `missing` does not exist. `_guard`
/// keeps whatever backs the store (a temp dir) alive for the test.
pub struct StoreFixture {
    pub store: Arc<dyn ObjectStore>,
    pub bucket: String,
    pub missing: String,
    pub _guard: Option<Box<dyn std::any::Any + Send>>,
}

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use dmap_core::outcome::TerminalStatus;
use dmap_core::ports::{
    BatchQueue, BatchRecord, Checkpoint, CreateOutcome, Cut, JobRecord, JobStatus, JobStore,
    JobStoreError, KeyRange, ListingTotals, LoggedPage, NumberedPage, ObjectStore, OutgoingMessage,
    PartRef, QueueError, RecordOutcome, StoreError,
};
use dmap_core::spec::JobSpec;
use dmap_core::usage::Usage;

// ---------------------------------------------------------------- object store

async fn get_string(store: &dyn ObjectStore, bucket: &str, key: &str) -> String {
    let mut reader = store.get(bucket, key).await.expect("get");
    tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        reader.read_to_string(&mut s).expect("read");
        s
    })
    .await
    .expect("join")
}

async fn list_all(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list_page(bucket, prefix, start_after, token.as_deref())
            .await
            .expect("list");
        pages += 1;
        assert!(
            page.objects.len() <= 1000,
            "a page holds at most 1,000 keys"
        );
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next {
            Some(next) => token = Some(next),
            None => return (keys, pages),
        }
    }
}

/// `bucket` exists and is empty; `missing` does not exist.
pub async fn object_store_round_trip(store: &dyn ObjectStore, bucket: &str, missing: &str) {
    store
        .put(bucket, "dir/a.txt", b"hello\n".to_vec())
        .await
        .expect("put");
    assert_eq!(get_string(store, bucket, "dir/a.txt").await, "hello\n");
    store
        .put(bucket, "dir/a.txt", b"replaced".to_vec())
        .await
        .expect("overwrite");
    assert_eq!(get_string(store, bucket, "dir/a.txt").await, "replaced");
    store
        .put(bucket, "empty", Vec::new())
        .await
        .expect("put empty");
    assert_eq!(get_string(store, bucket, "empty").await, "");

    let page = store
        .list_page(bucket, "dir/", None, None)
        .await
        .expect("list");
    assert_eq!(page.objects.len(), 1);
    let listed = &page.objects[0];
    assert_eq!(listed.size, 8, "sizes are reported");
    assert!(page.next.is_none());
    // What Distributed Map hands a function for each object: a quoted entity tag, a recent modification time,
    // the storage class.
    assert!(
        listed.etag.len() > 2 && listed.etag.starts_with('"') && listed.etag.ends_with('"'),
        "{listed:?}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now_ms - 600_000..=now_ms + 600_000).contains(&listed.last_modified_ms),
        "{listed:?}"
    );
    assert_eq!(listed.storage_class, "STANDARD");
    store
        .put(bucket, "dir/a.txt", b"replaced again".to_vec())
        .await
        .expect("overwrite");
    let relisted = store
        .list_page(bucket, "dir/", None, None)
        .await
        .expect("list");
    assert_ne!(
        relisted.objects[0].etag, listed.etag,
        "the entity tag changes with the content"
    );
    store
        .put(bucket, "dir/a.txt", b"replaced".to_vec())
        .await
        .expect("overwrite");

    assert!(matches!(
        store.get(bucket, "dir/nope").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get(missing, "k").await,
        Err(StoreError::NoSuchBucket { .. })
    ));
    assert!(matches!(
        store.list_page(missing, "", None, None).await,
        Err(StoreError::NoSuchBucket { .. })
    ));
    assert!(matches!(
        store.put(missing, "k", vec![1]).await,
        Err(StoreError::NoSuchBucket { .. })
    ));
}

/// Keys that need care: separators sorting around '/', spaces, '+', '%', unicode, deep prefixes.
pub const TRICKY_KEYS: &[&str] = &[
    "a-c",
    "a/b.txt",
    "a/b/c/d/e/f/g/deep.csv",
    "a0",
    "a b+c%20d.csv",
    "plus+sign",
    "percent%2Fslash",
    "unicode/日本語/データ.csv",
    "unicode/émoji-🌧.csv",
    "z",
];

/// Listing is in UTF-8 byte order, whatever the folder structure; prefixes are string prefixes.
/// A read from an offset (S3: a `Range: bytes=N-` GET) gives the bytes from there on; at or past the end it gives
/// none (where S3 itself answers 416), so a reader resumed after an object's last record reads its end cleanly.
pub async fn object_store_reads_from_an_offset(
    store: &dyn ObjectStore,
    bucket: &str,
    missing: &str,
) {
    let key = "offsets/rows.csv";
    let body = "héader\nrow 1\nrow 2\n";
    store
        .put(bucket, key, body.as_bytes().to_vec())
        .await
        .expect("put");
    let read_from = |offset: u64| async move {
        let mut reader = store.get_from(bucket, key, offset).await.expect("get_from");
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).expect("read");
            bytes
        })
        .await
        .expect("join")
    };
    assert_eq!(read_from(0).await, body.as_bytes());
    assert_eq!(read_from(8).await, b"row 1\nrow 2\n");
    assert_eq!(read_from(body.len() as u64 - 1).await, b"\n");
    assert_eq!(read_from(body.len() as u64).await, b"", "at the end");
    assert_eq!(read_from(body.len() as u64 + 10).await, b"", "past the end");
    let err = store
        .get_from(bucket, missing, 5)
        .await
        .err()
        .expect("a missing key");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

/// An object written in chunks (S3: a multipart upload) reads back as their concatenation, replacing the old
/// one; a write whose chunks end in an error leaves the old object as it was; one chunk is a plain write.
pub async fn object_store_writes_in_chunks(store: Arc<dyn ObjectStore>, bucket: &str) {
    use dmap_core::ports::{MIN_CHUNK_BYTES, ObjectWriter};
    let key = "chunks/big.jsonl";
    store.put(bucket, key, b"old".to_vec()).await.expect("put");
    // Two full chunks and a short last one.
    let line: Vec<u8> = (0..1000u32)
        .flat_map(|i| format!("{i:07}\n").into_bytes())
        .collect();
    let mut expected = Vec::new();
    let mut writer = ObjectWriter::new(store.clone(), bucket, key, MIN_CHUNK_BYTES);
    while expected.len() < 2 * MIN_CHUNK_BYTES + 5000 {
        writer.write(&line).await.expect("write");
        expected.extend_from_slice(&line);
    }
    assert_eq!(
        writer.finish().await.expect("finish"),
        expected.len() as u64
    );
    let read = store.read_up_to(bucket, key, u64::MAX).await.expect("read");
    assert!(
        read == expected,
        "{} bytes read, {} written",
        read.len(),
        expected.len()
    );

    // Abandoned after a chunk: the object is the one before.
    let mut writer = ObjectWriter::new(store.clone(), bucket, key, MIN_CHUNK_BYTES);
    writer
        .write(&vec![b'x'; MIN_CHUNK_BYTES + 1])
        .await
        .expect("write");
    drop(writer);
    let failing = futures::stream::iter(vec![
        Ok(vec![b'y'; MIN_CHUNK_BYTES]),
        Err(StoreError::Other("the producer failed".into())),
    ]);
    let err = store
        .put_chunks(bucket, key, Box::pin(failing))
        .await
        .expect_err("a failed chunk fails the write");
    assert!(err.to_string().contains("the producer failed"), "{err}");
    let read = store.read_up_to(bucket, key, u64::MAX).await.expect("read");
    assert!(read == expected, "the object changed: {} bytes", read.len());

    // A small object: one chunk.
    let mut writer = ObjectWriter::new(store.clone(), bucket, key, MIN_CHUNK_BYTES);
    writer.write(b"small\n").await.expect("write");
    writer.finish().await.expect("finish");
    assert_eq!(get_string(store.as_ref(), bucket, key).await, "small\n");
}

pub async fn object_store_lists_in_key_order(store: &dyn ObjectStore, bucket: &str) {
    for key in TRICKY_KEYS {
        store
            .put(bucket, key, key.as_bytes().to_vec())
            .await
            .expect("put");
    }
    let mut expected: Vec<String> = TRICKY_KEYS.iter().map(|k| k.to_string()).collect();
    expected.sort();
    let (keys, _) = list_all(store, bucket, "", None).await;
    assert_eq!(keys, expected);

    let (keys, _) = list_all(store, bucket, "a", None).await;
    assert_eq!(
        keys,
        [
            "a b+c%20d.csv",
            "a-c",
            "a/b.txt",
            "a/b/c/d/e/f/g/deep.csv",
            "a0"
        ]
    );
    let (keys, _) = list_all(store, bucket, "a/b", None).await;
    assert_eq!(keys, ["a/b.txt", "a/b/c/d/e/f/g/deep.csv"]);
    let (keys, _) = list_all(store, bucket, "unicode/", None).await;
    assert_eq!(keys, ["unicode/émoji-🌧.csv", "unicode/日本語/データ.csv"]);
    let (keys, _) = list_all(store, bucket, "", Some("a/b.txt")).await;
    assert_eq!(
        keys[0], "a/b/c/d/e/f/g/deep.csv",
        "start_after is exclusive"
    );
    assert_eq!(keys.len(), expected.len() - 3);
    for key in TRICKY_KEYS {
        assert_eq!(get_string(store, bucket, key).await, *key);
    }
}

/// 2,500 keys come back in pages of 1,000, 1,000 and 500; exactly 1,000 is one page with no token.
pub async fn object_store_paginates(store: &dyn ObjectStore, bucket: &str) {
    let keys: Vec<String> = (0..2500)
        .map(|i| format!("p/{:02}/k{i:05}", i % 7))
        .collect();
    futures::future::try_join_all(keys.chunks(100).map(|chunk| async move {
        for key in chunk {
            store.put(bucket, key, vec![b'x']).await?;
        }
        Ok::<_, StoreError>(())
    }))
    .await
    .expect("puts");
    let mut expected = keys.clone();
    expected.sort();
    let (listed, pages) = list_all(store, bucket, "p/", None).await;
    assert_eq!(pages, 3);
    assert_eq!(listed, expected);

    let (listed, pages) = list_all(store, bucket, "p/", Some(&expected[1499])).await;
    assert_eq!(
        pages, 1,
        "1,000 keys after the start fit one page, with no token"
    );
    assert_eq!(listed, expected[1500..]);
}

// ---------------------------------------------------------------- queue

/// A queue with a 1 s visibility timeout whose dead-letter queue takes messages received more than twice.
pub struct QueuePair {
    pub queue: Arc<dyn BatchQueue>,
    pub dead_letter: Arc<dyn BatchQueue>,
}

fn message(id: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        id: id.into(),
        body: body.into(),
        group: None,
    }
}

const WAIT: Duration = Duration::from_secs(2);

/// Nothing comes back (the messages were deleted, not just hidden) and the queue counts nothing.
async fn assert_stays_empty(q: &dyn BatchQueue) {
    assert!(
        q.receive(10, Duration::from_millis(1200))
            .await
            .expect("receive")
            .is_empty(),
        "deleted messages stay deleted"
    );
    let depth = q.depth().await.expect("depth");
    assert!(depth.is_empty(), "{depth:?}");
}

pub async fn queue_delivers_and_deletes(pair: &QueuePair) {
    let q = pair.queue.as_ref();
    let batch: Vec<OutgoingMessage> = (0..25)
        .map(|i| message(&format!("m{i}"), &format!("body {i}")))
        .collect();
    assert!(
        q.send_batch(&batch).await.expect("send").is_empty(),
        "25 entries are split into calls of 10"
    );
    let mut bodies = BTreeSet::new();
    while bodies.len() < 25 {
        let got = q.receive(10, WAIT).await.expect("receive");
        assert!(!got.is_empty(), "all 25 messages arrive");
        assert!(got.len() <= 10);
        for m in got {
            assert_eq!(m.receive_count, 1);
            assert!(!m.receipt_handle.is_empty() && !m.message_id.is_empty());
            bodies.insert(m.body.clone());
            q.delete(&m.receipt_handle).await.expect("delete");
            q.delete(&m.receipt_handle)
                .await
                .expect("deleting twice is not an error");
        }
    }
    assert_eq!(bodies.len(), 25);
    assert_stays_empty(q).await;
}

/// `delete_all` acknowledges more handles than one request takes, and handles already deleted are not errors.
pub async fn queue_deletes_many_at_once(pair: &QueuePair) {
    let q = pair.queue.as_ref();
    let batch: Vec<OutgoingMessage> = (0..15)
        .map(|i| message(&format!("m{i}"), &format!("body {i}")))
        .collect();
    assert!(q.send_batch(&batch).await.expect("send").is_empty());
    let mut handles = Vec::new();
    while handles.len() < 15 {
        let got = q.receive(10, WAIT).await.expect("receive");
        assert!(!got.is_empty(), "all 15 messages arrive");
        handles.extend(got.into_iter().map(|m| m.receipt_handle));
    }
    let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
    q.delete_all(&handles).await.expect("delete all");
    q.delete_all(&handles[..3])
        .await
        .expect("deleting twice is not an error");
    q.delete_all(&[]).await.expect("nothing to delete");
    assert_stays_empty(q).await;
}

pub async fn queue_redelivers_after_the_visibility_timeout(pair: &QueuePair) {
    let q = pair.queue.as_ref();
    q.send_batch(&[message("a", "again")]).await.expect("send");
    let first = q.receive(1, WAIT).await.expect("receive");
    assert_eq!(first.len(), 1);
    let depth = q.depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 1));
    assert!(
        q.receive(1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty(),
        "hidden while in flight"
    );
    let second = q.receive(1, Duration::from_secs(5)).await.expect("receive");
    assert_eq!(second.len(), 1, "redelivered after the timeout");
    assert_eq!(second[0].body, "again");
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    let receipt = &second[0].receipt_handle;
    q.change_visibility(receipt, Duration::from_secs(30))
        .await
        .expect("extend");
    assert!(
        q.receive(1, Duration::from_millis(1500))
            .await
            .expect("receive")
            .is_empty(),
        "extended past the default timeout"
    );
    q.change_visibility(receipt, Duration::ZERO)
        .await
        .expect("release");
    assert_eq!(
        q.depth().await.expect("depth").visible,
        1,
        "visible again at once"
    );
    q.delete(receipt).await.expect("delete");
    assert!(
        q.receive(1, Duration::from_millis(1200))
            .await
            .expect("receive")
            .is_empty()
    );
}

pub async fn queue_dead_letters_after_max_receives(pair: &QueuePair) {
    let q = pair.queue.as_ref();
    q.send_batch(&[message("p", "poison")]).await.expect("send");
    for attempt in 1..=2 {
        let got = q.receive(1, Duration::from_secs(5)).await.expect("receive");
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        q.change_visibility(&got[0].receipt_handle, Duration::ZERO)
            .await
            .expect("release");
    }
    assert!(
        q.receive(1, Duration::from_secs(1))
            .await
            .expect("receive")
            .is_empty(),
        "a third receive dead-letters it"
    );
    let dead = pair
        .dead_letter
        .receive(1, WAIT)
        .await
        .expect("receive dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    pair.dead_letter
        .delete(&dead[0].receipt_handle)
        .await
        .expect("delete");
}

pub async fn queue_refuses_bad_sends(pair: &QueuePair) {
    let q = pair.queue.as_ref();
    let huge = "x".repeat(1_048_577);
    let failures = q
        .send_batch(&[message("ok", "fine"), message("big", &huge)])
        .await
        .expect("send");
    assert_eq!(failures.len(), 1, "only the oversized entry fails");
    assert_eq!(failures[0].id, "big");
    assert!(failures[0].sender_fault);
    let got = q.receive(10, WAIT).await.expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "fine");
    q.delete(&got[0].receipt_handle).await.expect("delete");
    let err = q
        .change_visibility(&got[0].receipt_handle, Duration::ZERO)
        .await;
    assert!(matches!(err, Err(QueueError::InvalidReceipt)), "{err:?}");
}

// ---------------------------------------------------------------- job store

pub fn record(job_id: &str) -> JobRecord {
    let spec = format!(
        r#"{{"job_id":"{job_id}","item_reader":{{"bucket":"in-bucket"}},"processor":{{"kind":"count"}},"result_writer":{{"bucket":"out-bucket"}}}}"#
    );
    JobRecord::new(
        JobSpec::parse(spec.as_bytes()).expect("valid"),
        1_700_000_000_000,
    )
}

fn batch(succeeded: u64, failed: u64) -> BatchRecord {
    BatchRecord {
        succeeded,
        failed,
        part: PartRef::Object(format!("parts/{succeeded}-{failed}.json")),
        ..BatchRecord::default()
    }
}

fn usage(counters: &[(&str, u64)]) -> Usage {
    let mut usage = Usage::default();
    for (name, n) in counters {
        usage.add_counter(name, *n);
    }
    usage
}

/// A job's usage is what its checkpoints say (the coordinators' sum: the latest counts), what its batches'
/// records carried (once each, a duplicate's not) and what its finish carried (once).
pub async fn job_store_keeps_a_jobs_usage(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    let usage_now = || async { store.progress(job_id).await.expect("progress").usage };
    assert_eq!(usage_now().await, Usage::NONE);
    let mut checkpoint = Checkpoint {
        next_seq: 1,
        items_sent: 1,
        usage: usage(&[("S3.ListObjectsV2", 1), ("SQS.SendMessageBatch", 1)]),
        ..Checkpoint::default()
    };
    store
        .save_checkpoint(job_id, &checkpoint)
        .await
        .expect("checkpoint");
    let recorded = store
        .record_batch(job_id, 0, &batch(1, 0), &usage(&[("S3.GetObject", 3)]))
        .await
        .expect("record");
    assert_eq!(recorded.outcome, RecordOutcome::Recorded);
    let duplicate = store
        .record_batch(job_id, 0, &batch(1, 0), &usage(&[("S3.GetObject", 5)]))
        .await
        .expect("record again");
    assert_eq!(duplicate.outcome, RecordOutcome::Duplicate);
    let lambda = usage(&[
        ("DynamoDB.GetItem (eventually consistent)", 2),
        (dmap_core::usage::LAMBDA_INVOCATIONS, 1),
        (dmap_core::usage::LAMBDA_MB_MS, 512_000),
    ]);
    store
        .record_batch(job_id, 70, &batch(1, 0), &lambda)
        .await
        .expect("record in another group");
    checkpoint.next_seq = 2;
    checkpoint.usage = usage(&[("S3.ListObjectsV2", 2), ("SQS.SendMessageBatch", 3)]);
    store
        .save_checkpoint(job_id, &checkpoint)
        .await
        .expect("checkpoint");
    let mut expected = usage(&[
        ("S3.ListObjectsV2", 2),
        ("SQS.SendMessageBatch", 3),
        ("S3.GetObject", 3),
    ]);
    expected.add(&lambda);
    assert_eq!(usage_now().await, expected);

    store
        .complete_listing(
            job_id,
            ListingTotals {
                batches: 71,
                items: 71,
            },
        )
        .await
        .expect("complete");
    // The claim trusts its caller to have seen every batch counted.
    assert!(store.claim_finalization(job_id).await.expect("claim"));
    let finalizer = usage(&[("S3.PutObject", 2)]);
    assert!(
        store
            .finish(job_id, TerminalStatus::Succeeded, &finalizer)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish(
                job_id,
                TerminalStatus::Succeeded,
                &usage(&[("S3.PutObject", 9)])
            )
            .await
            .expect("finish again")
    );
    expected.add(&finalizer);
    assert_eq!(usage_now().await, expected);
}

/// Each job-store check gets its own job id, so backends can share one table.
pub async fn job_store_creates_once(store: &dyn JobStore, job_id: &str) {
    let rec = record(job_id);
    assert_eq!(
        store.create_job(&rec).await.expect("create"),
        CreateOutcome::Created
    );
    match store.create_job(&rec).await.expect("create again") {
        CreateOutcome::Exists(existing) => assert_eq!(*existing, rec),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(store.get_job(job_id).await.expect("get"), Some(rec));
    assert_eq!(
        store.get_job(&format!("{job_id}-none")).await.expect("get"),
        None
    );
    assert!(matches!(
        store.progress(&format!("{job_id}-none")).await,
        Err(JobStoreError::NotFound(_))
    ));
}

pub async fn job_store_counts_each_batch_once(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    let first = store
        .record_batch(job_id, 0, &batch(3, 1), &Usage::NONE)
        .await
        .expect("record");
    assert_eq!(
        (first.outcome, &first.record),
        (RecordOutcome::Recorded, &batch(3, 1))
    );
    // Recorded again with another record (a duplicate whose objects changed meanwhile): the first stands.
    let again = store
        .record_batch(job_id, 0, &batch(9, 9), &Usage::NONE)
        .await
        .expect("again");
    assert_eq!(
        (again.outcome, &again.record),
        (RecordOutcome::Duplicate, &batch(3, 1))
    );
    for group in [first.group, again.group].into_iter().flatten() {
        assert!(
            group.first == 0 && group.len > 0 && group.counted == 1,
            "{group:?}"
        );
    }
    // Twenty racing deliveries of batch 1: one counts.
    let racers = (0..20).map(|_| {
        let store = store.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move {
            store
                .record_batch(&job_id, 1, &batch(5, 0), &Usage::NONE)
                .await
        })
    });
    let outcomes = futures::future::try_join_all(racers).await.expect("join");
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(r) if r.outcome == RecordOutcome::Recorded))
        .count();
    assert_eq!(recorded, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(r) if r.record == batch(5, 0)))
    );
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!((p.batches_done, p.succeeded, p.failed), (2, 8, 1));
    let records = store.batch_records(job_id, 0, 1).await.expect("records");
    assert_eq!(records, vec![(0, batch(3, 1))]);
    assert_eq!(
        store.batch_record(job_id, 1).await.expect("marker"),
        Some(batch(5, 0))
    );
    assert_eq!(store.batch_record(job_id, 2).await.expect("marker"), None);
    let records = store.batch_records(job_id, 0, 1000).await.expect("records");
    assert_eq!(records, vec![(0, batch(3, 1)), (1, batch(5, 0))]);
    let records = store.batch_records(job_id, 1, 10).await.expect("records");
    assert_eq!(records, vec![(1, batch(5, 0))]);
    assert!(
        store
            .batch_records(job_id, 2, 10)
            .await
            .expect("records")
            .is_empty()
    );
    for seq in 2..60 {
        store
            .record_batch(job_id, seq, &batch(seq, 0), &Usage::NONE)
            .await
            .expect("record");
    }
    let records = store.batch_records(job_id, 7, 45).await.expect("records");
    let seqs: Vec<u64> = records.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (7..45).collect::<Vec<_>>(),
        "a range, in order, across however the store spreads batches"
    );
    assert_eq!(records[0].1, batch(7, 0));
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!(
        (p.batches_done, p.succeeded),
        (60, 8 + (2..60).sum::<u64>())
    );
    // A part in the record itself round-trips byte for byte (JSON with quotes, escapes and non-ASCII).
    let inline = BatchRecord {
        part: PartRef::Inline(r#"{"seq":60,"result":{"k\"ey":"väl\n"}}"#.into()),
        items_digest: "0123abcd".into(),
        ..batch(1, 0)
    };
    store
        .record_batch(job_id, 60, &inline, &Usage::NONE)
        .await
        .expect("record");
    assert_eq!(
        store.batch_record(job_id, 60).await.expect("marker"),
        Some(inline.clone())
    );
    assert_eq!(
        store.batch_records(job_id, 60, 61).await.expect("records"),
        vec![(60, inline)]
    );
}

pub async fn job_store_claims_once_after_listing(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    assert!(
        !store.claim_finalization(job_id).await.expect("claim"),
        "no claim before the listing is complete"
    );
    let cp = Checkpoint {
        start_after: Some("k9".into()),
        next_seq: 2,
        items_sent: 10,
        ..Checkpoint::default()
    };
    store
        .save_checkpoint(job_id, &cp)
        .await
        .expect("checkpoint");
    let stale = Checkpoint {
        start_after: Some("k4".into()),
        next_seq: 1,
        items_sent: 5,
        ..Checkpoint::default()
    };
    store
        .save_checkpoint(job_id, &stale)
        .await
        .expect("stale checkpoint is ignored");
    assert_eq!(
        store
            .get_job(job_id)
            .await
            .expect("get")
            .expect("job")
            .checkpoint,
        cp
    );
    let totals = ListingTotals {
        batches: 2,
        items: 10,
    };
    store
        .complete_listing(job_id, totals)
        .await
        .expect("complete");
    store
        .complete_listing(job_id, totals)
        .await
        .expect("idempotent");
    let other = ListingTotals {
        batches: 3,
        items: 10,
    };
    assert!(matches!(
        store.complete_listing(job_id, other).await,
        Err(JobStoreError::Conflict { .. })
    ));
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!(p.listing, Some(totals));
    assert!(!p.is_complete());

    let racers = (0..20).map(|_| {
        let store = store.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move { store.claim_finalization(&job_id).await })
    });
    let claims = futures::future::try_join_all(racers).await.expect("join");
    assert_eq!(
        claims.iter().filter(|c| matches!(c, Ok(true))).count(),
        1,
        "{claims:?}"
    );
    assert_eq!(
        store.progress(job_id).await.expect("progress").status,
        JobStatus::Finalizing
    );

    assert!(
        store
            .finish(job_id, TerminalStatus::Failed, &Usage::NONE)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish(job_id, TerminalStatus::Failed, &Usage::NONE)
            .await
            .expect("finish again")
    );
    assert!(matches!(
        store
            .finish(job_id, TerminalStatus::Succeeded, &Usage::NONE)
            .await,
        Err(JobStoreError::Conflict { .. })
    ));
    assert_eq!(
        store.progress(job_id).await.expect("progress").status,
        JobStatus::Failed
    );
    assert!(!store.claim_finalization(job_id).await.expect("claim"));
}

/// A FAILED job redriven: RUNNING again once (a second redrive of the same state is refused), listed active,
/// its listing reopened for redo batches from the old total; a redo batch's record takes back the failures of
/// its items, once, and keeps its generation and redone count.
pub async fn job_store_redrives_an_ended_job_once(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    let totals = ListingTotals {
        batches: 2,
        items: 6,
    };
    store
        .complete_listing(job_id, totals)
        .await
        .expect("complete");
    store
        .record_batch(job_id, 0, &batch(3, 1), &Usage::NONE)
        .await
        .expect("record");
    store
        .record_batch(job_id, 1, &batch(2, 0), &Usage::NONE)
        .await
        .expect("record");
    let running = store.get_job(job_id).await.expect("get").expect("job");
    assert!(matches!(
        store.redrive(&running).await,
        Err(JobStoreError::Conflict { .. })
    ));
    assert!(store.claim_finalization(job_id).await.expect("claim"));
    store
        .finish(job_id, TerminalStatus::Failed, &Usage::NONE)
        .await
        .expect("finish");
    let failed = store.get_job(job_id).await.expect("get").expect("job");
    assert!(failed.finished_at_ms.is_some());

    let racers = (0..8).map(|_| {
        let store = store.clone();
        let failed = failed.clone();
        tokio::spawn(async move { store.redrive(&failed).await })
    });
    let redrives = futures::future::try_join_all(racers).await.expect("join");
    let won: Vec<_> = redrives.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{redrives:?}");
    let redriven = won[0].clone();
    assert_eq!(redriven, failed.redriven());
    assert_eq!(
        store.get_job(job_id).await.expect("get").expect("job"),
        redriven
    );
    assert_eq!(
        (
            redriven.status,
            redriven.redrives,
            redriven.listing,
            redriven.finished_at_ms
        ),
        (JobStatus::Running, 1, None, None)
    );
    assert_eq!(
        (
            redriven.checkpoint.next_seq,
            redriven.checkpoint.items_sent,
            redriven.checkpoint.redo_from
        ),
        (2, 6, Some(2))
    );
    assert!(
        store
            .active_jobs()
            .await
            .expect("active")
            .contains(&job_id.to_owned())
    );

    // The redo batch of the failed item: it succeeded.
    let redo = BatchRecord {
        generation: 1,
        redone: 1,
        ..batch(1, 0)
    };
    for _ in 0..2 {
        store
            .record_batch(job_id, 2, &redo, &Usage::NONE)
            .await
            .expect("record");
    }
    assert_eq!(
        store.batch_record(job_id, 2).await.expect("marker"),
        Some(redo)
    );
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!((p.batches_done, p.succeeded, p.failed), (3, 6, 0));
    store
        .complete_listing(
            job_id,
            ListingTotals {
                batches: 3,
                items: 6,
            },
        )
        .await
        .expect("complete");
    assert!(
        store
            .progress(job_id)
            .await
            .expect("progress")
            .is_complete()
    );
}

/// A batch past the listing's total (cut by an earlier pass of a listing that changed since) is recorded but
/// does not count toward completion: with batch 2 of 3 missing, the job is not complete, however many batches
/// past the total were recorded, before or after the total was known.
pub async fn job_store_counts_only_batches_below_the_total(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    for seq in [0, 1, 3] {
        store
            .record_batch(job_id, seq, &batch(1, 0), &Usage::NONE)
            .await
            .expect("record");
    }
    store
        .complete_listing(
            job_id,
            ListingTotals {
                batches: 3,
                items: 3,
            },
        )
        .await
        .expect("complete the listing");
    store
        .record_batch(job_id, 70, &batch(1, 0), &Usage::NONE)
        .await
        .expect("record past the total, in another group");
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!(p.batches_done, 2, "{p:?}");
    assert!(!p.is_complete());
    store
        .record_batch(job_id, 2, &batch(1, 0), &Usage::NONE)
        .await
        .expect("record");
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!(p.batches_done, 3, "{p:?}");
    assert!(p.is_complete());
}

/// Forty racing records (twenty batches, each delivered twice at once) all land exactly: no lost update, no
/// double count.
pub async fn job_store_counts_racing_records_exactly(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    let racers = (0..40u64).map(|i| {
        let store = store.clone();
        let job_id = job_id.to_owned();
        let seq = i / 2;
        tokio::spawn(async move {
            store
                .record_batch(&job_id, seq, &batch(seq + 1, 1), &Usage::NONE)
                .await
        })
    });
    let outcomes = futures::future::try_join_all(racers).await.expect("join");
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(r) if r.outcome == RecordOutcome::Recorded))
        .count();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(recorded, 20, "{outcomes:?}");
    let p = store.progress(job_id).await.expect("progress");
    assert_eq!(
        (p.batches_done, p.succeeded, p.failed),
        (20, (1..=20).sum(), 20)
    );
    assert_eq!(
        store
            .batch_records(job_id, 0, 20)
            .await
            .expect("records")
            .len(),
        20
    );
}

/// A split listing's lease: the last coordinator to take it is the only one whose saves and hand-overs land;
/// it takes the checkpoint as saved; a complete listing is not taken.
pub async fn job_store_leases_a_split_listing_to_its_last_taker(
    store: Arc<dyn JobStore>,
    job_id: &str,
) {
    store.create_job(&record(job_id)).await.expect("create");
    let at = |seq: u64, lease: &str| Checkpoint {
        next_seq: seq,
        items_sent: seq * 10,
        ranges: vec![KeyRange {
            after: format!("k{seq}"),
            ..KeyRange::default()
        }],
        lease: Some(lease.to_owned()),
        ..Checkpoint::default()
    };
    // Before it is split and leased, a listing saves as one stream does.
    store
        .save_checkpoint(
            job_id,
            &Checkpoint {
                next_seq: 1,
                ..Checkpoint::default()
            },
        )
        .await
        .expect("one stream saves");
    let mut split = at(1, "x");
    split.lease = None;
    store
        .save_checkpoint(job_id, &split)
        .await
        .expect("the split saves");
    let unsplit = Checkpoint {
        next_seq: 1,
        ..Checkpoint::default()
    };
    assert!(
        matches!(
            store.save_checkpoint(job_id, &unsplit).await,
            Err(JobStoreError::Conflict { .. })
        ),
        "no save undoes the split"
    );
    let taken = store
        .take_listing(job_id, 0, "a")
        .await
        .expect("take")
        .expect("hop 0 holds the listing");
    assert_eq!(taken.checkpoint.lease.as_deref(), Some("a"));
    assert!(
        matches!(
            store.save_checkpoint(job_id, &split).await,
            Err(JobStoreError::Conflict { .. })
        ),
        "a save without the lease is refused once it is taken"
    );
    // The page log: groups by their first seq, ascending; a group logged again replaces itself.
    let page = |seq: u64, batches: u64, after: &str| LoggedPage {
        after: after.into(),
        page: NumberedPage {
            seq,
            batches,
            through: format!("{after}/z"),
            last: false,
        },
    };
    store
        .log_pages(job_id, &[page(5, 2, "m"), page(7, 1, "q")])
        .await
        .expect("log");
    store
        .log_pages(job_id, &[page(0, 5, "a")])
        .await
        .expect("log");
    store
        .log_pages(job_id, &[page(5, 3, "m")])
        .await
        .expect("log");
    assert_eq!(
        store.logged_pages(job_id).await.unwrap(),
        [page(0, 5, "a"), page(5, 3, "m")]
    );
    store
        .save_checkpoint(job_id, &at(2, "a"))
        .await
        .expect("a saves");
    let taken = store
        .take_listing(job_id, 0, "b")
        .await
        .expect("take")
        .expect("hop 0 holds the listing");
    assert_eq!(
        (taken.checkpoint.next_seq, taken.checkpoint.ranges.clone()),
        (2, at(2, "a").ranges),
        "b takes what a saved"
    );
    let refused = store.save_checkpoint(job_id, &at(3, "a")).await;
    assert!(
        matches!(refused, Err(JobStoreError::Conflict { .. })),
        "{refused:?}"
    );
    let handed = Checkpoint {
        hop: 1,
        ..at(4, "a")
    };
    assert!(
        !store.hand_over(job_id, &handed).await.unwrap(),
        "a no longer hands over"
    );
    store
        .save_checkpoint(job_id, &at(3, "b"))
        .await
        .expect("b saves");
    let stored = store.get_job(job_id).await.unwrap().unwrap().checkpoint;
    assert_eq!((stored.next_seq, stored.lease.as_deref()), (3, Some("b")));
    let handed = Checkpoint {
        hop: 1,
        ..at(4, "b")
    };
    assert!(
        store.hand_over(job_id, &handed).await.unwrap(),
        "b hands over"
    );
    store
        .complete_listing(
            job_id,
            ListingTotals {
                batches: 4,
                items: 40,
            },
        )
        .await
        .expect("complete");
    assert!(matches!(
        store.take_listing(job_id, 1, "c").await,
        Err(JobStoreError::Conflict { .. })
    ));
}

/// The listing's hops: one hand-over per hop however many invocations race for it, never skipping or going
/// back; a checkpoint save keeps the hop; the cut and the sent flag round-trip.
pub async fn job_store_hands_each_hop_over_once(store: Arc<dyn JobStore>, job_id: &str) {
    store.create_job(&record(job_id)).await.expect("create");
    let at = |hop: u32, seq: u64| Checkpoint {
        start_after: Some(format!("k{seq}")),
        next_seq: seq,
        items_sent: seq * 10,
        hop,
        ..Checkpoint::default()
    };
    let stored = || async { store.get_job(job_id).await.unwrap().unwrap().checkpoint };
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let (job_id, next) = (job_id.to_owned(), at(1, 3));
            tokio::spawn(async move { store.hand_over(&job_id, &next).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one invocation hands hop 0 over");
    assert_eq!((stored().await.hop, stored().await.hop_sent), (1, false));
    assert!(
        !store.hand_over(job_id, &at(3, 5)).await.unwrap(),
        "no hop is skipped"
    );
    assert!(
        !store.hand_over(job_id, &at(1, 5)).await.unwrap(),
        "hop 0 is handed over once"
    );

    let mut cp = at(0, 4);
    cp.cut = Some(Cut {
        seq: 4,
        last_key: "k44".into(),
    });
    store.save_checkpoint(job_id, &cp).await.expect("save");
    let after_save = stored().await;
    assert_eq!(after_save.hop, 1, "a checkpoint save keeps the hop");
    assert_eq!((after_save.next_seq, after_save.cut), (4, cp.cut.clone()));

    // A split listing's ranges, one with a numbered page, round-trip; a later save replaces them.
    let mut split = at(0, 5);
    split.ranges = vec![
        KeyRange {
            after: "k44".into(),
            upto: Some("m/".into()),
            done: true,
            sending: None,
        },
        KeyRange {
            after: "m/ünï €".into(),
            upto: None,
            done: false,
            sending: Some(NumberedPage {
                seq: 4,
                batches: 1,
                through: "m/z".into(),
                last: true,
            }),
        },
    ];
    store.save_checkpoint(job_id, &split).await.expect("save");
    assert_eq!(stored().await.ranges, split.ranges);
    split.ranges[1].sending = None;
    split.ranges[1].after = "m/z".into();
    store.save_checkpoint(job_id, &split).await.expect("save");
    assert_eq!(stored().await.ranges, split.ranges);

    store
        .continuation_sent(job_id, 0)
        .await
        .expect("an older hop");
    assert!(
        !stored().await.hop_sent,
        "only the stored hop is marked sent"
    );
    store.continuation_sent(job_id, 1).await.expect("mark");
    assert!(stored().await.hop_sent);

    assert!(
        !store.hand_over(job_id, &at(2, 2)).await.unwrap(),
        "never back"
    );
    let mut next = at(2, 6);
    next.ranges = split.ranges.clone();
    assert!(store.hand_over(job_id, &next).await.unwrap());
    let handed = stored().await;
    assert_eq!((handed.hop, handed.hop_sent, handed.cut), (2, false, None));
    assert_eq!(
        handed.ranges, split.ranges,
        "a hand-over carries the ranges"
    );

    let totals = ListingTotals {
        batches: 7,
        items: 70,
    };
    store
        .complete_listing(job_id, totals)
        .await
        .expect("complete");
    assert!(
        !store.hand_over(job_id, &at(3, 7)).await.unwrap(),
        "a complete listing is not handed over"
    );
}
