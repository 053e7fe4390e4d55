//! The `lambda` processor: each batch goes to the user's own Lambda function, with exactly the input Distributed
//! Map gives a function for a batch of an S3 listing, so a function written for Distributed Map runs unchanged:
//!
//! `{"kind": "lambda", "function": "<name or ARN>", "batch_input": {...}, "reducer": "<name or ARN>",
//!   "retry": {"max_attempts": 3, "interval_seconds": 1, "backoff_rate": 2.0}}`
//!
//! This module is the config: its rules, the function references, the Task-state `Retry` policy, and the
//! payload. The invocations themselves are the worker's and the finalizer's ([`crate::function`]); the results
//! go to Distributed Map's ResultWriter layout ([`crate::map_results`]), not through `merge`: a function's
//! response is opaque to dmap, so the job's result is what the reducer makes of them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BatchItem, ConfigError, Item, ItemError, ItemKind, MergeError, Processed, Processor};

/// Lambda's limit on a synchronous invocation's request (and response) payload: 6 MB.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// `{"kind": "lambda", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaProcessor {
    /// The batch function: a name, a name with a version or alias (`name:live`), a partial ARN
    /// (`123456789012:function:name`) or an ARN (of a function, a version or an alias).
    pub function: String,
    /// The JSON object every batch's input carries as `BatchInput` (Distributed Map's `ItemBatcher.BatchInput`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_input: Option<serde_json::Value>,
    /// A function invoked once at the end with the ResultWriter details; its response is `result.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    /// How a function error is retried before that attempt of the batch fails (a Task state's `Retry`).
    #[serde(default, skip_serializing_if = "RetryPolicy::is_default")]
    pub retry: RetryPolicy,
}

/// A Task state's `Retry` for a function's errors (`States.TaskFailed`): after a failed invocation, wait
/// `interval_seconds`, then that times `backoff_rate` after each further failure, for up to `max_attempts`
/// retries (Step Functions' meaning: 0 means no retry). Throttling is not a function error and is retried
/// apart, without limit of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    #[serde(default)]
    pub backoff_rate: BackoffRate,
}

/// A retry's backoff multiplier (a JSON number, at least 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackoffRate(pub f64);

// Validation refuses NaN, so the rate is always equal to itself.
impl Eq for BackoffRate {}

impl Default for BackoffRate {
    fn default() -> Self {
        Self(2.0)
    }
}

fn default_max_attempts() -> u32 {
    3
}
fn default_interval() -> u32 {
    1
}

impl Default for RetryPolicy {
    /// Step Functions' defaults: 3 retries, after 1 s, then 2 s, then 4 s.
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            interval_seconds: default_interval(),
            backoff_rate: BackoffRate::default(),
        }
    }
}

/// Most retries of one invocation: each runs the user's function again, within one worker invocation.
pub const MAX_RETRIES: u32 = 10;
/// Most time the waits between the retries of one invocation may add up to: they are spent inside one
/// worker invocation, which Lambda stops at its timeout.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

impl RetryPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The wait before retry `n` (1-based).
    pub fn wait_before(&self, n: u32) -> Duration {
        let factor = self.backoff_rate.0.powi(n.saturating_sub(1) as i32);
        Duration::from_secs_f64((f64::from(self.interval_seconds) * factor).min(1e6))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts > MAX_RETRIES {
            return Err(ConfigError::new(
                "retry.max_attempts",
                format!(
                    "{} is more than {MAX_RETRIES} retries of one batch within one worker invocation",
                    self.max_attempts
                ),
            ));
        }
        if self.interval_seconds == 0 {
            return Err(ConfigError::new(
                "retry.interval_seconds",
                "must be at least 1, as in a Task state's Retry",
            ));
        }
        let rate = self.backoff_rate.0;
        if !(rate.is_finite() && rate >= 1.0) {
            return Err(ConfigError::new(
                "retry.backoff_rate",
                format!("{rate} must be a number of at least 1.0"),
            ));
        }
        let total: Duration = (1..=self.max_attempts).map(|n| self.wait_before(n)).sum();
        if total > MAX_RETRY_WAIT {
            return Err(ConfigError::new(
                "retry",
                format!(
                    "the waits between retries add up to {} s, more than the {} s a worker invocation can spend \
                     on one batch; lower max_attempts, interval_seconds or backoff_rate",
                    total.as_secs(),
                    MAX_RETRY_WAIT.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// Where a function is, as Lambda's Invoke accepts it: a name, a partial ARN or an ARN, each with an optional
/// version or alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub partition: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
    pub name: String,
    pub qualifier: Option<String>,
}

impl FunctionRef {
    /// Parses a function reference, or says what is wrong with it.
    pub fn parse(reference: &str) -> Result<Self, String> {
        let parts: Vec<&str> = reference.split(':').collect();
        let (partition, region, account, rest) = match parts.as_slice() {
            [
                "arn",
                partition,
                "lambda",
                region,
                account,
                "function",
                rest @ ..,
            ] => (
                Some(*partition),
                Some(*region),
                Some(*account),
                rest.to_vec(),
            ),
            [account, "function", rest @ ..] => (None, None, Some(*account), rest.to_vec()),
            rest => (None, None, None, rest.to_vec()),
        };
        let shape = || {
            format!(
                "\"{}\" is not a function name, partial ARN or ARN (e.g. \"my-function\", \"my-function:live\", \
                 \"arn:aws:lambda:us-east-1:123456789012:function:my-function\")",
                super::echo(reference)
            )
        };
        let (name, qualifier) = match rest.as_slice() {
            [name] => (*name, None),
            [name, qualifier] => (*name, Some(*qualifier)),
            _ => return Err(shape()),
        };
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        let qualifier_ok = qualifier.is_none_or(|q| {
            (1..=128).contains(&q.len())
                && q.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'$'))
        });
        let account_ok =
            account.is_none_or(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()));
        let region_ok = region.is_none_or(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        let partition_ok = partition.is_none_or(|p| p.starts_with("aws"));
        if !(name_ok && qualifier_ok && account_ok && region_ok && partition_ok) {
            return Err(shape());
        }
        Ok(Self {
            partition: partition.map(str::to_owned),
            region: region.map(str::to_owned),
            account: account.map(str::to_owned),
            name: name.to_owned(),
            qualifier: qualifier.map(str::to_owned),
        })
    }

    /// The ARN of the function itself (no version or alias), its missing parts taken from `stack` (a function
    /// of the stack that invokes it: its partition, region and account); `None` when a part stays unknown.
    pub fn function_arn(&self, stack: Option<&FunctionRef>) -> Option<String> {
        let partition = self
            .partition
            .as_deref()
            .or(stack.and_then(|s| s.partition.as_deref()))
            .unwrap_or("aws");
        let region = self
            .region
            .as_deref()
            .or(stack.and_then(|s| s.region.as_deref()))?;
        let account = self
            .account
            .as_deref()
            .or(stack.and_then(|s| s.account.as_deref()))?;
        Some(format!(
            "arn:{partition}:lambda:{region}:{account}:function:{}",
            self.name
        ))
    }
}

impl LambdaProcessor {
    /// The functions the processor invokes, with their fields: the batch function, then the reducer if any.
    pub fn functions(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("function", self.function.as_str()))
            .chain(self.reducer.as_deref().map(|r| ("reducer", r)))
    }

    /// A batch's input: `{"Items": [...], "BatchInput": {...}}`, `BatchInput` only when set. The items are as
    /// Distributed Map gives them: listing entries, or the values themselves (a row's object, a JSON value, a
    /// table item); an item that failed as it was read is not the function's.
    pub fn payload(&self, items: &[BatchItem]) -> Vec<u8> {
        struct Items<'a>(&'a [BatchItem]);
        impl Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = serializer.serialize_seq(None)?;
                for item in self.0 {
                    match item {
                        BatchItem::Failed(_) => {}
                        BatchItem::Value(value) => seq.serialize_element(&value.value)?,
                        item => seq.serialize_element(item)?,
                    }
                }
                seq.end()
            }
        }
        #[derive(Serialize)]
        struct Payload<'a> {
            #[serde(rename = "Items")]
            items: Items<'a>,
            #[serde(rename = "BatchInput", skip_serializing_if = "Option::is_none")]
            batch_input: Option<&'a serde_json::Value>,
        }
        serde_json::to_vec(&Payload {
            items: Items(items),
            batch_input: self.batch_input.as_ref(),
        })
        .expect("a payload always serializes")
    }

    /// The most bytes a batch's input can take when the items of a batch message take at most
    /// `max_items_bytes`: the items are copied as they are, so the payload adds only its own envelope and the
    /// batch input.
    pub fn max_payload_bytes(&self, max_items_bytes: usize) -> usize {
        self.payload(&[]).len() + max_items_bytes
    }
}

/// The job's result is the reducer's response, not a merge of per-item results: there is nothing to merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LambdaAggregate {}

impl Processor for LambdaProcessor {
    type Aggregate = LambdaAggregate;

    fn validate(&self) -> Result<(), ConfigError> {
        for (field, function) in self.functions() {
            FunctionRef::parse(function).map_err(|message| ConfigError::new(field, message))?;
        }
        if let Some(input) = &self.batch_input
            && !input.is_object()
        {
            return Err(ConfigError::new(
                "batch_input",
                "must be a JSON object, as Distributed Map's BatchInput",
            ));
        }
        self.retry.validate()
    }

    /// Every kind: the function gets the items as Distributed Map would give them.
    const TAKES: &'static [ItemKind] = &[ItemKind::Object, ItemKind::Record, ItemKind::Value];

    /// Never called: the worker hands the whole batch to the function instead of processing items one by one.
    fn process(&self, item: Item<'_>) -> Result<Processed<LambdaAggregate>, ItemError> {
        Err(ItemError::Invalid(format!(
            "\"{}\": the lambda processor takes whole batches, not single items",
            item.id()
        )))
    }

    fn merge(_: &mut LambdaAggregate, _: LambdaAggregate) -> Result<(), MergeError> {
        Ok(())
    }

    fn result_json(_: &LambdaAggregate) -> serde_json::Value {
        serde_json::Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::S3Item;

    fn processor(json: serde_json::Value) -> Result<LambdaProcessor, String> {
        let p: LambdaProcessor = serde_json::from_value(json).map_err(|e| e.to_string())?;
        p.validate()
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        Ok(p)
    }

    #[test]
    fn the_payload_is_distributed_maps_batch_input() {
        let p = processor(serde_json::json!({"function": "f", "batch_input": {"Bucket": "b"}}))
            .unwrap();
        let items = [BatchItem::Object(S3Item {
            etag: "\"e\"".into(),
            key: "k".into(),
            last_modified: 1,
            size: 2,
            storage_class: "STANDARD".into(),
        })];
        assert_eq!(
            String::from_utf8(p.payload(&items)).unwrap(),
            r#"{"Items":[{"Etag":"\"e\"","Key":"k","LastModified":1,"Size":2,"StorageClass":"STANDARD"}],"BatchInput":{"Bucket":"b"}}"#
        );
        let bare = processor(serde_json::json!({"function": "f"})).unwrap();
        assert_eq!(bare.payload(&[]), br#"{"Items":[]}"#);
        assert_eq!(p.max_payload_bytes(100), p.payload(&[]).len() + 100);
        assert_eq!(bare.retry, RetryPolicy::default());
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({"function": "f"})
        );
    }

    #[test]
    fn function_references_resolve_to_the_functions_arn() {
        let stack =
            FunctionRef::parse("arn:aws:lambda:eu-west-1:111122223333:function:coordinator")
                .unwrap();
        for (reference, arn) in [
            ("f", "arn:aws:lambda:eu-west-1:111122223333:function:f"),
            ("f:live", "arn:aws:lambda:eu-west-1:111122223333:function:f"),
            (
                "444455556666:function:g:7",
                "arn:aws:lambda:eu-west-1:444455556666:function:g",
            ),
            (
                "arn:aws-cn:lambda:cn-north-1:444455556666:function:h:$LATEST",
                "arn:aws-cn:lambda:cn-north-1:444455556666:function:h",
            ),
        ] {
            let parsed = FunctionRef::parse(reference).unwrap();
            assert_eq!(
                parsed.function_arn(Some(&stack)).as_deref(),
                Some(arn),
                "{reference}"
            );
        }
        assert_eq!(FunctionRef::parse("f").unwrap().function_arn(None), None);
        for bad in [
            "",
            "a b",
            "arn:aws:s3:::bucket",
            "f:live:extra",
            "12:function:f",
            "x".repeat(65).as_str(),
        ] {
            assert!(FunctionRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        for (json, field) in [
            (serde_json::json!({"function": "no such/name"}), "function"),
            (
                serde_json::json!({"function": "f", "reducer": ""}),
                "reducer",
            ),
            (
                serde_json::json!({"function": "f", "batch_input": [1]}),
                "batch_input",
            ),
            (
                serde_json::json!({"function": "f", "retry": {"max_attempts": 11}}),
                "retry.max_attempts",
            ),
            (
                serde_json::json!({"function": "f", "retry": {"interval_seconds": 0}}),
                "retry.interval_seconds",
            ),
            (
                serde_json::json!({"function": "f", "retry": {"backoff_rate": 0.5}}),
                "retry.backoff_rate",
            ),
            (
                serde_json::json!({"function": "f", "retry": {"max_attempts": 10, "interval_seconds": 60}}),
                "retry",
            ),
        ] {
            let err = processor(json.clone()).unwrap_err();
            assert!(err.starts_with(&format!("{field}: ")), "{json}: {err}");
        }
        let err = processor(serde_json::json!({"function": "f", "retry": {"jitter": "FULL"}}))
            .unwrap_err();
        assert!(err.contains("unknown field `jitter`"), "{err}");
    }

    #[test]
    fn retries_wait_as_a_task_states_retry() {
        let retry = RetryPolicy::default();
        let waits: Vec<u64> = (1..=3).map(|n| retry.wait_before(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4]);
    }
}
