//! The table port on DynamoDB ([`DynamoTableReader`]): DescribeTable for the key schema, Scan for pages of a
//! segment, each item turned into plain JSON ([`super::dynamo_json`]) and each `LastEvaluatedKey` into typed
//! JSON text.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{KeyType, ReturnConsumedCapacity};
use aws_smithy_runtime_api::client::result::SdkError;
use serde_json::value::RawValue;

use super::dynamo_json::{key_from_typed, key_text, key_to_typed, to_json};
use super::{detail, error_code};
use crate::ports::{ScanPage, ScanRequest, TableError, TableInfo, TableItem, TableReader};

/// Users' tables through the DynamoDB client (the pipeline's own table is [`super::DynamoJobStore`]'s).
#[derive(Debug, Clone)]
pub struct DynamoTableReader {
    client: aws_sdk_dynamodb::Client,
}

impl DynamoTableReader {
    pub fn new(client: aws_sdk_dynamodb::Client) -> Self {
        Self { client }
    }
}

fn map_error<E, R>(err: SdkError<E, R>, table: &str) -> TableError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error_code(&err) {
        Some("ResourceNotFoundException") => TableError::NoSuchTable {
            table: table.to_owned(),
        },
        Some("AccessDeniedException" | "UnrecognizedClientException") => TableError::Denied {
            table: table.to_owned(),
            message: detail(&err),
        },
        Some("ValidationException") => TableError::Invalid(detail(&err)),
        _ => TableError::Unavailable(detail(&err)),
    }
}

#[async_trait]
impl TableReader for DynamoTableReader {
    async fn describe(&self, table: &str) -> Result<TableInfo, TableError> {
        let out = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| map_error(e, table))?;
        let schema = out
            .table()
            .map(|t| t.key_schema())
            .unwrap_or_default()
            .to_vec();
        // The partition key first, as DynamoDB's own key texts name it.
        let mut key: Vec<(bool, String)> = schema
            .into_iter()
            .map(|k| (k.key_type != KeyType::Hash, k.attribute_name))
            .collect();
        key.sort();
        if key.is_empty() {
            return Err(TableError::Invalid(format!(
                "table \"{table}\" has no key schema"
            )));
        }
        Ok(TableInfo {
            key: key.into_iter().map(|(_, name)| name).collect(),
        })
    }

    async fn scan_page(&self, request: ScanRequest<'_>) -> Result<ScanPage, TableError> {
        let start = request
            .start
            .map(key_from_typed)
            .transpose()
            .map_err(TableError::Invalid)?;
        let mut scan = self
            .client
            .scan()
            .table_name(request.table)
            .limit(i32::try_from(request.limit).unwrap_or(i32::MAX))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .set_exclusive_start_key(start);
        // A Scan of one segment is a plain Scan: DynamoDB accepts `TotalSegments` 1, but leaving it out is
        // what every other client does.
        if request.segments > 1 {
            scan = scan
                .segment(request.segment as i32)
                .total_segments(request.segments as i32);
        }
        let out = scan.send().await.map_err(|e| map_error(e, request.table))?;
        let items = out
            .items()
            .iter()
            .map(|item| TableItem {
                key: key_text(item, request.key),
                json: to_json(item)
                    .map(|json| RawValue::from_string(json).expect("to_json writes JSON")),
            })
            .collect();
        let next = out
            .last_evaluated_key()
            .map(key_to_typed)
            .transpose()
            .map_err(TableError::Invalid)?;
        Ok(ScanPage {
            items,
            next,
            read_units: out
                .consumed_capacity()
                .and_then(|c| c.capacity_units())
                .unwrap_or(0.0),
        })
    }
}
