//! The port conformance suite against the embedded adapters.

#[macro_use]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::{QueuePair, StoreFixture};
use dmap_core::embedded::{EmbeddedQueue, LocalDirStore, MemoryJobStore, QueueConfig};
use dmap_core::ports::JobStore;

async fn object_store() -> StoreFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::new(dir.path());
    store.create_bucket("bucket").expect("bucket");
    StoreFixture {
        store: Arc::new(store),
        bucket: "bucket".into(),
        missing: "missing-bucket".into(),
        _guard: Some(Box::new(dir)),
    }
}

async fn queues() -> QueuePair {
    let dead_letter = EmbeddedQueue::new(QueueConfig::new("dlq", Duration::from_secs(1)));
    let mut config = QueueConfig::new("work", Duration::from_secs(1));
    config.dead_letter = Some((2, dead_letter.clone()));
    QueuePair {
        queue: EmbeddedQueue::new(config),
        dead_letter,
    }
}

async fn job_store() -> Arc<dyn JobStore> {
    Arc::new(MemoryJobStore::new())
}

conformance_suite!();

/// The job store's contracts again, on the persistent store: each test's journals in a folder of its own.
mod persistent {
    use super::*;

    async fn job_store() -> Arc<dyn JobStore> {
        static DIR: std::sync::LazyLock<tempfile::TempDir> =
            std::sync::LazyLock::new(|| tempfile::tempdir().expect("tempdir"));
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(MemoryJobStore::persistent(DIR.path().join(n.to_string())))
    }

    job_store_suite!();
}

/// Lists every page of `prefix` by continuation tokens, `between` called after each page.
async fn list_pages(
    store: &LocalDirStore,
    prefix: &str,
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    use dmap_core::ports::ObjectStore;
    let (mut keys, mut token, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = store
            .list_page("bucket", prefix, None, token.as_deref())
            .await
            .expect("list");
        assert!(page.objects.len() <= 1000);
        keys.extend(page.objects.into_iter().map(|o| o.key));
        pages += 1;
        between(pages).await;
        match page.next {
            Some(next) => token = Some(next),
            None => return keys,
        }
    }
}

/// The embedded store walks ahead of a listing, in the background, many pages at a time: the pages it serves
/// are still exactly the keys in order, across walks, folders split between walks, and another listing taking
/// the look-ahead's place halfway.
#[tokio::test]
async fn embedded_store_reads_ahead_and_still_lists_every_key_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = Vec::new();
    for (folder, files) in [("a/nested/1", 7_321), ("a/nested/2", 15_000), ("a/z", 999)] {
        let path = dir.path().join("bucket").join(folder);
        std::fs::create_dir_all(&path).expect("folder");
        for i in 0..files {
            std::fs::write(path.join(format!("f{i}")), b"x").expect("file");
            expected.push(format!("{folder}/f{i}"));
        }
    }
    std::fs::create_dir_all(dir.path().join("bucket/b")).expect("folder");
    for i in 0..2_500 {
        std::fs::write(dir.path().join(format!("bucket/b/{i}")), b"y").expect("file");
    }
    expected.sort();
    let store = LocalDirStore::new(dir.path());
    assert_eq!(list_pages(&store, "a/", async |_| {}).await, expected);

    let other = store.clone();
    let interleaved = list_pages(&store, "a/", async |page| {
        if page == 3 || page == 14 {
            let listed = list_pages(&other, "b/", async |_| {}).await;
            assert_eq!(listed.len(), 2_500);
        }
    })
    .await;
    assert_eq!(interleaved, expected);
}
