//! The stack on an emulator (moto's server) or in an account without CloudFormation, created from the
//! template's own definitions: every `AWS::SQS::Queue` with its attributes, every `AWS::DynamoDB::Table` with
//! its key schema, billing mode, TTL and point-in-time recovery, every `AWS::S3::Bucket`; and each function's
//! environment and event sources, resolved as CloudFormation would. Local and deployed resources cannot drift:
//! there is no second definition. A property or resource type this module does not know is an error, not
//! silently dropped.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use dmap_core::aws::AwsClients;
use dmap_core::aws::resources::{create_bucket, create_queue_with_url};
use serde_json::Value;

use crate::template::{Context, Template, TemplateError, scalar_string};

/// moto's account; the ARNs it returns carry it.
pub const LOCAL_ACCOUNT_ID: &str = "123456789012";

/// Resource types that have no local stand-in: permissions, logs, alarms, dashboards. The functions are
/// served by `cargo lambda watch` with the environments resolved here.
pub const NOT_EMULATED: &[&str] = &[
    "AWS::IAM::Role",
    "AWS::Logs::LogGroup",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::Serverless::Function",
];

/// Bucket properties with no effect on how dmap behaves locally (encryption, public access, lifecycle).
const BUCKET_PROPERTIES_NOT_EMULATED: &[&str] = &[
    "BucketEncryption",
    "PublicAccessBlockConfiguration",
    "OwnershipControls",
    "LifecycleConfiguration",
    "Tags",
];

/// What differs from the template's defaults.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    pub stack_name: String,
    pub region: String,
    /// Parameter values, as `sam deploy --parameter-overrides` takes them.
    pub parameters: BTreeMap<String, String>,
    /// Property values that replace the template's, as `(logical id, property, value)`; for tests that need a
    /// short visibility timeout, say.
    pub property_overrides: Vec<(String, String, Value)>,
}

impl StackOptions {
    pub fn new(stack_name: &str) -> Self {
        Self {
            stack_name: stack_name.to_owned(),
            region: "us-east-1".to_owned(),
            ..Self::default()
        }
    }
}

/// A queue of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub arn: String,
    /// Known once the queue exists.
    pub url: Option<String>,
}

/// An SQS event source of a function (an event source mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSource {
    /// The event's name in the template.
    pub event: String,
    pub queue: String,
    pub batch_size: u32,
    pub maximum_concurrency: Option<u32>,
    pub report_batch_item_failures: bool,
}

/// An S3 notification to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Source {
    pub bucket: String,
    pub events: Vec<String>,
    pub prefix: String,
    pub suffix: String,
}

/// A function of the stack, as the local Lambda emulator serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub logical_id: String,
    /// `FunctionName` on AWS.
    pub name: String,
    /// The binary `cargo lambda` builds and serves: the last component of `CodeUri`.
    pub binary: String,
    pub timeout_secs: u32,
    /// Environment variables (`Globals` and the function's own). Set once the stack's resources exist.
    pub environment: BTreeMap<String, String>,
    pub sqs_sources: Vec<SqsSource>,
    pub s3_sources: Vec<S3Source>,
    pub schedules: Vec<ScheduleSource>,
}

/// A scheduled invocation of a function (an EventBridge rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSource {
    pub event: String,
    /// `rate(...)` or `cron(...)`.
    pub schedule: String,
    /// The payload the function receives (EventBridge's scheduled event when `None`).
    pub input: Option<String>,
}

/// The stack resolved for one name and set of parameters.
#[derive(Debug, Clone)]
pub struct Stack {
    pub context: Context,
    pub queues: BTreeMap<String, Queue>,
    /// Table names by logical id.
    pub tables: BTreeMap<String, String>,
    /// Bucket names by logical id.
    pub buckets: BTreeMap<String, String>,
    pub functions: Vec<Function>,
    template: Template,
    overrides: Vec<(String, String, Value)>,
}

/// The stack could not be resolved or created.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{resource}: {source}")]
    Template {
        resource: String,
        #[source]
        source: TemplateError,
    },
    #[error("{resource}: {message}")]
    Unsupported { resource: String, message: String },
    #[error("creating {resource}: {source}")]
    Create {
        resource: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn template_error(resource: &str) -> impl Fn(TemplateError) -> StackError + '_ {
    move |source| StackError::Template {
        resource: resource.to_owned(),
        source,
    }
}

fn unsupported(resource: &str, message: impl Into<String>) -> StackError {
    StackError::Unsupported {
        resource: resource.to_owned(),
        message: message.into(),
    }
}

fn create_failed(
    resource: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StackError {
    StackError::Create {
        resource: resource.to_owned(),
        source: source.into(),
    }
}

impl Stack {
    /// Resolves names, ARNs and event sources (everything but queue URLs and environments) without creating
    /// anything: what `dmap local pump` needs to find a stack `dmap local up` created.
    pub fn plan(template: &Template, options: &StackOptions) -> Result<Self, StackError> {
        let mut context = Context::new(
            template,
            &options.stack_name,
            LOCAL_ACCOUNT_ID,
            &options.region,
            &options.parameters,
        )
        .map_err(template_error("Parameters"))?;
        let overrides = &options.property_overrides;
        let (mut queues, mut tables, mut buckets) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let (account, region, stack_name) = (
            LOCAL_ACCOUNT_ID,
            options.region.as_str(),
            options.stack_name.as_str(),
        );
        for (id, resource) in template.resources() {
            let resource_type = resource["Type"].as_str().unwrap_or_default();
            let name = |property: &str| -> Result<Option<String>, StackError> {
                property_of(template, overrides, id, property)
                    .map(|p| context.string(&p).map_err(template_error(id)))
                    .transpose()
            };
            let required = |property: &str| -> Result<String, StackError> {
                name(property)?
                    .ok_or_else(|| unsupported(id, format!("{resource_type} needs a {property}")))
            };
            let (reference, attributes): (String, Vec<(&str, String)>) = match resource_type {
                "AWS::SQS::Queue" => {
                    let name = required("QueueName")?;
                    let arn = format!("arn:aws:sqs:{region}:{account}:{name}");
                    queues.insert(
                        id.to_owned(),
                        Queue {
                            name: name.clone(),
                            arn: arn.clone(),
                            url: None,
                        },
                    );
                    (
                        format!("https://sqs.{region}.amazonaws.com/{account}/{name}"),
                        vec![("Arn", arn), ("QueueName", name)],
                    )
                }
                "AWS::DynamoDB::Table" => {
                    let name = required("TableName")?;
                    tables.insert(id.to_owned(), name.clone());
                    let arn = format!("arn:aws:dynamodb:{region}:{account}:table/{name}");
                    (name, vec![("Arn", arn)])
                }
                "AWS::S3::Bucket" => {
                    let name = required("BucketName")?;
                    buckets.insert(id.to_owned(), name.clone());
                    let arn = format!("arn:aws:s3:::{name}");
                    (name, vec![("Arn", arn)])
                }
                "AWS::Serverless::Function" => {
                    let name =
                        name("FunctionName")?.unwrap_or_else(|| format!("{stack_name}-{id}"));
                    let arn = format!("arn:aws:lambda:{region}:{account}:function:{name}");
                    (name, vec![("Arn", arn)])
                }
                "AWS::IAM::Role" => {
                    let arn = format!("arn:aws:iam::{account}:role/{stack_name}-{id}");
                    (format!("{stack_name}-{id}"), vec![("Arn", arn)])
                }
                "AWS::Logs::LogGroup" => {
                    let name = name("LogGroupName")?.unwrap_or_else(|| id.to_owned());
                    let arn = format!("arn:aws:logs:{region}:{account}:log-group:{name}:*");
                    (name, vec![("Arn", arn)])
                }
                "AWS::SNS::Topic" => (
                    format!("arn:aws:sns:{region}:{account}:{stack_name}-{id}"),
                    vec![],
                ),
                t if NOT_EMULATED.contains(&t) => (format!("{stack_name}-{id}"), vec![]),
                other => {
                    return Err(unsupported(
                        id,
                        format!(
                            "type {other} has no local stand-in (add it to dmap-infra's local set-up)"
                        ),
                    ));
                }
            };
            context.refs.insert(id.to_owned(), Value::String(reference));
            for (attribute, value) in attributes {
                context
                    .attributes
                    .insert(format!("{id}.{attribute}"), Value::String(value));
            }
        }
        let mut stack = Self {
            context,
            queues,
            tables,
            buckets,
            functions: Vec::new(),
            template: template.clone(),
            overrides: overrides.clone(),
        };
        stack.functions = stack.resolve_functions(false)?;
        Ok(stack)
    }

    /// Creates the stack's queues, tables and buckets (existing ones are kept) and resolves the functions'
    /// environments with their URLs.
    pub async fn create(
        clients: &AwsClients,
        template: &Template,
        options: &StackOptions,
    ) -> Result<Self, StackError> {
        let mut stack = Self::plan(template, options)?;
        for (id, name) in stack.tables.clone() {
            stack.create_table(&clients.dynamodb, &id, &name).await?;
        }
        // Dead-letter queues first: a redrive policy names an existing queue.
        let mut pending: Vec<String> = stack.queues.keys().cloned().collect();
        while !pending.is_empty() {
            let ready: Vec<String> = pending
                .iter()
                .filter(|id| {
                    stack.redrive_target(id).is_none_or(|target| {
                        stack.queues.get(&target).is_some_and(|q| q.url.is_some())
                    })
                })
                .cloned()
                .collect();
            if ready.is_empty() {
                return Err(unsupported(
                    &pending.join(", "),
                    "redrive policies form a cycle",
                ));
            }
            for id in ready {
                let url = stack.create_queue(&clients.sqs, &id).await?;
                stack
                    .context
                    .refs
                    .insert(id.clone(), Value::String(url.clone()));
                if let Some(queue) = stack.queues.get_mut(&id) {
                    queue.url = Some(url);
                }
                pending.retain(|p| p != &id);
            }
        }
        for (id, name) in stack.buckets.clone() {
            stack.create_bucket(&clients.s3, &id, &name).await?;
        }
        stack.functions = stack.resolve_functions(true)?;
        Ok(stack)
    }

    /// A resource's property, with any override applied (unresolved).
    fn property(&self, id: &str, property: &str) -> Option<Value> {
        property_of(&self.template, &self.overrides, id, property)
    }

    /// A resource's properties resolved for this stack, with overrides applied (for checks on the template:
    /// policies, queue attributes).
    pub fn properties(&self, id: &str) -> Result<serde_json::Map<String, Value>, StackError> {
        let mut names: Vec<String> = self
            .template
            .resource(id)
            .and_then(|r| r["Properties"].as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for (i, p, _) in &self.overrides {
            if i == id && !names.contains(p) {
                names.push(p.clone());
            }
        }
        let mut resolved = serde_json::Map::new();
        for name in names {
            let value = self.property(id, &name).unwrap_or(Value::Null);
            if let Some(v) = self
                .context
                .eval(&value)
                .map_err(template_error(&format!("{id}.{name}")))?
            {
                resolved.insert(name, v);
            }
        }
        Ok(resolved)
    }

    /// The logical id of the queue a queue's redrive policy names.
    fn redrive_target(&self, id: &str) -> Option<String> {
        let policy = self.property(id, "RedrivePolicy")?;
        let target = &policy["deadLetterTargetArn"]["Fn::GetAtt"][0];
        target.as_str().map(str::to_owned)
    }

    async fn create_queue(
        &self,
        sqs: &aws_sdk_sqs::Client,
        id: &str,
    ) -> Result<String, StackError> {
        let properties = self.properties(id)?;
        let mut attributes = HashMap::new();
        for (property, value) in &properties {
            let attribute = match property.as_str() {
                "QueueName" | "Tags" => continue,
                "RedrivePolicy" | "RedriveAllowPolicy" => {
                    // A parameter reference gives "5"; SQS stores the count as a number.
                    let mut policy = value.clone();
                    if let Some(count) = policy
                        .get("maxReceiveCount")
                        .and_then(scalar_string)
                        .and_then(|c| c.parse::<u64>().ok())
                    {
                        policy["maxReceiveCount"] = count.into();
                    }
                    attributes.insert(
                        QueueAttributeName::from(property.as_str()),
                        policy.to_string(),
                    );
                    continue;
                }
                "VisibilityTimeout"
                | "MessageRetentionPeriod"
                | "DelaySeconds"
                | "MaximumMessageSize"
                | "ReceiveMessageWaitTimeSeconds"
                | "SqsManagedSseEnabled"
                | "KmsMasterKeyId"
                | "KmsDataKeyReusePeriodSeconds"
                | "FifoQueue"
                | "ContentBasedDeduplication" => QueueAttributeName::from(property.as_str()),
                other => {
                    return Err(unsupported(
                        id,
                        format!("queue property {other} is not set up locally"),
                    ));
                }
            };
            let text = scalar_string(value).ok_or_else(|| {
                unsupported(id, format!("{property} must be a scalar, not {value}"))
            })?;
            attributes.insert(attribute, text);
        }
        let name = &self.queues[id].name;
        create_queue_with_url(sqs, name, attributes)
            .await
            .map(|(url, _)| url)
            .map_err(|e| create_failed(id, e))
    }

    async fn create_table(
        &self,
        dynamodb: &aws_sdk_dynamodb::Client,
        id: &str,
        name: &str,
    ) -> Result<(), StackError> {
        let properties = self.properties(id)?;
        let field = |v: &Value, key: &str| -> Result<String, StackError> {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| unsupported(id, format!("{key} missing in {v}")))
        };
        let mut request = dynamodb.create_table().table_name(name);
        let mut ttl = None;
        let mut point_in_time = false;
        for (property, value) in &properties {
            match property.as_str() {
                "TableName" | "Tags" | "SSESpecification" | "DeletionProtectionEnabled" => {}
                "BillingMode" => {
                    request =
                        request.billing_mode(BillingMode::from(value.as_str().unwrap_or_default()))
                }
                "AttributeDefinitions" => {
                    for definition in value.as_array().into_iter().flatten() {
                        let built = AttributeDefinition::builder()
                            .attribute_name(field(definition, "AttributeName")?)
                            .attribute_type(ScalarAttributeType::from(
                                field(definition, "AttributeType")?.as_str(),
                            ))
                            .build()
                            .map_err(|e| create_failed(id, e))?;
                        request = request.attribute_definitions(built);
                    }
                }
                "KeySchema" => {
                    for key in value.as_array().into_iter().flatten() {
                        let built = KeySchemaElement::builder()
                            .attribute_name(field(key, "AttributeName")?)
                            .key_type(KeyType::from(field(key, "KeyType")?.as_str()))
                            .build()
                            .map_err(|e| create_failed(id, e))?;
                        request = request.key_schema(built);
                    }
                }
                "TimeToLiveSpecification" => {
                    if value["Enabled"].as_bool() == Some(true) {
                        ttl = Some(field(value, "AttributeName")?);
                    }
                }
                "PointInTimeRecoverySpecification" => {
                    point_in_time = value["PointInTimeRecoveryEnabled"].as_bool() == Some(true);
                }
                other => {
                    return Err(unsupported(
                        id,
                        format!("table property {other} is not set up locally"),
                    ));
                }
            }
        }
        match request.send().await {
            Ok(_) => {}
            Err(e) if dmap_core::aws::error_code(&e) == Some("ResourceInUseException") => {}
            Err(e) => return Err(create_failed(id, dmap_core::aws::boxed(e))),
        }
        use aws_sdk_dynamodb::client::Waiters;
        dynamodb
            .wait_until_table_exists()
            .table_name(name)
            .wait(std::time::Duration::from_secs(300))
            .await
            .map_err(|e| create_failed(id, e))?;
        if let Some(attribute) = ttl {
            let specification = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()
                .map_err(|e| create_failed(id, e))?;
            match dynamodb
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(specification)
                .send()
                .await
            {
                Ok(_) => {}
                // Enabling TTL twice is refused: the table already has it.
                Err(e) if dmap_core::aws::error_code(&e) == Some("ValidationException") => {}
                Err(e) => return Err(create_failed(id, dmap_core::aws::boxed(e))),
            }
        }
        if point_in_time {
            let specification = PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .map_err(|e| create_failed(id, e))?;
            dynamodb
                .update_continuous_backups()
                .table_name(name)
                .point_in_time_recovery_specification(specification)
                .send()
                .await
                .map_err(|e| create_failed(id, dmap_core::aws::boxed(e)))?;
        }
        Ok(())
    }

    async fn create_bucket(
        &self,
        s3: &aws_sdk_s3::Client,
        id: &str,
        name: &str,
    ) -> Result<(), StackError> {
        let properties = self.properties(id)?;
        create_bucket(s3, name)
            .await
            .map_err(|e| create_failed(id, e))?;
        for (property, value) in &properties {
            match property.as_str() {
                "BucketName" => {}
                "VersioningConfiguration" => {
                    let status = aws_sdk_s3::types::BucketVersioningStatus::from(
                        value["Status"].as_str().unwrap_or("Suspended"),
                    );
                    let configuration = aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(status)
                        .build();
                    s3.put_bucket_versioning()
                        .bucket(name)
                        .versioning_configuration(configuration)
                        .send()
                        .await
                        .map_err(|e| create_failed(id, dmap_core::aws::boxed(e)))?;
                }
                p if BUCKET_PROPERTIES_NOT_EMULATED.contains(&p) => {}
                other => {
                    return Err(unsupported(
                        id,
                        format!("bucket property {other} is not set up locally"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Each function's binary, event sources and (with `environment`) environment.
    fn resolve_functions(&self, environment: bool) -> Result<Vec<Function>, StackError> {
        let globals = self.template.function_globals();
        let mut functions = Vec::new();
        for (id, resource) in self.template.resources_of_type("AWS::Serverless::Function") {
            let properties = &resource["Properties"];
            let context = &self.context;
            let string = |v: &Value| context.string(v).map_err(template_error(id));
            let binary = string(&properties["CodeUri"])?
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let timeout_secs = properties
                .get("Timeout")
                .or_else(|| globals.get("Timeout"))
                .map(&string)
                .transpose()?
                .and_then(|t| t.parse().ok())
                .unwrap_or(3);
            let mut env = BTreeMap::new();
            if environment {
                for variables in [
                    &globals["Environment"]["Variables"],
                    &properties["Environment"]["Variables"],
                ] {
                    for (name, value) in variables.as_object().into_iter().flatten() {
                        env.insert(name.clone(), string(value)?);
                    }
                }
            }
            let mut sqs_sources = Vec::new();
            let mut s3_sources = Vec::new();
            let mut schedules = Vec::new();
            for (event, definition) in properties["Events"].as_object().into_iter().flatten() {
                let p = &definition["Properties"];
                match definition["Type"].as_str() {
                    Some("SQS") => {
                        let queue_id = p["Queue"]["Fn::GetAtt"][0].as_str().ok_or_else(|| {
                            unsupported(
                                id,
                                format!("event {event}: Queue must be !GetAtt <queue>.Arn"),
                            )
                        })?;
                        let queue = self.queues.get(queue_id).ok_or_else(|| {
                            unsupported(id, format!("event {event}: no queue {queue_id}"))
                        })?;
                        let number = |v: &Value| -> Result<Option<u32>, StackError> {
                            if v.is_null() {
                                return Ok(None);
                            }
                            string(v)?.parse().map(Some).map_err(|_| {
                                unsupported(id, format!("event {event}: {v} is not a number"))
                            })
                        };
                        sqs_sources.push(SqsSource {
                            event: event.clone(),
                            queue: queue.name.clone(),
                            batch_size: number(&p["BatchSize"])?.unwrap_or(10),
                            maximum_concurrency: number(&p["ScalingConfig"]["MaximumConcurrency"])?,
                            report_batch_item_failures: p["FunctionResponseTypes"]
                                .as_array()
                                .is_some_and(|t| t.iter().any(|t| t == "ReportBatchItemFailures")),
                        });
                    }
                    Some("S3") => {
                        let bucket_id = p["Bucket"]["Ref"].as_str().ok_or_else(|| {
                            unsupported(id, format!("event {event}: Bucket must be !Ref <bucket>"))
                        })?;
                        let bucket = self.buckets.get(bucket_id).ok_or_else(|| {
                            unsupported(id, format!("event {event}: no bucket {bucket_id}"))
                        })?;
                        let events = match context
                            .value(&p["Events"])
                            .map_err(template_error(id))?
                        {
                            Value::Array(list) => list.iter().filter_map(scalar_string).collect(),
                            one => scalar_string(&one).into_iter().collect(),
                        };
                        let mut source = S3Source {
                            bucket: bucket.clone(),
                            events,
                            prefix: String::new(),
                            suffix: String::new(),
                        };
                        for rule in p["Filter"]["S3Key"]["Rules"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            let value = string(&rule["Value"])?;
                            match string(&rule["Name"])?.to_ascii_lowercase().as_str() {
                                "prefix" => source.prefix = value,
                                "suffix" => source.suffix = value,
                                other => {
                                    return Err(unsupported(
                                        id,
                                        format!("event {event}: filter rule {other}"),
                                    ));
                                }
                            }
                        }
                        s3_sources.push(source);
                    }
                    Some("Schedule") => schedules.push(ScheduleSource {
                        event: event.clone(),
                        schedule: string(&p["Schedule"])?,
                        input: p["Input"].as_str().map(str::to_owned),
                    }),
                    other => {
                        return Err(unsupported(
                            id,
                            format!("event {event}: type {other:?} has no local stand-in"),
                        ));
                    }
                }
            }
            functions.push(Function {
                logical_id: id.to_owned(),
                name: context
                    .refs
                    .get(id)
                    .and_then(Value::as_str)
                    .unwrap_or(id)
                    .to_owned(),
                binary,
                timeout_secs,
                environment: env,
                sqs_sources,
                s3_sources,
                schedules,
            });
        }
        Ok(functions)
    }

    /// Every `Allow`/`Deny` statement of an IAM role's inline policies, resolved.
    pub fn role_statements(&self, role: &str) -> Result<Vec<Value>, StackError> {
        let policies = self
            .properties(role)?
            .remove("Policies")
            .unwrap_or_default();
        Ok(policies
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
    }

    pub fn function(&self, binary: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.binary == binary)
    }

    /// A queue by logical id.
    pub fn queue(&self, id: &str) -> Option<&Queue> {
        self.queues.get(id)
    }
}

/// A resource's property, with any override applied (unresolved).
fn property_of(
    template: &Template,
    overrides: &[(String, String, Value)],
    id: &str,
    property: &str,
) -> Option<Value> {
    overrides
        .iter()
        .rev()
        .find(|(i, p, _)| i == id && p == property)
        .map(|(_, _, v)| v.clone())
        .or_else(|| {
            template
                .resource(id)
                .and_then(|r| r["Properties"].get(property))
                .cloned()
        })
}
