//! Helpers shared by the tests that run the `dmap` binary: on the embedded backend, and through moto's server.

#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

/// Runs `dmap` with these arguments to its end.
pub fn dmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmap"))
        .args(args)
        .output()
        .expect("dmap runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `dmap` with the emulator's test credentials and `env` on top.
pub fn dmap_aws(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dmap"));
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("dmap runs")
}

/// `dmap local up` for a stack named `prefix` with the data bucket `bucket`: the variables it prints.
pub fn local_up(endpoint: &str, prefix: &str, bucket: &str) -> Vec<(String, String)> {
    let up = dmap_aws(
        &[
            "local",
            "up",
            "--endpoint-url",
            endpoint,
            "--stack-name",
            prefix,
            "--bucket",
            bucket,
        ],
        &[],
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let exports: Vec<(String, String)> = String::from_utf8(up.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(exports.len(), 5, "{exports:?}");
    assert!(
        exports
            .iter()
            .any(|(k, v)| k == "DMAP_WORK_QUEUE" && *v == format!("{prefix}-work"))
    );
    exports
}

/// `local_up`'s variables as `dmap_aws` takes them.
pub fn env_of(exports: &[(String, String)]) -> Vec<(&str, &str)> {
    exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Each request count `dmap plan --json` calls exact, against the count of `dmap run --stats --json` that
/// followed it: one line each (operation, the plan's count or bounds, the run's), in the plan's order. Panics
/// on a count outside the plan's bounds. `dmap run` reads the manifest back once it is written, to print its
/// summary: a GetObject of its own, taken off.
pub fn exact_requests_match(plan: &Value, run: &Value) -> Vec<String> {
    let requests = &run["requests"];
    let mut lines = Vec::new();
    for (op, predicted) in plan["requests"].as_object().expect("the plan's requests") {
        if predicted["exact"] != true {
            continue;
        }
        let count = predicted["count"].as_u64().unwrap();
        let most = predicted["most"].as_u64().unwrap_or(count);
        let own = u64::from(op == "S3.GetObject");
        let actual = requests.get(op).and_then(Value::as_u64).unwrap_or(0) - own;
        assert!(
            (count..=most).contains(&actual),
            "{op}: the plan said {count}..={most}, the run sent {actual}\nplan {}\nrun {requests}",
            plan["requests"]
        );
        let said = if most > count {
            format!("{count}..={most}")
        } else {
            count.to_string()
        };
        lines.push(format!("{op:<42} plan {said:>12}   run {actual:>12}"));
    }
    lines
}
