//! Small files (`cargo bench -p dmap-cli --bench small_files`): the embedded `count` run over 100,000 small
//! files against `find ... | xargs -P2 wc -lc` over the same files, timed alternately in one process run.
//! Prints each side's median wall time, the ratio of the medians (dmap's over the shell's), and the CPU time
//! (user and system, of the processes and their children) per item of each. Prints numbers; asserts only that
//! dmap counted every file.
//!
//! `DMAP_BENCH_FILES=N` sets the file count (default 100,000); `DMAP_BENCH_ROUNDS=N` the rounds (default 5).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dmap_run;
use serde_json::json;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|n| n.trim().parse().expect("a number"))
        .unwrap_or(default)
}

/// The CPU time (user and system) of this process's children that have ended so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs `f` (which runs child processes to their end) and returns its wall time and its children's CPU time.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (cpu, started) = (children_cpu(), Instant::now());
    f();
    (
        started.elapsed().as_secs_f64(),
        (children_cpu() - cpu).as_secs_f64(),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn generate(dir: &Path, n: usize) {
    for i in 0..n {
        let folder = dir.join(format!("{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        std::fs::write(
            folder.join(format!("f{i:07}.txt")),
            format!("line {i}\n").repeat(i % 5 + 1),
        )
        .unwrap();
    }
}

fn main() {
    let files = env_number("DMAP_BENCH_FILES", 100_000);
    let rounds = env_number("DMAP_BENCH_ROUNDS", 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let small = data.join("bench/small");
    generate(&small, files);
    let shell = format!(
        "find {} -type f -print0 | xargs -0 -P2 wc -lc > /dev/null",
        small.display()
    );
    let find_xargs = || {
        let status = Command::new("sh").args(["-c", &shell]).status().unwrap();
        assert!(status.success());
    };
    find_xargs(); // warm the page cache and the directory entries

    let (mut dmap_wall, mut dmap_cpu, mut shell_wall, mut shell_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let spec = json!({
            "job_id": format!("small-{round}"),
            "item_reader": { "bucket": "bench", "prefix": "small/" },
            "processor": { "kind": "count" },
            "result_writer": { "bucket": "bench", "prefix": "results/" }
        });
        let (wall, cpu) = timed(|| {
            let summary = dmap_run(data, &spec);
            assert_eq!(summary["items"]["total"], files);
        });
        dmap_wall.push(wall);
        dmap_cpu.push(cpu);
        let (wall, cpu) = timed(find_xargs);
        shell_wall.push(wall);
        shell_cpu.push(cpu);
    }
    let (dmap_wall, shell_wall) = (median(&mut dmap_wall), median(&mut shell_wall));
    let per_item = |seconds: f64| seconds * 1e6 / files as f64;
    let (dmap_cpu, shell_cpu) = (median(&mut dmap_cpu), median(&mut shell_cpu));
    println!("{files} small files, {rounds} rounds alternately, medians (page cache warm):");
    println!(
        "dmap run (count)              {dmap_wall:>7.2} s  {:>8.0} items/s  CPU {:>5.1} µs an item",
        files as f64 / dmap_wall,
        per_item(dmap_cpu)
    );
    println!(
        "find | xargs -P2 wc -lc       {shell_wall:>7.2} s  {:>8.0} items/s  CPU {:>5.1} µs an item",
        files as f64 / shell_wall,
        per_item(shell_cpu)
    );
    println!(
        "ratio (dmap / find | xargs)   {:.2}",
        dmap_wall / shell_wall
    );
}
