//! Tracing with OpenTelemetry, set up only when an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); the
//! protocol (`http/protobuf`, `http/json`), sampler, service name and batching
//! come from the other standard `OTEL_*` variables, read by the SDK.
//!
//! - The `tracing` spans of target [`TARGET`] are the trace, and only they: a
//!   server span per request ([`server_span`]) or invocation
//!   ([`invocation_span`]) that continues Lambda's X-Ray trace header, else the
//!   caller's `traceparent`, and a client span per outbound call: HTTP ([`http`]),
//!   S3 and DynamoDB ([`aws`]), PostgreSQL statements and transactions
//!   (`db::Sql`, `db::Tx`). The other spans are for logs. The crate's log
//!   events become events of the active span, and log lines carry its ids.
//! - A background thread exports the spans in batches; [`flush`] waits for
//!   the export after every invocation, before Lambda may freeze the process,
//!   for [`FLUSH_LIMIT`] at most.
//!
//! Platform: imports nothing of the crate.

pub mod aws;
pub mod http;

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use ::http::{HeaderMap, Method};
use opentelemetry::{
    Context,
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider},
};
use opentelemetry_aws::trace::{XrayIdGenerator, XrayPropagator};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Registry, filter::filter_fn, layer::Layer as _};

/// The target of the spans that make up the trace (never shown in log lines).
pub const TARGET: &str = "picture::otel";

/// The tracing layer, for the process's subscriber.
pub type Layer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the environment asks for traces: an OTLP endpoint is set, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns them off.
pub fn configured(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && var("OTEL_TRACES_EXPORTER").as_deref() != Some("none")
}

/// Whether this process exports traces (see [`layer`]).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The tracer provider the environment asks for (else `None`: nothing is built):
/// an OTLP/HTTP exporter behind a batch processor, X-Ray-compatible trace ids,
/// the Lambda resource, `service.name` from `OTEL_SERVICE_NAME`, else `service`.
pub fn provider(service: &str) -> Result<Option<SdkTracerProvider>, String> {
    if !configured(|name| std::env::var(name).ok()) {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    let timeout_set = [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !timeout_set {
        // The SDK's default (10 s) would stretch every invocation while a collector is slow.
        exporter = exporter.with_timeout(FLUSH_LIMIT);
    }
    let exporter = Counted(
        exporter
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?,
    );
    let mut resource = Resource::builder().with_detector(Box::new(
        opentelemetry_aws::detector::LambdaResourceDetector,
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Trace ids X-Ray accepts (they start with the time), valid W3C ids as well.
        .with_id_generator(XrayIdGenerator::default())
        .with_resource(resource.build())
        .build();
    Ok(Some(provider))
}

/// The layer that turns [`TARGET`] spans into spans of the [`provider`], when the
/// environment asks for traces (`service`: see [`provider`]); [`flush`] then flushes
/// it. Once per process.
pub fn layer(service: &str) -> Result<Option<Layer>, String> {
    let Some(provider) = provider(service)? else {
        return Ok(None);
    };
    let tracer = provider.tracer("picture");
    PROVIDER
        .set(provider)
        .map_err(|_| "tracing is already set up".to_string())?;
    Ok(Some(layer_with(tracer)))
}

/// The tracing layer over `tracer`: spans of [`TARGET`], and the crate's log
/// events at `INFO` and above as events of the active span.
pub(crate) fn layer_with(tracer: opentelemetry_sdk::trace::Tracer) -> Layer {
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Every span is made in this module or `db`: where the macro sits says nothing.
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|m| {
            if m.is_span() {
                m.target() == TARGET
            } else {
                m.target().starts_with("picture") && *m.level() <= tracing::Level::INFO
            }
        }));
    Box::new(layer)
}

/// Longest wait for the collector after an invocation (and the exporter's
/// timeout, unless `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise): a slow
/// collector must not push an invocation towards its function's timeout.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// Exports the spans ended so far and waits for the collector's answer, for
/// [`FLUSH_LIMIT`] at most (a no-op without tracing). Called once an
/// invocation has answered.
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        flush_provider(provider).await;
    }
}

/// [`flush`] for one provider. Spans not sent in time stay queued for the next
/// flush; a failed export drops its spans, counted as `SpansDropped`.
pub async fn flush_provider(provider: &SdkTracerProvider) {
    let provider = provider.clone();
    // The batch processor's thread does the export; waiting for it blocks.
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush());
    match tokio::time::timeout(FLUSH_LIMIT, flushed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "spans not exported"),
        Ok(Err(e)) => tracing::warn!(error = %e, "spans not exported"),
        Err(_) => tracing::warn!(
            "span export still running after the flush limit; left to the next flush"
        ),
    }
}

/// The metric of spans lost because their export failed (the collector down or too slow).
pub const SPANS_DROPPED: &str = "SpansDropped";

/// An exporter that counts the spans of failed exports ([`SPANS_DROPPED`]).
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let exported = self.0.export(batch).await;
        if exported.is_err() {
            metrics::counter!(SPANS_DROPPED).increment(spans);
        }
        exported
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// The trace a request continues: the invocation's X-Ray trace header
/// (`_X_AMZN_TRACE_ID`, from Lambda's context: the platform's, which a client
/// cannot override), else its W3C `traceparent`, else an `X-Amzn-Trace-Id`
/// request header; none starts a new trace.
fn parent(headers: &HeaderMap, xray: Option<&str>) -> Context {
    let root = Context::new();
    let found = |cx: &Context| cx.span().span_context().is_valid();
    let aws = XrayPropagator::new();
    if let Some(value) = xray {
        let lambda = HashMap::from([("x-amzn-trace-id".to_string(), value.to_string())]);
        let cx = aws.extract_with_context(&root, &lambda);
        if found(&cx) {
            return cx;
        }
    }
    let w3c = TraceContextPropagator::new().extract_with_context(&root, &HeaderExtractor(headers));
    if found(&w3c) {
        return w3c;
    }
    aws.extract_with_context(&root, &HeaderExtractor(headers))
}

/// The server span of an HTTP request (`route`: the matched route, if any), in the
/// trace it continues (see [`parent`]).
pub fn server_span(
    method: &Method,
    route: Option<&str>,
    path: &str,
    headers: &HeaderMap,
    xray: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "server",
        otel.name = route.map_or_else(|| method.to_string(), |r| format!("{method} {r}")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    );
    if enabled() {
        let _ = span.set_parent(parent(headers, xray));
    }
    span
}

/// Records a request's answer on its server span (5xx is an error).
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// The server span of a scheduled or deploy-time invocation (`trigger`: `timer`,
/// `other`), in the X-Ray trace Lambda gives it (`ctx`; none outside Lambda).
pub fn invocation_span(name: &str, trigger: &str, ctx: Option<&lambda_runtime::Context>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "invocation",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        faas.trigger = trigger,
        faas.invocation_id = ctx.map(|c| c.request_id.as_str()),
    );
    if enabled() {
        let xray = ctx.and_then(|c| c.xray_trace_id.as_deref());
        let _ = span.set_parent(parent(&HeaderMap::new(), xray));
    }
    span
}

/// Adds `span`'s W3C `traceparent` to an outbound request's headers.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if enabled() && !span.is_disabled() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_only_with_an_endpoint() {
        let with = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            configured(|name| vars.get(name).cloned())
        };
        assert!(!with(&[]));
        assert!(!with(&[
            ("OTEL_SERVICE_NAME", "picture"),
            ("OTEL_TRACES_SAMPLER", "always_on")
        ]));
        assert!(!with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert!(with(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://localhost:4318"
        )]));
        assert!(with(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )]));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318");
        assert!(!with(&[endpoint, ("OTEL_SDK_DISABLED", "true")]));
        assert!(!with(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]));
    }

    fn ids(cx: &Context) -> (String, String, bool) {
        let span = cx.span();
        let sc = span.span_context();
        (
            sc.trace_id().to_string(),
            sc.span_id().to_string(),
            sc.is_sampled(),
        )
    }

    #[test]
    fn lambdas_xray_header_first_then_traceparent_then_the_requests() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let lambda = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let header = "Root=1-67891233-abcdef012345678912345678;Parent=463ac35c9f6413ad;Sampled=0";
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-trace-id", header.parse().unwrap());
        assert_eq!(
            ids(&parent(&headers, None)),
            (
                "67891233abcdef012345678912345678".into(),
                "463ac35c9f6413ad".into(),
                false
            )
        );
        assert_eq!(
            ids(&parent(&headers, Some(lambda))),
            (
                "5759e988bd862e3fe1be46a994272793".into(),
                "53995c3f42cd8ad8".into(),
                true
            )
        );
        headers.insert("traceparent", traceparent.parse().unwrap());
        // A client's traceparent does not override the platform's context...
        assert_eq!(
            ids(&parent(&headers, Some(lambda))),
            (
                "5759e988bd862e3fe1be46a994272793".into(),
                "53995c3f42cd8ad8".into(),
                true
            )
        );
        // ...but is continued where there is none (outside Lambda).
        assert_eq!(
            ids(&parent(&headers, None)),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into(),
                true
            )
        );
        assert!(
            !parent(&HeaderMap::new(), None)
                .span()
                .span_context()
                .is_valid()
        );
    }
}
