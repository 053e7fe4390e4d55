//! The worker Lambda function: SQS batches of work, answered with `batchItemFailures`. See
//! `dmap_core::lambda::worker`.

use aws_lambda_events::event::sqs::SqsEvent;
use dmap_core::aws::AwsClients;
use dmap_core::lambda::FunctionError;
use dmap_core::lambda::config::{WorkerFunctionConfig, process_env};
use dmap_core::worker::WorkerConfig;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_core::lambda::init_logging();
    let config = WorkerFunctionConfig::from_env(&process_env())?;
    let clients = AwsClients::from_env(None).await;
    let deps = dmap_core::Deps::aws(&clients, &config.common.resources());
    let worker = WorkerConfig {
        item_concurrency: config.item_concurrency,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        dmap_core::lambda::worker::handle(deps, worker, &event.payload)
            .await
            .map_err(FunctionError::from)
    }))
    .await
}
