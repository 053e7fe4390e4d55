//! The reducer: a Distributed Map run's `ResultWriterDetails` in, the merged monthly highs of its succeeded
//! batches out, as a dmap `monthly_high` job's `result.json` (see the library's `handle_reduce`).

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    dmap_example_lambda_processor::init_logging();
    let s3 = &dmap_example_lambda_processor::s3_client().await;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            dmap_example_lambda_processor::handle_reduce(s3, event.payload).await
        },
    ))
    .await
}
