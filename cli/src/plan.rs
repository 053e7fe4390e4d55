//! `dmap plan`: reads the spec, resolves the stack's settings from its template parameters, plans the job
//! against the named backend ([`dmap_core::plan`]) and prints the plan, as text or JSON.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use dmap_core::aws::{AwsClients, LambdaInvoker};
use dmap_core::plan::{self, Deployment, Plan, PlanOptions};
use dmap_infra::Stack;

use crate::PlanArgs;
use crate::backend::embedded_deps;
use crate::local_up::template_options;
use crate::run::read_spec;

pub async fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let job = read_spec(&args.spec)?.into_job();
    let (template, stack_options) = template_options(
        args.template.as_deref(),
        &args.backend.aws.stack_name,
        &args.parameter_overrides,
    )?;
    let stack = Stack::plan(&template, &stack_options)?;
    let (deployment, counter_shards) = deployment(&stack)?;
    let deps = match &args.backend.data_dir {
        Some(dir) => {
            let mut deps = embedded_deps(dir);
            if job.spec.processor.lambda().is_some() && args.sample > 0 {
                // The sample runs the user's function wherever the SDK's configuration says it is.
                let clients = AwsClients::from_env(None).await;
                deps.functions = Some(Arc::new(LambdaInvoker::new(clients.lambda)));
            }
            deps
        }
        None => {
            let clients = args.backend.aws.clients().await;
            crate::run::aws_deps(&args.backend.aws, &clients).await?.0
        }
    };
    let options = PlanOptions {
        max_pages: args.max_pages,
        sample_items: args.sample,
        remote_reads: args.backend.data_dir.is_none(),
        counter_shards,
        deployment,
        ..PlanOptions::default()
    };
    let plan = plan::plan(&deps, &job, &options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render(&plan));
    }
    Ok(ExitCode::SUCCESS)
}

/// The stack's settings that the plan's timeline and costs follow, and its counter shards.
fn deployment(stack: &Stack) -> anyhow::Result<(Deployment, u32)> {
    let number = |name: &str| -> anyhow::Result<u32> {
        let value = stack
            .context
            .parameter(name)
            .with_context(|| format!("the template has no parameter {name}"))?;
        value
            .parse()
            .with_context(|| format!("parameter {name} is not a number: {value:?}"))
    };
    let memory = |id: &str, default: u32| -> u32 {
        stack
            .properties(id)
            .ok()
            .and_then(|p| p.get("MemorySize").and_then(scalar))
            .unwrap_or(default)
    };
    let defaults = Deployment::default();
    Ok((
        Deployment {
            list_parallelism: number("MaxListParallelism")?,
            worker_max_concurrency: number("WorkerMaxConcurrency")?,
            worker_batch_size: number("WorkerBatchSize")?,
            item_concurrency: number("ItemConcurrency")?,
            worker_memory_mb: number("WorkerMemorySize")?,
            coordinator_memory_mb: memory("CoordinatorFunction", defaults.coordinator_memory_mb),
            finalizer_memory_mb: memory("FinalizerFunction", defaults.finalizer_memory_mb),
        },
        number("CounterShards")?,
    ))
}

fn scalar(value: &serde_json::Value) -> Option<u32> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Thousands separated.
fn count(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

/// Seconds as hours, minutes and seconds.
fn duration(secs: f64) -> String {
    let whole = secs.round() as u64;
    match whole {
        0..60 => format!("{secs:.1} s"),
        60..3600 => format!("{} min {} s", whole / 60, whole % 60),
        _ => format!("{} h {} min", whole / 3600, whole % 3600 / 60),
    }
}

/// The plan as the terminal shows it.
pub fn render(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let census = &plan.census;
    let _ = writeln!(out, "plan for job {}", plan.job_id);
    match &census.extrapolated {
        None => {
            let _ = writeln!(out, "  items     {} (counted)", count(census.items));
        }
        Some(e) => {
            let _ = writeln!(
                out,
                "  items     ~{} (extrapolated: {} read in {} pages reach {:?}, {:.2}% of the key span)",
                count(census.items),
                count(e.items_read),
                count(e.pages_read),
                e.reached,
                e.share * 100.0
            );
        }
    }
    let _ = writeln!(out, "  batches   {}", count(census.batches));
    let _ = writeln!(out, "  reads     {} pages", count(census.pages));
    if let Some(sample) = &plan.sample {
        let _ = writeln!(
            out,
            "  sample    {} items in {} batches: {:.3} s a batch, parts of {:.0} B, {:.0} B of outputs an item",
            count(sample.items),
            count(sample.batches),
            sample.secs_per_batch,
            sample.part_bytes,
            sample.output_bytes_per_item
        );
    }
    let _ = writeln!(
        out,
        "\nrequests (= exact for these items and batches; ~ estimated: timing decides)"
    );
    for (op, n) in &plan.requests {
        let mark = if n.exact { "=" } else { "~" };
        let most = n.most.map(|m| format!("–{}", count(m))).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {mark} {op:<44} {:>14}{most:<8} {}",
            count(n.count),
            n.what
        );
    }
    let lambda = &plan.lambda;
    let _ = writeln!(
        out,
        "  ~ {:<44} {:>14}         worker {}, coordinator {}, finalizer {}; {:.0} GB-s",
        "Lambda invocations",
        count(
            lambda.worker_invocations
                + lambda.coordinator_invocations
                + lambda.finalizer_invocations
        ),
        count(lambda.worker_invocations),
        count(lambda.coordinator_invocations),
        count(lambda.finalizer_invocations),
        lambda.gb_seconds
    );
    let services: Vec<String> = plan
        .cost_usd
        .by_service
        .iter()
        .map(|(service, usd)| format!("{service} ${usd:.4}"))
        .collect();
    let _ = writeln!(
        out,
        "\ncost      ${:.4} at {} list prices: {}",
        plan.cost_usd.total,
        plan.prices,
        services.join(", ")
    );
    let t = &plan.timeline;
    let d = &plan.deployment;
    let _ = writeln!(
        out,
        "\ntime on AWS (WorkerMaxConcurrency {}, WorkerBatchSize {}, ItemConcurrency {}, {} listing ranges)",
        d.worker_max_concurrency,
        d.worker_batch_size,
        d.item_concurrency,
        // The ranges the listing split into (one stream when it did not).
        census.ranges.max(1)
    );
    let _ = writeln!(
        out,
        "  listed     {:>14}  the last batch sent",
        duration(t.listing_secs)
    );
    let _ = writeln!(
        out,
        "  ramped up  {:>14}  {} invocations at once at the peak",
        duration(t.ramp_up_secs),
        t.peak_concurrency
    );
    let _ = writeln!(
        out,
        "  processed  {:>14}  the last batch recorded",
        duration(t.processing_secs)
    );
    let _ = writeln!(
        out,
        "  finalized  {:>14}  the finalizer's own {}",
        duration(t.total_secs),
        duration(t.finalize_secs)
    );
    let _ = writeln!(out, "  bounded by {}", t.bottleneck.as_str());
    out
}
