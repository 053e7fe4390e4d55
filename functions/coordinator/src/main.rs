//! The coordinator Lambda function: S3 events for job specs, direct invokes with a job spec, and its
//! continuation queue. See `dmap_core::lambda::coordinator`.

use std::time::SystemTime;

use dmap_core::aws::AwsClients;
use dmap_core::lambda::FunctionError;
use dmap_core::lambda::config::{CoordinatorConfig, process_env};
use dmap_core::lambda::coordinator::{Coordinator, time_for_another_page};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_core::lambda::init_logging();
    let config = CoordinatorConfig::from_env(&process_env())?;
    let clients = AwsClients::from_env(None).await;
    let coordinator = Coordinator::from_config(&clients, config);
    let coordinator = &coordinator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        dmap_core::lambda::metered(async move {
            let deadline = event.context.deadline();
            let keep_going = move || time_for_another_page(deadline, SystemTime::now());
            coordinator
                .handle_invocation(
                    event.payload,
                    Some(event.context.request_id.as_str()),
                    &keep_going,
                )
                .await
                .map_err(FunctionError::from)
        })
    }))
    .await
}
