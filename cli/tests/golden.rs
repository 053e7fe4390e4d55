//! Outputs stay byte-identical: the demo's dataset, the shipped example specs, and the dataset
//! `scripts/local-lambda` runs through the real Lambda binaries give outputs whose SHA-256 digests are recorded
//! in `tests/golden/outputs.sha256`. A refactor must not change one byte of them; a change that means to
//! (a new field in the manifest, say) regenerates the file and says why in its commit:
//!
//! ```sh
//! DMAP_WRITE_GOLDEN=1 cargo test -p dmap-cli --test golden
//! ```
//!
//! `DMAP_BIN` runs another build of `dmap` (an older commit's, to record what it wrote).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn dmap(args: &[&str]) -> Value {
    let bin = std::env::var_os("DMAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dmap")));
    let out = Command::new(bin)
        .args(args)
        .arg("--json")
        .output()
        .expect("dmap runs");
    assert!(
        out.status.code().is_some_and(|c| c == 0 || c == 3),
        "dmap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON summary")
}

/// The outputs of a finished run, by name: the three files every job writes, then its `outputs/` files, if
/// any. A job id the spec did not fix is random: it is replaced by `JOB` in the manifest, the only file that
/// names it.
fn outputs(summary: &Value) -> Vec<(String, Vec<u8>)> {
    let read_path = |path: &str| std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let read = |field: &str| read_path(summary[field].as_str().expect("a path"));
    let job_id = summary["job_id"].as_str().unwrap();
    let manifest = String::from_utf8(read("manifest")).unwrap();
    let manifest = if job_id.len() == 32 && job_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        manifest.replace(job_id, "JOB")
    } else {
        manifest
    };
    let mut outputs = vec![
        ("manifest.json".to_owned(), manifest.into_bytes()),
        ("result.json".to_owned(), read("result")),
        ("failed.jsonl".to_owned(), read("failures")),
    ];
    for path in summary["outputs"].as_array().expect("a list") {
        let path = path.as_str().expect("a path");
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        outputs.push((format!("outputs/{name}"), read_path(path)));
    }
    outputs
}

/// Copies a folder and its subfolders.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The input of the `count` and `weather` examples: 1,001 stations of 5 days in the columns
/// `STATION,DATE,TMAX,TMIN,PRCP`, some cells empty, one file in 500 broken. It is what `dmap demo` generated
/// before the demo took GSOD's schema, kept byte for byte so that those examples' recorded outputs still hold.
fn weather_stations(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..1001u32 {
        let mut rng = StdRng::seed_from_u64(u64::from(i));
        let station = format!("USW{:08}", 10_000 + i * 7);
        let latitude: f64 = rng.random_range(-60.0..70.0);
        let mean_max = 32.0 - 0.45 * latitude.abs();
        let wetness: f64 = rng.random_range(0.1..0.6);
        let mut csv = String::from("STATION,DATE,TMAX,TMIN,PRCP\n");
        for day in 0..5u32 {
            let season = (f64::from(day) / 365.0 * std::f64::consts::TAU).cos() * latitude.signum();
            let tmax = mean_max - 8.0 * season + rng.random_range(-5.0..5.0);
            let tmin = tmax - rng.random_range(4.0..14.0);
            let prcp = if rng.random_bool(wetness) {
                rng.random_range(0.0..40.0)
            } else {
                0.0
            };
            let cell = |rng: &mut StdRng, v: f64| {
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
            let date = format!("2026-01-{:02}", day + 1);
            csv.push_str(&format!("{station},{date},{tmax},{tmin},{prcp}\n"));
        }
        if i % 500 == 499 {
            csv.push_str(&format!("{station},2027-01-01,M,M,0.0\n"));
        }
        std::fs::write(dir.join(format!("{station}.csv")), &csv).unwrap();
    }
}

fn digests() -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    let mut record = |run: &str, summary: &Value| {
        for (name, body) in outputs(summary) {
            digests.insert(
                format!("{run}/{name}"),
                format!("{:x}", Sha256::digest(&body)),
            );
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The demo, at a size with broken files among the stations (one in 500).
    let demo = root.join("demo").to_str().unwrap().to_owned();
    record(
        "demo-1001x5",
        &dmap(&[
            "demo",
            "--objects",
            "1001",
            "--days",
            "5",
            "--data-dir",
            &demo,
        ]),
    );

    // The dataset scripts/local-lambda uploads (the demo's generator: 300 files, 75 stations over 4 years, 30
    // days each); that script checks its result.json against this digest.
    let lambda = root.join("lambda").to_str().unwrap().to_owned();
    let summary = dmap(&[
        "demo",
        "--objects",
        "300",
        "--days",
        "30",
        "--data-dir",
        &lambda,
    ]);
    record("demo-300x30", &summary);

    // The example specs, in the buckets and prefixes they name: `monthly-high` over the demo's GSOD files,
    // `count` and `weather` over the stations they were recorded with.
    let data = root.join("examples");
    copy_dir(
        &root.join("demo/dmap-demo/noaa-gsod"),
        &data.join("data/gsod"),
    );
    weather_stations(&data.join("data/weather"));
    copy_dir(&data.join("data/weather"), &data.join("data/logs"));
    std::fs::create_dir_all(data.join("results-bucket")).unwrap();
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs");
    for name in ["count", "weather", "checksum", "monthly-high"] {
        let spec = specs.join(format!("{name}.json"));
        let summary = dmap(&[
            "run",
            spec.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        record(&format!("examples/{name}"), &summary);
    }
    digests
}

#[test]
fn outputs_are_byte_identical_to_the_recorded_ones() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/outputs.sha256");
    let actual: String = digests()
        .iter()
        .map(|(name, digest)| format!("{digest}  {name}\n"))
        .collect();
    if std::env::var_os("DMAP_WRITE_GOLDEN").is_some() {
        std::fs::write(&file, &actual).unwrap();
    }
    let recorded = std::fs::read_to_string(&file).expect("tests/golden/outputs.sha256");
    assert_eq!(actual, recorded, "outputs changed (see this file's doc)");
}
