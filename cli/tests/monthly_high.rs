//! `monthly_high` as a user runs it (`dmap demo`, `dmap run`) equals a plain sequential pass over the same files,
//! written here without the processor's code: on the demo's dataset and on hand-made edge cases (ties across
//! files and batches, missing markers, a month with no value, rows out of date order, malformed files among good
//! ones). Its `result.json` and `failed.jsonl` are byte-identical whatever the batch size (1, 7, 100) and under
//! injected faults (`--chaos`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

fn dmap(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dmap"))
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

/// Every file under `dir`, by key (its path below `root`, with `/`), in key order: the listing's order.
fn files(root: &Path, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files(root, &path));
        } else {
            let key = path.strip_prefix(root).unwrap().to_str().unwrap();
            all.push((key.replace('\\', "/"), std::fs::read(&path).unwrap()));
        }
    }
    all.sort();
    all
}

/// One row that competes: its month, and what ranks it.
struct Candidate {
    month: String,
    value: Decimal,
    station: String,
    date: String,
    row: BTreeMap<String, String>,
}

/// The rows of one file that compete, or why the file fails.
fn candidates(data: &[u8]) -> Result<Vec<Candidate>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(data);
    let mut records = reader.records();
    let header: Vec<String> = match records.next() {
        Some(header) => header
            .map_err(|e| e.to_string())?
            .iter()
            .map(str::to_owned)
            .collect(),
        None => return Err("no header".into()),
    };
    for (i, name) in header.iter().enumerate() {
        if header[..i].contains(name) {
            return Err(format!("{name} twice"));
        }
    }
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or(format!("no {name}"))
    };
    let (station_at, date_at, temp_at) = (at("STATION")?, at("DATE")?, at("TEMP")?);
    let mut all = Vec::new();
    for record in records {
        let record = record.map_err(|e| e.to_string())?;
        let date = record[date_at].trim();
        let b = date.as_bytes();
        let is_date = b.len() >= 7
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && (1..=12).contains(&date[5..7].parse::<u32>().unwrap_or(0))
            && b[5..7].iter().all(u8::is_ascii_digit)
            && (b.len() == 7 || b[7] == b'-');
        if !is_date {
            return Err(format!("bad date {date}"));
        }
        let temp = record[temp_at].trim();
        if temp == "9999.9" {
            continue;
        }
        let value = Decimal::from_str(temp).map_err(|_| format!("bad value {temp}"))?;
        all.push(Candidate {
            month: date[..7].to_owned(),
            value,
            station: record[station_at].trim().to_owned(),
            date: date.to_owned(),
            row: header
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_owned))
                .collect(),
        });
    }
    Ok(all)
}

/// The sequential pass: every row of every good file, sorted best first per month (highest value, smallest
/// station, earliest date, smallest row); the first of each month wins. Returns `result.json`'s value and the
/// failed keys.
fn reference(files: &[(String, Vec<u8>)]) -> (Value, Vec<String>) {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (key, data) in files {
        match candidates(data) {
            Ok(found) => rows.extend(found),
            Err(_) => failed.push(key.clone()),
        }
    }
    rows.sort_by(|a, b| {
        (&a.month, b.value, &a.station, &a.date, &a.row)
            .cmp(&(&b.month, a.value, &b.station, &b.date, &b.row))
    });
    let mut result = serde_json::Map::new();
    for row in rows {
        result.entry(row.month).or_insert_with(|| json!(row.row));
    }
    (Value::Object(result), failed)
}

/// Runs `monthly_high` over `bucket/prefix` in `data` with batches of 1, 7 and 100 items, and under chaos;
/// asserts the four write the same `result.json` and `failed.jsonl`, byte for byte, and returns them.
fn run_every_way(data: &Path, bucket: &str, prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let data_dir = data.to_str().unwrap();
    std::fs::create_dir_all(data.join("out")).unwrap();
    let runs: [(&str, u32, &[&str]); 4] = [
        ("batch-1", 1, &[]),
        ("batch-7", 7, &[]),
        ("batch-100", 100, &[]),
        (
            "chaos",
            7,
            &[
                "--chaos",
                "0.4",
                "--seed",
                "11",
                "--visibility-timeout",
                "0.2",
            ],
        ),
    ];
    let mut outputs: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    for (job_id, batch, flags) in runs {
        let spec = json!({
            "job_id": job_id,
            "item_reader": { "bucket": bucket, "prefix": prefix, "suffix": ".csv" },
            "item_batcher": { "max_items_per_batch": batch },
            "processor": { "kind": "monthly_high" },
            "tolerated_failure_percentage": 100,
            "result_writer": { "bucket": "out", "prefix": "" }
        });
        let spec_path = data.join(format!("{job_id}.json"));
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let mut args = vec!["run", spec_path.to_str().unwrap(), "--data-dir", data_dir];
        args.extend(flags);
        let summary = dmap(&args);
        assert_eq!(summary["status"], "SUCCEEDED", "{summary}");
        if job_id == "chaos" {
            let faults = &summary["faults"];
            let injected: u64 = faults
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum();
            assert!(injected > 0, "faults were injected: {summary}");
        }
        let read = |name: &str| std::fs::read(data.join(format!("out/{job_id}/{name}"))).unwrap();
        outputs.push((job_id.to_owned(), read("result.json"), read("failed.jsonl")));
    }
    let (_, result, failed) = &outputs[0];
    for (job_id, other_result, other_failed) in &outputs[1..] {
        assert!(
            other_result == result,
            "{job_id}: result.json differs from batch-1's"
        );
        assert!(
            other_failed == failed,
            "{job_id}: failed.jsonl differs from batch-1's"
        );
    }
    (result.clone(), failed.clone())
}

fn failed_keys(failed_jsonl: &[u8]) -> Vec<String> {
    String::from_utf8(failed_jsonl.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn monthly_high_over_the_demo_dataset_equals_a_sequential_pass() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // 1,001 files: 251 stations over four years, each with a row every 3 weeks or so, and both kinds of broken
    // file (the 500th and the 1,000th).
    let summary = dmap(&[
        "demo",
        "--objects",
        "1001",
        "--days",
        "17",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(
        summary["items"],
        json!({"total": 1001, "succeeded": 999, "failed": 2})
    );
    let demo_result = std::fs::read(summary["result"].as_str().unwrap()).unwrap();

    let (result, failed) = run_every_way(data, "dmap-demo", "noaa-gsod/");
    assert!(
        result == demo_result,
        "the demo's own run (batches of 50) agrees"
    );
    let (expected, expected_failed) = reference(&files(
        &data.join("dmap-demo"),
        &data.join("dmap-demo/noaa-gsod"),
    ));
    let result: Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(
        result.as_object().unwrap().len(),
        48,
        "every month of 2021-2024"
    );
    assert_eq!(result, expected);
    assert_eq!(failed_keys(&failed), expected_failed);
}

fn write(root: &Path, key: &str, body: &str) {
    let path = root.join("edge").join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

const HEADER: &str = "\"STATION\",\"DATE\",\"NAME\",\"TEMP\",\"MAX\"\n";

#[test]
fn monthly_high_over_edge_cases_equals_a_sequential_pass() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Filler: 24 ordinary files, so that batches of 7 put the files below in different batches.
    for i in 0..24 {
        let mut csv = HEADER.to_owned();
        for day in 1..=28 {
            let temp = 40 + (i * 7 + day * 3) % 45;
            csv.push_str(&format!(
                "\"S{i:03}\",\"2024-03-{day:02}\",\"FILL {i}, ZZ\",\"{temp}.{}\",\"90.0\"\n",
                day % 10
            ));
        }
        write(data, &format!("m/{i:02}.csv"), &csv);
    }
    // January: a three-way tie on the value, across files far apart in the listing (different batches at 7):
    // the smallest station wins, and within it, the earliest date.
    write(
        data,
        "a/tie.csv",
        &format!("{HEADER}\"B\",\"2024-01-05\",\"BEE, NO\",\"99.5\",\"1\"\n"),
    );
    write(
        data,
        "z/tie.csv",
        &format!(
            "{HEADER}\"A\",\"2024-01-20\",\"AY, NO\",\"99.50\",\"2\"\n\"A\",\"2024-01-09\",\"AY, NO\",\"99.5\",\"3\"\n"
        ),
    );
    // The same row in two files but for one cell: the smaller row wins, whichever file is read first.
    write(
        data,
        "c/dup.csv",
        &format!("{HEADER}\"D\",\"2024-02-02\",\"DEE, NO\",\"80.0\",\"b\"\n"),
    );
    write(
        data,
        "y/dup.csv",
        &format!("{HEADER}\"D\",\"2024-02-02\",\"DEE, NO\",\"80.0\",\"a\"\n"),
    );
    // Missing markers (padded, too) never win, even as the largest number; April has only missing values.
    write(
        data,
        "d/missing.csv",
        &format!(
            "{HEADER}\"E\",\"2024-01-15\",\"EE, NO\",\"9999.9\",\"1\"\n\"E\",\"2024-04-01\",\"EE, NO\",\" 9999.9 \",\"1\"\n\"E\",\"2024-04-02\",\"EE, NO\",\"9999.9\",\"1\"\n"
        ),
    );
    // Rows out of date order, months interleaved; negative values.
    write(
        data,
        "e/unordered.csv",
        &format!(
            "{HEADER}\"F\",\"2024-06-30\",\"EF, NO\",\"-1.5\",\"1\"\n\"F\",\"2024-05-01\",\"EF, NO\",\"-3\",\"1\"\n\"F\",\"2024-06-01\",\"EF, NO\",\"-1.5\",\"2\"\n\"F\",\"2024-05-31\",\"EF, NO\",\"-2.9\",\"1\"\n"
        ),
    );
    // Another column order: the row is still read by the header.
    write(
        data,
        "f/order.csv",
        "\"TEMP\",\"DATE\",\"STATION\"\n\"98\",\"2024-07-04\",\"G\"\n",
    );
    // A header alone: valid, nothing competes.
    write(data, "g/empty-rows.csv", HEADER);
    // Malformed files: each fails as one item, and none of its rows count (each would win its month otherwise).
    let best_row = "\"Z\",\"2024-01-01\",\"ZED, NO\",\"120.0\",\"1\"\n";
    write(
        data,
        "h/ragged.csv",
        &format!("{HEADER}{best_row}\"Z\",\"2024-01-02\",\"ZED, NO\"\n"),
    );
    write(
        data,
        "h/date.csv",
        &format!("{HEADER}{best_row}\"Z\",\"01/02/2024\",\"ZED, NO\",\"1.0\",\"1\"\n"),
    );
    write(
        data,
        "h/value.csv",
        &format!("{HEADER}{best_row}\"Z\",\"2024-01-03\",\"ZED, NO\",\"M\",\"1\"\n"),
    );
    write(
        data,
        "h/no-temp.csv",
        "\"STATION\",\"DATE\"\n\"Z\",\"2024-01-01\"\n",
    );
    write(
        data,
        "h/twice.csv",
        &format!("\"STATION\",\"DATE\",\"TEMP\",\"TEMP\"\n{best_row}"),
    );
    write(data, "h/empty.csv", "");

    let (result, failed) = run_every_way(data, "edge", "");
    let (expected, expected_failed) = reference(&files(&data.join("edge"), &data.join("edge")));
    let result: Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(result, expected);
    assert_eq!(failed_keys(&failed), expected_failed);

    // The cases above, as the reference also says.
    assert_eq!(result["2024-01"]["STATION"], "A");
    assert_eq!(result["2024-01"]["DATE"], "2024-01-09");
    assert_eq!(result["2024-02"]["MAX"], "a");
    assert!(result.get("2024-04").is_none(), "April has no value");
    assert_eq!(result["2024-05"]["TEMP"], "-2.9");
    assert_eq!(result["2024-06"]["DATE"], "2024-06-01");
    assert_eq!(
        result["2024-07"],
        json!({"TEMP": "98", "DATE": "2024-07-04", "STATION": "G"})
    );
    assert_eq!(
        expected_failed,
        [
            "h/date.csv",
            "h/empty.csv",
            "h/no-temp.csv",
            "h/ragged.csv",
            "h/twice.csv",
            "h/value.csv"
        ]
    );
    // Each failure names the key, the row and the column.
    let errors: Vec<String> = String::from_utf8(failed)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for expected in [
        r#""h/date.csv": row 3, column "DATE": "01/02/2024" is not a date (YYYY-MM-DD)"#,
        r#""h/value.csv": row 3, column "TEMP": "M" is not a number"#,
        r#""h/ragged.csv": row 3: has 3 fields, the header has 5"#,
        r#""h/no-temp.csv": row 1: the header has no column "TEMP" (processor.value_column)"#,
        r#""h/twice.csv": row 1: column 4 ("TEMP") repeats a name"#,
        r#""h/empty.csv": empty object: no header row"#,
    ] {
        assert!(
            errors.iter().any(|e| e == expected),
            "{expected} in {errors:#?}"
        );
    }
}
