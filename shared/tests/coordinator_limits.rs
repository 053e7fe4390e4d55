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
