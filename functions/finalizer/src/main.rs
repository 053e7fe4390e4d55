//! The finalizer Lambda function: the finalize queue's triggers and the work queue's dead letters. See
//! `dmap_core::lambda::finalizer`.

use aws_lambda_events::event::sqs::SqsEvent;
use dmap_core::aws::AwsClients;
use dmap_core::lambda::FunctionError;
use dmap_core::lambda::config::{FinalizerFunctionConfig, process_env};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_core::lambda::init_logging();
    let config = FinalizerFunctionConfig::from_env(&process_env())?;
    let clients = AwsClients::from_env(None).await;
    let deps = dmap_core::Deps::aws(&clients, &config.common.resources());
    let (deps, finalizer) = (&deps, config.finalizer());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        dmap_core::lambda::metered(async move {
            dmap_core::lambda::finalizer::handle(deps, finalizer, &event.payload)
                .await
                .map_err(FunctionError::from)
        })
    }))
    .await
}
