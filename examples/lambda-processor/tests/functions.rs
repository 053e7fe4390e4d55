//! The two functions as Step Functions' Distributed Map would run them: the real binaries on a local Lambda
//! Invoke API (`cargo lambda watch`), invoked through the AWS SDK's Lambda client and dmap's own
//! `LambdaInvoker`, reading GSOD-shaped CSVs from moto's S3. Also the harness itself: a throttled invocation
//! reaches the SDK as Lambda's `TooManyRequestsException`.

mod common;

use aws_sdk_lambda::primitives::Blob;
use common::{InvokeApi, ThrottlingProxy, lambda_client};
use dmap_core::aws::{AwsClients, LambdaInvoker, error_code};
use dmap_core::ports::{FunctionInvoker, InvokeError};
use dmap_core::processor::{MonthlyHighProcessor, Processor};
use dmap_example_lambda_processor::{monthly_high_of, reduce};
use serde_json::{Value, json};

const BATCH_FUNCTION: &str = "gsod-monthly-high";
const REDUCER: &str = "gsod-monthly-high-reducer";

/// Three stations' daily summaries (GSOD's columns, cut down; 9999.9 is a missing TEMP) and one file that
/// is not a GSOD CSV.
const OBJECTS: [(&str, &str); 3] = [
    (
        "noaa-gsod/2021/01001099999.csv",
        concat!(
            "\"STATION\",\"DATE\",\"NAME\",\"TEMP\",\"MAX\"\n",
            "\"01001099999\",\"2021-01-01\",\"JAN MAYEN, NO\",\"30.2\",\"33.1\"\n",
            "\"01001099999\",\"2021-01-02\",\"JAN MAYEN, NO\",\"35.0\",\"37.4\"\n",
            "\"01001099999\",\"2021-02-01\",\"JAN MAYEN, NO\",\"9999.9\",\"9999.9\"\n",
        ),
    ),
    (
        "noaa-gsod/2021/72503014732.csv",
        concat!(
            "\"STATION\",\"DATE\",\"NAME\",\"TEMP\",\"MAX\"\n",
            "\"72503014732\",\"2021-01-15\",\"LAGUARDIA AIRPORT, NY US\",\"41.3\",\"45.0\"\n",
            "\"72503014732\",\"2021-02-10\",\"LAGUARDIA AIRPORT, NY US\",\"38.0\",\"44.1\"\n",
        ),
    ),
    (
        "noaa-gsod/2021/94767099999.csv",
        concat!(
            "\"STATION\",\"DATE\",\"NAME\",\"TEMP\",\"MAX\"\n",
            "\"94767099999\",\"2021-01-20\",\"SYDNEY AIRPORT, AS\",\"75.1\",\"84.2\"\n",
            "\"94767099999\",\"2021-03-05\",\"SYDNEY AIRPORT, AS\",\"70.0\",\"77.0\"\n",
        ),
    ),
];
const MALFORMED: (&str, &str) = (
    "noaa-gsod/2021/broken.csv",
    "\"STATION\",\"DATE\",\"TEMP\"\n\"X\",\"2021-01-01\",\"warm\"\n",
);

/// Each month's winning station, as the objects above give it.
fn expected_winners() -> Value {
    json!({"2021-01": "94767099999", "2021-02": "72503014732", "2021-03": "94767099999"})
}

/// moto's S3 with a fresh bucket holding the objects, and the Invoke API serving `functions`, whose S3 is
/// moto's.
async fn setup(functions: &[&str]) -> (AwsClients, String, InvokeApi) {
    let clients = dmap_emulator::clients().await;
    let bucket = dmap_emulator::bucket(&clients, "gsod").await;
    for (key, body) in OBJECTS.iter().chain([&MALFORMED]) {
        clients
            .s3
            .put_object()
            .bucket(&bucket)
            .key(*key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("upload an object");
    }
    let binaries: Vec<(&str, &str)> = functions
        .iter()
        .map(|&name| match name {
            BATCH_FUNCTION => (name, env!("CARGO_BIN_EXE_gsod-monthly-high")),
            REDUCER => (name, env!("CARGO_BIN_EXE_gsod-monthly-high-reducer")),
            other => panic!("no binary {other}"),
        })
        .collect();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_S3", dmap_emulator::endpoint()),
        ("RUST_LOG", "info"),
    ];
    let api = InvokeApi::start(&binaries, &env);
    (clients, bucket, api)
}

/// The batch Distributed Map sends for `keys`: each object as its S3 listing gives it (Etag, LastModified in
/// epoch seconds, Size, StorageClass), and the bucket in `BatchInput`.
async fn batch_event(clients: &AwsClients, bucket: &str, keys: &[&str]) -> Value {
    let listing = clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("list the bucket");
    let items: Vec<Value> = keys
        .iter()
        .map(|key| {
            let object = listing
                .contents()
                .iter()
                .find(|o| o.key() == Some(*key))
                .unwrap_or_else(|| panic!("{key} is not listed"));
            json!({
                "Etag": object.e_tag(),
                "Key": key,
                "LastModified": object.last_modified().map(|t| t.secs()),
                "Size": object.size(),
                "StorageClass": object.storage_class().map(|c| c.as_str()),
            })
        })
        .collect();
    json!({"Items": items, "BatchInput": {"Bucket": bucket}})
}

async fn invoke(
    client: &aws_sdk_lambda::Client,
    function: &str,
    payload: &Value,
) -> Result<
    aws_sdk_lambda::operation::invoke::InvokeOutput,
    aws_sdk_lambda::error::SdkError<aws_sdk_lambda::operation::invoke::InvokeError>,
> {
    client
        .invoke()
        .function_name(function)
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
}

/// The batch function's error for `payload`, through dmap's adapter: its type and message.
async fn function_error(invoker: &LambdaInvoker, payload: &Value) -> (String, String) {
    let err = invoker
        .invoke(BATCH_FUNCTION, payload.to_string().into_bytes())
        .await
        .unwrap_err();
    let InvokeError::Function {
        error_type,
        error_message,
    } = err
    else {
        panic!("not a function error: {err:?}")
    };
    (error_type, error_message)
}

/// The payload of a successful invocation, as JSON.
fn response_of(output: &aws_sdk_lambda::operation::invoke::InvokeOutput) -> Value {
    assert_eq!(output.function_error(), None, "{output:?}");
    let payload = output.payload().expect("a payload").as_ref();
    serde_json::from_slice(payload).expect("a JSON response")
}

/// Each month's winning station in a `MonthlyHigh` aggregate's serde form.
fn winners(monthly_high: &Value) -> Value {
    let months = monthly_high["months"].as_object().expect("months");
    let winners = months
        .iter()
        .map(|(month, winner)| (month.clone(), winner["station"].clone()));
    Value::Object(winners.collect())
}

#[tokio::test]
async fn the_batch_function_answers_a_batch_and_raises_on_an_unusable_object() {
    let (clients, bucket, api) = setup(&[BATCH_FUNCTION]).await;
    let lambda = lambda_client(&api.endpoint());

    let keys = OBJECTS.map(|(key, _)| key);
    let output = invoke(
        &lambda,
        BATCH_FUNCTION,
        &batch_event(&clients, &bucket, &keys).await,
    )
    .await
    .expect("invoke the batch function");
    let response = response_of(&output);
    assert_eq!(response["Objects"], 3);
    assert_eq!(winners(&response["MonthlyHigh"]), expected_winners());
    // Exactly what the processor computes in-process over the same bytes: nothing lost on the way.
    let local = monthly_high_of(&MonthlyHighProcessor::default(), OBJECTS).unwrap();
    assert_eq!(response, serde_json::to_value(&local).unwrap());
    let january = &response["MonthlyHigh"]["months"]["2021-01"]["row"];
    assert_eq!(january["NAME"], "SYDNEY AIRPORT, AS");
    assert_eq!(january["TEMP"], "75.1");

    // BatchInput overrides the processor's columns: the hottest MAX instead of the hottest mean.
    let mut by_max = batch_event(&clients, &bucket, &keys[..2]).await;
    by_max["BatchInput"]["ValueColumn"] = json!("MAX");
    let response = response_of(
        &invoke(&lambda, BATCH_FUNCTION, &by_max)
            .await
            .expect("invoke"),
    );
    assert_eq!(
        response["MonthlyHigh"]["months"]["2021-02"]["value"],
        "44.1"
    );

    // A malformed object fails the whole invocation, as a raised exception does. `cargo lambda` answers a
    // function error with HTTP 500 and the error document, where Lambda answers 200 with
    // `X-Amz-Function-Error`: through the SDK that is an error whose raw response holds the document.
    let event = batch_event(&clients, &bucket, &[keys[0], MALFORMED.0]).await;
    let err = invoke(&lambda, BATCH_FUNCTION, &event)
        .await
        .expect_err("a malformed object fails the invocation");
    let raw = err.raw_response().expect("an HTTP answer");
    assert_eq!(raw.status().as_u16(), 500);
    let document: Value = serde_json::from_slice(raw.body().bytes().unwrap()).unwrap();
    assert_eq!(document["errorType"], "InvalidObject");
    assert_eq!(
        document["errorMessage"],
        r#""noaa-gsod/2021/broken.csv": row 2, column "TEMP": "warm" is not a number"#
    );

    // dmap's adapter reads the same answer as the function's error.
    let invoker = LambdaInvoker::new(lambda.clone());
    let (error_type, error_message) = function_error(&invoker, &event).await;
    assert_eq!(error_type, "InvalidObject");
    assert!(
        error_message.contains("noaa-gsod/2021/broken.csv"),
        "{error_message}"
    );

    // An object that is not there: S3's error, naming the object.
    let missing = json!({
        "Items": [{"Key": "noaa-gsod/2021/nope.csv", "Size": 1}],
        "BatchInput": {"Bucket": bucket},
    });
    let (error_type, error_message) = function_error(&invoker, &missing).await;
    assert_eq!(error_type, "S3Error");
    assert!(
        error_message.contains(&format!("s3://{bucket}/noaa-gsod/2021/nope.csv: NoSuchKey")),
        "{error_message}"
    );
}

#[tokio::test]
async fn throttled_invocations_reach_the_sdk_as_too_many_requests_until_the_proxy_forwards() {
    let (clients, bucket, api) = setup(&[BATCH_FUNCTION]).await;
    let event = batch_event(&clients, &bucket, &[OBJECTS[0].0]).await;

    let proxy = ThrottlingProxy::start(&api.endpoint(), 2);
    let lambda = lambda_client(proxy.endpoint());
    for attempt in 0..2 {
        let err = invoke(&lambda, BATCH_FUNCTION, &event)
            .await
            .expect_err("throttled");
        assert_eq!(
            error_code(&err),
            Some("TooManyRequestsException"),
            "attempt {attempt}"
        );
        assert!(err.into_service_error().is_too_many_requests_exception());
    }
    let output = invoke(&lambda, BATCH_FUNCTION, &event)
        .await
        .expect("the third invocation is forwarded");
    assert_eq!(response_of(&output)["Objects"], 1);
    assert_eq!((proxy.throttled(), proxy.forwarded()), (2, 1));

    // dmap's adapter: a throttle is `Throttled` (transient), and a function's error relayed by the proxy is
    // still the function's.
    let proxy = ThrottlingProxy::start(&api.endpoint(), 1);
    let invoker = LambdaInvoker::new(lambda_client(proxy.endpoint()));
    let payload = event.to_string().into_bytes();
    let err = invoker
        .invoke(BATCH_FUNCTION, payload.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, InvokeError::Throttled(_)), "{err:?}");
    assert!(err.is_transient());
    let response: Value =
        serde_json::from_slice(&invoker.invoke(BATCH_FUNCTION, payload).await.unwrap()).unwrap();
    assert_eq!(response["Objects"], 1);
    let malformed = batch_event(&clients, &bucket, &[MALFORMED.0]).await;
    let err = invoker
        .invoke(BATCH_FUNCTION, malformed.to_string().into_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InvokeError::Function { error_type, .. } if error_type == "InvalidObject"),
        "{err:?}"
    );
    assert_eq!((proxy.throttled(), proxy.forwarded()), (1, 2));
}

#[tokio::test]
async fn the_reducer_merges_the_succeeded_batches_of_a_map_run() {
    let (clients, bucket, api) = setup(&[BATCH_FUNCTION, REDUCER]).await;
    let lambda = lambda_client(&api.endpoint());

    // Two batches, as a Map with MaxItemsPerBatch 2 would make them; their responses become the records'
    // Output strings, as the ResultWriter writes them.
    let keys = OBJECTS.map(|(key, _)| key);
    let mut records = Vec::new();
    let mut outputs = Vec::new();
    for (i, batch) in [&keys[..2], &keys[2..]].into_iter().enumerate() {
        let input = batch_event(&clients, &bucket, batch).await;
        let output = response_of(
            &invoke(&lambda, BATCH_FUNCTION, &input)
                .await
                .expect("invoke"),
        );
        outputs.push(output.to_string());
        records.push(json!({
            "ExecutionArn": format!("arn:aws:states:us-east-1:123456789012:execution:gsod/map:{i}"),
            "Name": format!("{i}"),
            "Status": "SUCCEEDED",
            "Input": input.to_string(),
            "InputDetails": {"Included": true},
            "Output": output.to_string(),
            "OutputDetails": {"Included": true},
            "StartDate": "2024-06-01T12:00:00.000Z",
            "StopDate": "2024-06-01T12:00:01.000Z",
            "RedriveCount": 0,
            "RedriveStatus": "NOT_REDRIVABLE",
        }));
    }
    let failed = json!([{
        "Name": "2", "Status": "FAILED", "Input": "{}", "Error": "InvalidObject",
        "Cause": "\"noaa-gsod/2021/broken.csv\": row 2", "StartDate": "2024-06-01T12:00:00.000Z",
        "StopDate": "2024-06-01T12:00:01.000Z",
    }]);
    let prefix = "results/gsod/0f1e2d3c";
    let map_run_arn = "arn:aws:states:us-east-1:123456789012:mapRun:gsod/map:0f1e2d3c";
    let manifest = json!({
        "DestinationBucket": bucket,
        "MapRunArn": map_run_arn,
        "ResultFiles": {
            "FAILED": [{"Key": format!("{prefix}/FAILED_0.json"), "Size": failed.to_string().len()}],
            "PENDING": [],
            "SUCCEEDED": [{"Key": format!("{prefix}/SUCCEEDED_0.json"), "Size": 1}],
        },
    });
    let files = [
        ("SUCCEEDED_0.json", Value::Array(records)),
        ("FAILED_0.json", failed),
        ("manifest.json", manifest),
    ];
    for (name, content) in files {
        clients
            .s3
            .put_object()
            .bucket(&bucket)
            .key(format!("{prefix}/{name}"))
            .body(content.to_string().into_bytes().into())
            .send()
            .await
            .expect("write a result file");
    }

    let event = json!({
        "MapRunArn": map_run_arn,
        "ResultWriterDetails": {"Bucket": bucket, "Key": format!("{prefix}/manifest.json")},
    });
    let result = response_of(
        &invoke(&lambda, REDUCER, &event)
            .await
            .expect("invoke the reducer"),
    );
    // The merge of the two batches' outputs, the same as one pass over all three objects, in the form of a
    // dmap monthly_high job's result.json.
    assert_eq!(result, reduce(&outputs).unwrap());
    let all = monthly_high_of(&MonthlyHighProcessor::default(), OBJECTS).unwrap();
    assert_eq!(result, MonthlyHighProcessor::result_json(&all.monthly_high));
    let stations = result.as_object().unwrap().iter();
    let stations = stations.map(|(month, row)| (month.clone(), row["STATION"].clone()));
    assert_eq!(Value::Object(stations.collect()), expected_winners());
}
