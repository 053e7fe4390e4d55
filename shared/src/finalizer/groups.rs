//! A result of more groups than one process should hold (`csv_aggregate` grouped by a field with millions of
//! distinct values): a merge spills it in shards, by a hash of each group's key, and the finalizer merges it
//! shard by shard into `result-<shard>.json`, which `result.json` then indexes.
//!
//! A merge holds at most [`FinalizerConfig::result_groups`] groups, and one part's more (the root: one range's
//! result more): past that it writes
//! what it holds as [`SHARDS`] objects under `finalize/groups/`, one per shard, and goes on empty. Which spills
//! there are is known from the merges (a tree's range results name theirs), never from a listing, so an earlier
//! run's spills are never read. A merge numbers its spills from its first batch (the root's from past the last
//! batch), and spills at the same parts every time, so a merge run again writes the same bytes to the same keys.
//! The shards are merged one at a time: the finalizer holds one shard's groups, a `1/SHARDS` share of them
//! (past `SHARDS` times the bound, that share is more than the bound: memory then grows with the groups, 32
//! times slower). A merge that overflows a sum while writing the shards fails the job, and leaves the shards
//! written before it, with no index.
//!
//! A result that never passes the bound is written whole, as `result.json`, exactly as before.
//!
//! [`FinalizerConfig::result_groups`]: super::FinalizerConfig::result_groups

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{FinalizerConfig, PART_READ_CONCURRENCY};
use crate::error::PipelineError;
use crate::layout::OutputLocation;
use crate::ports::JobRecord;
use crate::ports::{ObjectStore, read_all};
use crate::processor::{Aggregate, pretty_json};

/// The shards a spilled result is split into: with the default bound of 100,000 groups, a result of up to
/// 3.2 million groups is merged holding no more than a spill's worth at once.
pub(crate) const SHARDS: usize = 32;

/// One spill: its number, and its writer's id (see [`Groups::new`]), which both name its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Spill(u64, u32);

/// The processor's result being merged, spilled in shards past a bound of groups.
#[derive(Debug)]
pub(super) struct Groups {
    held: Aggregate,
    empty: Aggregate,
    bound: usize,
    /// The number of this merge's next spill.
    next: u64,
    /// This merge's id in its spills' keys.
    writer: u32,
    /// Every spill the result is made of: this merge's and those it took from others, in order.
    spills: Vec<Spill>,
}

impl Groups {
    /// An empty result (`empty`) that spills past `bound` groups, for the merge of the batches `from..to` of
    /// the run `run` (the root's: from the last batch on). Its spills are numbered from `from` (a merge spills
    /// at most once a part) and named by a hash of all four too, so that a merge of another shape or bound
    /// (the finalizer's settings changed while a job finalized) never writes over this one's spills.
    pub(super) fn new(empty: Aggregate, bound: usize, run: u64, from: u64, to: u64) -> Self {
        let bound = bound.max(1);
        Self {
            held: empty.clone(),
            empty,
            bound,
            next: from,
            writer: crc32c::crc32c(format!("{run}/{from}/{to}/{bound}").as_bytes()),
            spills: Vec::new(),
        }
    }

    /// The empty result of `record`'s job, for the merge of its batches `from..to` (see [`Groups::new`]).
    pub(super) fn of_job(record: &JobRecord, config: &FinalizerConfig, from: u64, to: u64) -> Self {
        let spec = &record.job.spec;
        Self::new(
            spec.processor.empty_for(spec.item_reader.item_kind()),
            config.result_groups,
            record.created_at_ms,
            from,
            to,
        )
    }

    /// Merges `other` in, and spills what it holds if that is past the bound.
    pub(super) async fn merge(
        &mut self,
        objects: &dyn ObjectStore,
        out: &OutputLocation,
        other: Aggregate,
    ) -> Result<(), PipelineError> {
        self.held.merge(other)?;
        if self.held.groups() > self.bound {
            let spill = Spill(self.next, self.writer);
            let held = std::mem::replace(&mut self.held, self.empty.clone());
            // The futures made first (not by a stream's closure), for the future to be `Send`; each shard is
            // serialized as its put starts, not all at once.
            let puts: Vec<_> = held
                .shard(SHARDS)
                .into_iter()
                .enumerate()
                .map(|(shard, groups)| {
                    let key = spill_key(out, spill, shard);
                    async move {
                        let body = serde_json::to_vec(&groups).expect("a result serializes");
                        objects.put(&out.bucket, &key, body).await
                    }
                })
                .collect();
            futures::stream::iter(puts)
                .buffer_unordered(PART_READ_CONCURRENCY)
                .try_collect::<()>()
                .await?;
            self.spills.push(spill);
            self.next += 1;
        }
        Ok(())
    }

    /// Takes in the spills another merge wrote (a range's, for the root): they are part of this result.
    pub(super) fn adopt(&mut self, spills: &[Spill]) {
        self.spills.extend_from_slice(spills);
    }

    /// What a range's merge hands on: the groups it holds, and its spills.
    pub(super) fn into_parts(self) -> (Aggregate, Vec<Spill>) {
        (self.held, self.spills)
    }

    /// Writes the result, and gives `result.json`'s bytes: the result itself, or, for one that spilled, the
    /// index of its shards, each merged from the spills (and the groups still held) and written first.
    pub(super) async fn write(
        self,
        objects: &dyn ObjectStore,
        out: &OutputLocation,
        job_id: &str,
    ) -> Result<Vec<u8>, PipelineError> {
        if self.spills.is_empty() {
            return Ok(self.held.result_bytes());
        }
        let mut files = Vec::with_capacity(SHARDS);
        let mut total = 0;
        for (shard, mut merged) in self.held.shard(SHARDS).into_iter().enumerate() {
            let reads: Vec<_> = self
                .spills
                .iter()
                .map(|&spill| {
                    let key = spill_key(out, spill, shard);
                    async move { read_all(objects, &out.bucket, &key).await }
                })
                .collect();
            let mut spilled = futures::stream::iter(reads).buffered(PART_READ_CONCURRENCY);
            while let Some(body) = spilled.try_next().await? {
                let groups: Aggregate =
                    serde_json::from_slice(&body).map_err(|e| PipelineError::Inconsistent {
                        job_id: job_id.to_owned(),
                        message: format!("a spill of shard {shard} is unreadable: {e}"),
                    })?;
                merged.merge(groups)?;
            }
            let key = out.result_shard_key(shard);
            let groups = merged.groups();
            objects
                .put(&out.bucket, &key, merged.result_bytes())
                .await?;
            total += groups;
            files.push(serde_json::json!({ "key": key, "groups": groups }));
        }
        Ok(pretty_json(&serde_json::json!({
            "sharded": {
                "by": format!("CRC32C of the group's key, modulo {SHARDS}"),
                "groups": total,
                "shards": files,
            }
        })))
    }
}

fn spill_key(out: &OutputLocation, Spill(at, writer): Spill, shard: usize) -> String {
    out.finalize_groups_key(at, writer, shard)
}
