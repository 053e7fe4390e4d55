//! The finalizer Lambda function. Its `lambda_runtime` entry point (typed config from the environment, SDK
//! clients built once, events from `events/`) lands with the Lambda functions issue; the logic it wires is
//! `dmap_core::finalizer`, which `dmap run` already runs in-process today.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "dmap-finalizer: the Lambda entry point is not built yet; run jobs locally with `dmap run` (see README.md)"
    );
    ExitCode::from(2)
}
