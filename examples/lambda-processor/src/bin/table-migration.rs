//! The migration's batch function: a batch of a `dynamodb_scan` job's items in, each written back at the new
//! schema version unless it already is (see the library's `migration` module). The DynamoDB client is built
//! once per execution environment, not per invoke.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_example_lambda_processor::init_logging();
    let dynamodb = &dmap_example_lambda_processor::migration::dynamodb_client().await;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            dmap_example_lambda_processor::migration::handle_migration(dynamodb, event.payload)
                .await
        },
    ))
    .await
}
