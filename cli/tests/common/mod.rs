//! Helpers shared by the tests that run the `dmap` binary: on the embedded backend, and through moto's server.

#![allow(dead_code)]

use std::process::{Command, Output};

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
