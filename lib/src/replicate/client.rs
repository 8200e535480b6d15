//! The Replicate HTTP client: create (version or official-model route, with
//! `Prefer: wait` and `Cancel-After`), get, list, cancel and the default
//! webhook secret. GETs retry on 429/5xx honouring `Retry-After`; create
//! retries only on 429 (a create that timed out may still have made a
//! prediction), for as long as its caller's budget allows.

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    otel::http::SendTraced,
    telemetry::{self, metric},
};

/// A prediction as Replicate reports it (the fields we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Prediction {
    /// Replicate's id of the prediction (the generation's `prediction_id`).
    pub id: String,
    /// `starting`, `processing`, `succeeded`, `failed`, `canceled` or `aborted`.
    pub status: String,
    /// Its output as the model returns it (see [`Prediction::output_files`]).
    #[serde(default)]
    pub output: Option<Value>,
    /// The provider's error, usually a string (see [`Prediction::error_message`]).
    #[serde(default)]
    pub error: Option<Value>,
    /// The webhook URL it was created with (it carries our generation id).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Set once Replicate has deleted the output (about an hour after the end).
    #[serde(default)]
    pub data_removed: bool,
    /// What the model printed so far (image models print tqdm progress lines).
    #[serde(default)]
    pub logs: Option<String>,
    /// When the model began running it (`null` while queued or booting).
    #[serde(default)]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The input it was created with.
    #[serde(default)]
    pub input: Option<Value>,
    /// When Replicate created it.
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it reached its terminal status.
    #[serde(default)]
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Usage, reported on terminal predictions.
    #[serde(default)]
    pub metrics: Option<Metrics>,
}

/// What a prediction used, as Replicate reports it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metrics {
    /// Seconds the model ran (queue time excluded): what run-time billing charges.
    #[serde(default)]
    pub predict_time: Option<f64>,
}

/// One page of the prediction list, newest first.
#[derive(Debug, Clone, Deserialize)]
pub struct PredictionPage {
    /// This page's predictions, newest first.
    pub results: Vec<Prediction>,
    /// The URL of the next (older) page.
    #[serde(default)]
    pub next: Option<String>,
}

impl Prediction {
    /// `metrics.predict_time`, if reported.
    pub fn predict_time(&self) -> Option<f64> {
        self.metrics.as_ref()?.predict_time
    }

    /// How many output files it produced.
    pub fn output_count(&self) -> usize {
        match &self.output {
            Some(Value::Array(items)) => items.len(),
            Some(Value::Null) | None => 0,
            Some(_) => 1,
        }
    }

    /// `succeeded`, `failed`, `canceled` and `aborted` are final.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "succeeded" | "failed" | "canceled" | "aborted"
        )
    }

    /// Its output files (URLs or `data:` URIs), in order: outputs may be a
    /// string, a list of strings or an object with `url`. With `Prefer: wait`
    /// they can be present while the status is still `processing`.
    pub fn output_files(&self) -> Vec<&str> {
        match &self.output {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::Object(o)) => o.get("url").and_then(Value::as_str).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The prompt of its input, if any.
    pub fn prompt(&self) -> Option<&str> {
        self.input.as_ref()?.get("prompt")?.as_str()
    }

    /// The provider's error message, if any, with the query strings of the URLs it
    /// quotes removed (an input's presigned URL must not reach the logs).
    pub fn error_message(&self) -> Option<String> {
        match self.error.as_ref()? {
            Value::Null => None,
            Value::String(s) => Some(redact_queries(s)),
            other => Some(redact_queries(&other.to_string())),
        }
    }
}

/// A failed call to Replicate.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// Replicate answered with an error status (its problem `title` kept for logs).
    #[error("replicate answered {status}: {title}")]
    Status { status: u16, title: String },
    /// No answer in time.
    #[error("replicate timed out")]
    Timeout,
    /// The request could not be sent (no connection): nothing happened.
    #[error("replicate unreachable: {0}")]
    Unreachable(String),
    /// The request was sent but its answer was lost or unreadable.
    #[error("replicate answer lost: {0}")]
    Interrupted(String),
}

impl ReplicateError {
    /// Whether the same call may succeed later: timeouts, lost connections,
    /// throttling and 5xx pass; other refusals (401, 404, 422) stay.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicateError::Status { status, .. } => *status == 429 || *status >= 500,
            ReplicateError::Timeout
            | ReplicateError::Unreachable(_)
            | ReplicateError::Interrupted(_) => true,
        }
    }

    /// Whether Replicate refused our token (401, 403): an operator's problem,
    /// never a reason to fail a user's generation.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            ReplicateError::Status {
                status: 401 | 403,
                ..
            }
        )
    }

    /// Whether Replicate does not know the prediction (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReplicateError::Status { status: 404, .. })
    }

    /// Whether a prediction may exist although create failed (so the generation
    /// must not be treated as never started).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ReplicateError::Timeout => true,
            ReplicateError::Status { status, .. } => *status >= 500,
            ReplicateError::Interrupted(_) => true,
            ReplicateError::Unreachable(_) => false,
        }
    }
}

/// Client for one Replicate account (or the local simulator).
#[derive(Debug, Clone)]
pub struct Replicate {
    http: crate::http_client::HttpClient,
    base: String,
    token: String,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: u32 = 3;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Shortest wait between two attempts, whatever `Retry-After` says.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);

impl Replicate {
    pub fn new(http: crate::http_client::HttpClient, base: &str, token: &str) -> Self {
        Replicate {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Creates a prediction: with a version through `/v1/predictions`, without
    /// one through the official model route.
    pub async fn create(&self, new: NewPrediction<'_>) -> Result<Prediction, ReplicateError> {
        let mut body = json!({ "input": new.input });
        if let Some(url) = new.webhook {
            body["webhook"] = json!(url);
            body["webhook_events_filter"] = json!(WEBHOOK_EVENTS);
        }
        let url = match new.version {
            Some(v) => {
                body["version"] = json!(v);
                format!("{}/v1/predictions", self.base)
            }
            None => format!("{}/v1/models/{}/predictions", self.base, new.model),
        };
        // Replicate stops the prediction itself at our deadline (5 s at least).
        let cancel_after = new.cancel_after.as_secs().max(5);
        let mut headers = vec![("Cancel-After", format!("{cancel_after}s"))];
        let wait_secs = new.wait.map(|w| w.as_secs().clamp(1, 60));
        if let Some(w) = wait_secs {
            headers.push(("Prefer", format!("wait={w}")));
        }
        self.send(Call {
            method: Method::POST,
            url: &url,
            body: Some(&body),
            // A waiting create must answer soon after its wait.
            timeout: wait_secs.map_or(CALL_TIMEOUT, |w| Duration::from_secs(w + 3)),
            headers,
            retry_on: |s| s == StatusCode::TOO_MANY_REQUESTS,
            retry_until: Some(new.retry_until),
        })
        .await
    }

    /// The current state of a prediction.
    pub async fn get(&self, id: &str) -> Result<Prediction, ReplicateError> {
        let url = format!("{}/v1/predictions/{id}", self.base);
        self.send(Call::get(&url)).await
    }

    /// A page of the account's predictions created after `since`, newest first:
    /// the first page, or the page at `next`.
    pub async fn list(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        next: Option<&str>,
    ) -> Result<PredictionPage, ReplicateError> {
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let first = format!("{}/v1/predictions?created_after={since}", self.base);
        // Only ever follow pages of our own API base: the token goes with the request.
        let url = next.filter(|n| n.starts_with(&self.base)).unwrap_or(&first);
        self.send(Call::get(url)).await
    }

    /// Cancels a prediction (a finished one comes back unchanged).
    pub async fn cancel(&self, id: &str) -> Result<Prediction, ReplicateError> {
        let url = format!("{}/v1/predictions/{id}/cancel", self.base);
        self.send(Call {
            method: Method::POST,
            retry_on: |s| s == StatusCode::TOO_MANY_REQUESTS,
            ..Call::get(&url)
        })
        .await
    }

    /// The account's webhook signing secret (`whsec_…`).
    pub async fn webhook_secret(&self) -> Result<String, ReplicateError> {
        #[derive(Deserialize)]
        struct Secret {
            key: String,
        }
        let url = format!("{}/v1/webhooks/default/secret", self.base);
        let s: Secret = self.send(Call::get(&url)).await?;
        Ok(s.key)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: Call<'_>,
    ) -> Result<T, ReplicateError> {
        let mut attempt = 1;
        loop {
            let mut req: RequestBuilder = self
                .http
                .get()
                .request(call.method.clone(), call.url)
                .bearer_auth(&self.token)
                .timeout(call.timeout);
            if let Some(b) = call.body {
                req = req.json(b);
            }
            for (name, value) in &call.headers {
                req = req.header(*name, value);
            }
            let started = std::time::Instant::now();
            let sent = req.send_traced("replicate").await;
            metrics::histogram!(metric::REPLICATE_LATENCY)
                .record(started.elapsed().as_secs_f64() * 1000.0);
            let res = sent.map_err(|e| {
                telemetry::count(metric::REPLICATE_ERROR, 1);
                transport(e)
            })?;
            let status = res.status();
            if status.is_success() {
                return res.json::<T>().await.map_err(transport);
            }
            if (call.retry_on)(status) {
                let wait = retry_after(res.headers(), attempt);
                let again = match call.retry_until {
                    Some(until) => Instant::now() + wait <= until,
                    None => attempt < MAX_ATTEMPTS,
                };
                if again {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
            }
            let title = res
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| {
                    v.get("title")
                        .or_else(|| v.get("detail"))
                        .and_then(Value::as_str)
                        .map(redact_queries)
                })
                .unwrap_or_default();
            telemetry::count(metric::REPLICATE_ERROR, 1);
            return Err(ReplicateError::Status {
                status: status.as_u16(),
                title,
            });
        }
    }
}

/// `text` with the query string (and fragment) of every http(s) URL in it
/// replaced by `?…`: presigned URLs carry credentials in their query.
pub fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("http") {
        let (before, url) = rest.split_at(at);
        out.push_str(before);
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        match url.find(['?', '#']) {
            Some(q) if url.starts_with("http://") || url.starts_with("https://") => {
                out.push_str(&url[..q]);
                out.push_str("?…");
            }
            _ => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// What a new prediction is, and how long its create may keep retrying.
#[derive(Debug, Clone)]
pub struct NewPrediction<'a> {
    /// `owner/name`.
    pub model: &'a str,
    /// The version to run; `None`: the model's latest, through the official-model route.
    pub version: Option<&'a str>,
    /// The model's `input` object (`inputs::build`).
    pub input: Value,
    /// Where Replicate reports `start` and `completed`; `None`: polls and the reconciler only.
    pub webhook: Option<&'a str>,
    /// Ask Replicate to hold the answer until done (≤ 60 s).
    pub wait: Option<Duration>,
    /// Time left until the generation's deadline: Replicate stops it then.
    pub cancel_after: Duration,
    /// Throttled creates are retried (honouring `Retry-After`) while a wait ends before this.
    pub retry_until: Instant,
}

/// The webhook events asked for: `start` (so `startedAt` shows without a poll) and
/// `completed`. Progress comes from status polls, not `logs` events (one Lambda
/// invocation every 500 ms per running generation): see docs/architecture.md.
const WEBHOOK_EVENTS: [&str; 2] = ["start", "completed"];

/// One call: what to send, and when to try again.
struct Call<'a> {
    method: Method,
    url: &'a str,
    body: Option<&'a Value>,
    timeout: Duration,
    headers: Vec<(&'static str, String)>,
    retry_on: fn(StatusCode) -> bool,
    /// Retry while a wait ends before this; without it, up to [`MAX_ATTEMPTS`] attempts.
    retry_until: Option<Instant>,
}

impl<'a> Call<'a> {
    /// A GET, retried on 429 and 5xx.
    fn get(url: &'a str) -> Self {
        Call {
            method: Method::GET,
            url,
            body: None,
            timeout: CALL_TIMEOUT,
            headers: Vec::new(),
            retry_on: |s| s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error(),
            retry_until: None,
        }
    }
}

fn transport(e: reqwest::Error) -> ReplicateError {
    if e.is_timeout() {
        ReplicateError::Timeout
    } else if e.is_connect() {
        ReplicateError::Unreachable(e.without_url().to_string())
    } else {
        ReplicateError::Interrupted(e.without_url().to_string())
    }
}

/// How long to wait before retry `attempt`: `Retry-After` seconds or HTTP date
/// when given (capped), else exponential backoff from 250 ms.
fn retry_after(headers: &reqwest::header::HeaderMap, attempt: u32) -> Duration {
    let given = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs)
                .or_else(|| {
                    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
                    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                        .to_std()
                        .ok()
                })
        });
    let backoff = Duration::from_millis(250u64.saturating_mul(1 << attempt.min(8)));
    // `Retry-After: 0` (or a date in the past) must not make the retry loop spin.
    given
        .unwrap_or(backoff)
        .clamp(MIN_RETRY_WAIT, MAX_RETRY_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(output: Value) -> Prediction {
        serde_json::from_value(json!({"id": "p", "status": "processing", "output": output}))
            .unwrap()
    }

    #[test]
    fn output_files_take_string_list_or_object() {
        assert_eq!(
            prediction(json!("https://a/1.png")).output_files(),
            ["https://a/1.png"]
        );
        assert_eq!(
            prediction(json!(["data:image/png;base64,AA", "x"])).output_files(),
            ["data:image/png;base64,AA", "x"]
        );
        assert_eq!(
            prediction(json!({"url": "https://a/2.webp"})).output_files(),
            ["https://a/2.webp"]
        );
        assert!(prediction(json!(null)).output_files().is_empty());
        assert!(prediction(json!([])).output_files().is_empty());
    }

    #[test]
    fn presigned_queries_are_redacted_from_provider_messages() {
        let msg = "Failed to fetch input image: HTTP 403 for https://b.s3.amazonaws.com/u/1.png?X-Amz-Signature=abc&X-Amz-Credential=AKIA (http) done";
        assert_eq!(
            redact_queries(msg),
            "Failed to fetch input image: HTTP 403 for https://b.s3.amazonaws.com/u/1.png?… (http) done"
        );
        let p: Prediction = serde_json::from_value(json!({"id": "p", "status": "failed",
            "error": "fetch \"http://127.0.0.1:5002/x?sig=1\" failed"}))
        .unwrap();
        assert_eq!(
            p.error_message().unwrap(),
            "fetch \"http://127.0.0.1:5002/x?…\" failed"
        );
        assert_eq!(redact_queries("no url here"), "no url here");
    }

    #[test]
    fn retry_after_honours_seconds_and_caps() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h, 1), Duration::from_secs(2));
        h.insert(reqwest::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h, 1), MAX_RETRY_WAIT);
        assert_eq!(
            retry_after(&reqwest::header::HeaderMap::new(), 1),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn retry_after_zero_does_not_spin_and_backoff_does_not_overflow() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "0".parse().unwrap());
        assert_eq!(retry_after(&h, 1), MIN_RETRY_WAIT);
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, 1), Duration::from_millis(500));
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&none, 40), MAX_RETRY_WAIT);
        assert_eq!(retry_after(&none, u32::MAX), MAX_RETRY_WAIT);
    }

    #[test]
    fn ambiguity_of_create_failures() {
        assert!(ReplicateError::Timeout.is_ambiguous());
        assert!(
            ReplicateError::Status {
                status: 503,
                title: String::new()
            }
            .is_ambiguous()
        );
        assert!(
            !ReplicateError::Status {
                status: 401,
                title: String::new()
            }
            .is_ambiguous()
        );
        assert!(ReplicateError::Interrupted("reset".into()).is_ambiguous());
        assert!(!ReplicateError::Unreachable("refused".into()).is_ambiguous());
    }
}
