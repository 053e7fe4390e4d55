//! The embedded object store over a data directory that holds more than plain files: links out of its root,
//! link loops, dangling links, FIFOs. A listing always finishes, nothing outside the root is read, and the run
//! ends with such entries failed (or, for special files, not listed) while every plain object counts once.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::{BUCKET, Env, csv_object, csv_spec, fast_config};
use serde_json::{Value, json};

/// What a run saw: (total, succeeded, failed) items and the failed keys with their errors.
type Seen = ((u64, u64, u64), Vec<(String, String)>);

/// Runs a job over `x/` (two plain objects, `x/a.csv` and `x/b.csv`, and whatever `setup` adds to the bucket
/// directory, given the bucket directory and a directory outside the store's root) on its own thread, and
/// fails the test if it does not end within 20 s (a blocked read would hang it forever).
fn run_with(setup: impl FnOnce(&Path, &Path) + Send + 'static) -> Result<Seen, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = fast_config();
        let env = Env::new(&config);
        let outside = tempfile::tempdir().unwrap();
        env.write("x/a.csv", csv_object(1));
        env.write("x/b.csv", csv_object(2));
        setup(&env.path().join(BUCKET), outside.path());
        let mut spec = csv_spec("x/", 10);
        spec["tolerated_failure_count"] = json!(10);
        let seen = runtime
            .block_on(env.try_run(&spec, &config))
            .map(|report| {
                let m = &report.manifest;
                let failures = String::from_utf8(env.read(&m.failures))
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let v: Value = serde_json::from_str(l).unwrap();
                        (
                            v["key"].as_str().unwrap().to_owned(),
                            v["error"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                ((m.items.total, m.items.succeeded, m.items.failed), failures)
            })
            .map_err(|e| e.to_string());
        let _ = tx.send(seen);
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the run did not end within 20 s: a read or a listing blocked")
}

fn assert_failed(failures: &[(String, String)], key: &str) {
    let (_, error) = failures
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{key} is not among the failed items {failures:?}"));
    assert!(error.contains(key), "the error names the key: {error}");
}

#[test]
fn embedded_store_fails_a_link_out_of_its_root() {
    let (counts, failures) = run_with(|bucket, outside| {
        std::fs::write(outside.join("secret.csv"), csv_object(3)).unwrap();
        symlink(outside.join("secret.csv"), bucket.join("x/outside.csv")).unwrap();
        std::fs::create_dir(outside.join("dir")).unwrap();
        std::fs::write(outside.join("dir/deep.csv"), csv_object(4)).unwrap();
        symlink(outside.join("dir"), bucket.join("x/outside-dir.csv")).unwrap();
        // A link that stays inside the root is an object like any other.
        symlink("a.csv", bucket.join("x/inside.csv")).unwrap();
    })
    .expect("the job runs");
    assert_eq!(counts, (5, 3, 2), "{failures:?}");
    assert_failed(&failures, "x/outside.csv");
    assert_failed(&failures, "x/outside-dir.csv");
}

#[test]
fn embedded_store_lists_past_symlink_loops() {
    let (counts, failures) = run_with(|bucket, _| {
        symlink("self.csv", bucket.join("x/self.csv")).unwrap();
        // A folder linked to its own parent: followed, it would list x/up/x/up/... forever.
        symlink("..", bucket.join("x/up")).unwrap();
    })
    .expect("the job runs");
    assert_eq!(counts, (3, 2, 1), "{failures:?}");
    assert_failed(&failures, "x/self.csv");
}

#[test]
fn embedded_store_skips_a_fifo_without_blocking() {
    let (counts, failures) = run_with(|bucket, _| {
        let status = std::process::Command::new("mkfifo")
            .arg(bucket.join("x/pipe.csv"))
            .status()
            .unwrap();
        assert!(status.success());
    })
    .expect("the job runs");
    assert_eq!(counts, (2, 2, 0), "a FIFO is not an object: {failures:?}");
}

#[test]
fn embedded_store_fails_a_dangling_link() {
    let (counts, failures) = run_with(|bucket, _| {
        symlink("nowhere.csv", bucket.join("x/gone.csv")).unwrap();
    })
    .expect("the job runs");
    assert_eq!(counts, (3, 2, 1), "{failures:?}");
    assert_failed(&failures, "x/gone.csv");
}

#[test]
fn embedded_store_with_every_kind_of_odd_entry_counts_the_rest_once() {
    let (counts, failures) = run_with(|bucket, outside| {
        std::fs::write(outside.join("secret.csv"), csv_object(3)).unwrap();
        symlink(outside.join("secret.csv"), bucket.join("x/outside.csv")).unwrap();
        symlink("..", bucket.join("x/up")).unwrap();
        symlink("loop.csv", bucket.join("x/loop.csv")).unwrap();
        symlink("nowhere.csv", bucket.join("x/gone.csv")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(bucket.join("x/pipe.csv"))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::create_dir(bucket.join("x/sub")).unwrap();
        std::fs::write(bucket.join("x/sub/c.csv"), csv_object(5)).unwrap();
    })
    .expect("the job runs");
    assert_eq!(counts, (6, 3, 3), "{failures:?}");
    let codes: Vec<(&str, &str)> = failures
        .iter()
        .map(|(key, error)| (key.as_str(), error.split(':').next().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("x/gone.csv", "BrokenLink"),
            ("x/loop.csv", "BrokenLink"),
            ("x/outside.csv", "LinkOutOfDataDir"),
        ]
    );
}

#[tokio::test]
async fn a_bucket_that_is_itself_a_link_is_read() {
    use dmap_core::embedded::LocalDirStore;
    use dmap_core::ports::{ObjectStore, read_all};
    let (root, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(elsewhere.path().join("k.csv"), "a,b\n").unwrap();
    symlink(elsewhere.path(), root.path().join("linked")).unwrap();
    let store = LocalDirStore::new(root.path());
    let page = store.list_page("linked", "", None, None).await.unwrap();
    assert_eq!(page.objects.len(), 1);
    assert_eq!(read_all(&store, "linked", "k.csv").await.unwrap(), b"a,b\n");
}
