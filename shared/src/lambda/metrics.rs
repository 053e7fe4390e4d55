//! Per-job metrics as CloudWatch Embedded Metric Format: one JSON log line per batch, which CloudWatch turns
//! into metrics with no metrics API call. Namespace `dmap`, dimension `JobId`.

use std::time::Duration;

use serde_json::json;

pub const NAMESPACE: &str = "dmap";

/// The EMF line for one handled batch. A duplicate delivery reports its latency but no items, so the item
/// metrics add up to the job's counts exactly.
pub fn batch_line(
    job_id: &str,
    batch_id: &str,
    counted: Option<(u64, u64)>,
    latency: Duration,
    timestamp_ms: u64,
) -> String {
    let (succeeded, failed) = counted.unwrap_or((0, 0));
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["JobId"]],
                "Metrics": [
                    { "Name": "ItemsSucceeded", "Unit": "Count" },
                    { "Name": "ItemsFailed", "Unit": "Count" },
                    { "Name": "BatchLatency", "Unit": "Milliseconds" },
                ],
            }],
        },
        "JobId": job_id,
        "BatchId": batch_id,
        "Duplicate": counted.is_none(),
        "ItemsSucceeded": succeeded,
        "ItemsFailed": failed,
        "BatchLatency": latency.as_millis() as u64,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_valid_emf_and_duplicates_count_no_items() {
        let line: serde_json::Value = serde_json::from_str(&batch_line(
            "j",
            "j#3",
            Some((97, 3)),
            Duration::from_millis(1234),
            1_764_000_000_000,
        ))
        .unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "dmap");
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} has a value");
        }
        assert_eq!(
            (
                line["ItemsSucceeded"].as_u64(),
                line["BatchLatency"].as_u64()
            ),
            (Some(97), Some(1234))
        );
        let duplicate: serde_json::Value =
            serde_json::from_str(&batch_line("j", "j#3", None, Duration::ZERO, 0)).unwrap();
        assert_eq!(
            (
                duplicate["ItemsSucceeded"].as_u64(),
                duplicate["Duplicate"].as_bool()
            ),
            (Some(0), Some(true))
        );
    }
}
