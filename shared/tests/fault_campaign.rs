//! A randomized fault campaign: many seeded runs of a small job through the embedded backends, with every
//! port wrapped in a fault injector (throttles and timeouts before a call, failures reported after a write
//! took effect, lost and duplicated messages, failed receives and deletes) and the worker's deliveries under
//! chaos (duplicates, crashes before the acknowledgement and before the record). Every run must end with
//! exactly the outputs of a fault-free run: each item counted once, one terminal status; where a lost message
//! left the job stuck, the sweeper must have repaired it.
//!
//! CI runs 100 seeds, eight at once; `DMAP_FAULT_SEEDS=1000 cargo test -p dmap-core --release --test
//! fault_campaign -- --nocapture` runs the full campaign, and `DMAP_FAULT_SEED=N` seed N alone (a failure names
//! its seed).

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::faults::{CAMPAIGN_RATES, FaultCounts, Faults, campaign_seeds, inject};
use common::{Env, csv_object, csv_spec, fast_config};
use dmap_core::runner::{Chaos, RunStats, RunnerConfig};

const OBJECTS: usize = 23;

fn config(chaos: Option<Chaos>) -> RunnerConfig {
    RunnerConfig {
        // Transient faults alone must never exhaust a batch's receives.
        max_receive_count: 1_000,
        idle_before_sweep: Duration::from_millis(300),
        chaos,
        ..fast_config()
    }
}

fn env_with_data(config: &RunnerConfig) -> Env {
    let env = Env::new(config);
    for i in 0..OBJECTS {
        env.write(&format!("f/k{i:02}.csv"), csv_object(i));
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seeded_fault_run_counts_every_item_once() {
    let seeds: Vec<u64> = match std::env::var("DMAP_FAULT_SEED") {
        Ok(seed) => vec![seed.parse().expect("DMAP_FAULT_SEED: a number")],
        Err(_) => (0..campaign_seeds(100)).collect(),
    };
    let spec = csv_spec("f/", 4);
    let calm = env_with_data(&config(None));
    let expected = calm.outputs(&calm.run(&spec, &config(None)).await);

    // One seed's run, in its own environment: the faults it injected and what the runner saw.
    let run_seed = |seed: u64| {
        let (spec, expected) = (&spec, &expected);
        async move {
            let chaos = Some(Chaos { rate: 0.2, seed });
            let config = config(chaos);
            let mut env = env_with_data(&config);
            let injected = Faults::new(seed, CAMPAIGN_RATES);
            inject(&mut env.deps, &injected);
            let report = tokio::time::timeout(Duration::from_secs(60), env.try_run(spec, &config))
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: the run did not end"))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(
                &env.outputs(&report),
                expected,
                "seed {seed}: the outputs differ"
            );
            let counts = *injected.counts.lock().unwrap();
            (counts, report.stats)
        }
    };
    let (mut faults, mut stats, mut swept_runs) = (FaultCounts::default(), RunStats::default(), 0);
    let started = std::time::Instant::now();
    // The runs wait on visibility timeouts and the sweeper's idle time far more than they compute: eight at once.
    let mut runs = futures::stream::iter(seeds.clone())
        .map(run_seed)
        .buffer_unordered(8);
    while let Some((c, s)) = runs.next().await {
        faults.before += c.before;
        faults.after += c.after;
        faults.lost += c.lost;
        faults.duplicated += c.duplicated;
        stats.deliveries += s.deliveries;
        stats.duplicates += s.duplicates;
        stats.crashes_before_ack += s.crashes_before_ack;
        stats.crashes_before_record += s.crashes_before_record;
        stats.sweeper_repairs += s.sweeper_repairs;
        swept_runs += u64::from(s.sweeper_repairs > 0);
    }
    println!(
        "fault campaign: {} seeds in {:.1} s, every run exact; injected {} failures before a call, {} after a \
         write, {} lost and {} duplicated messages; chaos {} duplicate deliveries, {} crashes before ack, {} before \
         record; {} deliveries; the sweeper repaired {} stuck jobs in {swept_runs} runs",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        faults.before,
        faults.after,
        faults.lost,
        faults.duplicated,
        stats.duplicates,
        stats.crashes_before_ack,
        stats.crashes_before_record,
        stats.deliveries,
        stats.sweeper_repairs,
    );
    // A campaign (not one seed rerun alone) meets every kind of fault.
    assert!(
        seeds.len() < 20 || (faults.lost > 0 && faults.after > 0 && stats.sweeper_repairs > 0),
        "the campaign injects faults"
    );
}
