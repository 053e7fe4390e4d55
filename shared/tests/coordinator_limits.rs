//! The coordinator function refuses, before writing anything, a job spec that would reach past what the
//! deployment allows: results outside the stack's results prefix.

use dmap_core::lambda::config::{CoordinatorConfig, Env};
use dmap_core::lambda::coordinator::Coordinator;
use dmap_emulator as emulator;
use serde_json::{Value, json};

/// The coordinator as its function builds itself on a fresh stack (the template's environment, default
/// parameters), and the stack's data bucket.
async fn deployed() -> (Coordinator, String) {
    let clients = emulator::clients().await;
    let stack = emulator::stack(&clients, 30).await;
    let variables = stack.function("coordinator").unwrap().environment.clone();
    let config = CoordinatorConfig::from_env(&Env(move |name: &str| variables.get(name).cloned()))
        .expect("the template's environment");
    (
        Coordinator::from_config(&clients, config),
        stack.buckets["DataBucket"].clone(),
    )
}

/// The sample S3 event (`events/s3-job-created.json`) for one object.
fn s3_event(bucket: &str, key: &str, size: u64) -> Value {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/s3-job-created.json");
    let mut event: Value = serde_json::from_slice(&std::fs::read(sample).unwrap()).unwrap();
    let s3 = &mut event["Records"][0]["s3"];
    s3["bucket"]["name"] = json!(bucket);
    s3["bucket"]["arn"] = json!(format!("arn:aws:s3:::{bucket}"));
    s3["object"]["key"] = json!(key);
    s3["object"]["size"] = json!(size);
    event
}

fn spec(bucket: &str, job_id: &str, results: &str) -> Value {
    json!({
        "job_id": job_id,
        "item_reader": { "bucket": bucket, "prefix": "inputs/" },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": results }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_refuses_results_outside_the_results_prefix_before_writing() {
    let (coordinator, bucket) = deployed().await;
    let deps = coordinator.deps.clone();
    deps.objects
        .put(&bucket, "inputs/a", b"x".to_vec())
        .await
        .unwrap();
    for outside in ["elsewhere/", "", "result/", "resultsx/"] {
        let err = coordinator
            .handle(spec(&bucket, "outside", outside), &|| true)
            .await
            .expect_err(outside)
            .to_string();
        assert!(
            err.contains("result_writer.prefix") && err.contains("\"results/\""),
            "{outside:?}: {err}"
        );
    }
    // The S3 path refuses the same spec by name and goes on.
    deps.objects
        .put(
            &bucket,
            "jobs/outside.json",
            spec(&bucket, "outside", "elsewhere/")
                .to_string()
                .into_bytes(),
        )
        .await
        .unwrap();
    let event = s3_event(&bucket, "jobs/outside.json", 100);
    let answer = coordinator.handle(event, &|| true).await.unwrap();
    assert_eq!(answer["jobs"], json!([]), "{answer}");
    let reason = answer["refused"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("result_writer.prefix"), "{reason}");

    assert!(
        deps.jobs.get_job("outside").await.unwrap().is_none(),
        "no job was created"
    );
    assert!(
        deps.work_queue.depth().await.unwrap().is_empty(),
        "no batch was sent"
    );
    for prefix in ["elsewhere/", "outside/", "result/", "resultsx/"] {
        let page = deps
            .objects
            .list_page(&bucket, prefix, None, None)
            .await
            .unwrap();
        assert!(page.objects.is_empty(), "{prefix}: {:?}", page.objects);
    }

    // Under the results prefix, deeper or not, a job starts.
    for (job_id, inside) in [("inside", "results/"), ("deeper", "results/team-a/")] {
        let started = coordinator
            .handle(spec(&bucket, job_id, inside), &|| true)
            .await
            .unwrap();
        assert_eq!(started["job_id"], job_id, "{started}");
    }
}

/// A valid count spec of about `bytes` bytes (its size is in the processor's column names, as a real spec's
/// would be; the batch byte limit is raised so that the envelope rule does not refuse it first).
fn spec_of_size(bucket: &str, job_id: &str, bytes: usize) -> Value {
    let mut s = spec(bucket, job_id, "results/");
    s["item_batcher"] = json!({ "max_input_bytes_per_batch": 1_048_576 });
    let base = s.to_string().len() + 80;
    let columns: Vec<String> = (0..bytes.saturating_sub(base) / 1003)
        .map(|i| format!("{i:06}{}", "c".repeat(994)))
        .collect();
    s["processor"] = json!({ "kind": "csv_aggregate", "group_by": "g", "columns": columns });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_refuses_a_spec_object_over_256_kib_by_its_size() {
    let (coordinator, bucket) = deployed().await;
    let deps = coordinator.deps.clone();
    let big = spec_of_size(&bucket, "big-object", 300 * 1024).to_string();
    assert!(big.len() > 262_144, "{}", big.len());
    deps.objects
        .put(&bucket, "jobs/big.json", big.clone().into_bytes())
        .await
        .unwrap();
    // The event's size says it; an event that understates it is caught by the bounded read.
    for event_size in [big.len() as u64, 100] {
        let answer = coordinator
            .handle(s3_event(&bucket, "jobs/big.json", event_size), &|| true)
            .await
            .unwrap();
        assert_eq!(answer["jobs"], json!([]), "{answer}");
        let refused = &answer["refused"][0];
        assert_eq!(refused["source"], format!("s3://{bucket}/jobs/big.json"));
        let reason = refused["reason"].as_str().unwrap();
        assert!(reason.contains("262144"), "names the limit: {reason}");
        if event_size > 100 {
            assert!(
                reason.contains(&big.len().to_string()),
                "names the size: {reason}"
            );
        }
    }
    assert!(deps.jobs.get_job("big-object").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_refuses_a_direct_invoke_over_256_kib_and_stores_one_under_it() {
    let (coordinator, bucket) = deployed().await;
    let deps = coordinator.deps.clone();
    let big = spec_of_size(&bucket, "big-invoke", 300 * 1024);
    let size = big.to_string().len();
    let err = coordinator
        .handle(big, &|| true)
        .await
        .expect_err("too big")
        .to_string();
    assert!(
        err.contains("262144") && err.contains(&size.to_string()),
        "names the size and the limit: {err}"
    );
    assert!(deps.jobs.get_job("big-invoke").await.unwrap().is_none());

    // Just under the cap, the job record (the spec and a few fields) fits DynamoDB's 400 KB item.
    let near = spec_of_size(&bucket, "near-cap", 255 * 1024);
    assert!(near.to_string().len() > 250 * 1024);
    let started = coordinator.handle(near, &|| true).await.unwrap();
    assert_eq!(started["job_id"], "near-cap", "{started}");
    assert!(deps.jobs.get_job("near-cap").await.unwrap().is_some());
}

#[tokio::test]
async fn a_job_record_over_dynamodbs_item_limit_is_refused_not_retried() {
    use dmap_core::PipelineError;
    use dmap_core::ports::{JobRecord, JobStoreError};
    use dmap_core::spec::{Job, JobSpec};

    let (coordinator, bucket) = deployed().await;
    // Past every cap, as a store could be handed one: a spec of 500 KB.
    let spec: JobSpec =
        serde_json::from_value(spec_of_size(&bucket, "huge-record", 500 * 1024)).unwrap();
    let record = JobRecord::new(
        Job {
            job_id: "huge-record".into(),
            spec,
        },
        1,
    );
    let err = coordinator
        .deps
        .jobs
        .create_job(&record)
        .await
        .expect_err("over 400 KB");
    assert!(
        !matches!(err, JobStoreError::Throttled | JobStoreError::Other(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("Item size"), "{err}");
    assert!(!PipelineError::from(err).is_transient());
    // Starting such a job is a refusal (an S3 event's spec is reported refused, not retried).
    use dmap_core::coordinator::{Rerun, start_or_resume};
    let err = start_or_resume(&coordinator.deps, record.job, Rerun::Resume)
        .await
        .expect_err("refused");
    assert!(matches!(err, PipelineError::Refused(_)), "{err:?}");
}
