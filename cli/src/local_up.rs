//! `dmap local up`: creates a stack's queues, table and bucket from the SAM template's own definitions (queue
//! attributes, key schema, TTL), in an emulator or an account, and prints their names as the environment
//! variables `dmap run` reads; with `--functions-env`, also writes the environment the template gives the
//! Lambda functions (for `cargo lambda watch`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use dmap_core::aws::AwsClients;
use dmap_core::aws::resources;
use dmap_infra::{Stack, StackOptions, Template};

use crate::{StackArgs, UpArgs};

/// The template and the stack's options the arguments name.
pub fn stack_options(args: &StackArgs) -> anyhow::Result<(Template, StackOptions)> {
    template_options(
        args.template.as_deref(),
        &args.stack_name,
        &args.parameter_overrides,
    )
}

/// A template (`path`, or the bundled one) and the options of the stack `stack_name` deployed from it with
/// `overrides` (`Key=Value`, as `sam deploy --parameter-overrides` takes them).
pub fn template_options(
    path: Option<&Path>,
    stack_name: &str,
    overrides: &[String],
) -> anyhow::Result<(Template, StackOptions)> {
    let template = match path {
        None => Template::bundled(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Template::parse(&text).with_context(|| format!("reading {}", path.display()))?
        }
    };
    let mut options = StackOptions::new(stack_name);
    if let Ok(region) = std::env::var("AWS_REGION") {
        options.region = region;
    }
    let mut parameters = BTreeMap::new();
    for pair in overrides {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--parameter-overrides takes Key=Value, not {pair:?}");
        };
        parameters.insert(
            key.trim().to_owned(),
            value.trim().trim_matches('"').to_owned(),
        );
    }
    options.parameters = parameters;
    Ok((template, options))
}

pub async fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let clients = AwsClients::from_env(args.endpoint_url.as_deref()).await;
    let (template, options) = stack_options(&args.stack)?;
    let stack = Stack::create(&clients, &template, &options).await?;
    for bucket in &args.buckets {
        resources::create_bucket(&clients.s3, bucket)
            .await
            .with_context(|| format!("creating bucket {bucket}"))?;
    }
    let queue = |id: &str| {
        stack
            .queue(id)
            .map(|q| q.name.clone())
            .with_context(|| format!("the template has no queue {id}"))
    };
    let table = stack
        .tables
        .get("JobsTable")
        .context("the template has no JobsTable")?;
    let bucket = stack
        .buckets
        .get("DataBucket")
        .context("the template has no DataBucket")?;
    println!("export DMAP_TABLE={table}");
    println!("export DMAP_WORK_QUEUE={}", queue("WorkQueue")?);
    println!(
        "export DMAP_DEAD_LETTER_QUEUE={}",
        queue("WorkDeadLetterQueue")?
    );
    println!("export DMAP_FINALIZE_QUEUE={}", queue("FinalizeQueue")?);
    println!("export DMAP_BUCKET={bucket}");
    for (id, q) in &stack.queues {
        println!("# queue {id}: {}", q.name);
    }
    for bucket in &args.buckets {
        println!("# bucket: {bucket}");
    }
    if let Some(path) = &args.functions_env {
        // `cargo lambda watch` takes one environment for all functions: the union, which is each function's
        // own as long as no two set one variable differently.
        let mut union: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for function in &stack.functions {
            for (name, value) in &function.environment {
                if let Some((other, previous)) = union.insert(name, (value, &function.binary))
                    && other != value
                {
                    bail!(
                        "{name} is {other:?} for {previous} but {value:?} for {}: one env file cannot serve both",
                        function.binary
                    );
                }
            }
        }
        let mut env = String::new();
        for (name, (value, _)) in union {
            let _ = writeln!(env, "{name}={value}");
        }
        if let Some(endpoint) = &args.endpoint_url {
            let _ = writeln!(env, "AWS_ENDPOINT_URL={endpoint}");
        }
        std::fs::write(path, env).with_context(|| format!("writing {}", path.display()))?;
        println!("# the functions' environment: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
