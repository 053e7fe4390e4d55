//! The embedded job store's index of one job's batch records, by seq. A job's batches are numbered from 0
//! with few gaps, so the index is dense: chunks of [`CHUNK`] slots, 16 bytes a batch whose record is in the
//! journal (a map of seqs took about 70, which made an embedded run's memory grow with its batches).

use std::collections::BTreeMap;

use crate::ports::BatchRecord;

/// Seqs a chunk holds: a gap in the numbering costs at most one chunk's slots.
const CHUNK: u64 = 1024;

/// Where a line of a journal is: its first byte, and its length without the newline.
pub(super) type Line = (u64, u32);

/// A batch record: held here (a store in memory only), or where its line is in the job's journal (a
/// persistent store), so that a job of a million batches does not hold a million records and their parts.
#[derive(Debug)]
pub(super) enum StoredBatch {
    Here(Box<BatchRecord>),
    /// Its line's first byte and length ([`Line`]), as two fields: a tuple would not leave the tag room.
    Journaled(u64, u32),
}

/// The batch records of a job, by seq.
#[derive(Debug, Default)]
pub(super) struct Batches {
    /// By chunk (seq / CHUNK).
    chunks: BTreeMap<u64, Chunk>,
}

#[derive(Debug)]
struct Chunk {
    slots: Box<[Option<StoredBatch>]>,
    /// The slots filled.
    filled: u64,
}

impl Batches {
    pub(super) fn get(&self, seq: u64) -> Option<&StoredBatch> {
        self.chunks.get(&(seq / CHUNK))?.slots[(seq % CHUNK) as usize].as_ref()
    }

    /// Stores batch `seq`'s record unless it has one: whether it was stored (the first record counts).
    pub(super) fn insert(&mut self, seq: u64, stored: StoredBatch) -> bool {
        let chunk = self.chunks.entry(seq / CHUNK).or_insert_with(|| Chunk {
            slots: (0..CHUNK).map(|_| None).collect(),
            filled: 0,
        });
        let slot = &mut chunk.slots[(seq % CHUNK) as usize];
        if slot.is_some() {
            return false;
        }
        *slot = Some(stored);
        chunk.filled += 1;
        true
    }

    /// The records of the batches `from..to` that have one, in order.
    pub(super) fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &StoredBatch)> {
        let to = to.max(from);
        let chunks = if from < to {
            self.chunks.range(from / CHUNK..=(to - 1) / CHUNK)
        } else {
            // No seq: an empty range of chunks.
            self.chunks.range(1..1)
        };
        chunks.flat_map(move |(&chunk, c)| {
            c.slots.iter().enumerate().filter_map(move |(i, slot)| {
                let seq = chunk * CHUNK + i as u64;
                (from..to)
                    .contains(&seq)
                    .then_some(slot.as_ref())
                    .flatten()
                    .map(|s| (seq, s))
            })
        })
    }

    /// The batches below `to` with a record.
    pub(super) fn count_below(&self, to: u64) -> u64 {
        self.chunks
            .range(..to.div_ceil(CHUNK))
            .map(|(&chunk, c)| {
                if (chunk + 1).saturating_mul(CHUNK) <= to {
                    c.filled
                } else {
                    self.range(chunk * CHUNK, to).count() as u64
                }
            })
            .sum()
    }

    /// The batches with a record.
    pub(super) fn len(&self) -> u64 {
        self.chunks.values().map(|c| c.filled).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journaled_batch_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Option<StoredBatch>>(), 16);
    }

    #[test]
    fn seqs_far_apart_and_across_chunks_are_found_counted_and_ranged_in_order() {
        let mut batches = Batches::default();
        let seqs = [0, 1, 1023, 1024, 5000, 1 << 40];
        for seq in seqs.iter().rev() {
            assert!(batches.insert(*seq, StoredBatch::Journaled(*seq, 1)));
        }
        assert!(
            !batches.insert(5000, StoredBatch::Journaled(9, 9)),
            "the first record counts"
        );
        assert!(matches!(
            batches.get(5000),
            Some(StoredBatch::Journaled(5000, 1))
        ));
        assert!(batches.get(2).is_none() && batches.get(1 << 41).is_none());
        assert_eq!(batches.len(), seqs.len() as u64);
        let ranged: Vec<u64> = batches.range(1, 5001).map(|(s, _)| s).collect();
        assert_eq!(ranged, [1, 1023, 1024, 5000]);
        assert_eq!(batches.range(6, 6).count(), 0);
        assert_eq!(batches.range(9, 3).count(), 0);
        assert_eq!(batches.range(0, u64::MAX).count(), seqs.len());
        for (to, below) in [
            (0, 0),
            (1, 1),
            (1024, 3),
            (1025, 4),
            (5000, 4),
            (u64::MAX, 6),
        ] {
            assert_eq!(batches.count_below(to), below, "below {to}");
        }
    }
}
