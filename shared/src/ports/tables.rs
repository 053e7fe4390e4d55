//! The table port: a user's DynamoDB table read by a parallel Scan (the `dynamodb_scan` reader). Its one
//! adapter is DynamoDB's API ([`crate::aws::DynamoTableReader`]), on AWS or an emulator; the embedded backend
//! has none, and refuses such a job by name.
//!
//! Items cross the port as plain JSON text (the mapping is [`crate::aws::dynamo_json`]'s), and a position in a
//! segment as the typed JSON of a primary key (`{"pk":{"S":"a"}}`), so that nothing above the adapter knows
//! DynamoDB's types.

use async_trait::async_trait;
use serde_json::value::RawValue;

/// What a reader needs to know of a table before scanning it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The primary key's attribute names: the partition key, then the sort key if there is one.
    pub key: Vec<String>,
}

/// One Scan request: up to `limit` items of `segment` (of `segments`), after `start` (a key an earlier page
/// gave; `None`: the segment's start).
#[derive(Debug, Clone, Copy)]
pub struct ScanRequest<'a> {
    pub table: &'a str,
    pub key: &'a [String],
    pub segment: u32,
    pub segments: u32,
    pub start: Option<&'a str>,
    pub limit: u32,
}

/// One item of a scanned page.
#[derive(Debug, Clone)]
pub struct TableItem {
    /// The item's primary key as compact JSON (`{"pk":"a","sk":3}`), to name the item.
    pub key: String,
    /// The item as plain JSON, or why it cannot be written as JSON (an attribute type newer than the SDK):
    /// that item fails, not the read.
    pub json: Result<Box<RawValue>, String>,
}

/// One Scan response.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    pub items: Vec<TableItem>,
    /// Where the next page of the segment starts (DynamoDB's `LastEvaluatedKey`, typed JSON); `None` once the
    /// segment is read to its end.
    pub next: Option<String>,
    /// The read capacity the request consumed, as DynamoDB reports it.
    pub read_units: f64,
}

/// Why a table could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("no table \"{table}\"")]
    NoSuchTable { table: String },
    #[error("not allowed to read table \"{table}\": {message}")]
    Denied { table: String, message: String },
    /// A request DynamoDB rejects as invalid, or a start key that is not one this port wrote.
    #[error("{0}")]
    Invalid(String),
    /// Throttled or unreachable after the SDK's retries: worth trying again later.
    #[error("DynamoDB: {0}")]
    Unavailable(String),
}

/// A table reader.
#[async_trait]
pub trait TableReader: Send + Sync {
    /// The table's key schema (DescribeTable).
    async fn describe(&self, table: &str) -> Result<TableInfo, TableError>;

    /// One page of a segment (Scan), its capacity reported.
    async fn scan_page(&self, request: ScanRequest<'_>) -> Result<ScanPage, TableError>;
}
