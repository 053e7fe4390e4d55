//! Objects the store refuses for good (on AWS: AccessDenied for a key the role may not read or that is gone,
//! a disabled or inaccessible KMS key, an archived object) fail their own item, with the store's error code in
//! `failed.jsonl`; the batch around them succeeds on its first delivery instead of being retried whole.

mod common;

use std::sync::Arc;

use common::failure_store::FailureStore;
use common::{Env, csv_object, csv_spec, fast_config};
use dmap_core::Deps;
use dmap_core::outcome::TerminalStatus;
use dmap_core::ports::StoreError;
use dmap_core::runner;
use dmap_core::spec::JobSpec;
use serde_json::{Value, json};

fn denied(code: &'static str, message: &'static str) -> impl Fn(&str, &str) -> StoreError {
    move |bucket, key| StoreError::Denied {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_store_denies_fails_its_item_not_its_batch() {
    let config = fast_config();
    let env = Env::new(&config);
    for i in 0..6 {
        env.write(&format!("d/k{i}.csv"), csv_object(i));
    }
    let store = Arc::new(FailureStore::new(env.store.inner.clone()));
    store.fail_get("d/k2.csv", denied("AccessDenied", "Access Denied"));
    store.fail_get(
        "d/k4.csv",
        denied("KMS.DisabledException", "the KMS key is disabled"),
    );
    let deps = Deps {
        objects: store.clone(),
        ..env.deps.clone()
    };
    let mut spec = csv_spec("d/", 10);
    spec["tolerated_failure_count"] = json!(2);
    let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
    let report = runner::run(&deps, job, &config, &|_| {})
        .await
        .expect("the job runs");

    let m = &report.manifest;
    assert_eq!(
        (m.items.total, m.items.succeeded, m.items.failed),
        (6, 4, 2),
        "{m:?}"
    );
    assert_eq!(m.status, TerminalStatus::Succeeded);
    assert_eq!(m.batches.total, 1);
    assert_eq!(
        (report.stats.deliveries, report.stats.dead_lettered_batches),
        (1, 0),
        "the batch was handled on its first delivery: {:?}",
        report.stats
    );
    assert_eq!(
        store.get_attempts("d/k2.csv"),
        1,
        "a denied read is not retried"
    );
    let failures: Vec<Value> = String::from_utf8(env.read(&m.failures))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (line, key, code) in [
        (&failures[0], "d/k2.csv", "AccessDenied: "),
        (&failures[1], "d/k4.csv", "KMS.DisabledException: "),
    ] {
        let error = line["error"].as_str().unwrap();
        assert_eq!(line["key"], key);
        assert!(
            error.starts_with(code) && error.contains(key),
            "the error carries the code and names the key: {error}"
        );
    }
}
