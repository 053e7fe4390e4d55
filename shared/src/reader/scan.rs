//! `dynamodb_scan`: the items of a DynamoDB table, read by a parallel Scan through the table port
//! ([`crate::ports::TableReader`]), each item one plain-JSON record named `<table>#<key>`
//! (`orders#{"pk":"a","sk":3}`).
//!
//! The scan goes in rounds. A round reads the next few items of each segment in the window (up to [`WINDOW`]
//! unfinished segments, read at once), and yields them segment by segment: as many items as [`ROUND_BATCHES`]
//! full batches hold, at most [`ROUND_ITEMS`], and with `max_read_units_per_second` no more than about a
//! minute of that capacity reads ([`THROTTLED_ROUND_SECONDS`]), shared among the window. A round is what the
//! coordinator reads between two chances to hand over, so its reading must fit well inside a Lambda
//! invocation, and its items in memory twice (one round is sent while the next is read). A segment that ends
//! leaves the window, and the next segment not yet started takes its place in the next round, so a table of
//! 1,000 segments is read 16 at a time with a checkpoint that holds at most 16 keys.
//!
//! Why rounds of a fixed number of items, not of Scan pages: a resumed read must cut the same batches as the
//! first (a batch's sequence number is how duplicates are recognised), and a page's size depends on the items'
//! sizes, which a migration writing back to the table changes while the scan runs. A count of items from a key
//! depends only on which items there are. So a position is a round's start (the window's segments and the key
//! each resumes after) and how many of the round's items come before it; resuming reads that round again and
//! skips them.
//!
//! This holds while the table's set of keys stays what it was when the round was first read: an item inserted
//! or deleted in a round being re-read shifts the counted items by one, as an object created or deleted
//! shifts a re-read listing. Writes that change items in place, a migration's, change nothing.
//!
//! `max_read_units_per_second` spends the user's read capacity at that rate on average: with it set, requests
//! go one at a time, each sized from the capacity the last ones reported per item and made when the capacity
//! already spent has been paid back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{ItemSource, Position, ReadPage};
use crate::Deps;
use crate::error::PipelineError;
use crate::ports::{ScanRequest, TableError, TableItem, TableReader};
use crate::processor::BatchItem;
use crate::spec::{DynamodbScanReader, Job};

/// Most segments read at once (and so keys in a checkpoint).
pub const WINDOW: u32 = 16;

/// Most items a round reads, across its window: bounds the memory a round holds (1,600 items of 4 KB are
/// 6.4 MB; of DynamoDB's largest, 400 KB, 640 MB).
pub const ROUND_ITEMS: u32 = 1600;

/// Full batches a round reads (when they hold fewer than [`ROUND_ITEMS`]): a round is a checkpoint, so small
/// batches make small rounds.
pub const ROUND_BATCHES: u32 = 16;

/// Seconds of a throttled scan's capacity a round may take, at half a unit per item (items of up to 4 KB read
/// eventually consistent): well inside the coordinator's time before a hand-over.
pub const THROTTLED_ROUND_SECONDS: u32 = 60;

/// Items one round reads across its window, from the spec alone (so that a resumed read has the same rounds).
fn round_items(job: &Job, reader: &DynamodbScanReader) -> u32 {
    let batches = job
        .spec
        .item_batcher
        .max_items_per_batch
        .saturating_mul(ROUND_BATCHES);
    let throttled = reader.max_read_units_per_second.map_or(u32::MAX, |rate| {
        rate.saturating_mul(2 * THROTTLED_ROUND_SECONDS)
    });
    batches.min(ROUND_ITEMS).min(throttled)
}

/// The table port of the job's backend, or the refusal of a backend that has none.
fn tables(deps: &Deps) -> Result<&dyn TableReader, PipelineError> {
    deps.tables.as_deref().ok_or_else(|| {
        PipelineError::Refused(
            "item_reader.kind: \"dynamodb_scan\" needs the DynamoDB API, which the embedded backend does not \
             have: run the job against DynamoDB (--endpoint-url URL for an emulator, or AWS)"
                .to_owned(),
        )
    })
}

/// A table error before anything is written, named by field; DynamoDB being unavailable is worth a retry.
fn refuse(e: TableError) -> PipelineError {
    match e {
        e @ TableError::Unavailable(_) => e.into(),
        e => PipelineError::Refused(format!("item_reader.table: {e}")),
    }
}

/// Checks that the backend reads tables and that the table is there and readable.
pub async fn preflight(deps: &Deps, reader: &DynamodbScanReader) -> Result<(), PipelineError> {
    tables(deps)?
        .describe(&reader.table)
        .await
        .map(drop)
        .map_err(refuse)
}

/// Where a round starts: the next segment not yet started, and the window's segments, each with the key it
/// resumes after (`None`: its start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RoundStart {
    next: u32,
    active: Vec<(u32, Option<String>)>,
}

impl RoundStart {
    fn first(segments: u32) -> Self {
        let window = segments.min(WINDOW);
        Self {
            next: window,
            active: (0..window).map(|s| (s, None)).collect(),
        }
    }

    fn encode(&self) -> Arc<str> {
        serde_json::to_string(self)
            .expect("a round start serializes")
            .into()
    }

    /// A position's round start and the items of the round before it.
    fn parse(position: &str, segments: u32) -> Option<(Self, u64)> {
        let (taken, start) = position.split_once('@')?;
        let start: Self = serde_json::from_str(start).ok()?;
        let valid = start.next <= segments
            && start.active.len() <= WINDOW as usize
            && start.active.iter().all(|(s, _)| *s < start.next);
        valid.then_some((start, taken.parse().ok()?))
    }
}

/// Paces reads at a rate of capacity units per second.
#[derive(Debug)]
struct ReadRate {
    per_second: f64,
    /// Units spent and not yet paid back at the rate.
    owed: f64,
    at: Instant,
    /// The capacity one item took in the last request that read any (to size the next).
    units_per_item: f64,
}

impl ReadRate {
    fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            owed: 0.0,
            at: Instant::now(),
            // An item of up to 4 KB, read eventually consistent, until a request says otherwise.
            units_per_item: 0.5,
        }
    }

    fn pay_back(&mut self) {
        let now = Instant::now();
        let paid = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.owed = (self.owed - paid).max(0.0);
        self.at = now;
    }

    /// Waits until what was spent is paid back.
    async fn ready(&mut self) {
        self.pay_back();
        if self.owed > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(self.owed / self.per_second)).await;
            self.pay_back();
        }
    }

    fn spend(&mut self, units: f64, items: usize) {
        self.pay_back();
        self.owed += units;
        if items > 0 && units > 0.0 {
            self.units_per_item = units / items as f64;
        }
    }

    /// Items the next request may ask for: about one second's capacity.
    fn limit(&self) -> u32 {
        (self.per_second / self.units_per_item).clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

/// The items of one table, round by round, from a position on.
pub struct ScanSource<'a> {
    tables: &'a dyn TableReader,
    reader: &'a DynamodbScanReader,
    key: Vec<String>,
    round: RoundStart,
    /// Items of the current round already sent (a resumed read's first round).
    skip: u64,
    /// Items a round reads of each segment.
    per_segment: u32,
    rate: Option<Mutex<ReadRate>>,
}

impl<'a> ScanSource<'a> {
    pub async fn open(
        deps: &'a Deps,
        job: &Job,
        reader: &'a DynamodbScanReader,
        after: Option<&str>,
    ) -> Result<Self, PipelineError> {
        let tables = tables(deps)?;
        let key = tables.describe(&reader.table).await.map_err(refuse)?.key;
        let (round, skip) = match after {
            None => (RoundStart::first(reader.segments), 0),
            Some(position) => RoundStart::parse(position, reader.segments).ok_or_else(|| {
                PipelineError::Refused(format!(
                    "job \"{}\": the checkpoint \"{position}\" is not a position in a scan of {} segments",
                    job.job_id, reader.segments
                ))
            })?,
        };
        Ok(Self {
            tables,
            reader,
            key,
            round,
            skip,
            per_segment: (round_items(job, reader) / reader.segments.min(WINDOW)).max(1),
            rate: reader
                .max_read_units_per_second
                .map(|r| Mutex::new(ReadRate::new(r))),
        })
    }

    /// The round's items of one segment: up to `per_segment` of them after `start`, and the key the segment
    /// resumes after in the next round (`None`: it has ended).
    async fn read_segment(
        &self,
        segment: u32,
        mut start: Option<String>,
    ) -> Result<(Vec<TableItem>, Option<String>), PipelineError> {
        let mut items = Vec::new();
        loop {
            let wanted = self.per_segment - items.len() as u32;
            let mut request = ScanRequest {
                table: &self.reader.table,
                key: &self.key,
                segment,
                segments: self.reader.segments,
                start: start.as_deref(),
                limit: wanted,
            };
            let page = match &self.rate {
                None => self.tables.scan_page(request).await?,
                Some(rate) => {
                    // One request at a time, each within the capacity paid back.
                    let mut rate = rate.lock().await;
                    rate.ready().await;
                    request.limit = wanted.min(rate.limit());
                    let page = self.tables.scan_page(request).await?;
                    rate.spend(page.read_units, page.items.len());
                    page
                }
            };
            items.extend(page.items);
            match page.next {
                None => return Ok((items, None)),
                Some(next) if items.len() as u32 >= self.per_segment => {
                    return Ok((items, Some(next)));
                }
                next => start = next,
            }
        }
    }
}

#[async_trait]
impl ItemSource for ScanSource<'_> {
    async fn next_page(&mut self) -> Result<ReadPage, PipelineError> {
        let start = self.round.encode();
        let reads = self
            .round
            .active
            .iter()
            .map(|(segment, key)| self.read_segment(*segment, key.clone()));
        let results = futures::future::try_join_all(reads).await?;
        let mut next = RoundStart {
            next: self.round.next,
            active: Vec::with_capacity(WINDOW as usize),
        };
        let mut items = Vec::new();
        let mut taken = 0u64;
        for ((segment, _), (read, resume)) in self.round.active.iter().zip(results) {
            for item in read {
                taken += 1;
                if taken <= self.skip {
                    continue;
                }
                let id = format!("{}#{}", self.reader.table, item.key);
                let item = match item.json {
                    Ok(json) => BatchItem::value(id, json),
                    Err(e) => BatchItem::failed(id, e),
                };
                let after = Position::Round {
                    start: start.clone(),
                    taken,
                };
                items.push((item, after));
            }
            if let Some(key) = resume {
                next.active.push((*segment, Some(key)));
            }
        }
        while next.active.len() < WINDOW as usize && next.next < self.reader.segments {
            next.active.push((next.next, None));
            next.next += 1;
        }
        let last = next.active.is_empty();
        let end = Position::Round {
            start: next.encode(),
            taken: 0,
        };
        self.round = next;
        self.skip = 0;
        Ok(ReadPage {
            items,
            end: Some(end),
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let start = RoundStart {
            next: 17,
            active: vec![(3, Some(r#"{"pk":{"S":"a@b"}}"#.into())), (16, None)],
        };
        let position = Position::Round {
            start: start.encode(),
            taken: 12,
        }
        .encode();
        assert_eq!(RoundStart::parse(&position, 20), Some((start, 12)));
        assert_eq!(RoundStart::parse(&position, 16), None, "past the segments");
        for bad in ["", "12", "x@{}", r#"1@{"next":1,"active":[[1,null]]}"#] {
            assert_eq!(RoundStart::parse(bad, 4), None, "{bad}");
        }
        assert_eq!(RoundStart::first(1000).active.len(), WINDOW as usize);
        assert_eq!(RoundStart::first(3).next, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn read_rate_pays_back_what_was_spent() {
        let mut rate = ReadRate::new(10);
        let t0 = Instant::now();
        rate.ready().await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "nothing spent yet");
        assert_eq!(rate.limit(), 20, "half a unit per item until told");
        rate.spend(50.0, 400);
        assert_eq!(rate.limit(), 80, "an eighth of a unit per item");
        rate.ready().await;
        let waited = t0.elapsed().as_secs_f64();
        assert!((waited - 5.0).abs() < 0.01, "50 units at 10/s: {waited}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        rate.spend(40.0, 0);
        let t1 = Instant::now();
        rate.ready().await;
        let waited = t1.elapsed().as_secs_f64();
        assert!(
            (waited - 4.0).abs() < 0.01,
            "no credit saved while idle: {waited}"
        );
    }
}
