//! Logs and metrics in the shape AWS Lambda Powertools users know.
//!
//! - Logs are JSON lines: `level`, `message` and the event's own fields at the
//!   top level, plus the request span (`service`, `cold_start`,
//!   `correlation_id` from API Gateway, `function_request_id`, `user_id` once
//!   authenticated) under `span`; while a span of the trace is active
//!   ([`crate::otel`]), its `traceId` and `spanId` too.
//! - Metrics are CloudWatch Embedded Metric Format documents (namespace
//!   `Picture`, dimension `service`), recorded through the `metrics` facade and
//!   flushed to stdout after every invocation by `metrics_cloudwatch_embedded`.
//!   `picture-dev serve` installs the same collector and flushes after every
//!   request. Without a collector (tests) recording is a no-op.
//! - Generation counters and provider usage carry a `model` dimension too.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer as _, Registry,
    filter::{FilterExt, filter_fn},
    fmt::{
        FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::{Format, Json, JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
};

/// Metric names (counters unless noted).
pub mod metric {
    /// By model ([`super::count_for_model`]), like the other three.
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
    /// 402 answers: not enough credits for a generation.
    pub const INSUFFICIENT_CREDITS: &str = "InsufficientCredits";
    /// 429 answers: too many generations in flight for a user.
    pub const TOO_MANY_IN_FLIGHT: &str = "TooManyInFlight";
    /// Histogram by model, seconds: Replicate's `metrics.predict_time` of a finished prediction.
    pub const REPLICATE_PREDICT_TIME: &str = "ReplicatePredictTime";
    /// Histogram by model, US dollars (unit None): a finished prediction's estimated cost.
    pub const PROVIDER_COST_USD: &str = "ProviderCostUsd";
    /// Histogram by model, seconds: from the provider's `created_at` to its `started_at`.
    pub const QUEUE_TIME: &str = "QueueTime";
    /// Histogram by model, seconds: from the request to the completed generation.
    pub const GENERATION_TIME: &str = "GenerationTime";
    /// An external capture the credit service refused (final; alarmed on).
    pub const CAPTURE_REJECTED: &str = "CaptureRejected";
    /// Broken invariants found by an audit run (`crate::audit`).
    pub const AUDIT_VIOLATIONS: &str = "AuditViolations";
    /// A status read that could not ask the provider and answered the stored state.
    pub const PROVIDER_POLL_FAILED: &str = "ProviderPollFailed";
    /// Replicate refused our token (401/403): an operator's alarm, nothing is failed for it.
    pub const PROVIDER_AUTH_FAILED: &str = "ProviderAuthFailed";
    /// Requests refused for their content (blocklist, moderation provider, or the
    /// image provider's safety checker).
    pub const CONTENT_REFUSED: &str = "ContentRefused";
    /// Credits granted for paid Checkout Sessions.
    pub const CREDITS_PURCHASED: &str = "CreditsPurchased";
    /// A Checkout Session disagreed with its purchase (amount, currency or customer): alarmed on.
    pub const PURCHASE_MISMATCH: &str = "PurchaseMismatch";
    /// A payments webhook delivery that could not be processed (Stripe retries it): alarmed on.
    pub const PAYMENT_WEBHOOK_FAILED: &str = "PaymentWebhookFailed";
    pub use crate::otel::SPANS_DROPPED;
    /// A reconciler run found a generation's prediction unknown to the provider (404).
    pub const PREDICTION_MISSING: &str = "PredictionMissing";
}

/// Adds `n` to a counter.
pub fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}

/// Adds `n` to a counter of one model.
pub fn count_for_model(name: &'static str, model: &str, n: u64) {
    metrics::counter!(name, "model" => model.to_string()).increment(n);
}

/// Records how long a completed generation of `model` took, request to image.
pub fn generation_time(model: &str, seconds: f64) {
    metrics::histogram!(metric::GENERATION_TIME, "model" => model.to_string()).record(seconds);
}

/// What the provider used for one finished prediction of `model`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderUsage {
    /// Seconds the prediction ran, when the provider reports it.
    pub predict_seconds: Option<f64>,
    /// Estimated cost in US dollars, from the model's price.
    pub cost_usd: f64,
    /// Seconds between creating the prediction and its start, when both are known.
    pub queue_seconds: Option<f64>,
}

/// Records a finished prediction's predict time, estimated cost and queue time.
pub fn provider_usage(model: &str, usage: ProviderUsage) {
    let label = || ("model", model.to_string());
    if let Some(s) = usage.predict_seconds {
        metrics::histogram!(metric::REPLICATE_PREDICT_TIME, &[label()]).record(s);
    }
    metrics::histogram!(metric::PROVIDER_COST_USD, &[label()]).record(usage.cost_usd);
    if let Some(s) = usage.queue_seconds {
        metrics::histogram!(metric::QUEUE_TIME, &[label()]).record(s);
    }
}

/// Declares the units of the metrics that have one (once, after the collector is installed).
fn describe() {
    use metrics::Unit;
    metrics::describe_histogram!(metric::REPLICATE_PREDICT_TIME, Unit::Seconds, "");
    metrics::describe_histogram!(metric::QUEUE_TIME, Unit::Seconds, "");
    metrics::describe_histogram!(metric::GENERATION_TIME, Unit::Seconds, "");
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

/// The JSON log format, plus the ids of the active span of the trace, if any.
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt;
        let ids = opentelemetry::Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // One JSON object and a newline: the ids go in before its closing brace.
        let object = line.trim_end().strip_suffix('}').ok_or(std::fmt::Error)?;
        writeln!(
            writer,
            r#"{object},"traceId":"{trace_id}","spanId":"{span_id}"}}"#
        )
    }
}

/// A JSON log subscriber writing to `writer` (level from `RUST_LOG`, default
/// `info`), with the tracing layer `traces` when there is one; without it, the
/// spans of the trace are not even made. Those spans ([`crate::otel::TARGET`])
/// never become the `span` of a log line.
pub fn subscriber<W>(
    writer: W,
    traces: Option<crate::otel::Layer>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match traces {
        Some(traces) => Box::new(Registry::default().with(traces).with(logs(writer))),
        None => Box::new(Registry::default().with(logs(writer))),
    }
}

/// The JSON log layer of [`subscriber`].
fn logs<S, W>(writer: W) -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let for_logs = filter_fn(|m| !(m.is_span() && m.target() == crate::otel::TARGET));
    let format = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false);
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(WithTraceIds(format))
        .with_writer(writer)
        .with_filter(filter.and(for_logs))
}

/// Installs JSON logging to stdout for the process.
pub fn init_logging() {
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stdout, None));
}

/// Installs JSON logging and, when the environment asks for it, tracing
/// ([`crate::otel`]): for the functions and the dev gateway.
pub fn init() {
    let (traces, failed) = match crate::otel::layer(&service_name()) {
        Ok(traces) => (traces, None),
        Err(e) => (None, Some(e)),
    };
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stdout, traces));
    if let Some(e) = failed {
        tracing::warn!(error = %e, "tracing not set up");
    }
}

/// The collector's settings for `service`: namespace `Picture`, dimension `service`.
fn builder(service: String) -> metrics_cloudwatch_embedded::Builder {
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("Picture")
        .with_dimension("service", service)
}

/// Installs the EMF metrics collector for a Lambda function.
pub fn init_metrics()
-> Result<&'static metrics_cloudwatch_embedded::Collector, metrics_cloudwatch_embedded::Error> {
    let collector = builder(service_name())
        .lambda_cold_start_metric("ColdStart")
        .with_lambda_request_id("RequestId")
        .init()?;
    describe();
    Ok(collector)
}

/// Installs the EMF metrics collector for a process that flushes it itself
/// (`picture-dev serve`, after every request): the same documents as on Lambda.
pub fn init_local_metrics()
-> Result<&'static metrics_cloudwatch_embedded::Collector, metrics_cloudwatch_embedded::Error> {
    let collector = builder(service_name()).init()?;
    describe();
    Ok(collector)
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
        tracing::subscriber::with_default(subscriber(buf.clone(), None), || {
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

    /// The log lines written to `buf`.
    fn lines(buf: &Buffer) -> Vec<Value> {
        let bytes = buf.0.lock().unwrap().clone();
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn log_lines_carry_the_ids_of_the_active_span_of_the_trace() {
        use opentelemetry::trace::TracerProvider;
        let buf = Buffer::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let traces = crate::otel::layer_with(provider.tracer("test"));
        tracing::subscriber::with_default(subscriber(buf.clone(), Some(traces)), || {
            let server = tracing::info_span!(target: crate::otel::TARGET, "server");
            let request = tracing::info_span!("request", correlation_id = "abc");
            let _s = server.enter();
            let _r = request.enter();
            tracing::info!("inside");
        });
        tracing::subscriber::with_default(subscriber(buf.clone(), None), || {
            tracing::info!("outside");
        });
        let lines = lines(&buf);
        let inside = &lines[0];
        assert_eq!(inside["message"], "inside");
        let hex = |v: &Value, n: usize| {
            v.as_str()
                .is_some_and(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        assert!(
            hex(&inside["traceId"], 32) && hex(&inside["spanId"], 16),
            "{inside}"
        );
        // The span of a log line stays the request's: the trace's spans are not for logs.
        assert_eq!(inside["span"]["correlation_id"], "abc");
        assert!(lines[1].get("traceId").is_none(), "{}", lines[1]);
    }

    #[test]
    fn without_tracing_the_spans_of_the_trace_are_not_even_made() {
        let buf = Buffer::default();
        tracing::subscriber::with_default(subscriber(buf.clone(), None), || {
            let server = tracing::info_span!(target: crate::otel::TARGET, "server");
            assert!(server.is_disabled());
            let _r = tracing::info_span!("request", correlation_id = "abc").entered();
            tracing::info!("logged");
        });
        let line = &lines(&buf)[0];
        assert_eq!(line["span"]["correlation_id"], "abc");
        assert!(line.get("traceId").is_none(), "{line}");
    }

    /// Every EMF document one flush writes (one per label set).
    fn flush(collector: &metrics_cloudwatch_embedded::Collector) -> Vec<Value> {
        let mut out = Vec::new();
        collector.flush(&mut out).unwrap();
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// One test installs the process's recorder (there can be one): both checks run in it.
    #[test]
    fn metrics_flush_as_embedded_metric_format() {
        let collector = builder("generate".into()).init().unwrap();
        describe();

        count(metric::GENERATION_SUCCEEDED, 2);
        let docs = flush(collector);
        let doc = &docs[0];
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some());
        let cw = &aws["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Picture");
        assert_eq!(cw["Dimensions"][0][0], "service");
        assert_eq!(cw["Metrics"][0]["Name"], metric::GENERATION_SUCCEEDED);
        assert_eq!(doc["service"], "generate");
        assert_eq!(doc[metric::GENERATION_SUCCEEDED], 2);

        // A finished prediction: predict time and queue time in seconds, cost without a unit,
        // by service and model.
        let usage = ProviderUsage {
            predict_seconds: Some(1.5),
            cost_usd: 0.003,
            queue_seconds: Some(0.25),
        };
        provider_usage("flux-schnell", usage);
        count_for_model(metric::GENERATION_SUCCEEDED, "flux-schnell", 1);
        generation_time("flux-schnell", 3.5);
        let docs = flush(collector);
        assert_eq!(docs.len(), 1, "{docs:?}");
        let doc = &docs[0];
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Picture");
        assert_eq!(cw["Dimensions"], serde_json::json!([["service", "model"]]));
        let units: std::collections::BTreeMap<&str, Option<&str>> = cw["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str()))
            .collect();
        assert_eq!(
            units,
            [
                (metric::GENERATION_SUCCEEDED, None),
                (metric::GENERATION_TIME, Some("Seconds")),
                (metric::PROVIDER_COST_USD, None),
                (metric::QUEUE_TIME, Some("Seconds")),
                (metric::REPLICATE_PREDICT_TIME, Some("Seconds")),
            ]
            .into()
        );
        assert_eq!(
            (&doc["service"], &doc["model"]),
            (&"generate".into(), &"flux-schnell".into())
        );
        assert_eq!(
            doc[metric::REPLICATE_PREDICT_TIME],
            serde_json::json!([1.5])
        );
        assert_eq!(doc[metric::PROVIDER_COST_USD], serde_json::json!([0.003]));
        assert_eq!(doc[metric::QUEUE_TIME], serde_json::json!([0.25]));
        assert_eq!(doc[metric::GENERATION_SUCCEEDED], 1);
        assert_eq!(doc[metric::GENERATION_TIME], serde_json::json!([3.5]));
    }
}
