//! Counting AWS requests by operation, through an SDK interceptor, into a [`Meter`] that keeps them per job:
//! the basis of a job's usage and of the cost-per-item figure. Every attempt is counted (a retried request is
//! billed again), a retry apart from the requests themselves (`S3.GetObject (retry)`): the requests a job
//! needs are a fixed function of its items (`dmap plan` predicts them), its retries are the service's and the
//! network's. A DynamoDB read that is not strongly consistent is counted apart
//! (`DynamoDB.GetItem (eventually consistent)`): it costs half.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::usage::{Meter, RETRY};

/// Counts every request its clients send into the meter.
#[derive(Debug, Clone)]
pub struct RequestCounter(pub Meter);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "dmap-request-counter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut operation = cfg.load::<Metadata>().map_or_else(
            || "unknown".to_owned(),
            |m| format!("{}.{}", m.service(), m.name()),
        );
        let read = matches!(
            operation.as_str(),
            "DynamoDB.GetItem" | "DynamoDB.Query" | "DynamoDB.Scan" | "DynamoDB.BatchGetItem"
        );
        if read && !strongly_consistent(context.request().body().bytes().unwrap_or_default()) {
            operation.push_str(" (eventually consistent)");
        }
        if retried(context.request().headers().get("amz-sdk-request")) {
            operation.push_str(RETRY);
        }
        self.0.count(&crate::usage::counted_as(&operation));
        Ok(())
    }
}

/// Whether a DynamoDB read's JSON body asks for a strongly consistent read (the default is not).
fn strongly_consistent(body: &[u8]) -> bool {
    body.windows(CONSISTENT.len()).any(|w| w == CONSISTENT)
}

const CONSISTENT: &[u8] = b"\"ConsistentRead\":true";

/// Whether an attempt repeats one: the SDK numbers each in its `amz-sdk-request` header (`attempt=2; max=3`,
/// or `ttl=...; attempt=2; max=3`).
fn retried(header: Option<&str>) -> bool {
    header.is_some_and(|h| {
        h.split(';')
            .filter_map(|field| field.trim().strip_prefix("attempt="))
            .any(|n| n.parse::<u32>().is_ok_and(|n| n > 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_after_the_first_is_a_retry() {
        assert!(!retried(None));
        assert!(!retried(Some("attempt=1; max=3")));
        assert!(retried(Some("attempt=2; max=3")));
        assert!(retried(Some("attempt=10; max=10")));
        assert!(!retried(Some("ttl=20261128T151639Z; attempt=1; max=3")));
        assert!(retried(Some("ttl=20261128T151639Z; attempt=2; max=3")));
        assert!(!retried(Some("max=3")));
    }

    #[test]
    fn only_an_explicit_consistent_read_is_strong() {
        assert!(strongly_consistent(
            br#"{"ConsistentRead":true,"TableName":"t"}"#
        ));
        assert!(!strongly_consistent(
            br#"{"ConsistentRead":false,"TableName":"t"}"#
        ));
        assert!(!strongly_consistent(br#"{"TableName":"t"}"#));
    }
}
