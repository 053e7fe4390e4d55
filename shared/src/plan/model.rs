//! The model `dmap plan` predicts with: every constant in one place, each with its source, and the timeline a
//! job follows on AWS (listing, the work queue mapping's ramp-up, the workers, the finalizer), played event by
//! event, invocation by invocation. `shared/benches/scale_model.rs` holds it against the real pipeline run on
//! the same latencies in virtual time.
//!
//! The constants are AWS's documented limits and typical in-region latencies (the team's notes collect them
//! with their sources); a deployment's own settings ([`Deployment`]) come from the stack's parameters.

use serde::Serialize;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::esm::Ramp;
use crate::worker::invocation_rounds;

/// The model's constants. [`Model::AWS`] is the one the predictions use; the scale-model benchmark injects
/// the same latencies into the embedded ports, so that what it measures and what this predicts can be held
/// side by side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Model {
    /// One ListObjectsV2 page (1,000 keys) read by one stream: ~0.3 s, ~3,300 keys a second (S3's published
    /// listing rates; parallel streams over key ranges scale it).
    pub list_page_secs: f64,
    /// Keys in a ListObjectsV2 page (S3's maximum, which dmap asks for).
    pub keys_per_page: u64,
    /// One page of another reader (records of an object, rows of an inventory, a Scan page) read by the one
    /// stream that reads it: a GET or Scan round trip with its megabyte of data.
    pub read_page_secs: f64,
    /// One SQS request (SendMessageBatch, DeleteMessageBatch): ~20 ms in region.
    pub sqs_request_secs: f64,
    /// One single-item DynamoDB read or write: single-digit milliseconds (DynamoDB's documented latency);
    /// 10 ms with the round trip.
    pub dynamodb_request_secs: f64,
    /// A DynamoDB Query page (up to 1 MB: the finalizer reads a job's batch markers 1,000 at a time).
    pub dynamodb_query_page_secs: f64,
    /// An S3 GET's or PUT's first byte: 100–200 ms for small objects (S3's performance guidelines).
    pub s3_request_secs: f64,
    /// Bytes a second one Lambda function reads from S3 (network bandwidth of a 1 GB function, ~90 MB/s).
    pub s3_bytes_per_sec: f64,
    /// The work queue mapping (standard mode): concurrent invocations at first, added a minute while
    /// messages wait, and the most any mapping reaches (Lambda's SQS scaling documentation).
    pub esm_initial_concurrency: u32,
    pub esm_ramp_per_minute: u32,
    pub esm_max_concurrency: u32,
    /// From the last batch's record to the finalizer's start: the finalize queue's delivery (its mapping
    /// polls, then invokes).
    pub finalize_trigger_secs: f64,
    /// The longest a Lambda invocation runs (15 minutes).
    pub lambda_max_secs: f64,
}

impl Model {
    /// AWS, late 2026.
    pub const AWS: Model = Model {
        list_page_secs: 0.3,
        keys_per_page: 1000,
        read_page_secs: 0.15,
        sqs_request_secs: 0.02,
        dynamodb_request_secs: 0.01,
        dynamodb_query_page_secs: 0.05,
        s3_request_secs: 0.1,
        s3_bytes_per_sec: 90e6,
        esm_initial_concurrency: 5,
        esm_ramp_per_minute: 300,
        esm_max_concurrency: 1250,
        finalize_trigger_secs: 1.0,
        lambda_max_secs: 900.0,
    };

    /// The work queue mapping's scaling: the one the scale-model benchmark's runner plays.
    pub fn esm_ramp(&self) -> Ramp {
        Ramp {
            initial: self.esm_initial_concurrency,
            per_minute: self.esm_ramp_per_minute,
            most: self.esm_max_concurrency,
        }
    }

    /// The work queue mapping's concurrency `secs` after its first message, capped at `maximum` (its
    /// MaximumConcurrency) and at what any mapping reaches.
    pub fn esm_concurrency(&self, secs: f64, maximum: u32) -> u32 {
        self.esm_ramp().concurrency_after(secs, maximum)
    }
}

/// The settings of the stack a job runs in, from its template parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Deployment {
    /// Key ranges listed at once (`MaxListParallelism`, or the spec's `list_parallelism` below it).
    pub list_parallelism: u32,
    /// The work queue mapping's MaximumConcurrency (`WorkerMaxConcurrency`).
    pub worker_max_concurrency: u32,
    /// Messages per worker invocation (`WorkerBatchSize`).
    pub worker_batch_size: u32,
    /// Items one worker invocation processes at once (`ItemConcurrency`).
    pub item_concurrency: u32,
    /// The worker's memory (`WorkerMemorySize`), which Lambda bills by.
    pub worker_memory_mb: u32,
    /// The coordinator's memory (the template's global `MemorySize`).
    pub coordinator_memory_mb: u32,
    /// The finalizer's memory.
    pub finalizer_memory_mb: u32,
}

impl Default for Deployment {
    /// The template's defaults.
    fn default() -> Self {
        Self {
            list_parallelism: 16,
            worker_max_concurrency: 100,
            worker_batch_size: 10,
            item_concurrency: 16,
            worker_memory_mb: 1024,
            coordinator_memory_mb: 512,
            finalizer_memory_mb: 1024,
        }
    }
}

/// What the job's work takes, for the timeline: the census's figures and the per-batch times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    pub batches: u64,
    /// Reads of the item reader (listing pages for `s3_list`).
    pub pages: u64,
    /// Whether the reads are ListObjectsV2 pages (`s3_list`).
    pub listing: bool,
    /// The streams that read them at once (a listing's ranges).
    pub streams: u32,
    /// The rounds of requests that split a listing into its ranges, after its first page.
    pub split_rounds: u64,
    /// The pages of the longest range, when known: the listing's pages after the split take that many rounds.
    /// `None`: the pages are shared evenly among the streams.
    pub range_rounds: Option<u64>,
    /// One worker invocation of a full [`Deployment::worker_batch_size`] messages, start to end.
    pub invocation_secs: f64,
    /// The finalizer's work, start to end.
    pub finalize_secs: f64,
}

/// The phases of a job's run on AWS, in seconds from its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timeline {
    /// When the last batch is sent.
    pub listing_secs: f64,
    /// When the work queue mapping reaches its concurrency (or the last batch is done, if sooner).
    pub ramp_up_secs: f64,
    /// When the last batch is recorded.
    pub processing_secs: f64,
    /// The finalizer's own time, and when it ends: the job's makespan.
    pub finalize_secs: f64,
    pub total_secs: f64,
    /// Worker invocations at the peak.
    pub peak_concurrency: u32,
    /// Batches recorded before the last batch is sent: each reads its job again to learn whether the listing
    /// is complete (a completion check's read, which only the job's totals make unnecessary).
    pub batches_done_listing: u64,
    /// Coordinator invocations (each lists for at most Lambda's 15 minutes, then hands over).
    pub coordinator_invocations: u64,
    /// What the makespan waits on most ([`Bottleneck`]).
    pub bottleneck: Bottleneck,
}

/// The phase that bounds a job's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bottleneck {
    /// Batches are processed as fast as they are listed: more ranges (or a faster reader) would help.
    Listing,
    /// Most of the run is spent before the mapping reaches its concurrency.
    RampUp,
    /// The workers at full concurrency: a higher WorkerMaxConcurrency would help.
    Workers,
    /// The single finalizer: a larger job's merge would outgrow it.
    Finalize,
}

impl Bottleneck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listing => "listing",
            Self::RampUp => "ramp-up",
            Self::Workers => "workers",
            Self::Finalize => "finalize",
        }
    }
}

/// Plays the job through its phases, invocation by invocation: the coordinator sends each page's batches as
/// the page arrives (the first page alone, then, past the split's rounds, one page a stream a round); the
/// mapping starts at its initial concurrency with the first batch, and adds to it by the minute; each
/// invocation takes up to a full batch of the messages waiting and holds its slot until it ends; the finalizer
/// starts once the last batch is done.
pub fn timeline(model: &Model, deployment: &Deployment, work: &Workload) -> Timeline {
    let streams = work.streams.max(1) as u64;
    let page_secs = if work.listing {
        model.list_page_secs
    } else {
        model.read_page_secs
    };
    let pages = work.pages.max(1);
    // The rounds of pages after the first: the longest range's, or each stream's share of whole pages (none
    // for a listing of one page).
    let range_rounds = match pages {
        1 => 0,
        _ => work
            .range_rounds
            .unwrap_or((pages - 1).div_ceil(streams))
            .max(1),
    };
    let listing_secs = page_secs * (1 + work.split_rounds + range_rounds) as f64;
    let ranges_start = page_secs * (1 + work.split_rounds) as f64;
    // The pages read by `t`, and when the next page (or round of pages) arrives.
    let pages_by = |t: f64| -> u64 {
        if t < page_secs {
            0
        } else if t < ranges_start + page_secs || range_rounds == 0 {
            1
        } else {
            // The pages arrive evenly over the rounds (the ranges list at once; the longest ends last).
            let rounds = ((t - ranges_start) / page_secs).floor() as u64;
            1 + (pages - 1) * rounds.min(range_rounds) / range_rounds
        }
    };
    let next_page_at = |t: f64| -> f64 {
        if t < page_secs {
            page_secs
        } else {
            let round = ((t - ranges_start) / page_secs).floor().max(0.0) + 1.0;
            ranges_start + round * page_secs
        }
    };
    let sent_by = |t: f64| -> u64 { work.batches * pages_by(t) / pages };
    let per_invocation = u64::from(deployment.worker_batch_size.max(1));
    let invocation_secs = work.invocation_secs.max(1e-3);
    // An invocation of fewer messages takes fewer rounds of the messages it handles at once.
    let rounds = |n: u64| invocation_rounds(n) as f64;
    let duration = |n: u64| invocation_secs * rounds(n) / rounds(per_invocation);
    // At least one invocation, whatever the settings say: else no batch would ever be done.
    let maximum = deployment.worker_max_concurrency.max(1);
    let ramp = model.esm_ramp();
    let target = maximum.min(model.esm_max_concurrency).max(1);
    let first_sent = page_secs;
    let concurrency_at = |t: f64| {
        ramp.concurrency_after((t - first_sent).max(0.0), maximum)
            .max(1)
    };
    // Invocations running: (when each ends, in microseconds, and its batches).
    let mut running: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let micros = |t: f64| (t * 1e6).ceil() as u64;
    let (mut t, mut taken, mut done, mut peak, mut ramp_up) = (0.0f64, 0u64, 0u64, 0u32, None);
    let mut done_listing = 0;
    while done < work.batches {
        while let Some(&Reverse((end, n))) = running.peek()
            && end <= micros(t)
        {
            done += n;
            if end < micros(listing_secs) {
                done_listing += n;
            }
            running.pop();
        }
        if done >= work.batches {
            break;
        }
        let concurrency = concurrency_at(t);
        if concurrency >= target && ramp_up.is_none() && t >= first_sent {
            ramp_up = Some(t);
        }
        let mut waiting = sent_by(t) - taken;
        while (running.len() as u32) < concurrency && waiting > 0 {
            let n = waiting.min(per_invocation);
            running.push(Reverse((micros(t + duration(n)), n)));
            taken += n;
            waiting -= n;
        }
        peak = peak.max(running.len() as u32);
        // The next event: an invocation ends, a page arrives for a free slot, the mapping adds a slot.
        let mut next = running.peek().map_or(f64::INFINITY, |r| r.0.0 as f64 / 1e6);
        let free = (running.len() as u32) < concurrency;
        if free && taken < work.batches {
            next = next.min(next_page_at(t));
        }
        if !free
            && concurrency < target
            && let Some(after) = ramp.slot_starts_after(concurrency)
        {
            next = next.min((first_sent + after.as_secs_f64()).max(t));
        }
        // Something always happens next: an invocation is running, or a page or a slot is still to come.
        debug_assert!(next.is_finite(), "the timeline has no next event at {t}");
        t = next.max(t + 1e-6);
    }
    // A job of no batches ends with its listing.
    let processing_secs = t.max(listing_secs);
    let ramp_up_secs = ramp_up.unwrap_or(processing_secs).min(processing_secs);
    let finalize_secs = model.finalize_trigger_secs + work.finalize_secs;
    let total_secs = processing_secs + finalize_secs;
    // The work at full concurrency alone, as if it were there from the start.
    let full_rate = target as f64 * per_invocation as f64 / invocation_secs;
    let workers_secs = work.batches as f64 / full_rate.max(1e-9);
    // The ramp-up's share: what processing took past the longer of the listing and the work at full speed.
    let ramp_cost = processing_secs - listing_secs.max(workers_secs);
    let bottleneck = [
        (Bottleneck::Listing, listing_secs),
        (Bottleneck::RampUp, ramp_cost),
        (Bottleneck::Workers, workers_secs),
        (Bottleneck::Finalize, finalize_secs),
    ]
    .into_iter()
    .max_by(|a, b| a.1.total_cmp(&b.1))
    .map(|(b, _)| b)
    .expect("four phases");
    Timeline {
        listing_secs,
        ramp_up_secs,
        processing_secs,
        finalize_secs,
        total_secs,
        peak_concurrency: peak,
        batches_done_listing: done_listing,
        coordinator_invocations: (listing_secs / model.lambda_max_secs).ceil().max(1.0) as u64,
        bottleneck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(batches: u64, pages: u64, invocation_secs: f64, streams: u32) -> Workload {
        Workload {
            batches,
            pages,
            listing: true,
            streams,
            split_rounds: 0,
            range_rounds: None,
            invocation_secs,
            finalize_secs: 10.0,
        }
    }

    #[test]
    fn the_mapping_ramps_by_300_a_minute_from_5_up_to_its_maximum() {
        let model = Model::AWS;
        assert_eq!(model.esm_concurrency(0.0, 1000), 5);
        assert_eq!(model.esm_concurrency(60.0, 1000), 305);
        assert_eq!(model.esm_concurrency(600.0, 1000), 1000);
        assert_eq!(model.esm_concurrency(6000.0, 5000), 1250);
    }

    #[test]
    fn a_long_listing_is_the_bottleneck_and_ranges_shorten_it() {
        let deployment = Deployment {
            list_parallelism: 1,
            worker_max_concurrency: 1000,
            ..Deployment::default()
        };
        // 100M keys, quick batches: one stream takes 30,000 s to list.
        let one = timeline(&Model::AWS, &deployment, &work(1_000_000, 100_000, 1.0, 1));
        assert_eq!(one.bottleneck, Bottleneck::Listing);
        assert!((one.listing_secs - 30_000.0).abs() < 1.0, "{one:?}");
        let sixteen = timeline(
            &Model::AWS,
            &Deployment {
                list_parallelism: 16,
                ..deployment
            },
            &work(1_000_000, 100_000, 1.0, 16),
        );
        assert!(
            sixteen.listing_secs * 15.0 < one.listing_secs,
            "{sixteen:?}"
        );
        assert!(sixteen.total_secs < one.total_secs / 10.0);
        // Quick batches keep up with a long listing: nearly all are recorded before it ends. Ranges end it
        // sooner, with more of the work after it.
        assert!(
            one.batches_done_listing > 990_000 && one.batches_done_listing < 1_000_000,
            "{one:?}"
        );
        assert!(
            sixteen.batches_done_listing < one.batches_done_listing,
            "{sixteen:?}"
        );
    }

    #[test]
    fn batches_slower_than_their_listing_are_mostly_recorded_after_it() {
        // 1,000 pages in 300 s; 10,000 batches, 10 an invocation of 60 s, 50 invocations at once: 500 batches a
        // minute, 1,200 s of work, about a quarter of it done while the listing runs.
        let slow = timeline(
            &Model::AWS,
            &Deployment {
                worker_max_concurrency: 50,
                ..Deployment::default()
            },
            &work(10_000, 1_000, 60.0, 1),
        );
        assert!(
            (1_500..=2_500).contains(&slow.batches_done_listing),
            "{slow:?}"
        );
    }

    #[test]
    fn a_job_of_no_batches_or_no_concurrency_still_ends() {
        let none = timeline(&Model::AWS, &Deployment::default(), &work(0, 1, 1.0, 1));
        assert_eq!(none.processing_secs, none.listing_secs);
        let stopped = Deployment {
            worker_max_concurrency: 0,
            ..Deployment::default()
        };
        let one = timeline(&Model::AWS, &stopped, &work(100, 1, 1.0, 1));
        assert!(one.total_secs.is_finite(), "{one:?}");
        assert_eq!(one.peak_concurrency, 1);
    }

    #[test]
    fn the_longest_range_bounds_the_listing_and_the_split_delays_it() {
        let deployment = Deployment::default();
        let even = timeline(&Model::AWS, &deployment, &work(100_000, 10_000, 1.0, 16));
        // The first page, then 10,000 - 1 pages in 16 ranges: 625 rounds.
        assert!((even.listing_secs - 0.3 * 626.0).abs() < 1e-6, "{even:?}");
        let uneven = Workload {
            split_rounds: 5,
            range_rounds: Some(800),
            ..work(100_000, 10_000, 1.0, 16)
        };
        let uneven = timeline(&Model::AWS, &deployment, &uneven);
        assert!(
            (uneven.listing_secs - 0.3 * 806.0).abs() < 1e-6,
            "{uneven:?}"
        );
        assert!(uneven.processing_secs >= uneven.listing_secs);
    }

    #[test]
    fn a_listing_of_one_page_takes_one_page() {
        let one = timeline(&Model::AWS, &Deployment::default(), &work(1, 1, 0.01, 1));
        assert!((one.listing_secs - 0.3).abs() < 1e-9, "{one:?}");
        // One message: one round of a full invocation's three.
        assert!(
            (one.processing_secs - (0.3 + 0.01 / 3.0)).abs() < 1e-5,
            "{one:?}"
        );
    }

    #[test]
    fn an_invocation_holds_its_slot_until_it_ends() {
        // 20 batches on one page, 100 slots: two invocations of 10 messages, 10 s each, at once. Spread over
        // every slot, they would take a fraction of that.
        let few = timeline(&Model::AWS, &Deployment::default(), &work(20, 1, 10.0, 1));
        assert!((few.processing_secs - (0.3 + 10.0)).abs() < 0.01, "{few:?}");
        assert_eq!(few.peak_concurrency, 2);
        // 3 batches: one invocation of 3 messages, handled at once: a third of a full one's 3 rounds.
        let three = timeline(&Model::AWS, &Deployment::default(), &work(3, 1, 9.0, 1));
        assert!(
            (three.processing_secs - (0.3 + 3.0)).abs() < 0.01,
            "{three:?}"
        );
    }

    #[test]
    fn slow_batches_make_the_workers_the_bottleneck() {
        let deployment = Deployment::default();
        let slow = timeline(&Model::AWS, &deployment, &work(10_000, 1000, 60.0, 16));
        assert_eq!(slow.bottleneck, Bottleneck::Workers);
        // 10,000 batches, 10 a minute per slot, 100 slots: about 600 s after a ramp of under 20 s.
        assert!((600.0..660.0).contains(&slow.processing_secs), "{slow:?}");
        assert_eq!(slow.peak_concurrency, 100);
        assert!(slow.ramp_up_secs < 25.0, "{slow:?}");
    }
}
