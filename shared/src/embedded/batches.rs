//! The embedded job store's index of one job's batch records, by seq. A job's batches are numbered from 0
//! with few gaps, so the index is dense: chunks of [`CHUNK`] slots, 16 bytes a batch whose record is in the
//! journal (a map of seqs took about 70, which made an embedded run's memory grow with its batches). A chunk
//! whose every slot is journaled moves to a temporary file, 12 bytes a slot, and leaves a few bytes behind: a
//! job of any number of batches holds its unfinished chunks only, and the index's memory stays flat.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::ports::BatchRecord;

/// Seqs a chunk holds: a gap in the numbering costs at most one chunk's slots.
const CHUNK: u64 = 1024;

/// Bytes of a spilled slot: its line's first byte (u64) and length (u32), little-endian.
const SLOT_BYTES: u64 = 12;

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

/// A batch record as the index finds it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Found<'a> {
    Here(&'a BatchRecord),
    Journaled(Line),
}

/// The batch records of a job, by seq.
#[derive(Debug, Default)]
pub(super) struct Batches {
    /// By chunk (seq / CHUNK).
    chunks: BTreeMap<u64, Chunk>,
    /// The spilled chunks' slots, a chunk after another, once a chunk has spilled.
    spill: Option<File>,
    /// Chunks in the spill file.
    spilled: u64,
}

#[derive(Debug)]
enum Chunk {
    Held {
        slots: Box<[Option<StoredBatch>]>,
        /// The slots filled.
        filled: u64,
    },
    /// Full, every slot journaled: its slots are the spill file's chunk `at`.
    Spilled { at: u64 },
}

impl Batches {
    pub(super) fn get(&self, seq: u64) -> std::io::Result<Option<Found<'_>>> {
        let slot = seq % CHUNK;
        match self.chunks.get(&(seq / CHUNK)) {
            None => Ok(None),
            Some(Chunk::Held { slots, .. }) => Ok(slots[slot as usize].as_ref().map(|s| match s {
                StoredBatch::Here(record) => Found::Here(record),
                &StoredBatch::Journaled(at, len) => Found::Journaled((at, len)),
            })),
            Some(&Chunk::Spilled { at }) => {
                let mut bytes = [0; SLOT_BYTES as usize];
                let file = self.spill.as_ref().expect("a chunk spilled to the file");
                file.read_exact_at(&mut bytes, (at * CHUNK + slot) * SLOT_BYTES)?;
                let (first, len) = bytes.split_at(8);
                Ok(Some(Found::Journaled((
                    u64::from_le_bytes(first.try_into().expect("8 bytes")),
                    u32::from_le_bytes(len.try_into().expect("4 bytes")),
                ))))
            }
        }
    }

    /// Stores batch `seq`'s record unless it has one: whether it was stored (the first record counts).
    pub(super) fn insert(&mut self, seq: u64, stored: StoredBatch) -> bool {
        let index = seq / CHUNK;
        let chunk = self.chunks.entry(index).or_insert_with(|| Chunk::Held {
            slots: (0..CHUNK).map(|_| None).collect(),
            filled: 0,
        });
        let Chunk::Held { slots, filled } = chunk else {
            // A spilled chunk is full.
            return false;
        };
        let slot = &mut slots[(seq % CHUNK) as usize];
        if slot.is_some() {
            return false;
        }
        *slot = Some(stored);
        *filled += 1;
        if *filled == CHUNK {
            self.spill_chunk(index);
        }
        true
    }

    /// Moves a full chunk of journaled slots to the spill file. If the file cannot be written, the chunk stays
    /// in memory: the index is only bigger.
    fn spill_chunk(&mut self, index: u64) {
        let Some(Chunk::Held { slots, .. }) = self.chunks.get(&index) else {
            return;
        };
        let mut bytes = Vec::with_capacity((CHUNK * SLOT_BYTES) as usize);
        for slot in slots.iter() {
            match slot {
                Some(StoredBatch::Journaled(at, len)) => {
                    bytes.extend_from_slice(&at.to_le_bytes());
                    bytes.extend_from_slice(&len.to_le_bytes());
                }
                // A store in memory holds its records.
                _ => return,
            }
        }
        let at = self.spilled;
        let written = match &self.spill {
            Some(file) => Ok(file),
            None => tempfile::tempfile().map(|file| &*self.spill.insert(file)),
        }
        .and_then(|file| file.write_all_at(&bytes, at * CHUNK * SLOT_BYTES));
        match written {
            Ok(()) => {
                self.spilled += 1;
                self.chunks.insert(index, Chunk::Spilled { at });
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not move a chunk of the batch index to disk; it stays in memory");
            }
        }
    }

    /// The seqs `from..to` that have a record, in order.
    pub(super) fn seqs(&self, from: u64, to: u64) -> impl Iterator<Item = u64> + '_ {
        let to = to.max(from);
        let chunks = if from < to {
            self.chunks.range(from / CHUNK..=(to - 1) / CHUNK)
        } else {
            // No seq: an empty range of chunks.
            self.chunks.range(1..1)
        };
        chunks.flat_map(move |(&index, chunk)| {
            let first = index * CHUNK;
            (0..CHUNK)
                .filter(move |&i| match chunk {
                    Chunk::Spilled { .. } => true,
                    Chunk::Held { slots, .. } => slots[i as usize].is_some(),
                })
                .map(move |i| first + i)
                .filter(move |seq| (from..to).contains(seq))
        })
    }

    /// The batches below `to` with a record.
    pub(super) fn count_below(&self, to: u64) -> u64 {
        self.chunks
            .range(..to.div_ceil(CHUNK))
            .map(|(&index, chunk)| {
                let first = index * CHUNK;
                // The chunk's slots below `to`.
                let below = (to - first).min(CHUNK);
                match chunk {
                    Chunk::Spilled { .. } => below,
                    Chunk::Held { filled, .. } if below == CHUNK => *filled,
                    Chunk::Held { slots, .. } => slots[..below as usize]
                        .iter()
                        .filter(|s| s.is_some())
                        .count() as u64,
                }
            })
            .sum()
    }

    /// The batches with a record.
    pub(super) fn len(&self) -> u64 {
        self.chunks
            .values()
            .map(|c| match c {
                Chunk::Held { filled, .. } => *filled,
                Chunk::Spilled { .. } => CHUNK,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journaled_batch_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Option<StoredBatch>>(), 16);
    }

    fn journaled(batches: &Batches, seq: u64) -> Option<Line> {
        match batches.get(seq).unwrap() {
            None => None,
            Some(Found::Journaled(line)) => Some(line),
            Some(Found::Here(_)) => panic!("batch {seq} is held"),
        }
    }

    #[test]
    fn seqs_far_apart_and_across_chunks_are_found_and_counted() {
        let mut batches = Batches::default();
        let seqs = [0, 1, 1023, 1024, 5000, 1 << 40];
        for seq in seqs.iter().rev() {
            assert!(batches.insert(*seq, StoredBatch::Journaled(*seq, 1)));
        }
        assert!(
            !batches.insert(5000, StoredBatch::Journaled(9, 9)),
            "the first record counts"
        );
        assert_eq!(journaled(&batches, 5000), Some((5000, 1)));
        assert!(journaled(&batches, 2).is_none() && journaled(&batches, 1 << 41).is_none());
        assert_eq!(batches.len(), seqs.len() as u64);
        let ranged: Vec<u64> = batches.seqs(1, 5001).collect();
        assert_eq!(ranged, [1, 1023, 1024, 5000]);
        assert_eq!(batches.seqs(6, 6).count(), 0);
        assert_eq!(batches.seqs(9, 3).count(), 0);
        assert_eq!(batches.seqs(0, u64::MAX).count(), seqs.len());
        for (to, below) in [
            (0, 0),
            (1, 1),
            (1024, 3),
            (1025, 4),
            (5000, 4),
            (5001, 5),
            (u64::MAX, 6),
        ] {
            assert_eq!(batches.count_below(to), below, "below {to}");
        }
    }

    #[test]
    fn full_chunks_of_journaled_batches_move_to_disk_and_are_still_found() {
        let mut batches = Batches::default();
        // Three chunks filled out of order, and a fourth half filled.
        let seqs: Vec<u64> = (0..3 * CHUNK + CHUNK / 2).rev().collect();
        for &seq in &seqs {
            assert!(batches.insert(seq, StoredBatch::Journaled(seq * 100, seq as u32 + 1)));
        }
        let spilled = batches
            .chunks
            .values()
            .filter(|c| matches!(c, Chunk::Spilled { .. }))
            .count();
        assert_eq!(spilled, 3, "the full chunks are on disk, the last is not");
        for &seq in &seqs {
            assert_eq!(journaled(&batches, seq), Some((seq * 100, seq as u32 + 1)));
        }
        assert!(
            !batches.insert(5, StoredBatch::Journaled(1, 1)),
            "a spilled batch keeps its first record"
        );
        assert_eq!(journaled(&batches, 5), Some((500, 6)));
        assert_eq!(batches.len(), seqs.len() as u64);
        assert_eq!(batches.count_below(CHUNK + 10), CHUNK + 10);
        let ranged: Vec<u64> = batches.seqs(CHUNK - 2, CHUNK + 2).collect();
        assert_eq!(ranged, [CHUNK - 2, CHUNK - 1, CHUNK, CHUNK + 1]);
        assert_eq!(batches.seqs(0, u64::MAX).count(), seqs.len());
        assert_eq!(batches.count_below(u64::MAX), seqs.len() as u64);
    }

    #[test]
    fn a_full_chunk_of_records_held_here_stays_in_memory() {
        let mut batches = Batches::default();
        for seq in 0..CHUNK {
            batches.insert(seq, StoredBatch::Here(Box::default()));
        }
        assert!(batches.spill.is_none());
        assert!(matches!(batches.get(7).unwrap(), Some(Found::Here(_))));
    }
}
