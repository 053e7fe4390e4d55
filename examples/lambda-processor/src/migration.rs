//! A whole-table migration as a batch function (`table-migration`), the pattern for migrating a DynamoDB table
//! with dmap: a `dynamodb_scan` job reads the table in parallel segments and hands each batch of items (as
//! plain JSON) to this function, which derives the new attributes of each item and writes them back with a
//! condition that makes the write idempotent.
//!
//! The migration here moves items to schema version 2 by adding `name_upper` (the item's `name` in capitals).
//! Each write is an UpdateItem conditioned on the item still existing and being below version 2, so:
//!
//! - a batch delivered twice, a retried invocation, or the whole job run again rewrites nothing: the second
//!   write of an item fails its condition and the item counts as `unchanged`;
//! - an item deleted since the scan read it is not brought back;
//! - an item whose `name` changed since the scan read it is not given a stale `name_upper`: it stays at its
//!   version, for the next run to migrate from its new name;
//! - a write never overwrites what another writer changed in the attributes it does not set.
//!
//! Keys reach the function as plain JSON, in which binary (`B`) is a base64 string: this example writes back
//! string and number keys; a table keyed by binary needs them decoded first.
//!
//! The job (see the README's "Migrate a DynamoDB table"):
//!
//! ```json
//! {
//!   "item_reader": {"kind": "dynamodb_scan", "table": "orders", "segments": 16},
//!   "processor": {"kind": "lambda", "function": "table-migration",
//!                 "batch_input": {"Table": "orders", "Key": ["pk", "sk"]}},
//!   "result_writer": {"bucket": "my-results", "prefix": "results/"}
//! }
//! ```
//!
//! Each batch's response counts its items: `{"migrated": 98, "unchanged": 2}`.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use dmap_core::aws::dynamo_json::from_json;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::FunctionError;

/// The schema version the migration moves items to.
pub const SCHEMA_VERSION: u32 = 2;

/// Writes in flight per invocation.
const WRITE_CONCURRENCY: usize = 8;

/// A batch of a `dynamodb_scan` job: the table's items as plain JSON, and where to write them back.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MigrationEvent {
    /// Kept as raw JSON, so that numbers keep every digit on their way back to DynamoDB.
    pub items: Vec<Box<RawValue>>,
    pub batch_input: MigrationInput,
}

/// The batch input the job gives every batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationInput {
    /// The table to write back to (the one the job scans).
    #[serde(rename = "Table")]
    pub table: String,
    /// Its primary key's attribute names.
    #[serde(rename = "Key")]
    pub key: Vec<String>,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationResponse {
    /// Items written at the new version.
    pub migrated: u64,
    /// Items already at it (or gone, renamed since the scan, or without a `name` to derive from): nothing
    /// written.
    pub unchanged: u64,
}

/// One item's write: its key, and the name read and its derived attribute (`None`: nothing to derive).
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub key: HashMap<String, AttributeValue>,
    pub name: Option<(String, String)>,
}

/// The migration of one item, pure: its key (every attribute of `key_names`, or an error naming the one
/// missing) and its derived attribute.
pub fn migrate(item_json: &str, key_names: &[String]) -> Result<Migration, FunctionError> {
    let item =
        from_json(item_json).map_err(|e| FunctionError::InvalidObject(format!("an item: {e}")))?;
    let key = key_names
        .iter()
        .map(|name| match item.get(name) {
            Some(value) => Ok((name.clone(), value.clone())),
            None => Err(FunctionError::InvalidObject(format!(
                "an item has no key attribute \"{name}\": {item_json}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    let name = match item.get("name") {
        Some(AttributeValue::S(name)) => Some((name.clone(), name.to_uppercase())),
        _ => None,
    };
    Ok(Migration { key, name })
}

/// The batch function: migrates the batch's items, a few writes at a time.
pub async fn handle_migration(
    dynamodb: &aws_sdk_dynamodb::Client,
    payload: serde_json::Value,
) -> Result<MigrationResponse, FunctionError> {
    let event: MigrationEvent = serde_json::from_value(payload)
        .map_err(|e| FunctionError::InvalidInput(format!("not a migration batch: {e}")))?;
    let input = &event.batch_input;
    if input.key.is_empty() {
        return Err(FunctionError::InvalidInput(
            "BatchInput.Key names no attribute".into(),
        ));
    }
    let written: Vec<bool> = futures::stream::iter(&event.items)
        .map(|item| async move {
            let migration = migrate(item.get(), &input.key)?;
            write(dynamodb, input, migration).await
        })
        .buffered(WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    let migrated = written.iter().filter(|w| **w).count() as u64;
    let response = MigrationResponse {
        migrated,
        unchanged: written.len() as u64 - migrated,
    };
    tracing::info!(
        migrated = response.migrated,
        unchanged = response.unchanged,
        "batch done"
    );
    Ok(response)
}

/// Writes one item's new attributes unless it is gone or already migrated; whether it wrote.
async fn write(
    dynamodb: &aws_sdk_dynamodb::Client,
    input: &MigrationInput,
    migration: Migration,
) -> Result<bool, FunctionError> {
    let Some((name, name_upper)) = migration.name else {
        return Ok(false);
    };
    let written = dynamodb
        .update_item()
        .table_name(&input.table)
        .set_key(Some(migration.key))
        .update_expression("SET #upper = :upper, #version = :version")
        .condition_expression(
            "attribute_exists(#key) AND (attribute_not_exists(#version) OR #version < :version) \
             AND #name = :name",
        )
        .expression_attribute_names("#key", &input.key[0])
        .expression_attribute_names("#name", "name")
        .expression_attribute_values(":name", AttributeValue::S(name))
        .expression_attribute_names("#upper", "name_upper")
        .expression_attribute_names("#version", "schema_version")
        .expression_attribute_values(":upper", AttributeValue::S(name_upper))
        .expression_attribute_values(":version", AttributeValue::N(SCHEMA_VERSION.to_string()))
        .send()
        .await;
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(FunctionError::DynamoDbError(format!(
            "table \"{}\": {}",
            input.table,
            dmap_core::aws::boxed(e)
        ))),
    }
}

/// A DynamoDB client from the standard configuration (credentials, region, `AWS_ENDPOINT_URL_DYNAMODB` or
/// `AWS_ENDPOINT_URL`).
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_dynamodb::Client::new(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<String> {
        vec!["pk".into(), "sk".into()]
    }

    #[test]
    fn an_item_migrates_to_its_key_and_derived_name() {
        let m = migrate(
            r#"{"pk":"p01","sk":12345678901234567890123,"name":"élan vital","n":1}"#,
            &key(),
        )
        .unwrap();
        assert_eq!(m.key["pk"], AttributeValue::S("p01".into()));
        assert_eq!(
            m.key["sk"],
            AttributeValue::N("12345678901234567890123".into()),
            "every digit"
        );
        assert_eq!(m.key.len(), 2);
        assert_eq!(
            m.name,
            Some(("élan vital".to_owned(), "ÉLAN VITAL".to_owned()))
        );
        let nameless = migrate(r#"{"pk":"p01","sk":1,"name":7}"#, &key()).unwrap();
        assert_eq!(nameless.name, None);
    }

    #[test]
    fn an_item_without_its_key_or_not_an_object_is_an_invalid_object() {
        let err = migrate(r#"{"pk":"p01"}"#, &key()).unwrap_err();
        assert_eq!(err.error_type(), "InvalidObject");
        assert!(err.to_string().contains("no key attribute \"sk\""), "{err}");
        let err = migrate("[1]", &key()).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
    }
}
