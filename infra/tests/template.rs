//! `template.yaml` against the code it deploys: the environment each function reads, the timeouts and redrive
//! rules Lambda's SQS triggers need, the event sources, the build settings, and the policies' scope.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dmap_core::aws::resources::{DEFAULT_COUNTER_SHARDS, TTL_ATTRIBUTE};
use dmap_core::lambda::config::{COMMON_VARS, COORDINATOR_VARS, FINALIZER_VARS, WORKER_VARS};
use dmap_infra::{Stack, StackOptions, Template};
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn plan(parameters: &[(&str, &str)]) -> Stack {
    let mut options = StackOptions::new("st");
    options.parameters = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Stack::plan(&Template::bundled(), &options).expect("the template resolves")
}

/// What the template sets in a function's environment: `Globals` and its own.
fn variables_set(template: &Template, function: &str) -> BTreeSet<String> {
    let own = &template.resource(function).unwrap()["Properties"]["Environment"]["Variables"];
    let globals = &template.function_globals()["Environment"]["Variables"];
    [globals, own]
        .iter()
        .flat_map(|v| v.as_object().into_iter().flatten().map(|(k, _)| k.clone()))
        .collect()
}

#[test]
fn every_variable_a_function_reads_is_set_and_every_one_set_is_read() {
    let template = Template::bundled();
    for (function, own) in [
        ("CoordinatorFunction", COORDINATOR_VARS),
        ("WorkerFunction", WORKER_VARS),
        ("FinalizerFunction", FINALIZER_VARS),
    ] {
        let read: BTreeSet<String> = COMMON_VARS
            .iter()
            .chain(own)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(variables_set(&template, function), read, "{function}");
    }
    // The log level reaches the functions through Lambda's LoggingConfig (AWS_LAMBDA_LOG_LEVEL).
    let logging = &template.function_globals()["LoggingConfig"];
    assert_eq!(logging["ApplicationLogLevel"], json!({"Ref": "LogLevel"}));
    assert_eq!(logging["LogFormat"], "JSON");
}

#[test]
fn a_variable_the_code_does_not_read_is_caught() {
    let text = dmap_infra::template::BUNDLED.replace(
        "DMAP_ITEM_CONCURRENCY: !Ref ItemConcurrency",
        "DMAP_ITEM_CONCURRENCY: !Ref ItemConcurrency\n          DMAP_UNREAD: x",
    );
    let template = Template::parse(&text).unwrap();
    let read: BTreeSet<String> = COMMON_VARS
        .iter()
        .chain(WORKER_VARS)
        .map(|v| v.to_string())
        .collect();
    assert_ne!(variables_set(&template, "WorkerFunction"), read);
}

#[test]
fn each_sqs_trigger_follows_lambdas_rules() {
    let stack = plan(&[]);
    let template = Template::bundled();
    let mut seen = 0;
    for function in &stack.functions {
        for source in &function.sqs_sources {
            seen += 1;
            let (id, _) = stack
                .queues
                .iter()
                .find(|(_, q)| q.name == source.queue)
                .unwrap();
            let properties = stack.properties(id).unwrap();
            let visibility: u32 = properties["VisibilityTimeout"].to_string().parse().unwrap();
            assert!(
                visibility >= 6 * function.timeout_secs,
                "{id}: visibility {visibility} s < 6 x {} s ({})",
                function.timeout_secs,
                function.binary
            );
            assert!(
                source.report_batch_item_failures,
                "{}: {} without ReportBatchItemFailures",
                function.binary, source.event
            );
            let receives: u32 = properties["RedrivePolicy"]["maxReceiveCount"]
                .as_str()
                .map(|s| s.parse().unwrap())
                .or(properties["RedrivePolicy"]["maxReceiveCount"]
                    .as_u64()
                    .map(|n| n as u32))
                .unwrap_or_else(|| panic!("{id} has no redrive policy"));
            assert!(receives >= 5, "{id}: maxReceiveCount {receives} < 5");
        }
    }
    assert_eq!(
        seen, 4,
        "continuation, work, finalize and work-DLQ triggers"
    );
    for (id, _) in template.resources_of_type("AWS::SQS::Queue") {
        let properties = &template.resource(id).unwrap()["Properties"];
        assert!(
            properties["SqsManagedSseEnabled"] == json!(true)
                || properties.get("KmsMasterKeyId").is_some(),
            "{id} is not encrypted at rest"
        );
    }
}

#[test]
fn the_worker_trigger_and_the_notification_come_from_parameters() {
    let stack = plan(&[
        ("WorkerBatchSize", "7"),
        ("WorkerMaxConcurrency", "42"),
        ("JobsPrefix", "specs/"),
    ]);
    let worker = stack.function("worker").unwrap();
    assert_eq!(worker.sqs_sources.len(), 1);
    assert_eq!(worker.sqs_sources[0].queue, "st-work");
    assert_eq!(worker.sqs_sources[0].batch_size, 7);
    assert_eq!(worker.sqs_sources[0].maximum_concurrency, Some(42));
    let coordinator = stack.function("coordinator").unwrap();
    let notification = &coordinator.s3_sources[..];
    assert_eq!(notification.len(), 1);
    assert_eq!(notification[0].bucket, stack.buckets["DataBucket"]);
    assert_eq!(
        (
            notification[0].prefix.as_str(),
            notification[0].suffix.as_str()
        ),
        ("specs/", ".json")
    );
    assert_eq!(notification[0].events, ["s3:ObjectCreated:*"]);
    // The coordinator's own check uses the same prefix.
    let template = Template::bundled();
    let env = &template.resource("CoordinatorFunction").unwrap()["Properties"]["Environment"]["Variables"];
    assert_eq!(env["DMAP_JOBS_PREFIX"], json!({"Ref": "JobsPrefix"}));
}

#[test]
fn the_table_and_defaults_match_the_code() {
    let template = Template::bundled();
    let table = &template.resource("JobsTable").unwrap()["Properties"];
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"],
        TTL_ATTRIBUTE
    );
    assert_eq!(table["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    // DynamoJobStore's keys: string pk (job) and sk (item within the job).
    assert_eq!(
        table["KeySchema"],
        json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    );
    let defaults = plan(&[]);
    assert_eq!(
        defaults.context.parameter("CounterShards").unwrap(),
        DEFAULT_COUNTER_SHARDS.to_string()
    );
}

#[test]
fn functions_are_rust_on_arm64_built_by_cargo_lambda_from_their_crate() {
    let template = Template::bundled();
    let globals = template.function_globals();
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"], json!(["arm64"]));
    assert_eq!(globals["Handler"], "bootstrap");
    let mut binaries = Vec::new();
    for (id, function) in template.resources_of_type("AWS::Serverless::Function") {
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{id}"
        );
        for key in ["Runtime", "Architectures", "Handler"] {
            assert!(
                function["Properties"].get(key).is_none(),
                "{id} overrides {key}"
            );
        }
        let code_uri = function["Properties"]["CodeUri"].as_str().unwrap();
        let manifest = std::fs::read_to_string(repo().join(code_uri).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{id}: CodeUri {code_uri} has no Cargo.toml: {e}"));
        let binary = code_uri.rsplit('/').next().unwrap();
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{id}: {code_uri} must build one binary named {binary}"
        );
        binaries.push(binary.to_owned());
    }
    binaries.sort();
    assert_eq!(binaries, ["coordinator", "finalizer", "worker"]);
}

#[test]
fn every_checkov_suppression_says_why() {
    let template = Template::bundled();
    let mut count = 0;
    for (id, resource) in template.resources() {
        for skip in resource["Metadata"]["checkov"]["skip"]
            .as_array()
            .into_iter()
            .flatten()
        {
            count += 1;
            let comment = skip["comment"].as_str().unwrap_or_default();
            assert!(
                skip["id"].as_str().is_some_and(|i| i.starts_with("CKV")) && comment.len() > 30,
                "{id}: a suppression without a reason: {skip}"
            );
        }
    }
    assert!(count > 0);
}

fn listed(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect(),
        Value::String(s) => vec![s.clone()],
        other => panic!("not a string or list: {other}"),
    }
}

#[test]
fn policies_name_our_resources_and_reads_only_the_allowed_buckets() {
    let bucket = "st-data-123456789012-us-east-1";
    for (inputs, expected_reads) in [
        ("", vec![format!("arn:aws:s3:::{bucket}/*")]),
        (
            "in-a,in-b",
            vec![
                format!("arn:aws:s3:::{bucket}/*"),
                "arn:aws:s3:::in-a/*".to_owned(),
                "arn:aws:s3:::in-b/*".to_owned(),
            ],
        ),
    ] {
        let stack = plan(&[("InputBuckets", inputs)]);
        let mut reads_by_role = BTreeMap::new();
        for role in ["CoordinatorRole", "WorkerRole", "FinalizerRole"] {
            for statement in stack.role_statements(role).unwrap() {
                assert_eq!(statement["Effect"], "Allow");
                let actions = listed(&statement["Action"]);
                let resources = listed(&statement["Resource"]);
                for action in &actions {
                    assert!(!action.contains('*'), "{role}: wildcard action {action}");
                }
                for resource in &resources {
                    assert!(
                        resource.contains(":st-")
                            || resource.contains(":::in-")
                            || resource.contains("/st-"),
                        "{role}: {resource} is not one of the stack's resources or an input bucket"
                    );
                }
                if actions.contains(&"s3:GetObject".to_owned()) {
                    reads_by_role.insert(role, resources);
                }
            }
        }
        // The coordinator reads specs and the inputs that the s3_object and s3_inventory readers read: the
        // same objects as the worker.
        assert_eq!(
            reads_by_role["CoordinatorRole"], expected_reads,
            "inputs {inputs:?}"
        );
        assert_eq!(
            reads_by_role["WorkerRole"], expected_reads,
            "inputs {inputs:?}"
        );
        // The finalizer reads only the parts and results in the data bucket.
        assert_eq!(
            reads_by_role["FinalizerRole"],
            [format!("arn:aws:s3:::{bucket}/results/*")]
        );
        // The coordinator's allow-list is the same set of buckets.
        let coordinator = stack.function("coordinator").unwrap();
        assert!(
            coordinator.environment.is_empty(),
            "plan leaves environments to create"
        );
    }
}

/// The resources `role`'s statements allow `action` on, in the template's order.
fn resources_allowing(stack: &Stack, role: &str, action: &str) -> Vec<String> {
    stack
        .role_statements(role)
        .unwrap()
        .iter()
        .filter(|s| listed(&s["Action"]).iter().any(|a| a == action))
        .flat_map(|s| listed(&s["Resource"]))
        .collect()
}

#[test]
fn functions_write_only_under_the_results_prefix_and_the_coordinator_reads_specs_and_inputs() {
    let bucket = "arn:aws:s3:::st-data-123456789012-us-east-1";
    for (results, jobs) in [("results/", "jobs/"), ("out/dmap/", "specs/")] {
        let stack = plan(&[
            ("InputBuckets", "in-a,in-b"),
            ("ResultsPrefix", results),
            ("JobsPrefix", jobs),
        ]);
        let results_only = [format!("{bucket}/{results}*")];
        for role in ["WorkerRole", "FinalizerRole"] {
            assert_eq!(
                resources_allowing(&stack, role, "s3:PutObject"),
                results_only,
                "{role} writes only results (never a spec under {jobs})"
            );
        }
        assert_eq!(
            resources_allowing(&stack, "FinalizerRole", "s3:GetObject"),
            results_only,
            "the finalizer reads parts, which are results"
        );
        assert!(resources_allowing(&stack, "CoordinatorRole", "s3:PutObject").is_empty());
        // The coordinator reads specs (under the jobs prefix of the data bucket) and the objects its readers
        // read (an s3_object's rows, an inventory report): the data bucket's and the input buckets'.
        assert_eq!(
            resources_allowing(&stack, "CoordinatorRole", "s3:GetObject"),
            [
                format!("{bucket}/*"),
                "arn:aws:s3:::in-a/*".to_owned(),
                "arn:aws:s3:::in-b/*".to_owned()
            ]
        );
        let buckets = [
            bucket.to_owned(),
            "arn:aws:s3:::in-a".to_owned(),
            "arn:aws:s3:::in-b".to_owned(),
        ];
        assert_eq!(
            resources_allowing(&stack, "CoordinatorRole", "s3:ListBucket"),
            buckets
        );
        // The worker lists nothing, but may: S3 then answers 404 NoSuchKey, not 403, for a missing object.
        assert_eq!(
            resources_allowing(&stack, "WorkerRole", "s3:ListBucket"),
            buckets
        );
        assert_eq!(
            resources_allowing(&stack, "WorkerRole", "s3:GetObject"),
            [
                format!("{bucket}/*"),
                "arn:aws:s3:::in-a/*".to_owned(),
                "arn:aws:s3:::in-b/*".to_owned(),
            ]
        );
    }
    // The coordinator refuses specs that write elsewhere, by the same parameter.
    let template = Template::bundled();
    let env = &template.resource("CoordinatorFunction").unwrap()["Properties"]["Environment"]["Variables"];
    assert_eq!(env["DMAP_RESULTS_PREFIX"], json!({"Ref": "ResultsPrefix"}));
}

#[test]
fn bucket_and_prefix_parameters_refuse_wildcards_and_arns() {
    let planned = |name: &str, value: &str| {
        let mut options = StackOptions::new("st");
        options.parameters = [(name.to_owned(), value.to_owned())].into();
        Stack::plan(&Template::bundled(), &options).map(drop)
    };
    for bad in ["*", "arn:aws:s3:::x", "in-a,*", "in-a/logs", "In-A"] {
        let err = planned("InputBuckets", bad).expect_err(bad);
        assert!(err.to_string().contains("InputBuckets"), "{bad}: {err}");
    }
    for good in ["", "a-b,c.d", "in-a, in-b"] {
        planned("InputBuckets", good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    // A wildcard in a prefix would widen the policies that end in `<prefix>*`.
    for (name, bad) in [
        ("ResultsPrefix", "*/"),
        ("ResultsPrefix", "results"),
        ("ResultsPrefix", "/results/"),
        ("JobsPrefix", "jobs*/"),
    ] {
        let err = planned(name, bad).expect_err(bad);
        assert!(err.to_string().contains(name), "{name} {bad}: {err}");
    }
    planned("ResultsPrefix", "out/dmap/").unwrap();
}

#[test]
fn only_the_listed_processor_functions_may_be_invoked() {
    let roles = ["CoordinatorRole", "WorkerRole", "FinalizerRole"];
    let lambda_actions = |stack: &Stack, role: &str| -> Vec<String> {
        stack
            .role_statements(role)
            .unwrap()
            .iter()
            .flat_map(|s| listed(&s["Action"]))
            .filter(|a| a.starts_with("lambda:"))
            .collect()
    };
    // Without the parameter no role may invoke anything, and the finalizer, which then never handles a
    // `lambda` batch's dead letter, lists only its merged ranges, under the results prefix.
    let stack = plan(&[]);
    for role in roles {
        assert_eq!(lambda_actions(&stack, role), Vec::<String>::new(), "{role}");
    }
    let bucket = "arn:aws:s3:::st-data-123456789012-us-east-1";
    assert_eq!(
        resources_allowing(&stack, "FinalizerRole", "s3:ListBucket"),
        [bucket]
    );
    let listing = stack
        .role_statements("FinalizerRole")
        .unwrap()
        .into_iter()
        .find(|s| s["Sid"] == "ListMergedRanges")
        .unwrap();
    assert_eq!(
        listing["Condition"]["StringLike"]["s3:prefix"], "results/*",
        "{listing}"
    );

    // With it (CloudFormation trims each item), exactly the listed functions and their versions and aliases.
    let (a, b) = (
        "arn:aws:lambda:us-east-1:123456789012:function:a",
        "arn:aws:lambda:us-east-1:123456789012:function:b",
    );
    let stack = plan(&[("ProcessorFunctions", &format!("{a}, {b}"))]);
    assert!(lambda_actions(&stack, "CoordinatorRole").is_empty());
    for role in ["WorkerRole", "FinalizerRole"] {
        assert_eq!(
            lambda_actions(&stack, role),
            ["lambda:InvokeFunction"],
            "{role}"
        );
        assert_eq!(
            resources_allowing(&stack, role, "lambda:InvokeFunction"),
            [
                format!("{a}:*"),
                format!("{b}:*"),
                a.to_owned(),
                b.to_owned()
            ],
            "{role}"
        );
    }
    assert_eq!(
        resources_allowing(&stack, "FinalizerRole", "s3:ListBucket"),
        [bucket, bucket],
        "its merged ranges', and every key's (a missing error answers 404)"
    );

    // Whole unqualified ARNs only: a wildcard or a qualifier would widen the grant's `<arn>:*`, and a bare name
    // cannot be made an ARN inside the policy.
    for bad in [
        "*",
        "a",
        "arn:aws:lambda:us-east-1:123456789012:function:*",
        "arn:aws:lambda:us-east-1:123456789012:function:a:live",
        "arn:aws:lambda:*:123456789012:function:a",
        &format!("{a},*"),
    ] {
        let mut options = StackOptions::new("st");
        options.parameters = [("ProcessorFunctions".to_owned(), bad.to_owned())].into();
        let err = Stack::plan(&Template::bundled(), &options).expect_err(bad);
        assert!(
            err.to_string().contains("ProcessorFunctions"),
            "{bad}: {err}"
        );
    }
}

/// A number in a queue's properties: a literal, or a parameter at its largest allowed value.
fn number(template: &Template, value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        Value::Object(o) if o.contains_key("Ref") => {
            let name = o["Ref"].as_str().unwrap();
            let definition = &template.root()["Parameters"][name];
            definition["MaxValue"]
                .as_u64()
                .unwrap_or_else(|| panic!("parameter {name} has no MaxValue"))
        }
        other => panic!("not a number: {other}"),
    }
}

#[test]
fn messages_outlive_their_deliveries_and_old_work_raises_an_alarm() {
    let template = Template::bundled();
    // SQS's defaults, for a queue that leaves them out.
    let retention = |id: &str| {
        let p = &template.resource(id).unwrap()["Properties"];
        p.get("MessageRetentionPeriod")
            .map_or(345_600, |v| number(&template, v))
    };
    let mut redriven = 0;
    for (id, queue) in template.resources_of_type("AWS::SQS::Queue") {
        let p = &queue["Properties"];
        let Some(redrive) = p.get("RedrivePolicy") else {
            continue;
        };
        redriven += 1;
        let visibility = p
            .get("VisibilityTimeout")
            .map_or(30, |v| number(&template, v));
        let receives = number(&template, &redrive["maxReceiveCount"]);
        assert!(
            retention(id) >= receives * visibility,
            "{id}: a message kept {} s can expire before its {receives} receives x {visibility} s dead-letter it",
            retention(id)
        );
        // A dead-lettered message keeps its first enqueue time, so its dead-letter queue must keep it as long.
        let target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap();
        assert!(
            retention(target) >= retention(id),
            "{target} keeps messages for less than {id}"
        );
    }
    assert_eq!(redriven, 4);
    assert_eq!(retention("WorkQueue"), 1_209_600, "14 days, SQS's longest");

    let age_alarms: Vec<&Value> = template
        .resources_of_type("AWS::CloudWatch::Alarm")
        .map(|(_, a)| &a["Properties"])
        .filter(|a| a["MetricName"] == "ApproximateAgeOfOldestMessage")
        .collect();
    assert_eq!(
        age_alarms.len(),
        1,
        "one alarm on the work queue's oldest message"
    );
    let alarm = age_alarms[0];
    assert_eq!(alarm["Namespace"], "AWS/SQS");
    assert_eq!(
        alarm["Dimensions"],
        json!([{"Name": "QueueName", "Value": {"Fn::GetAtt": ["WorkQueue", "QueueName"]}}])
    );
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "AlarmTopic"}]));
    let threshold = number(&template, &alarm["Threshold"]);
    assert!(
        (3_600..=86_400).contains(&threshold),
        "alarm within a day, long before the {} s retention: {threshold}",
        retention("WorkQueue")
    );
}
