//! Outputs stay byte-identical: the default demo's dataset, the shipped example specs, and the dataset
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
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

    // The dataset scripts/local-lambda uploads (the demo's generator, 300 stations of 30 days); that script
    // checks its result.json against this digest.
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

    // The example specs, over the demo's stations in the buckets and prefixes they name.
    let data = root.join("examples");
    let stations = root.join("demo/dmap-demo/noaa-ghcn/2026");
    copy_dir(&stations, &data.join("data/weather"));
    copy_dir(&stations, &data.join("data/logs"));
    std::fs::create_dir_all(data.join("results-bucket")).unwrap();
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs");
    for name in ["count", "weather", "checksum"] {
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
