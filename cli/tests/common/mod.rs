//! Helpers shared by the tests that run the `dmap` binary on the embedded backend.

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
