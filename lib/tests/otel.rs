//! Tracing end to end (`picture::otel`), in a test binary of its own: the tracer
//! provider and the global log subscriber belong to the process. An in-process
//! OTLP/HTTP receiver, which also plays the credit service, collects what the API
//! (every function's routes, on the local stack as in `tests/it`) sends it.
//!
//! 1. Without the `OTEL_*` variables nothing is set up: no provider, no span of
//!    the trace made, no `traceId` in logs, nothing sent to the default endpoint.
//! 2. With them (`http/json`), one `POST /generate` carrying a `traceparent`
//!    exports its server span, in that trace, and the client spans of its calls:
//!    Replicate, the output download, S3, DynamoDB, the key set, the credit
//!    service (which receives the `traceparent`) and PostgreSQL statements and
//!    transactions. Its log lines carry the trace id.
//! 3. The same settings with `http/protobuf` export too (decoded with
//!    opentelemetry-proto's types).
//! 4. A collector that never answers delays the flush by `FLUSH_LIMIT` only.

#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    routing::{get, post},
};
use common::{FLUX, Stack};
use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// What the receiver was sent: path, headers, body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>);

impl Received {
    fn of(&self, path: &str) -> Vec<(HeaderMap, Bytes)> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(p, ..)| p.starts_with(path))
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }

    /// Every span of the `http/json` exports received.
    fn json_spans(&self) -> Vec<(Value, Value)> {
        let mut spans = Vec::new();
        for (headers, body) in self.of("/v1/traces") {
            if headers["content-type"] != "application/json" {
                continue;
            }
            let doc: Value = serde_json::from_slice(&body).unwrap();
            for rs in doc["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for span in ss["spans"].as_array().unwrap() {
                        spans.push((rs["resource"].clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

/// An OTLP/HTTP receiver and a credit service on `listener`, and its base URL.
fn receiver(listener: std::net::TcpListener) -> (Received, String) {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let record = |State(r): State<Received>, uri: axum::http::Uri, h: HeaderMap, b: Bytes| async move {
        r.0.lock().unwrap().push((uri.path().to_string(), h, b));
    };
    let app = Router::new()
        .route("/v1/traces", post(record))
        .route(
            "/api/v1/internal/credits/balance/{user}",
            get(move |s, u, h| async move {
                record(s, u, h, Bytes::new()).await;
                Json(json!({"balance": 100, "totalEarned": 100, "totalSpent": 0}))
            }),
        )
        .route(
            "/api/v1/internal/credits/{op}",
            post(move |s, u, h| async move {
                record(s, u, h, Bytes::new()).await;
                Json(json!({"success": true}))
            }),
        )
        .with_state(received.clone());
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, base)
}

/// Log lines, kept in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }
}

/// The value of a span's (or resource's) attribute, as a string.
fn attr(span: &Value, key: &str) -> Option<String> {
    let kv = span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?;
    let value = kv["value"].as_object()?.values().next()?;
    Some(match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Sets the process's environment (one test in this binary, no other thread yet).
fn set_env(vars: &[(&str, &str)]) {
    for (k, v) in vars {
        // SAFETY: called before any runtime or other thread of this test exists.
        unsafe { std::env::set_var(k, v) };
    }
}

/// A paid generation (so the credit service is asked) with a `traceparent`,
/// completed within the request (no webhook, which would be a trace of its own).
async fn generate(s: &Stack, user: Uuid) -> (StatusCode, Value) {
    let res = s
        .http
        .request(Method::POST, format!("{}/api/v1/generate", s.base))
        .bearer_auth(s.token(user))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .json(&json!({"prompt": "traced [sim:slow=50] [sim:no-webhook]", "modelId": FLUX, "waitForResult": true}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn stack(credits: &str) -> Stack {
    Stack::with(&[
        ("APP_ENV", "production"),
        ("FREE_GENERATIONS", "0"),
        ("CREDITS_PROVIDER", "manacore"),
        ("MANA_CREDITS_URL", credits),
        ("MANA_CORE_SERVICE_KEY", "svc-key"),
    ])
    .await
}

#[test]
fn a_request_with_a_traceparent_is_exported_in_that_trace_only_when_configured() {
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        // SAFETY: no other thread of this test exists yet.
        unsafe { std::env::remove_var(k) };
    }
    unset_sends_nothing();
    exported_in_the_callers_trace();
    a_hanging_collector_delays_an_invocation_by_the_flush_limit_only();
}

/// 4. A collector that accepts connections and never answers: the flush after
///    an invocation gives up after `FLUSH_LIMIT` (1 s), not the SDK's 10 s.
fn a_hanging_collector_delays_an_invocation_by_the_flush_limit_only() {
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    set_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let provider = picture::otel::provider("picture")
        .unwrap()
        .expect("configured");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use opentelemetry::trace::{Tracer, TracerProvider};
        provider
            .tracer("picture-test")
            .in_span("never delivered", |_| {});
        let began = std::time::Instant::now();
        picture::otel::flush_provider(&provider).await;
        let took = began.elapsed();
        assert!(
            took < picture::otel::FLUSH_LIMIT + std::time::Duration::from_secs(2),
            "the flush took {took:?}"
        );
    });
    drop(hanging);
}

/// 1. Unset: nothing is built, and a request sends nothing, not even to the
///    default endpoint (when that port is free to listen on).
fn unset_sends_nothing() {
    assert!(picture::otel::layer("picture").unwrap().is_none());
    assert!(!picture::otel::enabled());
    let default_port = std::net::TcpListener::bind("127.0.0.1:4318").ok();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let logs = Logs::default();
    // One thread, so that the subscriber of this phase (not the process's) sees it all.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let subscriber = picture::telemetry::subscriber(logs.clone(), None);
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let (credits, base) = receiver(listener);
            let default = default_port.map(receiver);
            let s = stack(&base).await;
            let (status, g) = generate(&s, Uuid::new_v4()).await;
            assert_eq!(status, StatusCode::CREATED, "{g}");
            picture::otel::flush().await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert!(credits.of("/v1/traces").is_empty());
            assert!(default.is_none_or(|(d, _)| d.0.lock().unwrap().is_empty()));
            // The credit service was asked, with no trace to pass on.
            let (headers, _) = &credits.of("/api/v1/internal/credits/balance")[0];
            assert!(!headers.contains_key("traceparent"));
        })
    });
    let lines = logs.lines();
    assert!(lines.iter().any(|l| l["message"] == "generation completed"));
    assert!(lines.iter().all(|l| l.get("traceId").is_none()));
}

/// 2. and 3.: configured, `http/json` for the API, `http/protobuf` for one more provider.
fn exported_in_the_callers_trace() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    set_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "picture-otel-test"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ]);
    let protobuf = picture::otel::provider("picture")
        .unwrap()
        .expect("configured");
    set_env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
    let logs = Logs::default();
    let traces = picture::otel::layer("picture").unwrap();
    assert!(traces.is_some() && picture::otel::enabled());
    tracing::subscriber::set_global_default(picture::telemetry::subscriber(logs.clone(), traces))
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (received, base) = receiver(listener);
        let s = stack(&base).await;
        let (status, g) = generate(&s, Uuid::new_v4()).await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
        picture::otel::flush().await;
        check_trace(&received, &s.state.cfg.images_bucket);

        // The credit service received the trace.
        let (headers, _) = &received.of("/api/v1/internal/credits/balance")[0];
        let traceparent = headers["traceparent"].to_str().unwrap();
        assert!(
            traceparent.starts_with(&format!("00-{TRACE}-")),
            "{traceparent}"
        );

        use opentelemetry::trace::{Tracer, TracerProvider};
        protobuf
            .tracer("picture-test")
            .in_span("protobuf case", |_| {});
        tokio::task::spawn_blocking(move || protobuf.force_flush())
            .await
            .unwrap()
            .unwrap();
        check_protobuf(&received);
    });
    // Its log lines carry the trace id.
    let lines = logs.lines();
    let done = lines
        .iter()
        .find(|l| l["message"] == "generation completed")
        .expect("logged");
    assert_eq!(done["traceId"], TRACE, "{done}");
}

/// The exported spans of the request: a server span continuing the caller's
/// trace, and the client spans of its calls, all its children.
fn check_trace(received: &Received, bucket: &str) {
    let all = received.json_spans();
    let (resource, server) = all
        .iter()
        .find(|(_, s)| s["traceId"] == TRACE && s["kind"] == 2)
        .unwrap_or_else(|| panic!("no server span in {all:#?}"));
    assert_eq!(
        attr(resource, "service.name").as_deref(),
        Some("picture-otel-test")
    );
    assert_eq!(server["name"], "POST /api/v1/generate");
    assert_eq!(server["parentSpanId"], PARENT);
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("201")
    );
    let children: Vec<&Value> = all
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s["traceId"] == TRACE && s["spanId"] != server["spanId"])
        .collect();
    for child in &children {
        assert_eq!(child["parentSpanId"], server["spanId"], "{child}");
        assert_eq!(child["kind"], 3, "a client span: {child}");
    }
    let has = |what: &str, test: &dyn Fn(&Value) -> bool| {
        assert!(
            children.iter().any(|s| test(s)),
            "no {what} span in {children:#?}"
        );
    };
    let is = |s: &Value, k: &str, v: &str| attr(s, k).as_deref() == Some(v);
    has("Replicate create", &|s| {
        s["name"] == "POST replicate" && is(s, "http.request.method", "POST")
    });
    has("output download", &|s| s["name"] == "GET output");
    has("key set", &|s| s["name"] == "GET jwks");
    has("credit service", &|s| s["name"] == "GET credits");
    has("S3 put", &|s| {
        s["name"] == "S3.PutObject"
            && is(s, "rpc.system", "aws-api")
            && is(s, "aws.s3.bucket", bucket)
    });
    has("DynamoDB", &|s| is(s, "rpc.service", "DynamoDB"));
    has("PostgreSQL insert", &|s| {
        s["name"] == "INSERT generations"
            && is(s, "db.system.name", "postgresql")
            && is(s, "db.operation.name", "INSERT")
            && attr(s, "db.query.text").is_some_and(|q| q.contains("INSERT INTO generations"))
            && attr(s, "code.file.path").is_some_and(|f| f.ends_with("db/generations.rs"))
    });
    has("PostgreSQL transaction", &|s| {
        s["name"] == "transaction" && is(s, "db.system.name", "postgresql")
    });
}

/// The `http/protobuf` export, decoded.
fn check_protobuf(received: &Received) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let bodies: Vec<Bytes> = received
        .of("/v1/traces")
        .into_iter()
        .filter(|(h, _)| h["content-type"] == "application/x-protobuf")
        .map(|(_, b)| b)
        .collect();
    let names: Vec<String> = bodies
        .iter()
        .flat_map(|b| {
            ExportTraceServiceRequest::decode(b.as_ref())
                .unwrap()
                .resource_spans
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["protobuf case"]);
}
