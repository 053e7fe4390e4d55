//! `dmap local up`: creates the job table and the queues (and buckets) with the SAM template's attributes, in
//! an emulator or an account, and prints their names as the environment variables `dmap run` reads; with
//! `--functions-env`, also writes the environment the Lambda functions read (for `cargo lambda watch`).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use dmap_core::aws::AwsClients;
use dmap_core::aws::resources::{self, QueueSettings, ResourceNames};

use crate::UpArgs;

pub async fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let clients = AwsClients::from_env(args.endpoint_url.as_deref()).await;
    let names = ResourceNames::with_prefix(&args.prefix);
    let settings = QueueSettings {
        work_visibility_timeout_secs: args.visibility_timeout,
        max_receive_count: args.max_receive_count,
        ..QueueSettings::default()
    };
    let urls = resources::create_all(&clients, &names, settings).await?;
    for bucket in &args.buckets {
        resources::create_bucket(&clients.s3, bucket)
            .await
            .with_context(|| format!("creating bucket {bucket}"))?;
    }
    println!("export DMAP_TABLE={}", names.table);
    println!("export DMAP_WORK_QUEUE={}", names.work_queue);
    println!("export DMAP_DEAD_LETTER_QUEUE={}", names.dead_letter_queue);
    println!("export DMAP_FINALIZE_QUEUE={}", names.finalize_queue);
    println!(
        "# finalize dead-letter queue: {}",
        names.finalize_dead_letter_queue
    );
    println!(
        "# coordinator continuation queue: {}",
        names.continuation_queue
    );
    for bucket in &args.buckets {
        println!("# bucket: {bucket}");
    }
    if let Some(path) = &args.functions_env {
        let mut env = String::new();
        let mut var = |name: &str, value: &str| {
            let _ = writeln!(env, "{name}={value}");
        };
        var("DMAP_TABLE", &names.table);
        var("DMAP_WORK_QUEUE_URL", &urls.work);
        var("DMAP_FINALIZE_QUEUE_URL", &urls.finalize);
        var("DMAP_CONTINUATION_QUEUE_URL", &urls.continuation);
        var("DMAP_ALLOWED_BUCKETS", &args.buckets.join(","));
        if let Some(endpoint) = &args.endpoint_url {
            var("AWS_ENDPOINT_URL", endpoint);
        }
        std::fs::write(path, env).with_context(|| format!("writing {}", path.display()))?;
        println!("# the functions' environment: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
