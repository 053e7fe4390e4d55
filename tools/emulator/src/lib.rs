//! moto's server for dmap's AWS adapter tests and benchmarks: started once per process on first use (on a
//! free port), and gone when the process ends. A missing moto fails loudly with what to do, never skips.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use dmap_core::aws::AwsClients;

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
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(endpoint())
        .load()
        .await;
    AwsClients::from_config(&config)
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

/// A fresh stack on the emulator, created from the bundled `template.yaml` under a unique name, with the work
/// queue, its dead-letter queue and the finalize queue hiding messages for `visibility_secs` instead of the
/// template's timeouts.
pub async fn stack(clients: &AwsClients, visibility_secs: u32) -> dmap_infra::Stack {
    let mut options = dmap_infra::StackOptions::new(&unique("st"));
    for queue in ["WorkQueue", "WorkDeadLetterQueue", "FinalizeQueue"] {
        options.property_overrides.push((
            queue.to_owned(),
            "VisibilityTimeout".to_owned(),
            visibility_secs.into(),
        ));
    }
    dmap_infra::Stack::create(clients, &dmap_infra::Template::bundled(), &options)
        .await
        .expect("create the stack's resources")
}

/// A full set of AWS-backed ports on a fresh [`stack`]: the pipeline's deps and the work queue's dead-letter
/// queue (a batch is dead-lettered after the template's MaxReceiveCount receives).
pub async fn aws_deps(
    clients: &AwsClients,
    visibility_secs: u32,
) -> (
    dmap_core::Deps,
    std::sync::Arc<dyn dmap_core::ports::BatchQueue>,
) {
    use dmap_core::aws::{DynamoJobStore, S3Store, SqsQueue};
    use std::sync::Arc;

    let stack = stack(clients, visibility_secs).await;
    let queue = |id: &str| {
        let url = stack.queues[id].url.clone().expect("created queue");
        Arc::new(SqsQueue::new(clients.sqs.clone(), &url))
    };
    let deps = dmap_core::Deps {
        objects: Arc::new(S3Store::new(clients.s3.clone(), None)),
        work_queue: queue("WorkQueue"),
        finalize_queue: queue("FinalizeQueue"),
        jobs: Arc::new(DynamoJobStore::new(
            clients.dynamodb.clone(),
            stack.tables["JobsTable"].clone(),
            4,
            Duration::from_secs(86_400),
        )),
    };
    (deps, queue("WorkDeadLetterQueue"))
}

/// Plays an SQS event source mapping once: every message waiting in the queue, received and deleted (as the
/// mapping does after a successful invoke), as one SQS event (with no records if the queue was empty).
pub async fn drain_as_event(
    queue: &dyn dmap_core::ports::BatchQueue,
) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut messages = Vec::new();
    loop {
        let got = queue
            .receive(10, Duration::from_millis(500))
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        for m in &got {
            queue.delete(&m.receipt_handle).await.expect("delete");
        }
        messages.extend(got);
    }
    serde_json::from_value(dmap_core::lambda::sqs_event("q", &messages)).expect("an SQS event")
}
