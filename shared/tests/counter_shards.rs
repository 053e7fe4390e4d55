//! `DynamoJobStore`'s counting against moto: a shard count over 100, a deployment whose shard count changes
//! while a job runs (a job is counted by the shard count it was created with, whatever the store that records
//! or reads it is configured with), and the group counts that come back with each record.

use std::sync::Arc;
use std::time::Duration;

use dmap_core::aws::DynamoJobStore;
use dmap_core::ports::{BatchRecord, GroupCount, JobRecord, JobStore, PartRef, RecordOutcome};
use dmap_core::spec::JobSpec;
use dmap_core::usage::Usage;
use dmap_emulator as emulator;

/// A store over a fresh table of the template's shape, and the client and table to build more over it.
async fn table() -> (aws_sdk_dynamodb::Client, String) {
    let clients = emulator::clients().await;
    let table = emulator::stack(&clients, 30).await.tables["JobsTable"].clone();
    (clients.dynamodb.clone(), table)
}

fn store(client: &aws_sdk_dynamodb::Client, table: &str, shards: u32) -> Arc<DynamoJobStore> {
    Arc::new(DynamoJobStore::new(
        client.clone(),
        table,
        shards,
        Duration::from_secs(86_400),
    ))
}

fn job(job_id: &str) -> JobRecord {
    let spec = format!(
        r#"{{"job_id":"{job_id}","item_reader":{{"bucket":"in-bucket"}},"processor":{{"kind":"count"}},"result_writer":{{"bucket":"out-bucket"}}}}"#
    );
    JobRecord::new(JobSpec::parse(spec.as_bytes()).expect("valid"), 1)
}

/// Batch `seq` has `seq + 1` succeeded items and one failed: sums tell which batches were counted.
fn batch(seq: u64) -> BatchRecord {
    BatchRecord {
        succeeded: seq + 1,
        failed: 1,
        part: PartRef::Object(format!("parts/{seq:010}.json")),
        ..BatchRecord::default()
    }
}

async fn record_all(
    store: &Arc<DynamoJobStore>,
    job_id: &str,
    seqs: impl Iterator<Item = u64>,
) -> Vec<RecordOutcome> {
    use futures::StreamExt;
    futures::stream::iter(seqs)
        .map(|seq| {
            let store = store.clone();
            async move {
                store
                    .record_batch(job_id, seq, &batch(seq), &Usage::NONE)
                    .await
            }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| r.expect("recorded").outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_shards_over_100_progress_reads_every_shard() {
    let (client, table) = table().await;
    let store = store(&client, &table, 150);
    store.create_job(&job("many-shards")).await.expect("create");
    // 160 batches: every one of the 150 shards holds at least one.
    let outcomes = record_all(&store, "many-shards", 0..160).await;
    assert!(outcomes.iter().all(|o| *o == RecordOutcome::Recorded));
    let p = store
        .progress("many-shards")
        .await
        .expect("progress reads the job and the groups of 150 shards");
    assert_eq!(p.batches_done, 160);
    assert_eq!(p.succeeded, (1..=160).sum::<u64>());
    assert_eq!(p.failed, 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_shards_changed_while_a_job_runs_count_each_batch_once() {
    let (client, table) = table().await;
    let before = store(&client, &table, 4);
    before.create_job(&job("resharded")).await.expect("create");
    let first = record_all(&before, "resharded", 0..12).await;
    assert!(first.iter().all(|o| *o == RecordOutcome::Recorded));

    // The deployment now says 7 shards: a new process (an empty cache) records the rest, and redeliveries
    // of batches the old one counted.
    let after = store(&client, &table, 7);
    let rest = record_all(&after, "resharded", 12..30).await;
    assert!(rest.iter().all(|o| *o == RecordOutcome::Recorded));
    let again = record_all(&after, "resharded", [0, 3, 5, 6, 11].into_iter()).await;
    assert!(
        again.iter().all(|o| *o == RecordOutcome::Duplicate),
        "batches counted under 4 shards are duplicates under 7: {again:?}"
    );

    for reader in [&after, &store(&client, &table, 7), &before] {
        let p = reader.progress("resharded").await.expect("progress");
        assert_eq!(
            (p.batches_done, p.succeeded, p.failed),
            (30, (1..=30).sum::<u64>(), 30)
        );
        let records = reader
            .batch_records("resharded", 0, 30)
            .await
            .expect("batch records");
        let seqs: Vec<u64> = records.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (0..30).collect::<Vec<_>>());
        assert!(records.iter().all(|(seq, r)| *r == batch(*seq)));
    }
    // A range that starts past the first shards' seqs still finds every batch of the range.
    let middle = after.batch_records("resharded", 9, 17).await.unwrap();
    assert_eq!(
        middle.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (9..17).collect::<Vec<_>>()
    );
}

/// Each record comes back with its group's count right after it: exactly one record of a group sees the group
/// full, and a duplicate sees the count as it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_returns_its_groups_count() {
    let (client, table) = table().await;
    let store = store(&client, &table, 3);
    store.create_job(&job("groups")).await.expect("create");
    let len = dmap_core::aws::GROUP_BATCHES;
    for seq in 0..len + 6 {
        let recorded = store
            .record_batch("groups", seq, &batch(seq), &Usage::NONE)
            .await
            .expect("record");
        assert_eq!(
            recorded.group,
            Some(GroupCount {
                first: seq / len * len,
                len,
                counted: seq % len + 1,
            }),
            "batch {seq}"
        );
    }
    let again = store
        .record_batch("groups", 3, &batch(99), &Usage::NONE)
        .await
        .expect("again");
    assert_eq!(
        (again.outcome, again.record, again.group.map(|g| g.counted)),
        (RecordOutcome::Duplicate, batch(3), Some(len))
    );
    let p = store.progress("groups").await.expect("progress");
    assert_eq!(p.batches_done, len + 6);
}
