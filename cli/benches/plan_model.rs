//! `dmap plan`'s model at scale (`cargo bench -p dmap-cli --bench plan_model`): a 100-million-object
//! `s3_list` job (100 items a batch, 64 KiB objects, no sample: each object's GET and bytes at the model's
//! latencies) planned on the template's settings with WorkerMaxConcurrency 1,000, listed by 1 and by 16
//! ranges; its time, bottleneck, requests and cost, beside Step Functions Distributed Map's documented limits
//! and prices for the same job. No AWS and no emulator: the census is given, the rest is the model.
//!
//! `DMAP_BENCH_ITEMS=N` sets the object count.

use std::collections::BTreeMap;

use dmap_core::plan::{Census, Deployment, PlanOptions, predict};
use dmap_core::spec::JobSpec;
use dmap_core::usage::Prices;

/// How a listing of numbered keys splits into 16 ranges, as the scale model measured it at 10,000,000 keys
/// (`cargo bench -p dmap-core --bench scale_model`): 5 rounds of requests, and a longest range of 7.58% of the
/// keys (an even share would be 6.25%).
const SPLIT_ROUNDS: u64 = 5;
const LONGEST_RANGE_SHARE: f64 = 0.0758;

/// Distributed Map, Express children: a Standard state transition per child and an Express request per
/// child, plus the children's Express duration (about $0.06 per million items at any batch size).
const SFN_PER_TRANSITION: f64 = 0.025e-3;
const SFN_EXPRESS_PER_REQUEST: f64 = 1.0e-6;
const SFN_EXPRESS_DURATION_PER_MILLION: f64 = 0.06;
/// Distributed Map runs at most 10,000 children at once.
const SFN_MAX_CHILDREN: u64 = 10_000;

fn main() {
    let items: u64 = std::env::var("DMAP_BENCH_ITEMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000_000);
    let job = JobSpec::parse(
        br#"{"job_id": "hundred-million",
            "item_reader": {"bucket": "data", "prefix": "objects/"},
            "item_batcher": {"max_items_per_batch": 100},
            "processor": {"kind": "count"},
            "result_writer": {"bucket": "data", "prefix": "results/"}}"#,
    )
    .expect("a valid spec");
    let batches = items.div_ceil(100);
    let pages = items.div_ceil(1000);
    let census = Census {
        items,
        batches,
        pages,
        // A page's 10 batches in one SendMessageBatch.
        send_calls: pages,
        // Every page completes batches: a checkpoint each.
        checkpoints: pages,
        ranges: 0,
        split_rounds: 0,
        longest_range_items: 0,
        object_bytes: items * 64 * 1024,
        reads: BTreeMap::from([("S3.ListObjectsV2".to_owned(), pages + 2)]),
        extrapolated: None,
    };
    let prices = Prices::us_east_1();
    println!(
        "{items} objects of 64 KiB, 100 a batch ({batches} batches), WorkerMaxConcurrency 1,000:"
    );
    for ranges in [1, 16] {
        let options = PlanOptions {
            deployment: Deployment {
                list_parallelism: ranges,
                worker_max_concurrency: 1000,
                ..Deployment::default()
            },
            ..PlanOptions::default()
        };
        // A listing in ranges splits after its first page.
        let census = Census {
            ranges: if ranges > 1 { u64::from(ranges) } else { 0 },
            split_rounds: if ranges > 1 { SPLIT_ROUNDS } else { 0 },
            longest_range_items: if ranges > 1 {
                (items as f64 * LONGEST_RANGE_SHARE) as u64
            } else {
                0
            },
            ..census.clone()
        };
        let plan = predict(&job, &census, None, &options, &prices);
        let t = &plan.timeline;
        let requests: u64 = plan.requests.values().map(|r| r.count).sum();
        println!(
            "  {ranges:>2} listing ranges: {:.1} h in all (listed at {:.1} h, ramped up at {:.1} min, processed at \
             {:.1} h, finalized in {:.1} min), bounded by {}; {} coordinator invocations; {requests} requests; \
             ${:.2} ({})",
            t.total_secs / 3600.0,
            t.listing_secs / 3600.0,
            t.ramp_up_secs / 60.0,
            t.processing_secs / 3600.0,
            t.finalize_secs / 60.0,
            t.bottleneck.as_str(),
            t.coordinator_invocations,
            plan.cost_usd.total,
            plan.cost_usd
                .by_service
                .iter()
                .map(|(s, usd)| format!("{s} ${usd:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // As the README compares them: the requests but the objects' GETs, Lambda's own charges aside.
        let control = plan.cost_usd.total
            - plan.cost_usd.by_service["Lambda"]
            - plan.requests["S3.GetObject"].count as f64 * prices.s3_per_get;
        println!(
            "     control plane (the requests but the objects' GETs; Lambda aside): ${control:.2}"
        );
    }
    let children = batches;
    let sfn = children as f64 * (SFN_PER_TRANSITION + SFN_EXPRESS_PER_REQUEST)
        + items as f64 / 1e6 * SFN_EXPRESS_DURATION_PER_MILLION;
    println!(
        "  Distributed Map, same batches: {children} child executions, at most {SFN_MAX_CHILDREN} at once; \
         ${sfn:.2} of orchestration (transitions, Express requests and duration), the objects' GETs and \
         Lambda aside"
    );
}
