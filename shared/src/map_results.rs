//! Distributed Map's ResultWriter layout, written by the finalizer for the `lambda` processor, so that a reducer
//! written for Step Functions reads dmap's results unchanged. Under the job's folder, `map-results/`:
//!
//! - `SUCCEEDED_<n>.json` and `FAILED_<n>.json`: JSON arrays of one record per batch (a child execution in
//!   Step Functions' terms), in batch order: `Name`, `Status`, `Input` and `Output` (JSON text), `Error` and
//!   `Cause` for a failure, `StartDate`, `StopDate`, and the ARNs. A file is closed before it would pass
//!   [`MapResultsConfig::file_bytes`], so none grows past a few MB;
//! - `manifest.json`: `{"DestinationBucket", "MapRunArn", "ResultFiles": {"SUCCEEDED": [{"Key", "Size"}],
//!   "FAILED": [...], "PENDING": []}}`.
//!
//! Streamed as the finalizer reads the parts: memory holds one open file per status.

use serde::Serialize;

use crate::error::PipelineError;
use crate::layout::OutputLocation;
use crate::outcome::{Execution, TerminalStatus};
use crate::ports::ObjectStore;

/// The size at which a result file is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapResultsConfig {
    pub file_bytes: usize,
}

impl Default for MapResultsConfig {
    /// 4 MiB: a reducer reads a file whole.
    fn default() -> Self {
        Self {
            file_bytes: 4 << 20,
        }
    }
}

/// The job's ARN-shaped id, as `MapRunArn`: the same for every run of the job, so its files are deterministic
/// but for the executions' dates.
pub fn map_run_arn(job_id: &str) -> String {
    format!("arn:aws:states:::mapRun:dmap/{job_id}")
}

/// One execution's record in a result file, with Step Functions' field names.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Record<'a> {
    execution_arn: String,
    name: String,
    status: &'static str,
    input: &'a str,
    input_details: Included,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_details: Option<Included>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    start_date: &'a str,
    stop_date: &'a str,
    map_run_arn: &'a str,
}

#[derive(Serialize)]
struct Included {
    #[serde(rename = "Included")]
    included: bool,
}

/// A written result file, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResultFile {
    pub key: String,
    pub size: u64,
}

/// The result files of one status being written.
struct Files {
    failed: bool,
    open: Vec<u8>,
    written: Vec<ResultFile>,
}

impl Files {
    fn new(failed: bool) -> Self {
        Self {
            failed,
            open: Vec::new(),
            written: Vec::new(),
        }
    }

    async fn add(
        &mut self,
        objects: &dyn ObjectStore,
        out: &OutputLocation,
        max_bytes: usize,
        record: &[u8],
    ) -> Result<(), PipelineError> {
        // Closed before it would pass the size, unless it holds nothing yet (one record larger than a file).
        if !self.open.is_empty() && self.open.len() + record.len() + 2 > max_bytes {
            self.write(objects, out).await?;
        }
        self.open
            .push(if self.open.is_empty() { b'[' } else { b',' });
        self.open.extend_from_slice(record);
        Ok(())
    }

    async fn write(
        &mut self,
        objects: &dyn ObjectStore,
        out: &OutputLocation,
    ) -> Result<(), PipelineError> {
        if self.open.is_empty() {
            return Ok(());
        }
        let mut body = std::mem::take(&mut self.open);
        body.push(b']');
        let key = out.map_results_key(self.failed, self.written.len() as u64);
        let size = body.len() as u64;
        objects.put(&out.bucket, &key, body).await?;
        self.written.push(ResultFile { key, size });
        Ok(())
    }
}

/// The `map-results/` files of one job, written as batches are added in order.
pub struct MapResults<'a> {
    out: &'a OutputLocation,
    job_id: &'a str,
    map_run_arn: String,
    config: MapResultsConfig,
    succeeded: Files,
    failed: Files,
}

impl<'a> MapResults<'a> {
    pub fn new(out: &'a OutputLocation, job_id: &'a str, config: MapResultsConfig) -> Self {
        Self {
            out,
            job_id,
            map_run_arn: map_run_arn(job_id),
            config,
            succeeded: Files::new(false),
            failed: Files::new(true),
        }
    }

    /// Adds batch `seq`'s execution.
    pub async fn add(
        &mut self,
        objects: &dyn ObjectStore,
        seq: u64,
        execution: &Execution,
    ) -> Result<(), PipelineError> {
        let name = format!("{}#{seq}", self.job_id);
        let succeeded = execution.status == TerminalStatus::Succeeded;
        let record = Record {
            execution_arn: format!("arn:aws:states:::execution:dmap/{}:{seq}", self.job_id),
            name,
            status: execution.status.as_str(),
            input: &execution.input,
            input_details: Included { included: true },
            output: execution.output.as_deref(),
            output_details: succeeded.then_some(Included { included: true }),
            error: execution.error.as_deref(),
            cause: execution.cause.as_deref(),
            start_date: &execution.start_date,
            stop_date: &execution.stop_date,
            map_run_arn: &self.map_run_arn,
        };
        let record = serde_json::to_vec(&record).expect("a record serializes");
        let files = if succeeded {
            &mut self.succeeded
        } else {
            &mut self.failed
        };
        files
            .add(objects, self.out, self.config.file_bytes, &record)
            .await
    }

    /// Writes the last files and the manifest; the manifest's key, and the ResultWriter details a reducer is
    /// invoked with.
    pub async fn finish(
        mut self,
        objects: &dyn ObjectStore,
    ) -> Result<(String, serde_json::Value), PipelineError> {
        self.succeeded.write(objects, self.out).await?;
        self.failed.write(objects, self.out).await?;
        let manifest = serde_json::json!({
            "DestinationBucket": self.out.bucket,
            "MapRunArn": self.map_run_arn,
            "ResultFiles": {
                "FAILED": self.failed.written,
                "PENDING": [],
                "SUCCEEDED": self.succeeded.written,
            },
        });
        let key = self.out.map_results_manifest_key();
        let mut body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        body.push(b'\n');
        objects.put(&self.out.bucket, &key, body).await?;
        let details = serde_json::json!({
            "MapRunArn": self.map_run_arn,
            "ResultWriterDetails": { "Bucket": self.out.bucket, "Key": key },
        });
        Ok((key, details))
    }
}
