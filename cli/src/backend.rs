//! Naming a backend, the same way in every command: `--data-dir DIR` for the embedded backends (a directory
//! playing S3, with the job store kept under `DIR/.dmap/`), or a stack (`--stack-name`, default `dmap`) whose
//! resources are named as the SAM template names them, in the environment's AWS account or at
//! `--endpoint-url` (an emulator). The `--table` and queue flags override single names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use dmap_core::Deps;
use dmap_core::aws::resources::DEFAULT_TTL;
use dmap_core::aws::{AwsClients, DynamoJobStore};
use dmap_core::embedded::{EmbeddedQueues, LocalDirStore, MemoryJobStore};
use dmap_core::ports::JobStore;
use dmap_infra::{Stack, StackOptions, Template};

/// Where the embedded backends keep their state under a data directory: a name no bucket can have (bucket
/// names start with a letter or digit), so it never shows up as one.
const STATE_DIR: &str = ".dmap";

/// The embedded job store's journals under a data directory.
pub fn embedded_jobs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_DIR).join("jobs")
}

/// The persistent embedded job store of a data directory.
pub fn embedded_job_store(data_dir: &Path) -> anyhow::Result<MemoryJobStore> {
    if !data_dir.is_dir() {
        bail!("--data-dir {} is not a directory", data_dir.display());
    }
    Ok(MemoryJobStore::persistent(embedded_jobs_dir(data_dir)))
}

/// The embedded backends over a data directory for a command that runs no workers (an abort's finalize, a
/// plan): its queues are never polled, so their settings only need to be valid.
pub fn embedded_deps(data_dir: &Path) -> Deps {
    Deps::embedded(
        Arc::new(LocalDirStore::new(data_dir)),
        EmbeddedQueues {
            visibility_timeout: std::time::Duration::from_secs(30),
            max_receive_count: 5,
            backlog_limit: None,
        },
    )
}

/// Where the AWS resources are.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Send S3, SQS, DynamoDB and Lambda requests here (an emulator such as moto's server). Without it the SDK's
    /// standard configuration applies, AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> included.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The stack: its table, queues and functions are named from it as the SAM template names them
    /// (`<stack>-jobs`, `<stack>-work`, `<stack>-coordinator`...).
    #[arg(long, env = "DMAP_STACK_NAME", default_value = "dmap")]
    pub stack_name: String,
    /// The job table, instead of the stack's.
    #[arg(long, env = "DMAP_TABLE")]
    pub table: Option<String>,
    /// The work queue, instead of the stack's (its visibility timeout and redrive policy are the queue's own).
    #[arg(long, env = "DMAP_WORK_QUEUE")]
    pub work_queue: Option<String>,
    /// The work queue's dead-letter queue, instead of the stack's.
    #[arg(long, env = "DMAP_DEAD_LETTER_QUEUE")]
    pub dead_letter_queue: Option<String>,
    /// The queue that triggers the finalizer, instead of the stack's.
    #[arg(long, env = "DMAP_FINALIZE_QUEUE")]
    pub finalize_queue: Option<String>,
    /// The coordinator function `submit` invokes, instead of the stack's (`cargo lambda watch` serves it as
    /// `coordinator`).
    #[arg(long, env = "DMAP_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Counter shards for a job this creates in the table (a job keeps the count it was created with).
    #[arg(long, env = "DMAP_COUNTER_SHARDS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub counter_shards: u32,
    /// Pass ExpectedBucketOwner (this account id) on every S3 call.
    #[arg(long, env = "DMAP_EXPECTED_BUCKET_OWNER")]
    pub expected_bucket_owner: Option<String>,
}

/// The names of a stack's resources that the commands use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNames {
    pub table: String,
    pub work_queue: String,
    pub dead_letter_queue: String,
    pub finalize_queue: String,
    pub coordinator: String,
    /// The worker function's timeout: the longest a batch can be in flight.
    pub worker_timeout_secs: u32,
}

impl AwsArgs {
    /// The resource names: the flags' where given, else the stack's as the bundled template derives them.
    pub fn names(&self) -> anyhow::Result<StackNames> {
        let stack = Stack::plan(&Template::bundled(), &StackOptions::new(&self.stack_name))
            .with_context(|| format!("resolving the names of stack \"{}\"", self.stack_name))?;
        let queue = |id: &str| {
            stack
                .queue(id)
                .map(|q| q.name.clone())
                .with_context(|| format!("the template has no queue {id}"))
        };
        let coordinator = match &self.coordinator {
            Some(name) => name.clone(),
            None => stack
                .function("coordinator")
                .map(|f| f.name.clone())
                .context("the template has no coordinator function")?,
        };
        let worker_timeout_secs = stack
            .function("worker")
            .map(|f| f.timeout_secs)
            .context("the template has no worker function")?;
        let table = stack
            .tables
            .get("JobsTable")
            .cloned()
            .context("the template has no JobsTable")?;
        Ok(StackNames {
            table: self.table.clone().unwrap_or(table),
            work_queue: self
                .work_queue
                .clone()
                .map_or_else(|| queue("WorkQueue"), Ok)?,
            dead_letter_queue: self
                .dead_letter_queue
                .clone()
                .map_or_else(|| queue("WorkDeadLetterQueue"), Ok)?,
            finalize_queue: self
                .finalize_queue
                .clone()
                .map_or_else(|| queue("FinalizeQueue"), Ok)?,
            coordinator,
            worker_timeout_secs,
        })
    }

    pub async fn clients(&self) -> AwsClients {
        AwsClients::from_env(self.endpoint_url.as_deref()).await
    }
}

/// Which backend a command talks to.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// The embedded backends, with this directory playing S3 (bucket `b`, key `k` is the file `DIR/b/k`) and
    /// keeping the jobs under `DIR/.dmap/`. Without it: the stack's AWS resources.
    #[arg(long, conflicts_with = "endpoint_url")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

impl BackendArgs {
    /// The backend's job store, for the commands that only read or control jobs.
    pub async fn job_store(&self) -> anyhow::Result<Arc<dyn JobStore>> {
        Ok(match &self.data_dir {
            Some(dir) => Arc::new(embedded_job_store(dir)?),
            None => {
                let names = self.aws.names()?;
                let clients = self.aws.clients().await;
                Arc::new(DynamoJobStore::new(
                    clients.dynamodb.clone(),
                    names.table,
                    self.aws.counter_shards,
                    DEFAULT_TTL,
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_names_its_resources_as_the_template_does() {
        let args = AwsArgs {
            endpoint_url: None,
            stack_name: "prod-map".into(),
            table: None,
            work_queue: None,
            dead_letter_queue: Some("my-dlq".into()),
            finalize_queue: None,
            coordinator: None,
            counter_shards: 16,
            expected_bucket_owner: None,
        };
        let names = args.names().unwrap();
        assert_eq!(
            names,
            StackNames {
                table: "prod-map-jobs".into(),
                work_queue: "prod-map-work".into(),
                dead_letter_queue: "my-dlq".into(),
                finalize_queue: "prod-map-finalize".into(),
                coordinator: "prod-map-coordinator".into(),
                worker_timeout_secs: 60,
            }
        );
    }
}
