//! The `s3_object` reader: the rows of one CSV object, the lines of a JSON Lines object, or the elements of a
//! top-level JSON array, each one item. The object is streamed ([`super::records`] parses it on a blocking
//! thread, a bounded channel carrying pages of items to the coordinator), never read whole.
//!
//! A position is the record boundary after an item (`<byte offset>:<line>:<index>`): a resumed read opens the
//! object with a range from that offset, so a hand-over or a crash costs no re-read of what was sent. A first-row
//! CSV header is read again from the object's start. `end` is the position past a malformed remainder (a JSON
//! array broken midway), which ends the items with one failed item naming the line.

use std::io::BufReader;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::records::{RecordError, RecordFormat, RecordPosition, RecordReader, read_csv_header};
use super::{ItemSource, Position, ReadPage, refuse_missing};
use crate::Deps;
use crate::error::PipelineError;
use crate::ports::{ObjectReader, StoreError};
use crate::processor::BatchItem;
use crate::spec::{CsvHeader, Job, ObjectFormat, S3ObjectReader};

/// Items per page: a page is one checkpoint.
const PAGE_ITEMS: usize = 1000;

/// Pages read ahead of the coordinator (the rest waits in the object's stream).
const PAGES_AHEAD: usize = 2;

/// Bytes of the object buffered at once by the parser.
const READ_BUFFER: usize = 256 * 1024;

/// The position past a malformed remainder: nothing follows.
const END: &str = "end";

/// The items of one object, read by a blocking thread.
pub struct ObjectSource {
    pages: mpsc::Receiver<Result<ReadPage, PipelineError>>,
    finished: bool,
}

impl ObjectSource {
    /// Opens the object at `after` (a position an earlier page gave).
    pub async fn open(
        deps: &Deps,
        job: &Job,
        reader: &S3ObjectReader,
        after: Option<&str>,
    ) -> Result<Self, PipelineError> {
        let (tx, pages) = mpsc::channel(PAGES_AHEAD);
        let at = match after {
            None => RecordPosition::START,
            Some(END) => {
                return Ok(Self {
                    pages,
                    finished: true,
                });
            }
            Some(position) => parse_position(position)?,
        };
        let format = record_format(deps, reader, at).await?;
        let body = deps
            .objects
            .get_from(&reader.bucket, &reader.key, at.offset)
            .await
            .map_err(|e| refuse_missing("item_reader.key", e))?;
        let key = reader.key.clone();
        let max_item_bytes = job.spec.item_batcher.max_input_bytes_per_batch as usize;
        let json = reader.format == ObjectFormat::Json;
        tokio::task::spawn_blocking(move || {
            read_pages(format, body, at, max_item_bytes, &key, json, &tx);
        });
        Ok(Self {
            pages,
            finished: false,
        })
    }
}

#[async_trait]
impl ItemSource for ObjectSource {
    async fn next_page(&mut self) -> Result<ReadPage, PipelineError> {
        if self.finished {
            return Ok(ReadPage {
                last: true,
                ..ReadPage::default()
            });
        }
        // The reading thread ends only after sending its last page or an error: no page means it panicked.
        let page = self.pages.recv().await.unwrap_or_else(|| {
            Err(StoreError::Other(Box::new(std::io::Error::other(
                "the object's reading thread stopped",
            )))
            .into())
        });
        self.finished = page.as_ref().map_or(true, |p| p.last);
        page
    }
}

/// The parser's format, with a first-row CSV header read again from the object's start when the read resumes
/// past it.
async fn record_format(
    deps: &Deps,
    reader: &S3ObjectReader,
    at: RecordPosition,
) -> Result<RecordFormat, PipelineError> {
    Ok(match reader.format {
        ObjectFormat::Jsonl => RecordFormat::Jsonl,
        ObjectFormat::Json => RecordFormat::Json,
        ObjectFormat::Csv => {
            let delimiter = reader
                .csv_delimiter
                .as_deref()
                .map_or(b',', |d| d.as_bytes()[0]);
            let header = match &reader.csv_header {
                Some(CsvHeader::Names(names)) => Some(names.clone()),
                _ if at.offset == 0 => None,
                _ => {
                    let body = deps
                        .objects
                        .get(&reader.bucket, &reader.key)
                        .await
                        .map_err(|e| refuse_missing("item_reader.key", e))?;
                    let header = tokio::task::spawn_blocking(move || {
                        read_csv_header(BufReader::with_capacity(READ_BUFFER, body), delimiter)
                    })
                    .await?
                    .map_err(|e| record_error(&reader.key, e))?;
                    Some(header.map(|(names, _)| names).unwrap_or_default())
                }
            };
            RecordFormat::Csv { header, delimiter }
        }
    })
}

/// Parses the object into pages until its end, the receiver hanging up, or an error.
fn read_pages(
    format: RecordFormat,
    body: ObjectReader,
    at: RecordPosition,
    max_item_bytes: usize,
    key: &str,
    json: bool,
    tx: &mpsc::Sender<Result<ReadPage, PipelineError>>,
) {
    let body = BufReader::with_capacity(READ_BUFFER, body);
    let mut records = match RecordReader::new(format, body, at, max_item_bytes) {
        Ok(records) => records,
        Err(e) => {
            let _ = tx.blocking_send(malformed_or_error(key, e));
            return;
        }
    };
    let mut page = ReadPage::default();
    let mut position = at;
    loop {
        match records.next_record() {
            Ok(Some(record)) => {
                let id = if json {
                    format!("{key}#[{}]", record.index)
                } else {
                    format!("{key}#L{}", record.line)
                };
                let item = match record.item {
                    Ok(text) => match RawValue::from_string(text) {
                        Ok(value) => BatchItem::value(id, value),
                        Err(e) => BatchItem::failed(id, e.to_string()),
                    },
                    Err(error) => BatchItem::failed(id, error),
                };
                position = record.end;
                page.items.push((item, at_record(position)));
                if page.items.len() >= PAGE_ITEMS {
                    page.end = Some(at_record(position));
                    if tx.blocking_send(Ok(std::mem::take(&mut page))).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => {
                page.end = Some(at_record(position));
                page.last = true;
                let _ = tx.blocking_send(Ok(page));
                return;
            }
            Err(e) => {
                let last = match malformed_or_error(key, e) {
                    Ok(failed) => {
                        page.items.extend(failed.items);
                        page.end = failed.end;
                        page.last = true;
                        Ok(page)
                    }
                    Err(e) => Err(e),
                };
                let _ = tx.blocking_send(last);
                return;
            }
        }
    }
}

/// A malformed remainder as the last item (a failed one, naming the line), or a read error (transient: the
/// coordinator tries again from its checkpoint).
fn malformed_or_error(key: &str, e: RecordError) -> Result<ReadPage, PipelineError> {
    match e {
        RecordError::Malformed { line, message } => Ok(ReadPage {
            items: vec![(
                BatchItem::failed(format!("{key}#L{line}"), message),
                END.into(),
            )],
            end: Some(END.into()),
            last: true,
        }),
        e => Err(record_error(key, e)),
    }
}

fn record_error(key: &str, e: RecordError) -> PipelineError {
    match e {
        RecordError::Read(source) => StoreError::Other(Box::new(std::io::Error::new(
            source.kind(),
            format!("reading \"{key}\": {source}"),
        )))
        .into(),
        RecordError::Malformed { line, message } => {
            PipelineError::Refused(format!("item_reader.key: \"{key}\" line {line}: {message}"))
        }
    }
}

fn at_record(position: RecordPosition) -> Position {
    Position::Record {
        offset: position.offset,
        line: position.line,
        index: position.index,
    }
}

fn parse_position(position: &str) -> Result<RecordPosition, PipelineError> {
    let (offset, line, index) = Position::parse_record(position).ok_or_else(|| {
        PipelineError::Refused(format!(
            "item_reader: the checkpoint \"{position}\" is not a position in an object"
        ))
    })?;
    Ok(RecordPosition {
        offset,
        line,
        index,
    })
}

/// The object is there, and its start reads as the format says: a CSV header (first row or given names) that
/// names every column once, a JSON document that is an array. Refusals name `item_reader.key` and the object.
pub async fn preflight(
    deps: &Deps,
    job: &Job,
    reader: &S3ObjectReader,
) -> Result<(), PipelineError> {
    let format = record_format(deps, reader, RecordPosition::START).await?;
    let body = deps
        .objects
        .get(&reader.bucket, &reader.key)
        .await
        .map_err(|e| refuse_missing("item_reader.key", e))?;
    let max_item_bytes = job.spec.item_batcher.max_input_bytes_per_batch as usize;
    let location = format!("s3://{}/{}", reader.bucket, reader.key);
    tokio::task::spawn_blocking(move || {
        let body = BufReader::with_capacity(READ_BUFFER, body);
        let mut records = RecordReader::new(format, body, RecordPosition::START, max_item_bytes)?;
        // The first record shows whether a JSON document is an array at all.
        records.next_record().map(drop)
    })
    .await?
    .map_err(|e| match e {
        RecordError::Malformed { line, message } => PipelineError::Refused(format!(
            "item_reader.key: {location} line {line}: {message}"
        )),
        e => record_error(&reader.key, e),
    })
}
