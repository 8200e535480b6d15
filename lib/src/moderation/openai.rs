//! OpenAI's moderation endpoint (`POST {base}/v1/moderations`, free, model
//! `omni-moderation-latest`), or the local simulator that speaks it. One call
//! per request (all texts at once) or per image; 5 s per attempt, one retry on
//! throttling, a 5xx or a lost connection.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::otel::http::SendTraced;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: u32 = 2;

/// The provider could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// It answered this HTTP status instead of a verdict.
    #[error("moderation provider answered {0}")]
    Status(u16),
    /// It could not be reached or its answer could not be read.
    #[error("moderation provider unreachable: {0}")]
    Unreachable(String),
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<Verdict>,
}

#[derive(Deserialize)]
struct Verdict {
    #[serde(default)]
    categories: std::collections::BTreeMap<String, Option<bool>>,
}

/// A client of the moderation endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiModeration {
    http: crate::http_client::HttpClient,
    base: String,
    key: String,
    model: String,
}

impl OpenAiModeration {
    pub fn new(http: crate::http_client::HttpClient, base: &str, key: &str, model: &str) -> Self {
        OpenAiModeration {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            model: model.to_string(),
        }
    }

    /// The categories any of `texts` is flagged for (sorted; empty: allowed).
    pub async fn check(&self, texts: &[&str]) -> Result<Vec<String>, ModerationError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.moderate(json!(texts)).await
    }

    /// The categories the image at `url` (an https URL or a `data:` URI) is flagged for.
    pub async fn check_image(&self, url: &str) -> Result<Vec<String>, ModerationError> {
        self.moderate(json!([{"type": "image_url", "image_url": {"url": url}}]))
            .await
    }

    /// The categories `input` (the endpoint's `input` field) is flagged for.
    async fn moderate(&self, input: serde_json::Value) -> Result<Vec<String>, ModerationError> {
        let body = json!({"model": self.model, "input": input});
        let url = format!("{}/v1/moderations", self.base);
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .get()
                .post(&url)
                .bearer_auth(&self.key)
                .timeout(CALL_TIMEOUT)
                .json(&body)
                .send_traced("moderation")
                .await;
            let failure = match sent {
                Ok(res) if res.status().is_success() => {
                    let answer: Answer = res
                        .json()
                        .await
                        .map_err(|e| ModerationError::Unreachable(e.without_url().to_string()))?;
                    let mut flagged: Vec<String> = answer
                        .results
                        .into_iter()
                        .flat_map(|v| v.categories)
                        .filter(|(_, on)| *on == Some(true))
                        .map(|(c, _)| c)
                        .collect();
                    flagged.sort();
                    flagged.dedup();
                    return Ok(flagged);
                }
                Ok(res) => ModerationError::Status(res.status().as_u16()),
                Err(e) => ModerationError::Unreachable(e.without_url().to_string()),
            };
            let retry = match &failure {
                ModerationError::Status(s) => *s == 429 || *s >= 500,
                ModerationError::Unreachable(_) => true,
            };
            if !retry || attempt >= MAX_ATTEMPTS {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            attempt += 1;
        }
    }
}
