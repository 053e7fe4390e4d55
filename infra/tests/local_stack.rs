//! The local stack on moto's server: its queues, table and bucket carry the template's own definitions, and a
//! definition changed in the template changes the local resource.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use dmap_core::aws::AwsClients;
use dmap_emulator as emulator;
use dmap_infra::template::BUNDLED;
use dmap_infra::{Stack, StackOptions, Template};
use serde_json::Value;

async fn create(template_text: &str, parameters: &[(&str, &str)]) -> (AwsClients, Stack) {
    let clients = emulator::clients().await;
    let mut options = StackOptions::new(&emulator::unique("st"));
    options.parameters = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let template = Template::parse(template_text).unwrap();
    let stack = Stack::create(&clients, &template, &options)
        .await
        .expect("create the stack");
    (clients, stack)
}

async fn queue_attributes(
    clients: &AwsClients,
    stack: &Stack,
    id: &str,
) -> HashMap<QueueAttributeName, String> {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(stack.queues[id].url.as_deref().unwrap())
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes()
        .cloned()
        .unwrap_or_default()
}

fn redrive(attributes: &HashMap<QueueAttributeName, String>) -> Value {
    serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap()
}

/// (TTL attribute, key attribute names, point-in-time recovery on).
async fn table(clients: &AwsClients, stack: &Stack) -> (String, Vec<String>, bool) {
    let name = &stack.tables["JobsTable"];
    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let ttl = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        .unwrap_or_default()
        .to_owned();
    let described = clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let keys = described
        .table()
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| format!("{}:{}", k.attribute_name(), k.key_type().as_str()))
        .collect();
    let backups = clients
        .dynamodb
        .describe_continuous_backups()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .is_some_and(|s| s.as_str() == "ENABLED");
    (ttl, keys, pitr)
}

#[tokio::test]
async fn local_resources_carry_the_templates_definitions() {
    let (clients, stack) = create(BUNDLED, &[]).await;
    let work = queue_attributes(&clients, &stack, "WorkQueue").await;
    assert_eq!(work[&QueueAttributeName::VisibilityTimeout], "360");
    assert_eq!(work[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    assert_eq!(work[&QueueAttributeName::SqsManagedSseEnabled], "true");
    let policy = redrive(&work);
    assert_eq!(policy["maxReceiveCount"], 5);
    assert_eq!(
        policy["deadLetterTargetArn"],
        stack.queues["WorkDeadLetterQueue"].arn
    );
    let dead_letters = queue_attributes(&clients, &stack, "WorkDeadLetterQueue").await;
    assert_eq!(
        dead_letters[&QueueAttributeName::MessageRetentionPeriod],
        "1209600"
    );
    assert_eq!(
        redrive(&dead_letters)["deadLetterTargetArn"],
        stack.queues["FinalizeDeadLetterQueue"].arn
    );
    let continuation = queue_attributes(&clients, &stack, "ContinueQueue").await;
    assert_eq!(continuation[&QueueAttributeName::VisibilityTimeout], "5400");
    assert_eq!(
        table(&clients, &stack).await,
        (
            "expires_at".to_owned(),
            vec!["pk:HASH".to_owned(), "sk:RANGE".to_owned()],
            true
        )
    );
    // Versioned, as on AWS (moto's GetBucketVersioning answer does not parse in the SDK: look at a put).
    let put = clients
        .s3
        .put_object()
        .bucket(&stack.buckets["DataBucket"])
        .key("jobs/x.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();
    assert!(put.version_id().is_some_and(|v| v != "null"), "{put:?}");

    // The functions' environments, resolved with the created resources.
    let worker = stack.function("worker").unwrap();
    let queue_url = |id: &str| stack.queues[id].url.clone().unwrap();
    assert_eq!(
        worker.environment["DMAP_WORK_QUEUE_URL"],
        queue_url("WorkQueue")
    );
    assert_eq!(worker.environment["DMAP_TABLE"], stack.tables["JobsTable"]);
    assert_eq!(worker.environment["DMAP_ITEM_CONCURRENCY"], "16");
    assert_eq!(
        worker.environment["DMAP_EXPECTED_BUCKET_OWNER"],
        "123456789012"
    );
    let coordinator = stack.function("coordinator").unwrap();
    let data = &stack.buckets["DataBucket"];
    assert_eq!(
        coordinator.environment["DMAP_ALLOWED_BUCKETS"],
        format!("{data},")
    );
    assert_eq!(coordinator.environment["DMAP_RESULT_BUCKETS"], *data);
    assert_eq!(
        coordinator.environment["DMAP_CONTINUATION_QUEUE_URL"],
        queue_url("ContinueQueue")
    );
}

#[tokio::test]
async fn a_definition_changed_in_the_template_changes_the_local_resource() {
    let edit = |text: &str, from: &str, to: &str| {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} is in the template once"
        );
        text.replace(from, to)
    };
    let mut text = edit(
        BUNDLED,
        "QueueName: !Sub \"${AWS::StackName}-work\"\n      VisibilityTimeout: 360",
        "QueueName: !Sub \"${AWS::StackName}-work\"\n      VisibilityTimeout: 420",
    );
    text = edit(
        &text,
        "AttributeName: expires_at",
        "AttributeName: purge_at",
    );
    text = edit(
        &text,
        "KeySchema:\n        - { AttributeName: pk, KeyType: HASH }\n        - { AttributeName: sk, KeyType: RANGE }",
        "KeySchema:\n        - { AttributeName: pk, KeyType: HASH }",
    );
    text = edit(
        &text,
        "AttributeDefinitions:\n        - { AttributeName: pk, AttributeType: S }\n        - { AttributeName: sk, AttributeType: S }",
        "AttributeDefinitions:\n        - { AttributeName: pk, AttributeType: S }",
    );
    // A parameter the queues use, changed as `sam deploy --parameter-overrides` would.
    let (clients, stack) = create(&text, &[("MaxReceiveCount", "8")]).await;
    let work = queue_attributes(&clients, &stack, "WorkQueue").await;
    assert_eq!(work[&QueueAttributeName::VisibilityTimeout], "420");
    assert_eq!(redrive(&work)["maxReceiveCount"], 8);
    assert_eq!(
        table(&clients, &stack).await,
        ("purge_at".to_owned(), vec!["pk:HASH".to_owned()], true)
    );
}

#[tokio::test]
async fn a_definition_the_local_set_up_cannot_honour_is_refused() {
    let text = BUNDLED.replace(
        "      VisibilityTimeout: 5400\n",
        "      VisibilityTimeout: 5400\n      FancyNewSetting: 3\n",
    );
    let clients = emulator::clients().await;
    let options = StackOptions::new(&emulator::unique("st"));
    let err = Stack::create(&clients, &Template::parse(&text).unwrap(), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ContinueQueue") && err.contains("FancyNewSetting"),
        "{err}"
    );
}
