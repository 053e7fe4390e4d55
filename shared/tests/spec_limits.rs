//! Job specs that would escape their limits are refused at validation, by field: job ids that are path
//! segments, prefixes with empty segments, and listings that could see any output the job writes (every
//! batch's part, not only batch 0's).

use dmap_core::spec::JobSpec;
use serde_json::{Value, json};

fn spec() -> Value {
    json!({
        "job_id": "j1",
        "item_reader": { "bucket": "data", "prefix": "in/", "suffix": ".csv" },
        "processor": { "kind": "count" },
        "result_writer": { "bucket": "data", "prefix": "results/" }
    })
}

/// The field a spec is refused for, or `None` if it is accepted.
fn refused_field(spec: &Value) -> Option<String> {
    JobSpec::parse(spec.to_string().as_bytes())
        .err()
        .map(|e| e.field)
}

#[test]
fn job_ids_that_are_path_segments_are_refused() {
    for id in [".", ".."] {
        let mut s = spec();
        s["job_id"] = json!(id);
        assert_eq!(refused_field(&s).as_deref(), Some("job_id"), "{id:?}");
    }
    for id in ["...", ".hidden", "a..b", "v1.2"] {
        let mut s = spec();
        s["job_id"] = json!(id);
        assert_eq!(refused_field(&s), None, "{id:?}");
    }
}

#[test]
fn prefixes_with_empty_segments_are_refused() {
    for (field, value) in [
        ("item_reader.prefix", "in//x/"),
        ("item_reader.prefix", "//"),
        ("result_writer.prefix", "results//"),
        ("result_writer.prefix", "/results/"),
        ("result_writer.prefix", "/"),
    ] {
        let mut s = spec();
        let (object, key) = field.split_once('.').unwrap();
        s[object][key] = json!(value);
        assert_eq!(refused_field(&s).as_deref(), Some(field), "{value:?}");
    }
    // A reader prefix may start with '/' (S3 keys may), and a single '/' inside is a folder.
    let mut s = spec();
    s["item_reader"]["prefix"] = json!("/in/x");
    assert_eq!(refused_field(&s), None);
}

#[test]
fn a_listing_that_could_see_any_output_is_refused() {
    // The whole bucket is listed: a suffix decides, and it must miss every key the job can write, which
    // includes parts/<at least 10 digits>.<attempt>.json, parts/<at least 10 digits>.dead.json and
    // outputs/<at least 10 digits>.jsonl for every batch (outputs/ whatever the processor), and the lambda
    // processor's map-results/ (SUCCEEDED_<n>.json, FAILED_<n>.json, manifest.json, for any n).
    for suffix in [
        "1.json",
        "f.json",
        "7.dead.json",
        "12345678901.0a1b2c3d.json",
        "0000000042.dead.json",
        "parts/0000000000.0a1b2c3d.json",
        "j1/parts/12345678901.dead.json",
        "ad.json",
        "t.json",
        "jsonl",
        ".json",
        "7.jsonl",
        "outputs/0000000000.jsonl",
        "j1/outputs/12345678901.jsonl",
        "12345678901.json",
        "_0.json",
        "FAILED_17.json",
        "map-results/manifest.json",
        "3.error.json",
        "-1.json",
        "result-31.json",
    ] {
        let mut s = spec();
        s["item_reader"] = json!({ "bucket": "data", "suffix": suffix });
        assert_eq!(
            refused_field(&s).as_deref(),
            Some("result_writer.prefix"),
            "suffix {suffix:?}"
        );
    }
    for suffix in [
        "x1.json",
        "/1.json",
        "parts/1.json",
        "_01.json",
        ".csv",
        "a.jsonl.gz",
        "x.jsonl",
        "/1.jsonl",
    ] {
        let mut s = spec();
        s["item_reader"] = json!({ "bucket": "data", "suffix": suffix });
        assert_eq!(refused_field(&s), None, "suffix {suffix:?}");
    }
    // The prefix and the suffix must both fit one output key.
    for (prefix, suffix) in [
        ("results/j1/parts/0000000000.0", None),
        ("results/j1/parts/0000000000.d", None),
        ("results/j1/parts/", Some("3.json")),
        ("results/", Some("failed.jsonl")),
        ("res", Some(".dead.json")),
        ("results/j1/outputs/", Some(".jsonl")),
        ("results/j1/o", Some("9.jsonl")),
    ] {
        let mut s = spec();
        s["item_reader"] = json!({ "bucket": "data", "prefix": prefix, "suffix": suffix });
        assert_eq!(
            refused_field(&s).as_deref(),
            Some("result_writer.prefix"),
            "prefix {prefix:?} suffix {suffix:?}"
        );
    }
    for (prefix, suffix) in [
        ("results/j1/parts/", Some(".jsonl")),
        ("results/j1/outputs/", Some(".json")),
        ("results/j1/m", Some(".csv")),
        ("results/j2/", None),
    ] {
        let mut s = spec();
        s["item_reader"] = json!({ "bucket": "data", "prefix": prefix, "suffix": suffix });
        assert_eq!(
            refused_field(&s),
            None,
            "prefix {prefix:?} suffix {suffix:?}"
        );
    }
}
