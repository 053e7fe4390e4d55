//! Test support: a real local Lambda Invoke API serving this crate's binaries ([`InvokeApi`]), and a proxy in
//! front of it that throttles like Lambda ([`ThrottlingProxy`]). With them the functions are called exactly as
//! Step Functions or dmap would call them: through the AWS SDK's Lambda client, over HTTP, each binary running
//! its real `lambda_runtime` loop.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// How long the Invoke API and each function get to start answering.
const STARTUP: Duration = Duration::from_secs(60);

/// The workspace root: `cargo lambda` lists the workspace's binaries from there, and answers only for
/// functions named like one of them.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port nobody listens on now (the OS's choice). Another process could take it before it is used; for a
/// test that is unlikely enough.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Spawns `command` with its stdout and stderr in `log`.
fn spawn(command: &mut Command, log: &Path) -> std::io::Result<Child> {
    let out = File::create(log)?;
    let err = out.try_clone()?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // If the test process dies without unwinding (killed by a timeout, an abort), its children must not
    // linger holding a port: Linux kills them when the thread that started them ends. So the thread that
    // starts them must outlive them: the test's own, not a pool's.
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A local Lambda Invoke API (`cargo lambda watch --only-lambda-apis`) with this crate's binaries started
/// against its Runtime API, one process per function, as Lambda runs one execution environment. Every process
/// is killed when it is dropped.
///
/// `cargo lambda` only queues invocations here: it neither builds nor starts the functions (cargo has built the
/// binaries for the test already), so an invocation is served by the binary the test named.
pub struct InvokeApi {
    port: u16,
    // The API first, then the functions; all killed on drop.
    children: Vec<(String, Child)>,
    logs: tempfile::TempDir,
}

impl InvokeApi {
    /// Starts the Invoke API on a free port, then each `(function name, binary path)` with Lambda's environment
    /// for that function and `env` (credentials, region, `AWS_ENDPOINT_URL_S3`…), and waits until every
    /// function answers an invocation. A function name must be one of the workspace's binaries: `cargo lambda`
    /// refuses other names with 404 "Missing function".
    pub fn start(functions: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let root = workspace_root();
        let cargo_lambda = root.join(".venv/bin/cargo-lambda");
        if !cargo_lambda.exists() {
            panic!(
                "cargo-lambda is not installed at {}: run `scripts/test` (it installs the pinned cargo-lambda \
                 from tools/requirements-lambda.txt into .venv)",
                cargo_lambda.display()
            );
        }
        let mut api = Self {
            port: free_port(),
            children: Vec::new(),
            logs: tempfile::tempdir().expect("a directory for the logs"),
        };
        let port = api.port.to_string();
        let log = api.log("cargo-lambda");
        let mut watch = Command::new(&cargo_lambda);
        watch
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port,
            ])
            .current_dir(&root);
        match spawn(&mut watch, &log) {
            Ok(child) => api.children.push(("cargo-lambda".into(), child)),
            Err(e) => api.fail(&format!("cannot start {}: {e}", cargo_lambda.display())),
        }
        api.wait_for_port();

        for &(name, binary) in functions {
            let runtime_api = format!("http://127.0.0.1:{}/.rt/{name}", api.port);
            let mut function = Command::new(binary);
            function
                .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
                .envs(env.iter().copied());
            match spawn(&mut function, &api.log(name)) {
                Ok(child) => api.children.push((name.to_owned(), child)),
                Err(e) => api.fail(&format!("cannot start {name} ({binary}): {e}")),
            }
        }
        for &(name, _) in functions {
            api.wait_for_function(name);
        }
        api
    }

    /// The Invoke API's endpoint: `POST {endpoint}/2015-03-31/functions/{name}/invocations`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    /// Panics with `message` and the tail of every process's log (the processes are killed as `self` drops).
    fn fail(&self, message: &str) -> ! {
        let mut report = format!("{message}\n");
        for (name, _) in &self.children {
            report += &format!(
                "--- last lines of {name}'s output:\n{}\n",
                tail(&self.log(name), 30)
            );
        }
        panic!("{report}");
    }

    /// Fails if a process has ended: none should before the test drops the API.
    fn check_running(&mut self) {
        let ended = self.children.iter_mut().find_map(|(name, child)| {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| format!("{name} exited ({status})"))
        });
        if let Some(ended) = ended {
            self.fail(&ended);
        }
    }

    fn wait_for_port(&mut self) {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            self.check_running();
            if started.elapsed() > STARTUP {
                self.fail(&format!(
                    "cargo lambda did not listen on port {} within {STARTUP:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `name` answers an invocation with an empty object (`{}`), a response or an error document:
    /// either shows that its runtime is polling. Both functions here answer `{}` at once, with an error.
    fn wait_for_function(&mut self, name: &str) {
        match self.first_invocation(name) {
            // 200: the function's response; 500: its error document. Anything else is the API's own answer
            // (404 "Missing function" for a name that is not a binary of the workspace).
            Ok(answer)
                if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 500") => {}
            Ok(answer) => self.fail(&format!(
                "{name} did not answer its first invocation:\n{answer}"
            )),
            Err(e) => self.fail(&format!("{name} did not answer its first invocation: {e}")),
        }
    }

    /// Sends one invocation and returns the whole HTTP answer. `cargo lambda` holds an invocation until the
    /// function asks for its next event, so one request is enough; while it waits, the processes are watched,
    /// so that a function that exits fails the start at once rather than after [`STARTUP`].
    fn first_invocation(&mut self, name: &str) -> std::io::Result<String> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        let request = format!(
            "POST /2015-03-31/functions/{name}/invocations HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            self.port
        );
        stream.write_all(request.as_bytes())?;
        stream.set_read_timeout(Some(Duration::from_millis(250)))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                // `Connection: close`: the answer ends with the connection.
                Ok(0) => return Ok(String::from_utf8_lossy(&answer).into_owned()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.check_running();
                    if started.elapsed() > STARTUP {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            format!("no answer within {STARTUP:?}"),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for InvokeApi {
    fn drop(&mut self) {
        // The functions first, so that none polls an API that is gone.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The body Lambda answers a throttled invocation with (HTTP 429, `TooManyRequestsException`).
const THROTTLED_BODY: &str = concat!(
    r#"{"Type":"User","message":"Rate Exceeded.","#,
    r#""Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}"#
);

#[derive(Default)]
struct Counters {
    throttled: AtomicUsize,
    forwarded: AtomicUsize,
}

/// An HTTP proxy in front of an Invoke API that refuses the first `throttle_first` invocations as Lambda does
/// when a function is at its concurrency limit, then forwards every request and relays the answer. It runs on
/// its own thread and runtime, so it serves whichever runtime (or none) the test uses, and stops when dropped.
pub struct ThrottlingProxy {
    endpoint: String,
    counters: Arc<Counters>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThrottlingProxy {
    pub fn start(upstream: &str, throttle_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let counters = Arc::new(Counters::default());
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let proxy = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            throttle_first,
            counters: counters.clone(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        });
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(proxy.serve(listener, stop));
        });
        Self {
            endpoint,
            counters,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Where to send invocations instead of the upstream.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Invocations answered with 429 so far.
    pub fn throttled(&self) -> usize {
        self.counters.throttled.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the upstream so far.
    pub fn forwarded(&self) -> usize {
        self.counters.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Proxy {
    upstream: String,
    throttle_first: usize,
    counters: Arc<Counters>,
    client: reqwest::Client,
}

/// Headers that describe one connection or one message's framing, not the request: never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "host",
    "content-length",
];

impl Proxy {
    async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        loop {
            let stream = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let proxy = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { proxy.handle(request).await }
                });
                // A connection that breaks only ends itself; the caller sees the error.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let is_invocation = request.uri().path().ends_with("/invocations");
        if is_invocation && self.take_throttle() {
            return Ok(throttled());
        }
        Ok(match self.forward(request).await {
            Ok(response) => response,
            // The upstream did not answer: what a gateway says.
            Err(e) => Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Full::new(Bytes::from(format!("proxy: {e}"))))
                .expect("a response"),
        })
    }

    /// Whether this invocation is one of the first `throttle_first`.
    fn take_throttle(&self) -> bool {
        let throttled = &self.counters.throttled;
        throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.throttle_first).then_some(n + 1)
            })
            .is_ok()
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = body.collect().await?.to_bytes();
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
        let upstream = self
            .client
            .request(parts.method, format!("{}{path}", self.upstream))
            .headers(headers)
            .body(body)
            .send()
            .await?;
        self.counters.forwarded.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::builder().status(upstream.status());
        for (name, value) in upstream.headers() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                response = response.header(name, value);
            }
        }
        Ok(response.body(Full::new(upstream.bytes().await?))?)
    }
}

/// Lambda's answer to an invocation over the function's concurrency: the AWS SDK reads the error code from
/// `x-amzn-ErrorType`.
fn throttled() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("x-amzn-ErrorType", "TooManyRequestsException")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from_static(THROTTLED_BODY.as_bytes())))
        .expect("a response")
}

/// A Lambda client on `endpoint` with test credentials. No SDK retries: a test counts every invocation (and
/// the SDK would retry a throttle by itself).
pub fn lambda_client(endpoint: &str) -> aws_sdk_lambda::Client {
    use aws_sdk_lambda::config::retry::RetryConfig;
    use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}
