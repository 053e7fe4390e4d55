//! moto's server for dmap's AWS adapter tests and benchmarks: started once per process on first use (on a
//! free port), and gone when the process ends. A missing moto fails loudly with what to do, never skips.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use dmap_core::aws::AwsClients;
use dmap_core::esm::{EventSourceMapping, Invoke, InvokeError, sqs_event};
use dmap_core::ports::{BatchQueue, ReceivedMessage};

struct Server {
    endpoint: String,
    // Held open for the life of the process: its end is what stops the server.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python that has moto: `DMAP_MOTO_PYTHON`, or the project's `.venv` made by `scripts/test`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("DMAP_MOTO_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = repo_root().join(".venv/bin/python");
    if !venv.exists() {
        panic!(
            "moto is not installed: run `scripts/test` (it installs the pinned moto from tools/requirements-test.txt \
             into .venv), or set DMAP_MOTO_PYTHON to a Python that has moto[server]"
        );
    }
    venv
}

fn start() -> Server {
    let python = python();
    let mut child = Command::new(&python)
        .arg(repo_root().join("tools/moto_server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start moto's server with {}: {e}", python.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "moto's server did not start within 60 s ({})",
                python.display()
            )
        });
    let port: u16 = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "moto's server failed to start (is moto[server] installed for {}?): {line:?}",
                python.display()
            )
        });
    Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        _stdin: Mutex::new(child.stdin.take().expect("piped stdin")),
        _child: Mutex::new(child),
    }
}

/// The emulator's endpoint URL, starting it if needed.
pub fn endpoint() -> &'static str {
    &SERVER.get_or_init(start).endpoint
}

/// SDK clients pointed at the emulator, with static test credentials.
pub async fn clients() -> AwsClients {
    AwsClients::new(&test_config().load().await, Some(endpoint()))
}

/// [`clients`] whose Lambda client sends its invocations to `invoke_api` (a local Invoke API): the emulator
/// serves S3, SQS and DynamoDB, not Lambda.
pub async fn clients_invoking(invoke_api: &str) -> AwsClients {
    // The stores' endpoint overrides the configuration's for S3, SQS and DynamoDB only, so this one is Lambda's.
    let config = test_config().endpoint_url(invoke_api).load().await;
    AwsClients::new(&config, Some(endpoint()))
}

fn test_config() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
}

/// A name no other test in this process uses (buckets, queues and tables are per test).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a bucket and returns its name.
pub async fn bucket(clients: &AwsClients, prefix: &str) -> String {
    let name = unique(prefix);
    clients
        .s3
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

/// Puts `objects` (key, body) into `bucket` a few at a time. Thousands of puts at once leave moto's server,
/// which answers one request at a time, silent long enough for the SDK's stalled-stream guard to give up.
pub async fn put_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    objects: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    use futures::StreamExt;
    futures::stream::iter(objects)
        .map(|(key, body)| async move {
            s3.put_object()
                .bucket(bucket)
                .key(&key)
                .body(body.into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// Puts `count` objects `<prefix><i>.txt` (`i` zero-padded to `digits`) holding `body` into `bucket`, inside the
/// emulator's process (`tools/moto_server.py`'s seeding route): a million in about two minutes, where a
/// PutObject each over HTTP would take most of an hour. `body` is sent in the query: letters and digits.
pub fn seed_objects(bucket: &str, prefix: &str, count: u64, digits: usize, body: &str) {
    use std::io::{Read, Write};
    let address = endpoint().trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the emulator");
    let query =
        format!("bucket={bucket}&prefix={prefix}&count={count}&digits={digits}&body={body}");
    write!(
        stream,
        "POST /_dmap/seed?{query} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send the seeding request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read the seeding answer");
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "seeding {bucket}: {answer}"
    );
}

/// A table of `items` items, created under a unique name, which it returns: the key is `pk` (a string,
/// `p00` to `p96`) and `sk` (the number `i`), and each item has `n` (the number `i`), `name` (`item <i>`), `tags`
/// (a string set) and `blob` (binary), so that every reader of it meets a composite key and several types.
pub async fn table(clients: &AwsClients, prefix: &str, items: usize) -> String {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
        ScalarAttributeType, WriteRequest,
    };
    let name = unique(prefix);
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    clients
        .dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute("sk", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .expect("create table");
    let item = |i: usize| {
        let put = PutRequest::builder()
            .item("pk", AttributeValue::S(format!("p{:02}", i % 97)))
            .item("sk", AttributeValue::N(i.to_string()))
            .item("n", AttributeValue::N(i.to_string()))
            .item("name", AttributeValue::S(format!("item {i}")))
            .item(
                "tags",
                AttributeValue::Ss(vec!["all".into(), format!("mod3-{}", i % 3)]),
            )
            .item(
                "blob",
                AttributeValue::B(vec![(i % 256) as u8, 0xff].into()),
            )
            .build()
            .unwrap();
        WriteRequest::builder().put_request(put).build()
    };
    let writes: Vec<_> = (0..items)
        .collect::<Vec<_>>()
        .chunks(25)
        .map(|chunk| {
            let (client, name) = (clients.dynamodb.clone(), name.clone());
            let requests: Vec<_> = chunk.iter().map(|&i| item(i)).collect();
            async move {
                let out = client
                    .batch_write_item()
                    .request_items(name, requests)
                    .send()
                    .await
                    .expect("batch write");
                assert!(
                    out.unprocessed_items().is_none_or(|u| u.is_empty()),
                    "moto left items unwritten"
                );
            }
        })
        .collect();
    // A few writes at a time: moto answers one request at a time anyway.
    use futures::StreamExt;
    futures::stream::iter(writes)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    name
}

/// A fresh stack on the emulator, created from the bundled `template.yaml` under a unique name, with the work
/// queue, its dead-letter queue and the finalize queue hiding messages for `visibility_secs` instead of the
/// template's timeouts.
pub async fn stack(clients: &AwsClients, visibility_secs: u32) -> dmap_infra::Stack {
    create_stack(clients, &stack_options(visibility_secs)).await
}

/// The options of a [`stack`], for a test that sets parameters too.
pub fn stack_options(visibility_secs: u32) -> dmap_infra::StackOptions {
    let mut options = dmap_infra::StackOptions::new(&unique("st"));
    for queue in ["WorkQueue", "WorkDeadLetterQueue", "FinalizeQueue"] {
        options.property_overrides.push((
            queue.to_owned(),
            "VisibilityTimeout".to_owned(),
            visibility_secs.into(),
        ));
    }
    options
}

/// Creates a stack from the bundled `template.yaml` on the emulator.
pub async fn create_stack(
    clients: &AwsClients,
    options: &dmap_infra::StackOptions,
) -> dmap_infra::Stack {
    dmap_infra::Stack::create(clients, &dmap_infra::Template::bundled(), options)
        .await
        .expect("create the stack's resources")
}

/// A full set of AWS-backed ports on a fresh [`stack`], the work queue's dead-letter queue among them (a
/// batch is dead-lettered after the template's MaxReceiveCount receives).
pub async fn aws_deps(clients: &AwsClients, visibility_secs: u32) -> dmap_core::Deps {
    stack_deps(clients, &stack(clients, visibility_secs).await)
}

/// The AWS-backed ports on `stack`'s table and queues (4 counter shards).
pub fn stack_deps(clients: &AwsClients, stack: &dmap_infra::Stack) -> dmap_core::Deps {
    let url = |id: &str| stack.queues[id].url.clone().expect("created queue");
    let resources = dmap_core::aws::AwsResources {
        table: stack.tables["JobsTable"].clone(),
        counter_shards: 4,
        work_queue_url: url("WorkQueue"),
        dead_letter_queue_url: Some(url("WorkDeadLetterQueue")),
        finalize_queue_url: url("FinalizeQueue"),
        expected_bucket_owner: None,
        ttl: Duration::from_secs(86_400),
    };
    dmap_core::Deps::aws(clients, &resources)
}

/// Records every message it is invoked with and fails none: a target that hands the messages to a test.
#[derive(Default)]
struct Capture(std::sync::Mutex<Vec<ReceivedMessage>>);

#[async_trait::async_trait]
impl Invoke for Capture {
    async fn invoke(&self, messages: &[ReceivedMessage]) -> Result<Vec<String>, InvokeError> {
        self.0.lock().unwrap().extend_from_slice(messages);
        Ok(Vec::new())
    }
}

/// Plays an SQS event source mapping until the queue is empty: every message waiting in it, received and
/// deleted (as the mapping does after a successful invoke), as one SQS event (with no records if the queue
/// was empty).
pub async fn drain_as_event(queue: Arc<dyn BatchQueue>) -> aws_lambda_events::event::sqs::SqsEvent {
    let mapping = EventSourceMapping::new(queue, 10, Duration::from_millis(500));
    let capture = Capture::default();
    while mapping.poll_once(&capture).await.expect("poll").received > 0 {}
    let messages = capture.0.into_inner().unwrap();
    serde_json::from_value(sqs_event(TEST_QUEUE_ARN, &messages)).expect("an SQS event")
}

/// The queue ARN test events name (handlers do not read it).
pub const TEST_QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:q";
