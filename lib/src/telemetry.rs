//! Logs and metrics in the shape AWS Lambda Powertools users know.
//!
//! - Logs are JSON lines: `level`, `message` and the event's own fields at the
//!   top level, plus the request span (`service`, `cold_start`,
//!   `correlation_id` from API Gateway, `function_request_id`, `user_id` once
//!   authenticated) under `span`.
//! - Metrics are CloudWatch Embedded Metric Format documents (namespace
//!   `Picture`, dimension `service`), recorded through the `metrics` facade and
//!   flushed to stdout after every invocation by `metrics_cloudwatch_embedded`.
//!   Without a collector (the dev gateway, tests) recording is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// Metric names (counters unless noted).
pub mod metric {
    pub const GENERATION_STARTED: &str = "GenerationStarted";
    pub const GENERATION_SUCCEEDED: &str = "GenerationSucceeded";
    pub const GENERATION_FAILED: &str = "GenerationFailed";
    pub const GENERATION_CANCELLED: &str = "GenerationCancelled";
    pub const FREE_GENERATION_USED: &str = "FreeGenerationUsed";
    pub const CREDITS_CAPTURED: &str = "CreditsCaptured";
    pub const CREDITS_RELEASED: &str = "CreditsReleased";
    /// Histogram, milliseconds.
    pub const REPLICATE_LATENCY: &str = "ReplicateLatency";
    pub const REPLICATE_ERROR: &str = "ReplicateError";
    pub const WEBHOOK_RECEIVED: &str = "WebhookReceived";
    pub const WEBHOOK_REJECTED: &str = "WebhookRejected";
    pub const RATE_LIMITED: &str = "RateLimited";
    /// An external capture the credit service refused (final; alarmed on).
    pub const CAPTURE_REJECTED: &str = "CaptureRejected";
    /// Broken invariants found by an audit run (`crate::audit`).
    pub const AUDIT_VIOLATIONS: &str = "AuditViolations";
}

/// Adds `n` to a counter.
pub fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}

/// The service name in logs and metrics: the Lambda function's name, else `picture`.
pub fn service_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "picture".into())
}

static COLD: AtomicBool = AtomicBool::new(true);

/// True for the first invocation of this instance, false afterwards.
pub fn take_cold_start() -> bool {
    COLD.swap(false, Ordering::Relaxed)
}

/// A JSON log subscriber writing to `writer` (level from `RUST_LOG`, default `info`).
pub fn subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// Installs JSON logging to stdout for the process.
pub fn init_logging() {
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stdout));
}

/// Installs the EMF metrics collector for a Lambda function.
pub fn init_metrics()
-> Result<&'static metrics_cloudwatch_embedded::Collector, metrics_cloudwatch_embedded::Error> {
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("Picture")
        .with_dimension("service", service_name())
        .lambda_cold_start_metric("ColdStart")
        .with_lambda_request_id("RequestId")
        .init()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn logs_are_json_with_request_fields() {
        let buf = Buffer::default();
        tracing::subscriber::with_default(subscriber(buf.clone()), || {
            let span = tracing::info_span!(
                "request",
                service = "generate",
                cold_start = true,
                correlation_id = "abc",
                user_id = tracing::field::Empty
            );
            let _g = span.enter();
            span.record("user_id", "u-1");
            tracing::info!(generation_id = "g-1", "generation completed");
        });
        let line: Value = serde_json::from_slice(&buf.0.lock().unwrap()).unwrap();
        assert_eq!(
            (line["level"].as_str(), line["message"].as_str()),
            (Some("INFO"), Some("generation completed"))
        );
        assert_eq!(line["generation_id"], "g-1");
        let span = &line["span"];
        assert_eq!(
            (span["service"].as_str(), span["cold_start"].as_bool()),
            (Some("generate"), Some(true))
        );
        assert_eq!(
            (span["correlation_id"].as_str(), span["user_id"].as_str()),
            (Some("abc"), Some("u-1"))
        );
    }

    #[test]
    fn metrics_flush_as_embedded_metric_format() {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace("Picture")
            .with_dimension("service", "generate")
            .init()
            .unwrap();
        count(metric::GENERATION_SUCCEEDED, 2);
        let mut out = Vec::new();
        collector.flush(&mut out).unwrap();
        let doc: Value =
            serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some());
        let cw = &aws["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Picture");
        assert_eq!(cw["Dimensions"][0][0], "service");
        assert_eq!(cw["Metrics"][0]["Name"], metric::GENERATION_SUCCEEDED);
        assert_eq!(doc["service"], "generate");
        assert_eq!(doc[metric::GENERATION_SUCCEEDED], 2);
    }
}
