//! Each function's role allows exactly the calls it makes. The three functions' handlers run a job on a stack
//! created from the template, each over its own SDK clients (configured from the environment the template
//! gives it) whose requests are recorded; the test plays the event source mappings over separate clients, as
//! Lambda's pollers do with the function's role. The actions recorded, plus the pollers', must equal the
//! actions the template grants: a missing grant would fail on AWS, an extra one is privilege to remove. The one
//! exception is [`GRANTED_FOR_ANSWERS`]: grants no call of this run needs, kept for how AWS answers the calls
//! that are made, or for calls made only when another fails.
//!
//! The stack lists two functions in `ProcessorFunctions`, and one job runs the `lambda` processor with them, so
//! the worker's and the finalizer's invocations are recorded too; [`InvokeApi`] answers them in Lambda's place.
//! It lists a table in `InputTables`, and one job scans it, so the coordinator's reads of it are recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::AttributeValue;
use dmap_core::Deps;
use dmap_core::aws::{AwsClients, SqsQueue};
use dmap_core::finalizer::FinalizerConfig;
use dmap_core::lambda::config::{
    CoordinatorConfig, Env, FinalizerFunctionConfig, WorkerFunctionConfig,
};
use dmap_core::lambda::coordinator::Coordinator;
use dmap_core::lambda::{finalizer, worker};
use dmap_core::ports::{BatchQueue, read_all};
use dmap_core::worker::WorkerConfig;
use dmap_emulator as emulator;
use dmap_infra::Stack;
use dmap_infra::stack::{Function, LOCAL_ACCOUNT_ID};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Grants that change what AWS answers rather than allow a call: (role, action, why).
const GRANTED_FOR_ANSWERS: &[(&str, &str, &str)] = &[
    (
        "WorkerRole",
        "s3:ListBucket",
        "without it S3 answers a GetObject of a missing key with 403 AccessDenied, not 404 NoSuchKey",
    ),
    (
        "FinalizerRole",
        "s3:AbortMultipartUpload",
        "called only when a multipart upload of failed.jsonl or a range's lines fails, so that its parts are \
         not left billed",
    ),
];

/// The functions the stack lets the `lambda` processor invoke (its `ProcessorFunctions`).
const BATCH_FUNCTION: &str = "batch-fn";
const REDUCER: &str = "reducer-fn";
/// The reducer's response, byte for byte: the job's `result.json` must be exactly this.
const REDUCED: &str = r#"{"reduced":true}"#;

fn env(function: &Function) -> Env<impl Fn(&str) -> Option<String>> {
    let variables = function.environment.clone();
    Env(move |name: &str| variables.get(name).cloned())
}

/// The IAM actions an SDK operation needs.
fn actions(operation: &str) -> Vec<String> {
    // "DynamoDB.GetItem (eventually consistent)" is counted apart, and needs what "DynamoDB.GetItem" does.
    let operation = operation.split(" (").next().unwrap();
    let (service, name) = operation.split_once('.').unwrap();
    let service = service.to_ascii_lowercase();
    let needs: Vec<&str> = match (service.as_str(), name) {
        ("s3", "ListObjectsV2") => vec!["s3:ListBucket"],
        ("s3", "HeadObject") => vec!["s3:GetObject"],
        ("sqs", "SendMessageBatch") => vec!["sqs:SendMessage"],
        ("sqs", "DeleteMessageBatch") => vec!["sqs:DeleteMessage"],
        ("sqs", "ChangeMessageVisibilityBatch") => vec!["sqs:ChangeMessageVisibility"],
        ("lambda", "Invoke") => vec!["lambda:InvokeFunction"],
        _ => return vec![format!("{service}:{name}")],
    };
    needs.into_iter().map(str::to_owned).collect()
}

fn recorded(clients: &AwsClients) -> BTreeSet<String> {
    clients
        .usage
        .requests()
        .keys()
        .flat_map(|op| actions(op))
        .collect()
}

/// The actions a role grants (besides writing its own logs).
fn granted(stack: &Stack, role: &str) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for statement in stack.role_statements(role).unwrap() {
        if statement["Sid"] == "Logs" {
            continue;
        }
        match &statement["Action"] {
            Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()))
            }
            one => {
                actions.insert(one.as_str().unwrap().to_owned());
            }
        }
    }
    actions
}

/// Lambda's Invoke API, played only so that the worker's and the finalizer's invocations of the `lambda`
/// processor's functions are made over HTTP and recorded like their other calls: the two functions answer at
/// once (the batch function with its batch's item count, the reducer with [`REDUCED`]), any other name is
/// unknown, as Lambda answers. Every invocation is kept as (function, payload).
struct InvokeApi {
    endpoint: String,
    invocations: Arc<Mutex<Vec<(String, Value)>>>,
}

impl InvokeApi {
    /// Serves on a free port, on the test's runtime (so it stops with the test).
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let invocations = Arc::new(Mutex::new(Vec::new()));
        let kept = invocations.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let kept = kept.clone();
                        async move { Ok::<_, Infallible>(invoke(request, &kept).await) }
                    });
                    // A connection that breaks only ends itself; the SDK sees the error.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            invocations,
        }
    }

    fn invocations(&self) -> Vec<(String, Value)> {
        self.invocations.lock().unwrap().clone()
    }
}

/// `POST /2015-03-31/functions/{name}/invocations`, answered as Lambda answers a RequestResponse invocation.
async fn invoke(
    request: Request<Incoming>,
    kept: &Mutex<Vec<(String, Value)>>,
) -> Response<Full<Bytes>> {
    let name = (request.method() == Method::POST)
        .then(|| request.uri().path().strip_prefix("/2015-03-31/functions/"))
        .flatten()
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .unwrap_or_default()
        .to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let response = match name.as_str() {
        BATCH_FUNCTION => {
            Some(json!({ "n": payload["Items"].as_array().map_or(0, Vec::len) }).to_string())
        }
        REDUCER => Some(REDUCED.to_owned()),
        _ => None,
    };
    kept.lock().unwrap().push((name, payload));
    let answer = Response::builder().header("Content-Type", "application/json");
    match response {
        Some(response) => answer
            .status(StatusCode::OK)
            .body(Full::new(response.into())),
        // The SDK reads the error's code from this header.
        None => answer
            .status(StatusCode::NOT_FOUND)
            .header("x-amzn-ErrorType", "ResourceNotFoundException")
            .body(Full::new(Bytes::from_static(
                br#"{"Type":"User","message":"Function not found"}"#,
            ))),
    }
    .unwrap()
}

/// A handler's answer that retries nothing.
/// Delivers every batch waiting in the work queue to the worker's handler, as its event source mapping would.
async fn deliver_work(poller: &AwsClients, url: &str, deps: &Deps, config: WorkerConfig) {
    let batches = poll(poller, url).await.unwrap();
    all_handled(worker::handle(deps, config, &batches).await.unwrap());
}

/// Delivers the finalize trigger waiting in the finalize queue (`what`: why there must be one) to the
/// finalizer's handler, then what that sends there (a tree's range merges, and the trigger the last sends),
/// until the queue is empty.
async fn deliver_trigger(
    poller: &AwsClients,
    url: &str,
    deps: &Deps,
    config: FinalizerConfig,
    what: &str,
) {
    let mut event = Some(poll(poller, url).await.expect(what));
    while let Some(messages) = event {
        all_handled(finalizer::handle(deps, config, &messages).await.unwrap());
        event = poll(poller, url).await;
    }
}

fn all_handled(response: SqsBatchResponse) {
    assert!(
        response.batch_item_failures.is_empty(),
        "records left for retry: {:?}",
        response.batch_item_failures
    );
}

/// Plays an event source mapping once, over the pollers' own clients: `None` if the queue was empty.
async fn poll(poller: &AwsClients, url: &str) -> Option<SqsEvent> {
    let event = emulator::drain_as_event(Arc::new(SqsQueue::new(poller.sqs.clone(), url))).await;
    (!event.records.is_empty()).then_some(event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_allows_exactly_the_calls_its_function_makes() {
    let setup = emulator::clients().await;
    // The two functions the `lambda` processor may invoke, in the stack's own region and account: the
    // coordinator resolves a job's bare function names into these.
    let mut options = emulator::stack_options(30);
    let arn = |name: &str| {
        format!(
            "arn:aws:lambda:{}:{LOCAL_ACCOUNT_ID}:function:{name}",
            options.region
        )
    };
    let processor_functions = [arn(BATCH_FUNCTION), arn(REDUCER)];
    options
        .parameters
        .insert("ProcessorFunctions".into(), processor_functions.join(","));
    // A table for a dynamodb_scan job, listed in the stack's InputTables.
    let table = emulator::table(&setup, "lp-table", 50).await;
    options
        .parameters
        .insert("InputTables".into(), table.clone());
    // The first job's 11 batches are finalized as a tree of two ranges, so the finalizer's listing of its
    // merged ranges is recorded too.
    options
        .parameters
        .insert("FinalizeRangeBatches".into(), "8".into());
    let stack = emulator::create_stack(&setup, &options).await;
    let bucket = stack.buckets["DataBucket"].clone();
    let url = |id: &str| stack.queues[id].url.clone().unwrap();
    // 1,001 objects: two listing pages, so the listing can be handed over.
    dmap_emulator::put_objects(
        &setup.s3,
        &bucket,
        (0..1001).map(|i| (format!("inputs/k{i:04}"), vec![b'x'; i % 7])),
    )
    .await;
    let spec = json!({
        "item_reader": { "bucket": bucket, "prefix": "inputs/" },
        "item_batcher": { "max_items_per_batch": 100 },
        "processor": { "kind": "count" },
        "tolerated_failure_count": 100,
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    });
    setup
        .s3
        .put_object()
        .bucket(&bucket)
        .key("jobs/weather.json")
        .body(spec.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();

    let function = |binary: &str| stack.function(binary).unwrap().clone();
    let (coordinator_fn, worker_fn, finalizer_fn) = (
        function("coordinator"),
        function("worker"),
        function("finalizer"),
    );
    // Each function's Lambda client reaches the stand-in, the coordinator's too: an invocation it should not
    // make is then recorded against its role rather than failing on the way to AWS.
    let invoke_api = InvokeApi::start().await;
    let (coordinator_clients, worker_clients, finalizer_clients, poller) = (
        emulator::clients_invoking(&invoke_api.endpoint).await,
        emulator::clients_invoking(&invoke_api.endpoint).await,
        emulator::clients_invoking(&invoke_api.endpoint).await,
        emulator::clients().await,
    );

    // The coordinator, as its binary builds itself: an S3 event; out of time after the first page, it hands
    // the listing over, and resumes from its continuation queue.
    let config = CoordinatorConfig::from_env(&env(&coordinator_fn)).unwrap();
    let coordinator = Coordinator::from_config(&coordinator_clients, config);
    // The sample S3 event, for this stack's bucket and spec.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/s3-job-created.json");
    let mut s3_event: Value = serde_json::from_slice(&std::fs::read(sample).unwrap()).unwrap();
    let object = &mut s3_event["Records"][0]["s3"];
    object["bucket"]["name"] = json!(bucket);
    object["bucket"]["arn"] = json!(format!("arn:aws:s3:::{bucket}"));
    object["object"]["key"] = json!("jobs/weather.json");
    let started = coordinator.handle(s3_event, &|| false).await.unwrap();
    assert_eq!(started["jobs"][0]["listing"], "handed over", "{started}");
    let handed_over = poll(&poller, &url("ContinueQueue")).await.unwrap();
    let resumed = coordinator
        .handle(serde_json::to_value(&handed_over).unwrap(), &|| true)
        .await
        .unwrap();
    assert!(
        resumed["batchItemFailures"].as_array().unwrap().is_empty(),
        "{resumed}"
    );

    // One batch goes to the dead-letter queue (as a redrive would move it) instead of to a worker.
    let work = SqsQueue::new(poller.sqs.clone(), url("WorkQueue"));
    let dead = work
        .receive(1, Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);
    work.delete(&dead.receipt_handle).await.unwrap();
    SqsQueue::new(poller.sqs.clone(), url("WorkDeadLetterQueue"))
        .send_batch(&[dmap_core::ports::OutgoingMessage {
            id: "0".into(),
            body: dead.body.clone(),
            group: None,
        }])
        .await
        .unwrap();

    let config = WorkerFunctionConfig::from_env(&env(&worker_fn)).unwrap();
    let worker_deps = Deps::aws(&worker_clients, &config.common.resources());
    // Parts over the inline size are written as objects (`s3:PutObject`): this run's are small, so every part
    // is made an object, lest the role's grant go unexercised.
    let worker_config = WorkerConfig {
        item_concurrency: config.item_concurrency,
        inline_part_bytes: 0,
        ..WorkerConfig::default()
    };
    deliver_work(&poller, &url("WorkQueue"), &worker_deps, worker_config).await;

    let config = FinalizerFunctionConfig::from_env(&env(&finalizer_fn)).unwrap();
    let finalizer_deps = Deps::aws(&finalizer_clients, &config.common.resources());
    let finalizer_config = config.finalizer();
    assert_eq!(
        finalizer_config.range_batches, 8,
        "the stack's FinalizeRangeBatches"
    );
    let dead_letters = poll(&poller, &url("WorkDeadLetterQueue")).await.unwrap();
    all_handled(
        finalizer::handle(&finalizer_deps, finalizer_config, &dead_letters)
            .await
            .unwrap(),
    );
    deliver_trigger(
        &poller,
        &url("FinalizeQueue"),
        &finalizer_deps,
        finalizer_config,
        "a finalize trigger",
    )
    .await;
    let job_id = started["jobs"][0]["job_id"].as_str().unwrap();
    let manifest = read_all(
        finalizer_deps.objects.as_ref(),
        &bucket,
        &format!("results/{job_id}/manifest.json"),
    )
    .await
    .expect("the job finished");
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["items"]["total"], 1001, "{manifest}");
    assert_eq!(
        manifest["items"]["failed"], 100,
        "the dead-lettered batch: {manifest}"
    );

    // A job started by a direct invocation, its batches delivered to the worker, whose recording of the last
    // one triggers the finalizer.
    let run_job = async |spec: Value| {
        let started = coordinator.handle(spec, &|| true).await.unwrap();
        deliver_work(&poller, &url("WorkQueue"), &worker_deps, worker_config).await;
        deliver_trigger(
            &poller,
            &url("FinalizeQueue"),
            &finalizer_deps,
            finalizer_config,
            "the worker's finalize trigger",
        )
        .await;
        started
    };

    // A second job, without dead letters: its last batch is recorded by a worker, which triggers the
    // finalizer itself.
    let second = json!({
        "job_id": "second",
        "item_reader": { "bucket": bucket, "prefix": "inputs/k000" },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    });
    run_job(second).await;
    setup
        .s3
        .head_object()
        .bucket(&bucket)
        .key("results/second/manifest.json")
        .send()
        .await
        .expect("the second job finished");

    // The schedule's sweep. An entry that a creation which died midway left in the active-job registry is
    // forgotten; a third job whose finalize trigger was lost is finalized again.
    setup
        .dynamodb
        .put_item()
        .table_name(&stack.tables["JobsTable"])
        .item("pk", AttributeValue::S("ACTIVE".into()))
        .item("sk", AttributeValue::S("JOB#ghost".into()))
        .send()
        .await
        .unwrap();
    let third = json!({
        "job_id": "third",
        "item_reader": { "bucket": bucket, "prefix": "inputs/k001" },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    });
    coordinator.handle(third, &|| true).await.unwrap();
    deliver_work(&poller, &url("WorkQueue"), &worker_deps, worker_config).await;
    poll(&poller, &url("FinalizeQueue"))
        .await
        .expect("a trigger, lost");
    let swept = coordinator
        .handle(json!({ "sweep": { "stale_after_minutes": 0 } }), &|| true)
        .await
        .unwrap();
    assert_eq!(
        swept["stuck"],
        json!([{ "job_id": "third", "status": "FINALIZING", "finding": "FinalizeLost", "repair": "FinalizerTriggered" }]),
        "{swept}"
    );
    deliver_trigger(
        &poller,
        &url("FinalizeQueue"),
        &finalizer_deps,
        finalizer_config,
        "the sweeper's trigger",
    )
    .await;
    setup
        .s3
        .head_object()
        .bucket(&bucket)
        .key("results/third/manifest.json")
        .send()
        .await
        .expect("the third job finished");

    // A job of the `lambda` processor, its functions named as a spec names them: the coordinator resolves
    // them into the listed ARNs and accepts the job, a worker invokes the batch function, and the finalizer
    // the reducer.
    let invoked = json!({
        "job_id": "invoked",
        "item_reader": { "bucket": bucket, "prefix": "inputs/k000" },
        "processor": {
            "kind": "lambda",
            "function": BATCH_FUNCTION,
            "batch_input": { "Bucket": bucket },
            "reducer": REDUCER
        },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    });
    // A function the stack does not list is refused (a direct invocation answers a refusal with an error).
    let mut unlisted = invoked.clone();
    unlisted["processor"]["function"] = json!("other-fn");
    let refused = coordinator.handle(unlisted, &|| true).await.unwrap_err();
    assert!(
        refused.to_string().starts_with("processor.function: "),
        "{refused}"
    );
    let accepted = run_job(invoked).await;
    assert_eq!(accepted["job_id"], "invoked", "{accepted}");
    let read = |key: &'static str| {
        let (objects, bucket) = (finalizer_deps.objects.clone(), bucket.clone());
        async move { read_all(objects.as_ref(), &bucket, key).await.expect(key) }
    };
    let manifest: Value =
        serde_json::from_slice(&read("results/invoked/manifest.json").await).unwrap();
    assert_eq!(manifest["status"], "SUCCEEDED", "{manifest}");
    assert_eq!(
        String::from_utf8(read("results/invoked/result.json").await).unwrap(),
        REDUCED,
        "result.json is the reducer's response, verbatim"
    );
    setup
        .s3
        .head_object()
        .bucket(&bucket)
        .key("results/invoked/map-results/manifest.json")
        .send()
        .await
        .expect("the executions' manifest");
    // Ten items (k0000 to k0009), one batch: one invocation of each function, under the names the spec gave.
    let invocations = invoke_api.invocations();
    let names: Vec<&str> = invocations.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, [BATCH_FUNCTION, REDUCER], "{invocations:?}");
    assert_eq!(invocations[0].1["BatchInput"], json!({ "Bucket": bucket }));
    assert_eq!(invocations[0].1["Items"].as_array().unwrap().len(), 10);

    // A job of the dynamodb_scan reader over the listed table: the coordinator describes it and scans it,
    // on a grant of exactly those two actions on that table, in the stack's region.
    let scanned = json!({
        "job_id": "scanned",
        "item_reader": { "kind": "dynamodb_scan", "table": table, "segments": 2 },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": bucket, "prefix": "results/" }
    });
    run_job(scanned).await;
    let manifest: Value =
        serde_json::from_slice(&read("results/scanned/manifest.json").await).unwrap();
    assert_eq!(manifest["items"]["succeeded"], 50, "{manifest}");
    let statement = stack
        .role_statements("CoordinatorRole")
        .unwrap()
        .into_iter()
        .find(|s| s["Sid"] == "ScanInputTables")
        .expect("the coordinator may scan the listed table");
    assert_eq!(
        statement["Resource"],
        json!([format!("arn:aws:dynamodb:*:*:table/{table}")])
    );
    assert_eq!(
        statement["Condition"],
        json!({ "StringEquals": { "aws:RequestedRegion": options.region } })
    );

    // The invocations' grant: the two listed functions and any version or alias of each, nothing broader, to
    // the worker and the finalizer; the coordinator invokes nothing and may not.
    let mut expected: Vec<String> = processor_functions
        .iter()
        .flat_map(|arn| [arn.clone(), format!("{arn}:*")])
        .collect();
    expected.sort();
    for role in ["WorkerRole", "FinalizerRole"] {
        let statement = stack
            .role_statements(role)
            .unwrap()
            .into_iter()
            .find(|s| s["Sid"] == "InvokeProcessorFunctions")
            .unwrap_or_else(|| panic!("{role} may invoke the processor's functions"));
        assert_eq!(statement["Action"], "lambda:InvokeFunction", "{role}");
        let mut resources: Vec<String> = statement["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        resources.sort();
        assert_eq!(resources, expected, "{role}");
    }
    let coordinator_grants = granted(&stack, "CoordinatorRole");
    assert!(
        !coordinator_grants.iter().any(|a| a.starts_with("lambda:")),
        "{coordinator_grants:?}"
    );

    // What each role must allow: the function's own calls, its pollers' (on the queues that trigger it), and
    // for the coordinator, Lambda sending failed asynchronous invokes to its dead-letter queue.
    let pollers = [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ];
    let mut needed = BTreeMap::new();
    for (role, clients, extra) in [
        (
            "CoordinatorRole",
            &coordinator_clients,
            vec!["sqs:SendMessage"],
        ),
        ("WorkerRole", &worker_clients, vec![]),
        ("FinalizerRole", &finalizer_clients, vec![]),
    ] {
        let mut actions = recorded(clients);
        actions.extend(pollers.iter().chain(&extra).map(|a| a.to_string()));
        needed.insert(role, actions);
    }
    for (role, action, why) in GRANTED_FOR_ANSWERS {
        let actions = needed.get_mut(role).unwrap();
        assert!(
            !actions.contains(*action),
            "{role} calls {action}: it no longer needs listing in GRANTED_FOR_ANSWERS"
        );
        assert!(
            granted(&stack, role).contains(*action),
            "{role} must be granted {action}: {why}"
        );
        actions.insert(action.to_string());
    }
    for (role, actions) in &needed {
        assert_eq!(
            &granted(&stack, role),
            actions,
            "{role}: granted (left) vs called (right); calls recorded: {:?}",
            [&coordinator_clients, &worker_clients, &finalizer_clients].map(|c| c.usage.requests())
        );
    }
}
