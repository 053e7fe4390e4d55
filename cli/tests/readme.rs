//! The README's "Write your own processor" cannot rot: every Rust block it shows is quoted verbatim from
//! `monthly_high`'s file or the registry, the spec it shows is `examples/specs/monthly-high.json`, and its shell
//! steps run as written (but the build: the test runs the `dmap` that cargo built for it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The section's fenced blocks of `lang`, each as its lines joined.
fn blocks(section: &str, lang: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line == format!("```{lang}") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            found.push(format!("{}\n", body.join("\n")));
        }
    }
    found
}

fn section() -> String {
    let readme = read("README.md");
    let start = readme
        .find("\n## Write your own processor\n")
        .expect("the README has the section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

#[test]
fn the_code_shown_is_the_code_that_runs() {
    let section = section();
    let file = read("shared/src/processor/monthly_high.rs");
    let registry = read("shared/src/processor/mod.rs");
    let rust = blocks(&section, "rust");
    assert!(rust.len() >= 4, "{} Rust blocks", rust.len());
    for block in &rust {
        assert!(
            file.contains(block.as_str()) || registry.contains(block.as_str()),
            "this README block is not in monthly_high.rs or the registry:\n{block}"
        );
    }
    let shown = rust.concat();
    for part in [
        "pub struct MonthlyHighProcessor",
        "impl Processor for MonthlyHighProcessor",
        "pub struct MonthlyHighAggregate",
        "\"monthly_high\" => MonthlyHigh(monthly_high::MonthlyHighProcessor),",
    ] {
        assert!(shown.contains(part), "the walk-through shows {part}");
    }
}

#[test]
fn the_spec_shown_is_the_example_and_the_steps_run() {
    let section = section();
    let json = blocks(&section, "json");
    assert_eq!(json.len(), 1, "one spec");
    let shown: Value = serde_json::from_str(&json[0]).expect("the spec shown is JSON");
    let example: Value = serde_json::from_str(&read("examples/specs/monthly-high.json")).unwrap();
    assert_eq!(
        shown, example,
        "the spec shown is examples/specs/monthly-high.json"
    );

    // The shell steps, in a folder where `target/release/dmap` is the binary under test and `examples/` the
    // repository's.
    let sh = blocks(&section, "sh");
    let steps = sh
        .iter()
        .find(|b| b.contains("dmap run examples/specs/monthly-high.json --data-dir"))
        .expect("the steps that run the spec");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_dmap"),
        dir.path().join("target/release/dmap"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root().join("examples"), dir.path().join("examples")).unwrap();
    let script: String = steps
        .lines()
        .filter(|l| !l.starts_with("cargo build"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last step prints result.json: a winning row for each of the 48 months of 2021-2024.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let result: Value =
        serde_json::from_str(&stdout[stdout.find("{\n").expect("result.json is printed")..])
            .expect("result.json");
    let months = result.as_object().unwrap();
    assert_eq!(months.len(), 48, "{stdout}");
    assert!(months["2024-07"]["TEMP"].as_str().is_some());
}
