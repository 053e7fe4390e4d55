//! `dmap demo`: a synthetic dataset modelled on the NOAA daily-weather sample AWS uses to show Distributed Map
//! (one CSV per station: `STATION,DATE,TMAX,TMIN,PRCP`, some empty cells, a few broken files), a job spec for it,
//! the run, and what it found.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use dmap_core::outcome::TerminalStatus;
use dmap_core::spec::JobSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::DemoArgs;
use crate::run::{Outputs, print_summary, run_job};

const BUCKET: &str = "dmap-demo";
const PREFIX: &str = "noaa-ghcn/2026/";
/// One station in this many has a broken file (a non-numeric reading), to show failure handling.
const BROKEN_EVERY: u32 = 500;

pub async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let bucket_dir = args.data_dir.join(BUCKET);
    if bucket_dir.exists() {
        std::fs::remove_dir_all(&bucket_dir)
            .with_context(|| format!("cannot clear {}", bucket_dir.display()))?;
    }
    let (objects, days) = (args.objects, args.days);
    let dataset_dir = bucket_dir.join(PREFIX);
    let bytes =
        tokio::task::spawn_blocking(move || generate(&dataset_dir, objects, days)).await??;
    if !args.pool.json {
        println!(
            "generated {objects} station files ({:.1} MB, {days} days each) under {}",
            bytes as f64 / 1e6,
            bucket_dir.join(PREFIX).display()
        );
    }

    let spec = serde_json::json!({
        "item_reader": { "bucket": BUCKET, "prefix": PREFIX, "suffix": ".csv" },
        "item_batcher": { "max_items_per_batch": 50 },
        "processor": { "kind": "csv_aggregate", "group_by": "STATION", "columns": ["TMAX", "TMIN", "PRCP"] },
        "tolerated_failure_percentage": 1,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let spec_path = args.data_dir.join("demo-spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let job = JobSpec::parse(spec.to_string().as_bytes())?;
    let report = run_job(job, &args.data_dir, &args.pool).await?;
    print_summary(&report, &Outputs::Dir(&args.data_dir), args.pool.json, None);
    if !args.pool.json {
        let result_path = args.data_dir.join(BUCKET).join(&report.manifest.result);
        let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&result_path)?)?;
        print!("{}", findings(&result));
        println!(
            "failed items are listed in {}\nthe job spec is {}; run it again with: dmap run {} --data-dir {}",
            args.data_dir
                .join(BUCKET)
                .join(&report.manifest.failures)
                .display(),
            spec_path.display(),
            spec_path.display(),
            args.data_dir.display()
        );
    }
    Ok(match report.manifest.status {
        TerminalStatus::Succeeded => ExitCode::SUCCESS,
        TerminalStatus::Failed => ExitCode::from(3),
    })
}

/// Writes one CSV per station; returns the bytes written. Deterministic: the same arguments give the same files.
fn generate(dir: &Path, objects: u32, days: u32) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut total = 0u64;
    let mut csv = String::new();
    for i in 0..objects {
        let mut rng = StdRng::seed_from_u64(u64::from(i));
        let station = format!("USW{:08}", 10_000 + i * 7);
        // A station's climate: warmer towards the equator, wetter near the coast.
        let latitude: f64 = rng.random_range(-60.0..70.0);
        let mean_max = 32.0 - 0.45 * latitude.abs();
        let wetness: f64 = rng.random_range(0.1..0.6);
        csv.clear();
        csv.push_str("STATION,DATE,TMAX,TMIN,PRCP\n");
        for day in 0..days {
            let season = (f64::from(day) / 365.0 * std::f64::consts::TAU).cos() * latitude.signum();
            let tmax = mean_max - 8.0 * season + rng.random_range(-5.0..5.0);
            let tmin = tmax - rng.random_range(4.0..14.0);
            let prcp = if rng.random_bool(wetness) {
                rng.random_range(0.0..40.0)
            } else {
                0.0
            };
            let (y, m, d) = date(day);
            let cell = |rng: &mut StdRng, v: f64| {
                // About 2% of readings are missing, as in the real data.
                if rng.random_bool(0.02) {
                    String::new()
                } else {
                    format!("{v:.1}")
                }
            };
            let (tmax, tmin, prcp) = (
                cell(&mut rng, tmax),
                cell(&mut rng, tmin),
                cell(&mut rng, prcp),
            );
            let _ = writeln!(csv, "{station},{y:04}-{m:02}-{d:02},{tmax},{tmin},{prcp}");
        }
        if i % BROKEN_EVERY == BROKEN_EVERY - 1 {
            let _ = writeln!(csv, "{station},2027-01-01,M,M,0.0");
        }
        std::fs::write(dir.join(format!("{station}.csv")), &csv)?;
        total += csv.len() as u64;
    }
    Ok(total)
}

/// Day `n` (from 0) as a calendar date from 2026-01-01, wrapping into later years.
fn date(n: u32) -> (u32, u32, u32) {
    const MONTHS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let (mut year, mut day) = (2026 + n / 365, n % 365);
    let mut month = 0;
    while day >= MONTHS[month] {
        day -= MONTHS[month];
        month += 1;
    }
    if month == 12 {
        year += 1;
        month = 0;
    }
    (year, month as u32 + 1, day + 1)
}

/// The hottest and the wettest stations.
fn findings(result: &serde_json::Value) -> String {
    let Some(groups) = result["groups"].as_object() else {
        return String::new();
    };
    let stat = |g: &serde_json::Value, column: &str, field: &str| {
        g["columns"][column][field].as_f64().unwrap_or(f64::NAN)
    };
    let mut hottest: Vec<(&String, f64, f64)> = groups
        .iter()
        .map(|(s, g)| {
            (
                s,
                stat(g, "TMAX", "max"),
                stat(g, "TMAX", "sum") / stat(g, "TMAX", "count"),
            )
        })
        .collect();
    hottest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut wettest: Vec<(&String, f64)> = groups
        .iter()
        .map(|(s, g)| (s, stat(g, "PRCP", "sum")))
        .collect();
    wettest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut out = format!(
        "hottest of {} stations (highest daily TMAX, °C):\n",
        groups.len()
    );
    for (station, max, mean) in hottest.iter().take(5) {
        let _ = writeln!(out, "  {station}  max {max:5.1}  mean {mean:5.1}");
    }
    out.push_str("wettest (total PRCP, mm):\n");
    for (station, total) in wettest.iter().take(3) {
        let _ = writeln!(out, "  {station}  {total:8.1}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::date;

    #[test]
    fn dates_follow_the_calendar() {
        assert_eq!(date(0), (2026, 1, 1));
        assert_eq!(date(31), (2026, 2, 1));
        assert_eq!(date(364), (2026, 12, 31));
        assert_eq!(date(365), (2027, 1, 1));
    }
}
