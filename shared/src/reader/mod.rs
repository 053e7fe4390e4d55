//! Item readers: where a job's items come from, read page by page and resumable at a position. The coordinator
//! (and the sweeper, to re-send lost batches) drives every reader the same way through [`ItemSource`]; each
//! reader kind is a file here:
//!
//! - `s3_list` (below): the objects of a listing that the filters select; a position is the last listed key.
//! - [`inventory`]: the objects an S3 Inventory report lists; a position is a data file and a row in it.
//! - [`object`]: the rows of a CSV, the lines of a JSON Lines object, the elements of a JSON array, read as
//!   a stream ([`records`]); a position is a record boundary's byte offset.
//! - [`scan`]: the items of a DynamoDB table, read by a parallel Scan in rounds; a position is a round's start
//!   and how many of its items came before.
//! - `inline` (below): the spec's own items; a position is an index.
//!
//! A position is a string, stored as the job's checkpoint: reading from the position after an item yields
//! exactly the items that followed it, so that batches re-cut after a crash or a hand-over are the same.

pub mod inventory;
pub mod object;
pub mod records;
pub mod scan;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::Deps;
pub use crate::batching::Position;
use crate::error::PipelineError;
use crate::ports::{ObjectMeta, StoreError};
use crate::processor::{BatchItem, S3Item};
use crate::spec::{InlineReader, ItemReader, Job, S3ListReader, Selection};

/// Items (each with the position just after it), as many as one read gives.
#[derive(Debug, Default)]
pub struct ReadPage {
    pub items: Vec<(BatchItem, Position)>,
    /// Where the reader stands after this page, past anything it read and did not yield (objects the filters
    /// left out): with nothing pending, a resumed read starts there.
    pub end: Option<Position>,
    /// No page follows.
    pub last: bool,
}

/// A reader of one job's items, from a position on.
#[async_trait]
pub trait ItemSource: Send {
    /// The next page. After a page with `last` set it is not called again.
    async fn next_page(&mut self) -> Result<ReadPage, PipelineError>;

    /// The bucket of the objects it yields, when it is not the reader's own (an inventory's source bucket).
    fn objects_bucket(&self) -> Option<&str> {
        None
    }
}

/// Opens the job's reader at `after` (a position an earlier page gave; `None`: the start).
pub async fn open<'a>(
    deps: &'a Deps,
    job: &'a Job,
    after: Option<&str>,
) -> Result<Box<dyn ItemSource + 'a>, PipelineError> {
    let entries = job.spec.processor.wants_listing_entries();
    Ok(match &job.spec.item_reader {
        ItemReader::S3List(reader) => Box::new(ListSource::new(deps, reader, entries, after)),
        ItemReader::S3Object(reader) => {
            Box::new(object::ObjectSource::open(deps, job, reader, after).await?)
        }
        ItemReader::S3Inventory(reader) => {
            Box::new(inventory::InventorySource::open(deps, job, reader, after).await?)
        }
        ItemReader::DynamodbScan(reader) => {
            Box::new(scan::ScanSource::open(deps, job, reader, after).await?)
        }
        ItemReader::Inline(reader) => Box::new(InlineSource::new(reader, after)?),
    })
}

/// Checks, before anything is written, that the reader's input is there and readable as asked: the bucket
/// (`s3_list`), the object and its format (`s3_object`), the report (`s3_inventory`), the table
/// (`dynamodb_scan`). Each refusal names the field and the value.
pub async fn preflight(deps: &Deps, job: &Job) -> Result<(), PipelineError> {
    match &job.spec.item_reader {
        ItemReader::S3List(reader) => match deps
            .objects
            .list_page(&reader.bucket, &reader.prefix, None, None)
            .await
        {
            Err(StoreError::NoSuchBucket { bucket }) => Err(PipelineError::Refused(format!(
                "item_reader.bucket: no bucket \"{bucket}\""
            ))),
            other => other.map(drop).map_err(Into::into),
        },
        ItemReader::S3Object(reader) => object::preflight(deps, job, reader).await,
        ItemReader::S3Inventory(reader) => inventory::read_manifest(deps, reader).await.map(drop),
        ItemReader::DynamodbScan(reader) => scan::preflight(deps, reader).await,
        ItemReader::Inline(_) => Ok(()),
    }
}

/// The refusal of an input the reader cannot open: no bucket, no object (or, on S3 without `s3:ListBucket`,
/// access denied), each naming `field` and the value.
pub(crate) fn refuse_missing(field: &str, e: StoreError) -> PipelineError {
    match e {
        StoreError::NoSuchBucket { bucket } => {
            PipelineError::Refused(format!("item_reader.bucket: no bucket \"{bucket}\""))
        }
        StoreError::NotFound { bucket, key } => {
            PipelineError::Refused(format!("{field}: no object s3://{bucket}/{key}"))
        }
        e @ StoreError::Denied { .. } => PipelineError::Refused(format!("{field}: {e}")),
        e => e.into(),
    }
}

// ------------------------------------------------------------------------------------------------ s3_list

/// The objects of a listing that the reader's filters select, page by page.
struct ListSource<'a> {
    deps: &'a Deps,
    reader: &'a S3ListReader,
    selection: Selection,
    /// Batches carry listing entries, not keys (the `lambda` processor).
    entries: bool,
    start_after: Option<String>,
    token: Option<String>,
}

impl<'a> ListSource<'a> {
    fn new(deps: &'a Deps, reader: &'a S3ListReader, entries: bool, after: Option<&str>) -> Self {
        Self {
            deps,
            reader,
            selection: reader.filters().selection(),
            entries,
            start_after: after.map(str::to_owned),
            token: None,
        }
    }
}

#[async_trait]
impl ItemSource for ListSource<'_> {
    async fn next_page(&mut self) -> Result<ReadPage, PipelineError> {
        let page = self
            .deps
            .objects
            .list_page(
                &self.reader.bucket,
                &self.reader.prefix,
                self.start_after.as_deref(),
                self.token.as_deref(),
            )
            .await?;
        let end = page.objects.last().map(|o| Position::Text(o.key.clone()));
        let items = page
            .objects
            .into_iter()
            .filter(|o| self.selection.selects(&o.key, o.size, o.last_modified_ms))
            .map(|o| {
                let key = Position::Text(o.key.clone());
                (batch_item(o, self.entries), key)
            })
            .collect();
        self.token = page.next;
        Ok(ReadPage {
            items,
            end,
            last: self.token.is_none(),
        })
    }
}

/// A listed object as a batch carries it: its listing entry, in Distributed Map's shape, or its key.
pub(crate) fn batch_item(object: ObjectMeta, entries: bool) -> BatchItem {
    if !entries {
        return BatchItem::Key(object.key);
    }
    BatchItem::Object(S3Item {
        etag: object.etag,
        key: object.key,
        last_modified: object.last_modified_ms.div_euclid(1000),
        size: object.size,
        storage_class: object.storage_class,
    })
}

// ------------------------------------------------------------------------------------------------- inline

/// Items per page of an inline list: a page is one checkpoint.
const INLINE_PAGE: usize = 1000;

/// The spec's own items; item `i` is named `items[i]`, and the position after it is `i + 1`.
struct InlineSource<'a> {
    items: &'a [serde_json::Value],
    next: usize,
}

impl<'a> InlineSource<'a> {
    fn new(reader: &'a InlineReader, after: Option<&str>) -> Result<Self, PipelineError> {
        let next = match after {
            None => 0,
            Some(position) => position.parse().map_err(|_| {
                PipelineError::Refused(format!(
                    "item_reader: the checkpoint \"{position}\" is not an inline position"
                ))
            })?,
        };
        Ok(Self {
            items: &reader.items,
            next,
        })
    }
}

#[async_trait]
impl ItemSource for InlineSource<'_> {
    async fn next_page(&mut self) -> Result<ReadPage, PipelineError> {
        let start = self.next.min(self.items.len());
        let end = (start + INLINE_PAGE).min(self.items.len());
        let items = (start..end)
            .map(|i| {
                let json = serde_json::to_string(&self.items[i]).expect("a JSON value serializes");
                let value = RawValue::from_string(json).expect("serde_json writes JSON");
                (
                    BatchItem::value(format!("items[{i}]"), value),
                    Position::Text((i + 1).to_string()),
                )
            })
            .collect();
        self.next = end;
        Ok(ReadPage {
            items,
            end: Some(Position::Text(end.to_string())),
            last: end == self.items.len(),
        })
    }
}
