//! Every shipped job spec (the direct-invoke event and the examples) is valid.

use std::path::Path;

use dmap_core::spec::JobSpec;

#[test]
fn every_shipped_job_spec_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for dir in ["events", "examples/specs"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("folder") {
            let path = entry.expect("entry").path();
            let is_spec = path.extension().is_some_and(|e| e == "json")
                && (dir == "examples/specs" || path.ends_with("direct-invoke.json"));
            if is_spec {
                let body = std::fs::read(&path).expect("read");
                JobSpec::parse(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "found {checked} specs");
}
