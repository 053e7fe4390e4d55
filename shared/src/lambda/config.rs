//! The functions' configuration, read once from environment variables at cold start. Each function's list of
//! variables is a constant, so the deployment template can be checked against exactly what the code reads.

use std::time::Duration;

use crate::spec::S3ListReader;

/// Read by every function.
pub const COMMON_VARS: &[&str] = &[
    "DMAP_TABLE",
    "DMAP_COUNTER_SHARDS",
    "DMAP_WORK_QUEUE_URL",
    "DMAP_FINALIZE_QUEUE_URL",
    "DMAP_EXPECTED_BUCKET_OWNER",
];
/// Read by the coordinator besides [`COMMON_VARS`].
pub const COORDINATOR_VARS: &[&str] = &[
    "DMAP_CONTINUATION_QUEUE_URL",
    "DMAP_ALLOWED_BUCKETS",
    "DMAP_RESULT_BUCKETS",
    "DMAP_JOBS_PREFIX",
    "DMAP_RESULTS_PREFIX",
    "DMAP_PROCESSOR_FUNCTIONS",
    "DMAP_FUNCTION_ARN_PREFIX",
    "DMAP_ALLOWED_TABLES",
    "DMAP_MAX_LIST_PARALLELISM",
];
/// Read by the worker besides [`COMMON_VARS`].
pub const WORKER_VARS: &[&str] = &["DMAP_ITEM_CONCURRENCY"];
/// Read by the finalizer besides [`COMMON_VARS`].
pub const FINALIZER_VARS: &[&str] = &["DMAP_FINALIZE_RANGE_BATCHES", "DMAP_RESULT_GROUPS"];

/// A missing or malformed setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be set")]
    Missing(&'static str),
    #[error("{name} must be {expected}, not \"{value}\"")]
    Invalid {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// Reads variables through a lookup function, so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &'static str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => {
                value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| valid(v))
                    .ok_or(ConfigError::Invalid {
                        name,
                        expected,
                        value,
                    })
            }
        }
    }
}

/// The process environment.
pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env(|name: &str| std::env::var(name).ok())
}

/// Settings every function has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    pub table: String,
    pub counter_shards: u32,
    pub work_queue_url: String,
    pub finalize_queue_url: String,
    pub expected_bucket_owner: Option<String>,
    pub ttl: Duration,
}

impl CommonConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            table: env.required("DMAP_TABLE")?,
            counter_shards: env.number(
                "DMAP_COUNTER_SHARDS",
                crate::aws::resources::DEFAULT_COUNTER_SHARDS,
                "a whole number from 1 to 256",
                |n| (1..=256).contains(n),
            )?,
            work_queue_url: env.required("DMAP_WORK_QUEUE_URL")?,
            finalize_queue_url: env.required("DMAP_FINALIZE_QUEUE_URL")?,
            expected_bucket_owner: env.optional("DMAP_EXPECTED_BUCKET_OWNER"),
            ttl: crate::aws::resources::DEFAULT_TTL,
        })
    }
}

/// The coordinator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    pub common: CommonConfig,
    pub continuation_queue_url: String,
    /// Buckets a job may read items from; a spec naming another is refused.
    pub allowed_buckets: Vec<String>,
    /// Buckets a job may write its results to (the functions may write there and nowhere else).
    pub result_buckets: Vec<String>,
    /// Where job specs are dropped (the S3 notification's prefix).
    pub jobs_prefix: String,
    /// The only place results may go (the functions may write nowhere else): a spec whose
    /// `result_writer.prefix` is not under it is refused.
    pub results_prefix: String,
    /// Function ARNs the `lambda` processor may invoke (any version or alias of each); a spec naming another
    /// function is refused.
    pub processor_functions: Vec<String>,
    /// `arn:<partition>:lambda:<region>:<account>:function:`, the stack's own: what a function named without
    /// an ARN resolves against.
    pub function_arn_prefix: Option<String>,
    /// DynamoDB tables a `dynamodb_scan` job may read (the stack's `InputTables`); a spec naming another table
    /// is refused.
    pub allowed_tables: Vec<String>,
    /// The key ranges of one listing listed at once (the stack's `MaxListParallelism`): for a spec without
    /// `item_reader.list_parallelism`, and the most any spec gets.
    pub list_parallelism: u32,
}

impl CoordinatorConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let list = |name: &'static str| -> Result<Vec<String>, ConfigError> {
            Ok(env
                .required(name)?
                .split(',')
                .map(|b| b.trim().to_owned())
                .filter(|b| !b.is_empty())
                .collect())
        };
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            continuation_queue_url: env.required("DMAP_CONTINUATION_QUEUE_URL")?,
            allowed_buckets: list("DMAP_ALLOWED_BUCKETS")?,
            result_buckets: list("DMAP_RESULT_BUCKETS")?,
            jobs_prefix: env
                .optional("DMAP_JOBS_PREFIX")
                .unwrap_or_else(|| "jobs/".to_owned()),
            results_prefix: env
                .optional("DMAP_RESULTS_PREFIX")
                .unwrap_or_else(|| "results/".to_owned()),
            processor_functions: env
                .optional("DMAP_PROCESSOR_FUNCTIONS")
                .map(|_| list("DMAP_PROCESSOR_FUNCTIONS"))
                .transpose()?
                .unwrap_or_default(),
            function_arn_prefix: env.optional("DMAP_FUNCTION_ARN_PREFIX"),
            allowed_tables: env
                .optional("DMAP_ALLOWED_TABLES")
                .map(|_| list("DMAP_ALLOWED_TABLES"))
                .transpose()?
                .unwrap_or_default(),
            list_parallelism: env.number(
                "DMAP_MAX_LIST_PARALLELISM",
                S3ListReader::DEFAULT_LIST_PARALLELISM,
                "a whole number from 1 to 64",
                |n| (1..=S3ListReader::MAX_LIST_PARALLELISM).contains(n),
            )?,
        })
    }
}

/// The worker's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFunctionConfig {
    pub common: CommonConfig,
    pub item_concurrency: usize,
}

impl WorkerFunctionConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            item_concurrency: env.number(
                "DMAP_ITEM_CONCURRENCY",
                16,
                "a whole number from 1 to 256",
                |n| (1..=256).contains(n),
            )?,
        })
    }
}

/// The finalizer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizerFunctionConfig {
    pub common: CommonConfig,
    /// [`crate::finalizer::FinalizerConfig::range_batches`].
    pub range_batches: u64,
    /// [`crate::finalizer::FinalizerConfig::result_groups`].
    pub result_groups: usize,
}

impl FinalizerFunctionConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            range_batches: env.number(
                "DMAP_FINALIZE_RANGE_BATCHES",
                crate::finalizer::FinalizerConfig::default().range_batches,
                "a whole number from 1 to 1000000",
                |n| (1..=1_000_000).contains(n),
            )?,
            result_groups: env.number(
                "DMAP_RESULT_GROUPS",
                crate::finalizer::FinalizerConfig::default().result_groups,
                "a whole number from 1 to 10000000",
                |n| (1..=10_000_000).contains(n),
            )?,
        })
    }

    /// The finalizer's settings with these.
    pub fn finalizer(&self) -> crate::finalizer::FinalizerConfig {
        crate::finalizer::FinalizerConfig {
            range_batches: self.range_batches,
            result_groups: self.result_groups,
            ..Default::default()
        }
    }
}

impl CommonConfig {
    /// Where the deployment's resources are, for [`crate::Deps::aws`]. No function consumes the dead-letter
    /// queue itself (the finalizer's event source mapping does).
    pub fn resources(&self) -> crate::aws::AwsResources {
        crate::aws::AwsResources {
            table: self.table.clone(),
            counter_shards: self.counter_shards,
            work_queue_url: self.work_queue_url.clone(),
            dead_letter_queue_url: None,
            finalize_queue_url: self.finalize_queue_url.clone(),
            expected_bucket_owner: self.expected_bucket_owner.clone(),
            ttl: self.ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env(move |name: &str| map.get(name).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("DMAP_TABLE", "t"),
        ("DMAP_WORK_QUEUE_URL", "http://q/work"),
        ("DMAP_FINALIZE_QUEUE_URL", "http://q/finalize"),
    ];

    type Lookup = Box<dyn Fn(&str) -> Option<String>>;

    /// Every name a config reads, with every variable set so that nothing stops early.
    fn names_read<T>(read: impl Fn(&Env<Lookup>) -> T) -> Vec<String> {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let record = seen.clone();
        let env: Env<Lookup> = Env(Box::new(move |name: &str| {
            record.borrow_mut().push(name.to_owned());
            Some(
                if name.ends_with("SHARDS")
                    || name.ends_with("CONCURRENCY")
                    || name.ends_with("PARALLELISM")
                    || name.ends_with("BATCHES")
                {
                    "4"
                } else {
                    "x"
                }
                .to_owned(),
            )
        }));
        read(&env);
        let mut names = seen.borrow().clone();
        names.sort();
        names.dedup();
        names
    }

    fn listed(lists: &[&[&str]]) -> Vec<String> {
        let mut names: Vec<String> = lists
            .iter()
            .flat_map(|l| l.iter().map(|n| n.to_string()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn each_function_reads_exactly_its_listed_variables() {
        assert_eq!(
            names_read(CoordinatorConfig::from_env),
            listed(&[COMMON_VARS, COORDINATOR_VARS])
        );
        assert_eq!(
            names_read(WorkerFunctionConfig::from_env),
            listed(&[COMMON_VARS, WORKER_VARS])
        );
        assert_eq!(
            names_read(FinalizerFunctionConfig::from_env),
            listed(&[COMMON_VARS, FINALIZER_VARS])
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = CommonConfig::from_env(&env(&BASE[1..])).unwrap_err();
        assert_eq!(err.to_string(), "DMAP_TABLE must be set");
        let err = CoordinatorConfig::from_env(&env(BASE)).unwrap_err();
        assert_eq!(err.to_string(), "DMAP_CONTINUATION_QUEUE_URL must be set");
        let mut vars = BASE.to_vec();
        vars.push(("DMAP_CONTINUATION_QUEUE_URL", "http://q/continue"));
        let err = CoordinatorConfig::from_env(&env(&vars)).unwrap_err();
        assert_eq!(err.to_string(), "DMAP_ALLOWED_BUCKETS must be set");
    }

    #[test]
    fn values_are_parsed_and_checked() {
        let mut vars = BASE.to_vec();
        vars.push(("DMAP_COUNTER_SHARDS", "0"));
        let err = CommonConfig::from_env(&env(&vars)).unwrap_err();
        assert!(
            err.to_string()
                .contains("DMAP_COUNTER_SHARDS must be a whole number"),
            "{err}"
        );
        vars.pop();
        vars.extend([
            ("DMAP_ALLOWED_BUCKETS", "data, other ,"),
            ("DMAP_RESULT_BUCKETS", "data"),
            ("DMAP_CONTINUATION_QUEUE_URL", "http://q/continue"),
        ]);
        let config = CoordinatorConfig::from_env(&env(&vars)).unwrap();
        assert_eq!(config.allowed_buckets, ["data", "other"]);
        assert_eq!(config.result_buckets, ["data"]);
        assert_eq!(config.jobs_prefix, "jobs/");
        assert_eq!(config.results_prefix, "results/");
        assert_eq!(config.common.counter_shards, 16);
    }
}
