//! The reading side of a parallel `s3_list` listing. One ListObjectsV2 stream reads ~3,300 keys a second, so
//! a listing larger than one page is split after that page into key ranges, found from the listing's folders
//! or, for keys in no folder, sampled with StartAfter ([`split`]), and up to `item_reader.list_parallelism` ranges are listed at once ([`list_ranges`]), each
//! from its own position. The coordinator numbers, saves and sends what they read
//! ([`crate::coordinator`]): a range's page is numbered in the order pages arrive and saved as a
//! [`NumberedPage`] before its batches are sent, so a resumed listing re-reads just that page
//! ([`read_through`]) and cuts the same batches, and every other range resumes at its own position.
//!
//! The listers run at most one page ahead of the coordinator each: a listing never gets far ahead of what is
//! sent, and memory stays flat in the number of keys.

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::batching::{Batch, BatchLimits, Batcher, KeyRange, NumberedPage, Position};
use crate::ports::{ListPage, ObjectStore, StoreError};
use crate::processor::BatchItem;
use crate::reader::batch_item;
use crate::spec::S3ListReader;

/// How many folder levels below the prefix [`split`] looks for boundaries.
const MAX_DEPTH: usize = 3;

/// The key ranges that split the listing of the keys after `after` into about `parallelism` parts: the
/// folders one level below the prefix are the candidate boundaries, a level deeper (every folder at once)
/// while there are fewer than `parallelism`. Ranges take equal numbers of folders, the first starting after
/// `after` and the last reaching the listing's end. Keys after `after` in no folder are split at boundaries
/// sampled with StartAfter ([`flat_boundaries`]). Empty when there is nothing to split: such a listing stays
/// one stream.
///
/// Costs one ListObjectsV2 (with a delimiter) per folder looked into: one for a prefix with many folders.
pub async fn split(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    after: &str,
    parallelism: usize,
) -> Result<Vec<KeyRange>, StoreError> {
    let bucket = reader.bucket.as_str();
    let start = |folder: &str| (after.starts_with(folder) && !after.is_empty()).then_some(after);
    let mut folders = objects
        .list_folders(bucket, &reader.prefix, start(&reader.prefix))
        .await?;
    for _ in 1..MAX_DEPTH {
        if folders.len() >= parallelism || folders.is_empty() {
            break;
        }
        let deeper = futures::future::try_join_all(
            folders
                .iter()
                .map(|f| objects.list_folders(bucket, f, start(f))),
        )
        .await?;
        let deeper: Vec<String> = deeper.into_iter().flatten().collect();
        if deeper.len() <= folders.len() {
            break;
        }
        folders = deeper;
    }
    folders.retain(|f| f.as_str() > after);
    if folders.is_empty() {
        folders = flat_boundaries(objects, reader, after, parallelism).await?;
    }
    Ok(ranges_between(after, &folders, parallelism))
}

/// Points probed at once in each round of [`flat_boundaries`], and how many rounds at most.
const FLAT_PROBES: u128 = 8;
const FLAT_ROUNDS: usize = 10;

/// Boundaries for keys in no folder, sampled with StartAfter: a page of the keys after `after` gives the
/// characters keys are made of; read as numbers in that alphabet ([`KeySpace`]), rounds of probes sent at
/// once narrow down where the last key is, and the span from `after` to it is cut into `parallelism` equal
/// parts. Balanced for keys spread evenly in that space (counters, hashes, UUIDs). Costs one page and a few
/// rounds of probes (a probe per digit, then 7 a round), each round's at once; none when the keys after
/// `after` fit in one page.
async fn flat_boundaries(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    after: &str,
    parallelism: usize,
) -> Result<Vec<String>, StoreError> {
    let (bucket, prefix) = (reader.bucket.as_str(), reader.prefix.as_str());
    let start = (!after.is_empty()).then_some(after);
    let page = objects.list_page(bucket, prefix, start, None).await?;
    let (Some(last), Some(_)) = (page.objects.last(), page.next.as_ref()) else {
        return Ok(Vec::new());
    };
    let sample = page.objects.iter().map(|o| o.key.as_str());
    let Some(space) = KeySpace::of(prefix, sample.chain(start)) else {
        return Ok(Vec::new());
    };
    // With nothing sent yet (`after` empty), the span starts at the first key, not at the empty key.
    let first = page.objects.first().map_or(after, |o| o.key.as_str());
    let from = space.value(if after.is_empty() { first } else { after });
    let end = last_value(
        objects,
        reader,
        &space,
        from,
        space.value(&last.key).max(from),
    )
    .await?;
    let n = parallelism as u128;
    let mut boundaries: Vec<String> = Vec::new();
    for i in 1..n {
        let key = space.key(from + (end - from) / n * i);
        if key.as_str() > after && boundaries.last().is_none_or(|b| *b < key) {
            boundaries.push(key);
        }
    }
    Ok(boundaries)
}

/// Where the listing's last key is, as a value of `space`, found from `lo` (a listed key's value, at least
/// `from`) with rounds of StartAfter probes sent at once: the middle of the bracket they close in on.
async fn last_value(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    space: &KeySpace,
    from: u128,
    lo: u128,
) -> Result<u128, StoreError> {
    let (bucket, prefix) = (reader.bucket.as_str(), reader.prefix.as_str());
    // The last key's value is in [lo, hi]: lo a key's, nothing listed after hi. A first round probes past
    // each digit of lo at once (lo with that digit one higher and the rest cut off): the nearest that has
    // nothing after it bounds the keys to lo's digits before it; then rounds of evenly spaced probes.
    let (mut lo, mut hi) = (lo, space.max());
    let mut points: Vec<u128> = (0..space.alphabets.len())
        .map(|i| {
            let unit = space.unit(i);
            (lo / unit + 1) * unit
        })
        .filter(|p| *p <= hi)
        .collect();
    for _ in 0..FLAT_ROUNDS {
        points.sort_unstable();
        points.dedup();
        let firsts = futures::future::try_join_all(points.iter().map(|&point| {
            let key = space.key(point);
            async move {
                let page = objects.list_page(bucket, prefix, Some(&key), None).await?;
                Ok::<_, StoreError>(page.objects.first().map(|o| space.value(&o.key)))
            }
        }))
        .await?;
        let (was_lo, was_hi) = (lo, hi);
        for (point, first) in points.iter().zip(firsts) {
            match first {
                Some(value) => lo = lo.max(value),
                None => {
                    hi = hi.min(*point);
                    break;
                }
            }
        }
        // Keys written while probing, or characters outside a position's alphabet (read as the nearest one
        // below), can put a found key past a point found empty: the bracket then closes there.
        hi = hi.max(lo);
        if (lo, hi) == (was_lo, was_hi) || hi - lo <= (lo - from) / 64 {
            break;
        }
        points = (1..FLAT_PROBES)
            .map(|i| lo + (hi - lo) / FLAT_PROBES * i)
            .collect();
    }
    Ok(lo + (hi - lo) / 2)
}

/// The share of the listing's keys up to `reached`, as a listing from its start that read `sample` (keys up
/// to `reached`) sees it: `reached`'s place in the span from the first key to the last, found as
/// [`flat_boundaries`] finds it. For an estimate of a listing too long to count: keys spread evenly in that
/// span (counters, hashes, dates) make it the share of the keys. `None` when the keys give no such span.
pub async fn share_reached(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    sample: &[&str],
    reached: &str,
) -> Result<Option<f64>, StoreError> {
    let Some(space) = KeySpace::of(&reader.prefix, sample.iter().copied()).map(KeySpace::dense)
    else {
        return Ok(None);
    };
    let Some(first) = sample.first() else {
        return Ok(None);
    };
    let (from, at) = (space.value(first), space.value(reached));
    let end = last_value(objects, reader, &space, from, at.max(from)).await?;
    Ok((end > from).then(|| (at.saturating_sub(from)) as f64 / (end - from) as f64))
}

/// Keys as numbers: each character after the prefix is a digit, in the base of the characters the sample
/// showed at that position (one more digit value, 0, for "the key ended"), so that a larger number is a
/// later key and a span of keys can be cut into equal parts. A position where the sample showed only
/// characters that vary elsewhere (a counter's higher digits, constant in one page) takes all of those: its
/// later keys will vary over them too. Characters outside a position's alphabet count as the nearest one below.
/// A dense space has no 0 digit: where every key has the same length (counters padded with zeros, hashes,
/// dates), a number is then the key's rank among all keys of that length in those alphabets, so equal spans
/// of numbers hold equal numbers of evenly spread keys (with the 0 digit, a decimal counter's numbers grow as
/// its count to the power 1.04). A key shorter than the others reads as if padded with each position's first
/// character.
struct KeySpace {
    prefix: String,
    /// Each position's characters, sorted, as many positions as the sample's longest key after the prefix
    /// (at most what 120 bits hold).
    alphabets: Vec<Vec<char>>,
    /// Every sampled key had the same length.
    same_length: bool,
    /// No digit for "the key ended" ([`KeySpace::dense`]).
    dense: bool,
}

impl KeySpace {
    fn of<'k>(prefix: &str, keys: impl Iterator<Item = &'k str>) -> Option<Self> {
        let mut seen: Vec<Vec<char>> = Vec::new();
        let mut lengths = (usize::MAX, 0);
        for key in keys {
            let rest = key.strip_prefix(prefix)?;
            let length = rest.chars().count();
            lengths = (lengths.0.min(length), lengths.1.max(length));
            for (i, c) in rest.chars().enumerate() {
                if seen.len() <= i {
                    seen.push(Vec::new());
                }
                seen[i].push(c);
            }
        }
        for chars in &mut seen {
            chars.sort_unstable();
            chars.dedup();
        }
        let mut varying: Vec<char> = seen
            .iter()
            .filter(|c| c.len() > 1)
            .flatten()
            .copied()
            .collect();
        varying.sort_unstable();
        varying.dedup();
        let mut alphabets = Vec::new();
        let mut bits = 0.0;
        for chars in seen {
            let alphabet = if chars.iter().all(|c| varying.binary_search(c).is_ok()) {
                varying.clone()
            } else {
                chars
            };
            bits += (alphabet.len() as f64 + 1.0).log2();
            if bits > 120.0 {
                break;
            }
            alphabets.push(alphabet);
        }
        (!alphabets.is_empty()).then(|| Self {
            prefix: prefix.to_owned(),
            alphabets,
            same_length: lengths.0 == lengths.1,
            dense: false,
        })
    }

    /// This space without the 0 digit, if every sampled key had the same length.
    fn dense(self) -> Self {
        Self {
            dense: self.same_length,
            ..self
        }
    }

    fn base(&self, alphabet: &[char]) -> u128 {
        alphabet.len() as u128 + u128::from(!self.dense)
    }

    /// The value of one unit at `position` (the product of the bases after it).
    fn unit(&self, position: usize) -> u128 {
        self.alphabets[position + 1..]
            .iter()
            .map(|a| self.base(a))
            .product()
    }

    fn max(&self) -> u128 {
        self.unit(0) * self.base(&self.alphabets[0]) - 1
    }

    fn value(&self, key: &str) -> u128 {
        let mut chars = key.strip_prefix(self.prefix.as_str()).unwrap_or("").chars();
        let first = u128::from(!self.dense);
        self.alphabets.iter().fold(0, |value, alphabet| {
            let digit = chars.next().map_or(0, |c| {
                // The nearest character of the alphabet at or below `c`, counted from `first`.
                alphabet.partition_point(|a| *a <= c).max(1) as u128 - 1 + first
            });
            value * self.base(alphabet) + digit
        })
    }

    /// The key a number stands for: its digits up to the first 0 (every digit, in a dense space).
    fn key(&self, value: u128) -> String {
        let mut digits = Vec::with_capacity(self.alphabets.len());
        let mut rest = value;
        for alphabet in self.alphabets.iter().rev() {
            digits.push((rest % self.base(alphabet)) as usize);
            rest /= self.base(alphabet);
        }
        digits.reverse();
        let mut key = self.prefix.clone();
        if self.dense {
            key.extend(digits.iter().zip(&self.alphabets).map(|(d, a)| a[*d]));
        } else {
            key.extend(
                digits
                    .iter()
                    .zip(&self.alphabets)
                    .take_while(|(d, _)| **d > 0)
                    .map(|(d, alphabet)| alphabet[d - 1]),
            );
        }
        key
    }
}

/// Ranges from `after` to the end, split at up to `parallelism - 1` of the `boundaries` (ascending, each
/// after `after`), equally spaced among them.
fn ranges_between(after: &str, boundaries: &[String], parallelism: usize) -> Vec<KeyRange> {
    let n = parallelism.min(boundaries.len() + 1);
    if n < 2 {
        return Vec::new();
    }
    let mut cuts: Vec<&String> = (1..n)
        .map(|i| &boundaries[i * boundaries.len() / n])
        .collect();
    cuts.dedup();
    let mut ranges = Vec::with_capacity(cuts.len() + 1);
    let mut from = after.to_owned();
    for cut in cuts {
        ranges.push(KeyRange {
            after: std::mem::replace(&mut from, cut.clone()),
            upto: Some(cut.clone()),
            ..KeyRange::default()
        });
    }
    ranges.push(KeyRange {
        after: from,
        ..KeyRange::default()
    });
    ranges
}

/// What one range's lister read in one page: the items the filters select, the key it reached, and whether
/// the range ends there.
#[derive(Debug)]
pub struct RangePage {
    /// The range's index in the checkpoint's ranges.
    pub range: usize,
    pub items: Vec<BatchItem>,
    /// The last key of the range listed so far (the range's `after` when it had none).
    pub through: String,
    pub last: bool,
}

/// The pages the listers read, as the coordinator takes them.
pub struct PageFeed {
    rx: mpsc::Receiver<Result<RangePage, StoreError>>,
    /// A second page of a range already in the group being gathered waits for the next group.
    held: Vec<RangePage>,
}

impl PageFeed {
    /// The pages ready now (waiting for one if none is), at most one per range, ascending by range; `None`
    /// when every lister has ended.
    pub async fn next_group(&mut self) -> Option<Result<Vec<RangePage>, StoreError>> {
        let mut group: Vec<RangePage> = Vec::new();
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|p| p.range);
        for page in held {
            if group.iter().any(|p| p.range == page.range) {
                self.held.push(page);
            } else {
                group.push(page);
            }
        }
        if group.is_empty() {
            match self.rx.recv().await? {
                Ok(page) => group.push(page),
                Err(e) => return Some(Err(e)),
            }
        }
        // Up to the first page of a range already in the group: what is held stays one page, and the rest
        // waits in the channel, whose bound holds the listers back.
        while self.held.is_empty()
            && let Ok(received) = self.rx.try_recv()
        {
            match received {
                Ok(page) if group.iter().any(|p| p.range == page.range) => self.held.push(page),
                Ok(page) => group.push(page),
                Err(e) => return Some(Err(e)),
            }
        }
        group.sort_by_key(|p| p.range);
        Some(Ok(group))
    }
}

/// Lists the ranges that are not done, up to `parallelism` at once, while `consume` takes their pages from
/// the feed; returns what `consume` returns, as soon as it does (the listers still running are dropped).
pub async fn list_ranges<T, F, Fut>(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    entries: bool,
    ranges: &[KeyRange],
    parallelism: usize,
    consume: F,
) -> T
where
    F: FnOnce(PageFeed) -> Fut,
    Fut: Future<Output = T>,
{
    let (tx, rx) = mpsc::channel(ranges.len().max(1));
    let listers: Vec<_> = ranges
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.done)
        .map(|(i, r)| list_range(objects, reader, entries, i, r, tx.clone()))
        .collect();
    // The feed ends when the last lister drops its sender.
    drop(tx);
    let listers = futures::stream::iter(listers)
        .buffer_unordered(parallelism.max(1))
        .for_each(|()| async {});
    let consumer = consume(PageFeed {
        rx,
        held: Vec::new(),
    });
    tokio::pin!(consumer);
    tokio::select! {
        biased;
        done = &mut consumer => done,
        () = listers => consumer.await,
    }
}

/// Lists one range page by page into `tx`, until its end, an error, or the feed is dropped.
async fn list_range(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    entries: bool,
    index: usize,
    range: &KeyRange,
    tx: mpsc::Sender<Result<RangePage, StoreError>>,
) {
    let selection = reader.filters().selection();
    let mut through = range.after.clone();
    let mut token: Option<String> = None;
    loop {
        let start = (token.is_none() && !through.is_empty()).then_some(through.as_str());
        let page = match objects
            .list_page(&reader.bucket, &reader.prefix, start, token.as_deref())
            .await
        {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let ListPage {
            objects: listed,
            next,
        } = page;
        let mut last = next.is_none();
        let mut items = Vec::new();
        for object in listed {
            if range.upto.as_ref().is_some_and(|u| &object.key > u) {
                last = true;
                break;
            }
            through.clone_from(&object.key);
            if selection.selects(&object.key, object.size, object.last_modified_ms) {
                items.push(batch_item(object, entries));
            }
        }
        let page = RangePage {
            range: index,
            items,
            through: through.clone(),
            last,
        };
        if tx.send(Ok(page)).await.is_err() || last {
            return;
        }
        token = next;
    }
}

/// The items of the keys after `after` up to `through` (inclusive) that the filters select: a numbered page
/// read again, to be cut and sent again.
pub async fn read_through(
    objects: &dyn ObjectStore,
    reader: &S3ListReader,
    entries: bool,
    after: &str,
    through: &str,
) -> Result<Vec<BatchItem>, StoreError> {
    let selection = reader.filters().selection();
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let start = (token.is_none() && !after.is_empty()).then_some(after);
        let page = objects
            .list_page(&reader.bucket, &reader.prefix, start, token.as_deref())
            .await?;
        for object in page.objects {
            if object.key.as_str() > through {
                return Ok(items);
            }
            if selection.selects(&object.key, object.size, object.last_modified_ms) {
                items.push(batch_item(object, entries));
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(items),
        }
    }
}

/// One range page's items cut into batches numbered from `seq`: the whole page, its last batch partly
/// filled, so that the same items always make the same batches.
pub fn cut(limits: BatchLimits, seq: u64, items: Vec<BatchItem>) -> Vec<Batch> {
    let mut batcher = Batcher::new(limits, seq);
    let mut batches = Vec::new();
    for item in items {
        let after = Position::Text(item.key().to_owned());
        batcher.push(item, after, &mut batches);
    }
    batches.extend(batcher.flush());
    batches
}

/// A numbered page's items, read again, cut into its batches, and whether the keys changed since it was
/// numbered. When they make another number of batches, the page's numbers are kept all the same (the last
/// batches are dropped, or empty ones added) so that every number of the job's total is still sent and
/// recorded, and the job can end (FAILED, saying its input changed).
pub fn recut(
    limits: BatchLimits,
    page: &NumberedPage,
    items: Vec<BatchItem>,
) -> (Vec<Batch>, bool) {
    let mut batches = cut(limits, page.seq, items);
    let changed = batches.len() as u64 != page.batches;
    batches.truncate(page.batches as usize);
    for seq in page.seq + batches.len() as u64..page.seq + page.batches {
        batches.push(Batch {
            seq,
            items: Vec::new(),
            after: Position::default(),
        });
    }
    (batches, changed)
}

/// The numbered page that `batches` (cut from one range page) make.
pub fn numbered(batches: &[Batch], through: &str, last: bool) -> Option<NumberedPage> {
    Some(NumberedPage {
        seq: batches.first()?.seq,
        batches: batches.len() as u64,
        through: through.to_owned(),
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_numbers_keep_their_order_and_come_back() {
        let keys = [
            "in/k0000999",
            "in/k0001000",
            "in/k1",
            "in/k10",
            "in/k0999999",
        ];
        // The alphabet comes from a page of keys, as a listing's first page gives it.
        let page: Vec<String> = (0..1000).map(|i| format!("in/k{i:07}")).collect();
        let space = KeySpace::of("in/", page.iter().map(String::as_str)).unwrap();
        let mut sorted = keys.to_vec();
        sorted.sort();
        let values: Vec<u128> = sorted.iter().map(|k| space.value(k)).collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "{sorted:?} {values:?}"
        );
        for key in keys {
            assert_eq!(space.key(space.value(key)), key);
        }
        // Halfway between two counters is a counter between them.
        let mid = space.key((space.value("in/k0000000") + space.value("in/k0999999")) / 2);
        assert!(("in/k04".."in/k06").contains(&mid.as_str()), "{mid}");
    }

    #[test]
    fn a_dense_space_numbers_keys_of_one_length_by_rank() {
        let page: Vec<String> = (0..1000).map(|i| format!("in/k{i:07}")).collect();
        let space = KeySpace::of("in/", page.iter().map(String::as_str))
            .unwrap()
            .dense();
        let value = |i: u32| space.value(&format!("in/k{i:07}"));
        assert_eq!(value(19_999) - value(0), 19_999);
        assert_eq!(value(999_999) - value(0), 999_999);
        assert_eq!(space.key(value(123_456)), "in/k0123456");
        // Keys of several lengths keep their 0 digit.
        let mixed = KeySpace::of("in/", ["in/k1", "in/k10"].into_iter())
            .unwrap()
            .dense();
        assert!(mixed.value("in/k1") < mixed.value("in/k10"));
    }

    fn keys(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranges_cover_everything_after_the_first_page_once() {
        let folders = keys(&["a/", "b/", "c/", "d/", "e/", "f/", "g/", "h/"]);
        let ranges = ranges_between("0", &folders, 4);
        let bounds: Vec<(&str, Option<&str>)> = ranges
            .iter()
            .map(|r| (r.after.as_str(), r.upto.as_deref()))
            .collect();
        assert_eq!(
            bounds,
            [
                ("0", Some("c/")),
                ("c/", Some("e/")),
                ("e/", Some("g/")),
                ("g/", None)
            ]
        );
        // Fewer folders than ranges: one range per folder, and one before the first.
        assert_eq!(ranges_between("0", &keys(&["a/", "b/"]), 16).len(), 3);
        assert!(ranges_between("0", &[], 16).is_empty());
        assert!(ranges_between("0", &folders, 1).is_empty());
    }
}
