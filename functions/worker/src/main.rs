//! The worker Lambda function: SQS batches of work, answered with `batchItemFailures`. See
//! `dmap_core::lambda::worker`.

use aws_lambda_events::event::sqs::SqsEvent;
use dmap_core::aws::AwsClients;
use dmap_core::lambda::FunctionError;
use dmap_core::lambda::config::{WorkerFunctionConfig, process_env};
use dmap_core::lambda::worker::worker_time_left;
use dmap_core::worker::WorkerConfig;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::time::SystemTime;

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_core::lambda::init_logging();
    let config = WorkerFunctionConfig::from_env(&process_env())?;
    let clients = AwsClients::from_env(None).await;
    let deps = dmap_core::Deps::aws(&clients, &config.common.resources());
    let worker = WorkerConfig {
        item_concurrency: config.item_concurrency,
        ..WorkerConfig::default()
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        dmap_core::lambda::metered(async move {
            let deadline = event.context.deadline();
            let started = SystemTime::now();
            let time_left = move || worker_time_left(deadline, started, SystemTime::now());
            dmap_core::lambda::worker::handle_until(deps, worker, &event.payload, &time_left)
                .await
                .map_err(FunctionError::from)
        })
    }))
    .await
}
