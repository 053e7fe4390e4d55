//! The coordinator Lambda function: S3 events for job specs, direct invokes with a job spec, and its
//! continuation queue. See `dmap_core::lambda::coordinator`.

use std::time::{Duration, SystemTime};

use dmap_core::aws::AwsClients;
use dmap_core::lambda::config::{CoordinatorConfig, process_env};
use dmap_core::lambda::coordinator::Coordinator;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

/// Hand the listing over while this much of the invocation remains (a page, its sends, the checkpoint).
const HAND_OVER_MARGIN: Duration = Duration::from_secs(90);

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_core::lambda::init_logging();
    let config = CoordinatorConfig::from_env(&process_env())?;
    let clients = AwsClients::from_env(None).await;
    let coordinator = Coordinator::from_config(&clients, config);
    let coordinator = &coordinator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = event.context.deadline();
        let keep_going = move || {
            deadline
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > HAND_OVER_MARGIN)
        };
        coordinator
            .handle(event.payload, &keep_going)
            .await
            .map_err(Error::from)
    }))
    .await
}
