//! The batch function: a Distributed Map batch of listed S3 objects in, their merged monthly highs out (see
//! the library's `handle_batch`). The S3 client is built once per execution environment, not per invoke.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_example_lambda_processor::init_logging();
    let s3 = &dmap_example_lambda_processor::s3_client().await;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            dmap_example_lambda_processor::handle_batch(s3, event.payload).await
        },
    ))
    .await
}
