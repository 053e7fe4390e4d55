//! NOAA GSOD "monthly high" (the hottest station-day of each month) as two AWS Lambda functions written for
//! AWS Step Functions *Distributed Map*, computed by dmap's own `monthly_high` processor
//! ([`MonthlyHighProcessor`]): nothing here reimplements it.
//!
//! - `gsod-monthly-high` is the map: a Distributed Map over an S3 listing, with an `ItemBatcher`, invokes it
//!   with a batch of listed objects ([`BatchEvent`]); it reads each one and answers the batch's merged
//!   monthly highs ([`BatchResponse`]). An unusable object fails the invocation, as a function that raises
//!   does, so that the Map's `Retry`/`Catch` and tolerated failure rules apply to the batch.
//! - `gsod-monthly-high-reducer` is the reduce: given where the Map run's `ResultWriter` put its manifest
//!   ([`ReducerEvent`]), it merges every successful batch's response into the result a dmap `monthly_high`
//!   job writes as `result.json`.
//!
//! In a state machine, the Map state names the batch function and writes its results to S3; a Task after it
//! passes the Map's output (`ResultWriterDetails`) to the reducer:
//!
//! ```json
//! "Monthly highs": {
//!   "Type": "Map",
//!   "ItemReader": {"Resource": "arn:aws:states:::s3:listObjectsV2",
//!                  "Parameters": {"Bucket": "my-data", "Prefix": "noaa-gsod/2021/"}},
//!   "ItemBatcher": {"MaxItemsPerBatch": 100, "BatchInput": {"Bucket": "my-data"}},
//!   "ItemProcessor": {
//!     "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
//!     "StartAt": "Batch",
//!     "States": {"Batch": {"Type": "Task", "Resource": "<gsod-monthly-high's ARN>", "End": true}}
//!   },
//!   "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
//!                    "Parameters": {"Bucket": "my-results", "Prefix": "monthly-highs"}},
//!   "Next": "Reduce"
//! },
//! "Reduce": {"Type": "Task", "Resource": "<gsod-monthly-high-reducer's ARN>", "End": true}
//! ```
//!
//! The pure parts ([`monthly_high_of`], [`reduce`], the event and file shapes) need no AWS and are unit
//! tested here; the binaries in `src/bin` only add S3 reads and `lambda_runtime`.
//!
//! A third function, `table-migration` ([`migration`]), is the pattern for migrating a DynamoDB table with a
//! `dynamodb_scan` job: it writes each item back with a derived attribute, under a condition that makes a
//! second write of the same item change nothing.

pub mod migration;

use aws_config::BehaviorVersion;
use dmap_core::processor::{
    Item, ItemError, MonthlyHighAggregate, MonthlyHighProcessor, Processor,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

/// How many objects of a batch the function reads from S3 at once. Their results are still merged in the
/// batch's order.
const READ_CONCURRENCY: usize = 8;

/// Why an invocation failed. Its `errorType` ([`FunctionError::error_type`]) is what a Distributed Map's
/// `Retry` and `Catch` match on (`ErrorEquals`), so each kind of failure has its own.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The event is not what the function takes (a missing `BatchInput.Bucket`, a misspelt option).
    #[error("{0}")]
    InvalidInput(String),
    /// An object's content is unusable (not a GSOD-like CSV): retrying cannot help. The message names the
    /// key (and the row and column, where there are some).
    #[error("{0}")]
    InvalidObject(String),
    /// S3 refused or failed a read (`NoSuchKey`, `AccessDenied`, a throttle): the message names the object.
    #[error("{0}")]
    S3Error(String),
    /// DynamoDB refused or failed a write (the migration's): the message names the table.
    #[error("{0}")]
    DynamoDbError(String),
    /// The reducer's input is not a Distributed Map result (a manifest or result file of another shape, an
    /// output that is not this batch function's response).
    #[error("{0}")]
    InvalidResult(String),
}

impl FunctionError {
    /// The `errorType` of the error document Lambda returns for this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "InvalidInput",
            Self::InvalidObject(_) => "InvalidObject",
            Self::S3Error(_) => "S3Error",
            Self::DynamoDbError(_) => "DynamoDbError",
            Self::InvalidResult(_) => "InvalidResult",
        }
    }

    /// An S3 request's failure on `s3://bucket/key`, with the service's error code and message.
    fn s3<E>(bucket: &str, key: &str, err: aws_sdk_s3::error::SdkError<E>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Self::S3Error(format!(
            "s3://{bucket}/{key}: {}",
            dmap_core::aws::boxed(err)
        ))
    }
}

impl From<ItemError> for FunctionError {
    fn from(err: ItemError) -> Self {
        match err {
            ItemError::Invalid(message) => Self::InvalidObject(message),
            // Only a body that fails midway gives this; bodies here are in memory, read from S3 first, so a
            // failed read is S3's.
            read @ ItemError::Read { .. } => Self::S3Error(read.to_string()),
        }
    }
}

/// lambda_runtime reports a handler's error as this `{"errorType", "errorMessage"}` document. Without this
/// conversion it would fall back to a Rust type name as the `errorType`.
impl From<FunctionError> for lambda_runtime::Diagnostic {
    fn from(err: FunctionError) -> Self {
        Self {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// A batch as Distributed Map sends it when its `ItemReader` lists S3 objects and an `ItemBatcher` groups
/// them: the listed objects, and the `BatchInput` the state machine passes to every batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchEvent {
    pub items: Vec<ListedObject>,
    pub batch_input: BatchInput,
}

/// One object of the listing. Distributed Map also gives `Etag`, `LastModified` and `StorageClass`; only the
/// key and size matter here, and the other fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedObject {
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
}

/// What the state machine's `ItemBatcher.BatchInput` passes: the listed bucket (the listing's items do not
/// name it), and optionally the processor's columns where a dataset's differ from GSOD's. Unknown fields are
/// refused: a misspelt option would otherwise be ignored silently.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BatchInput {
    pub bucket: String,
    pub date_column: Option<String>,
    pub value_column: Option<String>,
    pub missing: Option<String>,
    pub station_column: Option<String>,
}

impl BatchInput {
    /// The processor: GSOD's defaults with this input's overrides, checked as a dmap job spec's would be.
    pub fn processor(&self) -> Result<MonthlyHighProcessor, FunctionError> {
        let mut processor = MonthlyHighProcessor::default();
        let overrides = [
            (&mut processor.date_column, &self.date_column),
            (&mut processor.value_column, &self.value_column),
            (&mut processor.missing, &self.missing),
            (&mut processor.station_column, &self.station_column),
        ];
        for (field, value) in overrides {
            if let Some(value) = value {
                field.clone_from(value);
            }
        }
        processor.validate().map_err(|e| {
            FunctionError::InvalidInput(format!("BatchInput: {}: {}", e.field, e.message))
        })?;
        Ok(processor)
    }
}

impl BatchEvent {
    /// Parses an invocation's payload. Parsing here (rather than letting lambda_runtime deserialize the
    /// event) gives a malformed event the `InvalidInput` error type instead of a Rust type name.
    pub fn parse(payload: serde_json::Value) -> Result<Self, FunctionError> {
        serde_json::from_value(payload)
            .map_err(|e| FunctionError::InvalidInput(format!("not a Distributed Map batch: {e}")))
    }
}

/// The batch function's response: how many objects the batch had, and their merged monthly highs in the
/// processor's own serde form, which merges exactly (decimals as strings) in the reducer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchResponse {
    pub objects: u64,
    pub monthly_high: MonthlyHighAggregate,
}

impl BatchResponse {
    /// Runs the processor on one object and merges its result into the batch's.
    pub fn add(
        &mut self,
        processor: &MonthlyHighProcessor,
        key: &str,
        body: &[u8],
    ) -> Result<(), FunctionError> {
        let item = Item::Object {
            key,
            size: Some(body.len() as u64),
            body: &mut &body[..],
        };
        let processed = processor.process(item)?;
        merge(&mut self.monthly_high, processed.result)?;
        self.objects += 1;
        Ok(())
    }
}

/// `MonthlyHighProcessor::merge`; it cannot fail today, but the trait's merge may.
fn merge(
    into: &mut MonthlyHighAggregate,
    other: MonthlyHighAggregate,
) -> Result<(), FunctionError> {
    MonthlyHighProcessor::merge(into, other)
        .map_err(|e| FunctionError::InvalidResult(format!("merging monthly highs: {e}")))
}

/// The batch function's pure part: each object's monthly highs, merged in order. Stops at the first unusable
/// object: the whole batch fails, as Distributed Map counts failures per batch.
pub fn monthly_high_of<K, B>(
    processor: &MonthlyHighProcessor,
    objects: impl IntoIterator<Item = (K, B)>,
) -> Result<BatchResponse, FunctionError>
where
    K: AsRef<str>,
    B: AsRef<[u8]>,
{
    let mut response = BatchResponse::default();
    for (key, body) in objects {
        response.add(processor, key.as_ref(), body.as_ref())?;
    }
    Ok(response)
}

/// The batch function: reads the batch's objects from S3 (a few at a time, in order) and returns their merged
/// monthly highs.
pub async fn handle_batch(
    s3: &aws_sdk_s3::Client,
    payload: serde_json::Value,
) -> Result<BatchResponse, FunctionError> {
    let event = BatchEvent::parse(payload)?;
    let processor = event.batch_input.processor()?;
    let bucket = event.batch_input.bucket.as_str();
    let mut bodies = futures::stream::iter(&event.items)
        .map(|item| async move {
            let body = get_object(s3, bucket, &item.key).await?;
            Ok::<_, FunctionError>((item.key.as_str(), body))
        })
        .buffered(READ_CONCURRENCY);
    let mut response = BatchResponse::default();
    // Objects are small CSVs: each is processed whole as it arrives, on the handler's task.
    while let Some((key, body)) = bodies.try_next().await? {
        response.add(&processor, key, &body)?;
    }
    tracing::info!(
        objects = response.objects,
        months = response.monthly_high.months.len(),
        "batch done"
    );
    Ok(response)
}

/// An object's whole body.
async fn get_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, FunctionError> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| FunctionError::s3(bucket, key, e))?;
    let body = object.body.collect().await.map_err(|e| {
        FunctionError::S3Error(format!("s3://{bucket}/{key}: reading the body: {e}"))
    })?;
    Ok(body.into_bytes().to_vec())
}

/// What the reducer is invoked with: the Map run's `ResultWriterDetails` (the output of a Distributed Map
/// state with a `ResultWriter`), which say where its manifest is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReducerEvent {
    #[serde(default)]
    pub map_run_arn: Option<String>,
    pub result_writer_details: ResultWriterDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultWriterDetails {
    pub bucket: String,
    pub key: String,
}

/// A Map run's `manifest.json`: where its result files are, per status of the child executions they record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manifest {
    pub destination_bucket: String,
    #[serde(default)]
    pub map_run_arn: Option<String>,
    pub result_files: ResultFiles,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct ResultFiles {
    #[serde(default)]
    pub succeeded: Vec<ResultFile>,
    #[serde(default)]
    pub failed: Vec<ResultFile>,
    #[serde(default)]
    pub pending: Vec<ResultFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultFile {
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, FunctionError> {
        serde_json::from_slice(bytes).map_err(|e| {
            FunctionError::InvalidResult(format!("not a Distributed Map manifest: {e}"))
        })
    }
}

/// One record of a result file: a child execution (here, one batch). `Output` is the batch function's
/// response as a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResultRecord {
    #[serde(default)]
    name: Option<String>,
    status: String,
    #[serde(default)]
    output: Option<String>,
}

/// The `Output` strings of a result file's succeeded records (a result file is a JSON array of records).
/// `file` names it in errors.
pub fn outputs_of(file: &str, bytes: &[u8]) -> Result<Vec<String>, FunctionError> {
    let records: Vec<ResultRecord> = serde_json::from_slice(bytes).map_err(|e| {
        FunctionError::InvalidResult(format!("{file}: not a Distributed Map result file: {e}"))
    })?;
    let mut outputs = Vec::with_capacity(records.len());
    for record in records {
        if record.status != "SUCCEEDED" {
            continue;
        }
        let output = record.output.ok_or_else(|| {
            let name = record.name.as_deref().unwrap_or("?");
            FunctionError::InvalidResult(format!("{file}: execution {name} has no Output"))
        })?;
        outputs.push(output);
    }
    Ok(outputs)
}

/// A batch's `Output`: the function's response itself when the Map's Task names the function as its
/// `Resource`, or wrapped in `Payload` when it uses the `lambda:invoke` integration without
/// `OutputPath: "$.Payload"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum BatchOutput {
    Response(BatchResponse),
    Invoke {
        #[serde(rename = "Payload")]
        payload: BatchResponse,
    },
}

/// The reducer's pure part: every batch's response (its `Output` string) merged into the result a dmap
/// `monthly_high` job writes as `result.json`. Merging is exact and order-free, so the result does not
/// depend on how the Map batched or ordered the objects.
pub fn reduce<S: AsRef<str>>(
    outputs: impl IntoIterator<Item = S>,
) -> Result<serde_json::Value, FunctionError> {
    let mut merged = MonthlyHighAggregate::default();
    for (i, output) in outputs.into_iter().enumerate() {
        let response = match serde_json::from_str::<BatchOutput>(output.as_ref()) {
            Ok(BatchOutput::Response(response) | BatchOutput::Invoke { payload: response }) => {
                response
            }
            Err(e) => {
                let message = format!("output {i} is not a gsod-monthly-high response: {e}");
                return Err(FunctionError::InvalidResult(message));
            }
        };
        merge(&mut merged, response.monthly_high)?;
    }
    Ok(MonthlyHighProcessor::result_json(&merged))
}

/// The reducer: reads the manifest, then every SUCCEEDED result file, and merges their outputs. FAILED
/// files record batches that failed: they have no monthly highs to merge (the Map's tolerated failure
/// rules, not the reducer, decide whether the run may still succeed).
pub async fn handle_reduce(
    s3: &aws_sdk_s3::Client,
    payload: serde_json::Value,
) -> Result<serde_json::Value, FunctionError> {
    let event: ReducerEvent = serde_json::from_value(payload).map_err(|e| {
        FunctionError::InvalidInput(format!("not a Distributed Map ResultWriterDetails: {e}"))
    })?;
    let details = &event.result_writer_details;
    let manifest = Manifest::parse(&get_object(s3, &details.bucket, &details.key).await?)?;
    let bucket = manifest.destination_bucket.as_str();
    let mut outputs = Vec::new();
    // Result files are read one at a time: each may be large, and one at a time keeps at most one in memory
    // besides the outputs.
    for file in &manifest.result_files.succeeded {
        let bytes = get_object(s3, bucket, &file.key).await?;
        outputs.extend(outputs_of(&file.key, &bytes)?);
    }
    tracing::info!(
        map_run = event.map_run_arn.as_deref().unwrap_or(""),
        batches = outputs.len(),
        failed_files = manifest.result_files.failed.len(),
        "reducing"
    );
    reduce(&outputs)
}

/// An S3 client from the standard configuration (credentials, region, `AWS_ENDPOINT_URL_S3` or
/// `AWS_ENDPOINT_URL`). With an endpoint URL (an emulator's), buckets go in the path: emulators do not serve
/// them as subdomains.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let custom_endpoint =
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3 = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// JSON log lines on stdout, without colour codes: what CloudWatch Logs ingests from a Lambda function. The
/// level is `RUST_LOG`, else the function's `AWS_LAMBDA_LOG_LEVEL`, else `info` (dmap's own rule).
pub fn init_logging() {
    let filter = dmap_core::lambda::log_filter(
        std::env::var("RUST_LOG").ok(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
    );
    tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two stations' GSOD files (STATION, DATE, NAME, TEMP; 9999.9 is a missing TEMP).
    const STATION_A: &str = concat!(
        "\"STATION\",\"DATE\",\"NAME\",\"TEMP\"\n",
        "\"A\",\"2021-01-05\",\"ALPHA, XX\",\"10.5\"\n",
        "\"A\",\"2021-01-20\",\"ALPHA, XX\",\"12.0\"\n",
        "\"A\",\"2021-02-01\",\"ALPHA, XX\",\"9999.9\"\n",
    );
    const STATION_B: &str = concat!(
        "\"STATION\",\"DATE\",\"NAME\",\"TEMP\"\n",
        "\"B\",\"2021-01-06\",\"BRAVO, YY\",\"11.9\"\n",
        "\"B\",\"2021-02-02\",\"BRAVO, YY\",\"-4.5\"\n",
    );

    fn row(station: &str, date: &str, name: &str, temp: &str) -> serde_json::Value {
        json!({"STATION": station, "DATE": date, "NAME": name, "TEMP": temp})
    }

    fn gsod() -> MonthlyHighProcessor {
        MonthlyHighProcessor::default()
    }

    #[test]
    fn a_batch_answers_its_object_count_and_merged_monthly_highs() {
        let objects = [("2021/A.csv", STATION_A), ("2021/B.csv", STATION_B)];
        let response = monthly_high_of(&gsod(), objects).unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["Objects"], 2);
        let january = &json["MonthlyHigh"]["months"]["2021-01"];
        assert_eq!(january["value"], "12.0", "an exact decimal string");
        assert_eq!(january["row"], row("A", "2021-01-20", "ALPHA, XX", "12.0"));
        let february = &json["MonthlyHigh"]["months"]["2021-02"];
        assert_eq!(february["row"], row("B", "2021-02-02", "BRAVO, YY", "-4.5"));
        // What the reducer gets back from the response merges to the same result.
        let result = reduce([serde_json::to_string(&response).unwrap()]).unwrap();
        assert_eq!(
            result,
            json!({
                "2021-01": row("A", "2021-01-20", "ALPHA, XX", "12.0"),
                "2021-02": row("B", "2021-02-02", "BRAVO, YY", "-4.5"),
            })
        );
    }

    #[test]
    fn an_empty_batch_has_no_months() {
        let response = monthly_high_of(&gsod(), Vec::<(&str, &[u8])>::new()).unwrap();
        assert_eq!(
            serde_json::to_value(response).unwrap(),
            json!({"Objects": 0, "MonthlyHigh": {"months": {}}})
        );
    }

    #[test]
    fn a_malformed_object_fails_the_batch_as_invalid_object_naming_its_key() {
        let bad = "STATION,DATE,TEMP\nC,2021-03-01,hot\n";
        let objects = [("2021/A.csv", STATION_A), ("2021/C.csv", bad)];
        let err = monthly_high_of(&gsod(), objects).unwrap_err();
        assert_eq!(err.error_type(), "InvalidObject");
        assert_eq!(
            err.to_string(),
            r#""2021/C.csv": row 2, column "TEMP": "hot" is not a number"#
        );
        // The error document Lambda returns.
        let diagnostic = lambda_runtime::Diagnostic::from(err);
        let document = serde_json::to_value(diagnostic).unwrap();
        assert_eq!(document["errorType"], "InvalidObject");
        assert!(
            document["errorMessage"]
                .as_str()
                .unwrap()
                .contains("2021/C.csv")
        );
    }

    #[test]
    fn a_distributed_map_batch_parses_and_its_batch_input_overrides_the_columns() {
        let payload = json!({
            "Items": [{
                "Etag": "\"0c1d\"", "Key": "noaa-gsod/2021/A.csv", "LastModified": 1700000000,
                "Size": 1234, "StorageClass": "STANDARD"
            }],
            "BatchInput": {"Bucket": "weather", "ValueColumn": "MAX"}
        });
        let event = BatchEvent::parse(payload).unwrap();
        assert_eq!(
            event.items,
            [ListedObject {
                key: "noaa-gsod/2021/A.csv".into(),
                size: Some(1234)
            }]
        );
        let processor = event.batch_input.processor().unwrap();
        assert_eq!(processor.value_column, "MAX");
        assert_eq!(
            processor.date_column, "DATE",
            "the others keep GSOD's defaults"
        );

        let misspelt = json!({"Items": [], "BatchInput": {"Bucket": "b", "ValueColum": "MAX"}});
        let err = BatchEvent::parse(misspelt).unwrap_err();
        assert_eq!(err.error_type(), "InvalidInput");
        assert!(err.to_string().contains("ValueColum"), "{err}");
        let no_bucket = json!({"Items": [], "BatchInput": {}});
        assert_eq!(
            BatchEvent::parse(no_bucket).unwrap_err().error_type(),
            "InvalidInput"
        );
        let empty_column = json!({"Items": [], "BatchInput": {"Bucket": "b", "DateColumn": ""}});
        let err = BatchEvent::parse(empty_column)
            .unwrap()
            .batch_input
            .processor()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "BatchInput: date_column: must name a header column"
        );
    }

    #[test]
    fn reducing_two_outputs_equals_merging_their_batches() {
        let a = monthly_high_of(&gsod(), [("2021/A.csv", STATION_A)]).unwrap();
        let b = monthly_high_of(&gsod(), [("2021/B.csv", STATION_B)]).unwrap();
        let both = monthly_high_of(
            &gsod(),
            [("2021/A.csv", STATION_A), ("2021/B.csv", STATION_B)],
        )
        .unwrap();
        let outputs = [&a, &b].map(|r| serde_json::to_string(r).unwrap());
        let expected = MonthlyHighProcessor::result_json(&both.monthly_high);
        assert_eq!(reduce(&outputs).unwrap(), expected);
        assert_eq!(
            reduce(outputs.iter().rev()).unwrap(),
            expected,
            "in any order"
        );
        // The same output wrapped by the lambda:invoke integration.
        let wrapped = format!(
            r#"{{"ExecutedVersion": "$LATEST", "Payload": {}}}"#,
            outputs[1]
        );
        assert_eq!(reduce([&outputs[0], &wrapped]).unwrap(), expected);
        let err = reduce([r#"{"count": 3}"#]).unwrap_err();
        assert_eq!(err.error_type(), "InvalidResult");
    }

    #[test]
    fn a_manifest_and_a_result_file_give_the_succeeded_outputs() {
        let manifest = Manifest::parse(
            br#"{"DestinationBucket": "b", "MapRunArn": "arn:aws:states:us-east-1:1:mapRun:sm/m:r",
                 "ResultFiles": {"FAILED": [{"Key": "r/FAILED_0.json", "Size": 9}], "PENDING": [],
                                 "SUCCEEDED": [{"Key": "r/SUCCEEDED_0.json", "Size": 1}]}}"#,
        )
        .unwrap();
        assert_eq!(manifest.destination_bucket, "b");
        assert_eq!(manifest.result_files.succeeded[0].key, "r/SUCCEEDED_0.json");
        assert_eq!(manifest.result_files.failed.len(), 1);

        let file = json!([
            {"Name": "e1", "Status": "SUCCEEDED", "Input": "{}", "Output": "{\"Objects\":0}",
             "StartDate": "2024-01-01T00:00:00Z", "StopDate": "2024-01-01T00:00:01Z"},
            {"Name": "e2", "Status": "FAILED", "Input": "{}", "Error": "InvalidObject"},
        ]);
        let outputs = outputs_of("r/SUCCEEDED_0.json", file.to_string().as_bytes()).unwrap();
        assert_eq!(outputs, [r#"{"Objects":0}"#]);
        let err = outputs_of("r/SUCCEEDED_0.json", b"{}").unwrap_err();
        assert!(err.to_string().starts_with("r/SUCCEEDED_0.json: "), "{err}");
    }
}
