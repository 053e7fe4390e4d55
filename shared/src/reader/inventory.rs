//! The `s3_inventory` reader: the objects an S3 Inventory report lists, read from its `manifest.json` and the
//! gzip-compressed CSV data files it names (streamed, never whole), with the same filters as a listing: the
//! listing of billions of keys becomes a read of a few files.
//!
//! A data file has no header; its columns are the manifest's `fileSchema`, every key URL-encoded (form
//! encoding). Delete markers and versions that are not the latest are not items. A position is `<file>:<rows>`
//! (the data file's index in the manifest and the rows read from it): gzip cannot be entered midway, so a
//! resumed read decompresses that file again and skips the rows already read.

use std::io::BufReader;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ItemSource, Position, ReadPage, refuse_missing};
use crate::Deps;
use crate::error::PipelineError;
use crate::ports::{ObjectReader, StoreError, decode_s3_key, read_up_to};
use crate::processor::{BatchItem, S3Item};
use crate::spec::{Job, S3InventoryReader, Selection};

/// The largest manifest read (Inventory's list a data file per few hundred MB of report: thousands at most).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Rows per page: a page is one checkpoint.
const PAGE_ROWS: usize = 1000;

/// An Inventory report's `manifest.json`, the fields read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryManifest {
    /// The bucket whose objects the report lists: the items' bucket.
    pub source_bucket: String,
    pub file_schema: Vec<String>,
    pub files: Vec<InventoryFile>,
}

/// One data file of a report.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InventoryFile {
    pub key: String,
    pub size: u64,
}

impl InventoryManifest {
    /// Parses a manifest. Only CSV reports are read: ORC and Parquet are refused, naming the format.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            source_bucket: String,
            file_format: String,
            file_schema: String,
            files: Vec<InventoryFile>,
        }
        let raw: Raw = serde_json::from_slice(json)
            .map_err(|e| format!("not an S3 Inventory manifest: {e}"))?;
        if !raw.file_format.eq_ignore_ascii_case("CSV") {
            return Err(format!(
                "the report's fileFormat is \"{}\": only CSV inventory reports are read",
                crate::processor::echo(&raw.file_format)
            ));
        }
        let file_schema: Vec<String> = raw
            .file_schema
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect();
        if !file_schema.iter().any(|c| c == "Key") {
            return Err(format!(
                "the report's fileSchema \"{}\" has no Key column",
                crate::processor::echo(&raw.file_schema)
            ));
        }
        Ok(Self {
            source_bucket: raw.source_bucket,
            file_schema,
            files: raw.files,
        })
    }
}

/// Reads and parses the reader's manifest; refusals name `item_reader.manifest_key` and the object.
pub async fn read_manifest(
    deps: &Deps,
    reader: &S3InventoryReader,
) -> Result<InventoryManifest, PipelineError> {
    let body = read_up_to(
        deps.objects.as_ref(),
        &reader.bucket,
        &reader.manifest_key,
        MAX_MANIFEST_BYTES,
    )
    .await
    .map_err(|e| refuse_missing("item_reader.manifest_key", e))?;
    InventoryManifest::parse(&body).map_err(|message| {
        PipelineError::Refused(format!(
            "item_reader.manifest_key: s3://{}/{}: {message}",
            reader.bucket, reader.manifest_key
        ))
    })
}

/// Where the columns the items need are in the schema.
#[derive(Debug, Clone)]
struct Columns {
    schema: Vec<String>,
    key: usize,
    size: Option<usize>,
    last_modified: Option<usize>,
    etag: Option<usize>,
    storage_class: Option<usize>,
    is_latest: Option<usize>,
    is_delete_marker: Option<usize>,
}

impl Columns {
    fn of(schema: &[String]) -> Self {
        let at = |name: &str| schema.iter().position(|c| c == name);
        Self {
            schema: schema.to_vec(),
            key: at("Key").expect("the manifest's schema has a Key"),
            size: at("Size"),
            last_modified: at("LastModifiedDate"),
            etag: at("ETag"),
            storage_class: at("StorageClass"),
            is_latest: at("IsLatest"),
            is_delete_marker: at("IsDeleteMarker"),
        }
    }
}

/// What the reader needs to turn a row into an item.
struct RowContext {
    columns: Columns,
    selection: Selection,
    /// Batches carry entries (the `lambda` processor): the row's columns, as Distributed Map gives a function.
    entries: bool,
    file: usize,
    file_key: String,
}

impl RowContext {
    /// The row's item, `None` when it is not one (a delete marker, an older version, filtered out), or why the
    /// row cannot be read.
    fn item(&self, row: &csv::StringRecord, number: u64) -> Option<Result<BatchItem, String>> {
        let c = &self.columns;
        let field = |i: Option<usize>| i.and_then(|i| row.get(i)).filter(|v| !v.is_empty());
        if row.len() != c.schema.len() {
            return Some(Err(format!(
                "{}: row {number} has {} fields, the schema {}",
                self.file_key,
                row.len(),
                c.schema.len()
            )));
        }
        if field(c.is_delete_marker) == Some("true") || field(c.is_latest) == Some("false") {
            return None;
        }
        let Some(key) = field(Some(c.key)).and_then(decode_s3_key) else {
            return Some(Err(format!(
                "{}: row {number}: the key is not URL-encoded UTF-8",
                self.file_key
            )));
        };
        let size = field(c.size)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let modified_ms = field(c.last_modified)
            .and_then(|v| {
                use aws_smithy_types::date_time::{DateTime, Format};
                DateTime::from_str(v, Format::DateTime)
                    .ok()?
                    .to_millis()
                    .ok()
            })
            .unwrap_or(0);
        if !self.selection.selects(&key, size, modified_ms) {
            return None;
        }
        if !self.entries {
            return Some(Ok(BatchItem::Key(key)));
        }
        // The entry a Distributed Map function gets for an S3 object: Etag, Key, LastModified, Size, StorageClass.
        Some(Ok(BatchItem::Object(S3Item {
            etag: field(c.etag).map_or_else(String::new, |e| format!("\"{e}\"")),
            key,
            last_modified: modified_ms.div_euclid(1000),
            size,
            storage_class: field(c.storage_class).unwrap_or("STANDARD").to_owned(),
        })))
    }
}

/// The objects of a report, one data file at a time.
pub struct InventorySource<'a> {
    deps: &'a Deps,
    bucket: String,
    manifest: InventoryManifest,
    selection: Selection,
    entries: bool,
    /// The data file being read, and the rows of it already read.
    file: usize,
    skip: u64,
    pages: Option<mpsc::Receiver<Result<FilePage, PipelineError>>>,
}

/// A page of one file's rows.
struct FilePage {
    page: ReadPage,
    /// The file's last page.
    done: bool,
}

impl<'a> InventorySource<'a> {
    /// Opens the report at `after` (`<file>:<rows>`).
    pub async fn open(
        deps: &'a Deps,
        job: &Job,
        reader: &S3InventoryReader,
        after: Option<&str>,
    ) -> Result<Self, PipelineError> {
        let manifest = read_manifest(deps, reader).await?;
        let (file, skip) = match after {
            None => (0, 0),
            Some(position) => position
                .split_once(':')
                .and_then(|(f, r)| Some((f.parse().ok()?, r.parse().ok()?)))
                .ok_or_else(|| {
                    PipelineError::Refused(format!(
                        "item_reader: the checkpoint \"{position}\" is not a position in an inventory"
                    ))
                })?,
        };
        Ok(Self {
            deps,
            bucket: reader.bucket.clone(),
            manifest,
            selection: reader.filters().selection(),
            entries: job.spec.processor.wants_listing_entries(),
            file,
            skip,
            pages: None,
        })
    }

    /// The bucket the report lists.
    pub fn source_bucket(&self) -> &str {
        &self.manifest.source_bucket
    }

    async fn open_file(&mut self) -> Result<(), PipelineError> {
        let data = &self.manifest.files[self.file];
        let body = self
            .deps
            .objects
            .get(&self.bucket, &data.key)
            .await
            .map_err(|e| match e {
                // A data file the manifest names and that is gone cannot be read again: the report is broken.
                e @ (StoreError::NotFound { .. } | StoreError::Denied { .. }) => {
                    PipelineError::Refused(format!("item_reader.manifest_key: {e}"))
                }
                e => e.into(),
            })?;
        let (tx, rx) = mpsc::channel(2);
        let context = RowContext {
            columns: Columns::of(&self.manifest.file_schema),
            selection: self.selection.clone(),
            entries: self.entries,
            file: self.file,
            file_key: data.key.clone(),
        };
        let skip = self.skip;
        tokio::task::spawn_blocking(move || read_file(body, &context, skip, &tx));
        self.pages = Some(rx);
        Ok(())
    }
}

#[async_trait]
impl ItemSource for InventorySource<'_> {
    async fn next_page(&mut self) -> Result<ReadPage, PipelineError> {
        let files = self.manifest.files.len();
        if self.file >= files {
            return Ok(ReadPage {
                end: Some(Position::Text(format!("{files}:0"))),
                last: true,
                ..ReadPage::default()
            });
        }
        if self.pages.is_none() {
            self.open_file().await?;
        }
        let page = match self.pages.as_mut().expect("a file is open").recv().await {
            Some(page) => page,
            None => Err(StoreError::Other(Box::new(std::io::Error::other(
                "the inventory's reading thread stopped",
            )))
            .into()),
        };
        let FilePage { mut page, done } = page.inspect_err(|_| self.pages = None)?;
        if done {
            self.pages = None;
            self.file += 1;
            self.skip = 0;
            page.end = Some(Position::Text(format!("{}:0", self.file)));
        }
        page.last = self.file >= files;
        Ok(page)
    }

    fn objects_bucket(&self) -> Option<&str> {
        Some(self.source_bucket())
    }
}

/// Decompresses and parses one data file into pages, skipping its first `skip` rows.
fn read_file(
    body: ObjectReader,
    context: &RowContext,
    skip: u64,
    tx: &mpsc::Sender<Result<FilePage, PipelineError>>,
) {
    let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, body));
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(gz);
    let mut row = csv::StringRecord::new();
    let mut number = 0u64;
    let mut page = ReadPage::default();
    loop {
        match csv.read_record(&mut row) {
            Ok(true) => {
                number += 1;
                if number <= skip {
                    continue;
                }
                let position = Position::Text(format!("{}:{number}", context.file));
                match context.item(&row, number) {
                    None => {}
                    Some(Ok(item)) => page.items.push((item, position.clone())),
                    Some(Err(error)) => {
                        let id = format!("{}#{number}", context.file_key);
                        page.items
                            .push((BatchItem::failed(id, error), position.clone()));
                    }
                }
                page.end = Some(position);
                if page.items.len() >= PAGE_ROWS {
                    let full = std::mem::take(&mut page);
                    if tx
                        .blocking_send(Ok(FilePage {
                            page: full,
                            done: false,
                        }))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Ok(false) => {
                let _ = tx.blocking_send(Ok(FilePage { page, done: true }));
                return;
            }
            Err(e) => {
                // A data file that cannot be decompressed or parsed (truncated, not gzip) is read again from
                // the checkpoint; one that never reads stays an error the coordinator reports.
                let error = std::io::Error::other(format!("{}: {e}", context.file_key));
                let _ = tx.blocking_send(Err(StoreError::Other(Box::new(error)).into()));
                return;
            }
        }
    }
}

/// Writes an S3 Inventory report as AWS does, for tests and benchmarks: a manifest and `files` gzip-compressed
/// CSV data files (schema `Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsLatest, IsDeleteMarker`,
/// every value quoted, keys form-encoded). Returns the manifest's JSON and the data files (key, bytes), under
/// `prefix`. `entries` are (key, size, last modified in ms, is a delete marker).
pub fn write_report(
    source_bucket: &str,
    destination_bucket: &str,
    prefix: &str,
    entries: &[(String, u64, i64, bool)],
    files: usize,
) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    use std::io::Write;
    let per_file = entries.len().div_ceil(files.max(1)).max(1);
    let data: Vec<(String, Vec<u8>)> = entries
        .chunks(per_file)
        .enumerate()
        .map(|(i, chunk)| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for (key, size, modified, marker) in chunk {
                let key: String = form_encode(key);
                let modified = aws_smithy_types::DateTime::from_millis(*modified)
                    .fmt(aws_smithy_types::date_time::Format::DateTime)
                    .expect("a date in range");
                writeln!(
                    gz,
                    "\"{source_bucket}\",\"{key}\",\"{}\",\"{modified}\",\"{:032x}\",\"STANDARD\",\"true\",\"{marker}\"",
                    if *marker { String::new() } else { size.to_string() },
                    *size as u128 * 7919,
                )
                .expect("writes to memory");
            }
            (
                format!("{prefix}data/part-{i:05}.csv.gz"),
                gz.finish().expect("writes to memory"),
            )
        })
        .collect();
    let manifest = serde_json::json!({
        "sourceBucket": source_bucket,
        "destinationBucket": format!("arn:aws:s3:::{destination_bucket}"),
        "version": "2016-11-30",
        "creationTimestamp": "1767225600000",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsLatest, IsDeleteMarker",
        "files": data.iter().map(|(key, body)| serde_json::json!({
            "key": key, "size": body.len(), "MD5checksum": ""
        })).collect::<Vec<_>>(),
    });
    (serde_json::to_vec(&manifest).expect("JSON"), data)
}

/// A key as Inventory writes it: form encoding (a space as `+`, everything but unreserved characters and `/`
/// percent-encoded).
fn form_encode(key: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/')
        .remove(b' ');
    utf8_percent_encode(key, KEEP).to_string().replace(' ', "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_read_and_other_formats_are_refused_by_name() {
        let (json, files) = write_report("src", "dst", "inv/", &[("a".into(), 1, 0, false)], 1);
        let manifest = InventoryManifest::parse(&json).unwrap();
        assert_eq!(manifest.source_bucket, "src");
        assert_eq!(manifest.file_schema[1], "Key");
        assert_eq!(manifest.files[0].key, files[0].0);
        let orc = String::from_utf8(json)
            .unwrap()
            .replace("\"CSV\"", "\"ORC\"");
        let err = InventoryManifest::parse(orc.as_bytes()).unwrap_err();
        assert!(err.contains("\"ORC\"") && err.contains("only CSV"), "{err}");
        assert!(
            InventoryManifest::parse(b"{}")
                .unwrap_err()
                .starts_with("not an S3 Inventory manifest")
        );
    }

    #[test]
    fn keys_round_trip_through_the_reports_encoding() {
        let keys = ["a b+c/100%.csv", "日本/\"quoted\", comma.txt", "tilde~x"];
        let entries: Vec<_> = keys
            .iter()
            .map(|k| (k.to_string(), 3, 1_767_225_600_000, false))
            .collect();
        let (json, files) = write_report("src", "dst", "", &entries, 2);
        let manifest = InventoryManifest::parse(&json).unwrap();
        let mut read = Vec::new();
        for (i, (_, body)) in files.into_iter().enumerate() {
            let context = RowContext {
                columns: Columns::of(&manifest.file_schema),
                selection: crate::spec::S3ListReader {
                    bucket: "src".into(),
                    prefix: String::new(),
                    suffix: None,
                    min_size: None,
                    max_size: None,
                    modified_after: None,
                    modified_before: None,
                    list_parallelism: None,
                }
                .filters()
                .selection(),
                entries: false,
                file: i,
                file_key: format!("f{i}"),
            };
            let (tx, mut rx) = mpsc::channel(8);
            read_file(Box::new(std::io::Cursor::new(body)), &context, 0, &tx);
            while let Ok(Ok(page)) = rx.try_recv() {
                read.extend(
                    page.page
                        .items
                        .into_iter()
                        .map(|(item, _)| item.key().to_owned()),
                );
            }
        }
        assert_eq!(read, keys);
    }
}
