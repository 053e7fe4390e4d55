//! The whole-table migration pattern end to end: a `dynamodb_scan` job over a moto table hands its items to
//! the `table-migration` function (this crate's binary, on a local Invoke API under `cargo lambda watch`),
//! which writes each item back with its derived attribute. The first run migrates every item once; the same
//! migration applied again writes nothing and leaves the table exactly as the first run left it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{InvokeApi, lambda_client};
use dmap_core::Deps;
use dmap_core::aws::LambdaInvoker;
use dmap_core::aws::dynamo_json::to_json;
use dmap_core::outcome::{Manifest, TerminalStatus};
use dmap_core::ports::read_all;
use dmap_core::runner::{self, RunnerConfig};
use dmap_core::spec::JobSpec;
use dmap_example_lambda_processor::migration::MigrationResponse;
use serde_json::{Value, json};

const FUNCTION: &str = "table-migration";
/// Items in the table: 4 segments of 105 to 164 items each (moto's split), so every segment takes a second round
/// of reads; 20 batches of 25.
const ITEMS: usize = 500;

/// Every item of the table as plain JSON, by key.
async fn snapshot(clients: &dmap_core::aws::AwsClients, table: &str) -> BTreeMap<String, Value> {
    let mut items = BTreeMap::new();
    let mut start = None;
    loop {
        let page = clients
            .dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let json: Value = serde_json::from_str(&to_json(item).unwrap()).unwrap();
            items.insert(format!("{}/{}", json["pk"], json["sk"]), json);
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// The batches' responses, summed from `map-results/`'s SUCCEEDED records.
async fn responses(deps: &Deps, m: &Manifest) -> MigrationResponse {
    let read = |key: String| async move {
        read_all(deps.objects.as_ref(), &m.bucket, &key)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let results: Value =
        serde_json::from_slice(&read(m.map_results.clone().expect("map-results/")).await).unwrap();
    let mut total = MigrationResponse::default();
    for file in results["ResultFiles"]["SUCCEEDED"].as_array().unwrap() {
        let records: Vec<Value> =
            serde_json::from_slice(&read(file["Key"].as_str().unwrap().to_owned()).await).unwrap();
        for record in records {
            let response: MigrationResponse =
                serde_json::from_str(record["Output"].as_str().unwrap()).unwrap();
            total.migrated += response.migrated;
            total.unchanged += response.unchanged;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_applied_twice_changes_nothing_the_second_time() {
    let clients = dmap_emulator::clients().await;
    let bucket = dmap_emulator::bucket(&clients, "migration").await;
    let table = dmap_emulator::table(&clients, "migration", ITEMS).await;
    let api = InvokeApi::start(
        &[(FUNCTION, env!("CARGO_BIN_EXE_table-migration"))],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_DYNAMODB", dmap_emulator::endpoint()),
            ("RUST_LOG", "warn"),
        ],
    );
    let deps = Deps {
        functions: Some(Arc::new(LambdaInvoker::new(lambda_client(&api.endpoint())))),
        ..dmap_emulator::aws_deps(&clients, 5).await
    };
    let config = RunnerConfig {
        concurrency: 4,
        visibility_timeout: Duration::from_secs(5),
        receive_wait: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let run = |job_id: &str| {
        let spec = json!({
            "job_id": job_id,
            "item_reader": { "kind": "dynamodb_scan", "table": table, "segments": 4 },
            "item_batcher": { "max_items_per_batch": 25 },
            "processor": {
                "kind": "lambda",
                "function": FUNCTION,
                "batch_input": { "Table": table, "Key": ["pk", "sk"] }
            },
            "result_writer": { "bucket": bucket, "prefix": "results/" }
        });
        let job = JobSpec::parse(spec.to_string().as_bytes()).unwrap();
        let (deps, config) = (&deps, &config);
        async move {
            let report = runner::run(deps, job, config, &|_| {})
                .await
                .expect("the migration runs");
            assert_eq!(report.manifest.status, TerminalStatus::Succeeded);
            assert_eq!(report.manifest.items.succeeded, ITEMS as u64);
            responses(deps, &report.manifest).await
        }
    };

    let before = snapshot(&clients, &table).await;
    assert_eq!(before.len(), ITEMS);
    assert_eq!(
        run("migrate").await,
        MigrationResponse {
            migrated: ITEMS as u64,
            unchanged: 0
        },
        "every item migrated, once"
    );
    let migrated = snapshot(&clients, &table).await;
    for (key, item) in &migrated {
        let mut expected = before[key].clone();
        let upper = expected["name"].as_str().unwrap().to_uppercase();
        expected["name_upper"] = json!(upper);
        expected["schema_version"] = json!(2);
        assert_eq!(item, &expected, "{key}: only the derived attributes added");
    }

    assert_eq!(
        run("migrate-again").await,
        MigrationResponse {
            migrated: 0,
            unchanged: ITEMS as u64
        },
        "nothing written the second time"
    );
    assert_eq!(
        snapshot(&clients, &table).await,
        migrated,
        "the table as the first run left it"
    );
}
