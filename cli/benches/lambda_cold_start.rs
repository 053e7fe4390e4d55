//! The Lambda functions' binaries and cold starts (`cargo bench -p dmap-cli --bench lambda_cold_start`): builds
//! the coordinator, worker and finalizer in release (as `sam build` and `cargo lambda build --release` do: LTO,
//! stripped), prints each binary's size, then starts each one cold, again and again, against the Lambda Runtime
//! API of `cargo lambda watch --only-lambda-apis`, and prints the median and slowest time from the process's start
//! to its answer to a first, empty event, waiting for it. That span holds the whole init (the AWS SDK's
//! configuration and clients, the function's own) and the runtime's first `next` request; the handler itself has
//! nothing to do. Prints numbers; asserts only that every start answered.
//!
//! `DMAP_BENCH_ROUNDS=N` sets the cold starts per function (default 20). Under the test profile (as CI runs the
//! benchmarks) it builds and measures the debug binaries instead. Installs cargo-lambda into `.venv` as
//! `scripts/local-lambda` does, if it is not there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The functions (binary, package), each with an event it answers without touching AWS and what its answer
/// holds: the coordinator refuses an empty job spec before it writes anything.
const FUNCTIONS: [(&str, &str, &str, &str); 3] = [
    ("coordinator", "dmap-coordinator", "{}", "invalid job spec"),
    (
        "worker",
        "dmap-worker",
        r#"{"Records": []}"#,
        "batchItemFailures",
    ),
    (
        "finalizer",
        "dmap-finalizer",
        r#"{"Records": []}"#,
        "batchItemFailures",
    ),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn run(command: &mut Command) {
    let status = command.status().expect("starts");
    assert!(status.success(), "{command:?} failed");
}

/// cargo-lambda from the project's `.venv`, installed there first if need be.
fn cargo_lambda(root: &Path) -> PathBuf {
    let installed = root.join(".venv/bin/cargo-lambda");
    if !installed.exists() {
        run(Command::new("bash").current_dir(root).args([
            "-c",
            "source infra/venvs.sh && install_venv .venv tools/requirements-lambda.txt",
        ]));
    }
    installed
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cargo lambda watch --only-lambda-apis` on `port`, once its Runtime API answers.
fn watch(cargo_lambda: &Path, port: u16) -> Child {
    let mut watch = Command::new(cargo_lambda)
        .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
        .args(["-P", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo lambda watch starts");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = watch.try_wait().unwrap() {
            panic!("cargo lambda watch ended: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "watch did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    watch
}

/// Invokes the function `_` (the one a function started by hand answers as) through watch's Invoke API and
/// returns the response's status line and body.
fn invoke(port: u16, event: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // A function that never answers fails the bench rather than hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /2015-03-31/functions/_/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{event}",
        event.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// One cold start: an invoke waits in watch, the binary starts, and the time to the invoke's answer is returned.
fn cold_start(binary: &Path, port: u16, event: &'static str, answer: &str) -> Duration {
    let waiting = std::thread::spawn(move || (invoke(port, event), Instant::now()));
    std::thread::sleep(Duration::from_millis(100)); // the invoke is queued before the function starts
    let started = Instant::now();
    let mut function = Command::new(binary)
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        // The functions' configuration, as the template sets it; nothing here is called.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("DMAP_TABLE", "dmap-jobs")
        .env("DMAP_WORK_QUEUE_URL", "http://127.0.0.1:1/work")
        .env("DMAP_FINALIZE_QUEUE_URL", "http://127.0.0.1:1/finalize")
        .env("DMAP_CONTINUATION_QUEUE_URL", "http://127.0.0.1:1/continue")
        .env("DMAP_ALLOWED_BUCKETS", "data")
        .env("DMAP_RESULT_BUCKETS", "data")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the function starts");
    let ((status, body), answered) = waiting.join().expect("the invoke");
    let _ = function.kill();
    let mut errors = String::new();
    if let Some(stderr) = function.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            errors.push_str(&line);
            errors.push('\n');
        }
    }
    let _ = function.wait();
    assert!(
        status.starts_with("HTTP/1.1 ") && body.contains(answer),
        "{}: {status} {body}\n{errors}",
        binary.display()
    );
    answered - started
}

fn main() {
    let rounds: usize = std::env::var("DMAP_BENCH_ROUNDS")
        .ok()
        .map(|n| n.trim().parse().expect("a number"))
        .unwrap_or(20)
        .max(1);
    let root = repo_root();
    let release = !cfg!(debug_assertions);
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(&root).args(["build", "--quiet"]);
    if release {
        build.arg("--release");
    }
    for (_, package, _, _) in FUNCTIONS {
        build.args(["-p", package]);
    }
    run(&mut build);
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binaries = target.join(if release { "release" } else { "debug" });

    let port = free_port();
    let mut watch = watch(&cargo_lambda(&root), port);
    println!(
        "{} binaries; {rounds} cold starts each under cargo lambda watch (start to the answer to a first, empty event):",
        if release { "release" } else { "debug" }
    );
    println!(
        "{:<12} {:>10} {:>12} {:>12}",
        "function", "MiB", "median ms", "slowest ms"
    );
    for (name, _, event, answer) in FUNCTIONS {
        let binary = binaries.join(name);
        let size = std::fs::metadata(&binary).expect("built").len();
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| cold_start(&binary, port, event, answer).as_secs_f64() * 1e3)
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<12} {:>10.1} {:>12.1} {:>12.1}",
            size as f64 / f64::from(1 << 20),
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    let _ = watch.kill();
    let _ = watch.wait();
}
