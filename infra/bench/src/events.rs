//! The events functions are measured with: the API Gateway samples in
//! `events/` (listed in `events/manifest.json`, `DEV_TOKEN` replaced by a real
//! token), variants of them (a real generation id, a large synchronous
//! generation) and the shapes of the non-HTTP functions (an EventBridge
//! scheduled event, CloudFormation custom resource requests).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use axum::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

/// The id the samples use for things that do not exist.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";
/// Where a sample names an open generation of the token's user.
const RUNNING: &str = "RUNNING_GENERATION_ID";
/// Seedream 3: takes width and height, so the image size can be chosen.
pub const SEEDREAM_ID: &str = "3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e02";

/// What a correct answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// An API Gateway response with this status code.
    Http(u16),
    /// Any successful answer (non-HTTP functions).
    Success,
}

/// One event to send.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub body: Bytes,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
struct Entry {
    file: String,
    function: String,
    status: u16,
}

/// The samples of `events/` with a token filled in.
pub struct Catalog {
    dir: PathBuf,
    token: String,
    entries: Vec<Entry>,
}

impl Catalog {
    /// Reads `dir/manifest.json`; `token` replaces `DEV_TOKEN`.
    pub fn load(dir: &Path, token: &str) -> Result<Catalog> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let entries =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Catalog {
            dir: dir.to_path_buf(),
            token: token.to_string(),
            entries,
        })
    }

    /// The samples of `function`, in manifest order.
    pub fn for_function(&self, function: &str) -> Result<Vec<Event>> {
        self.for_function_running(function, None)
    }

    /// The samples of `function` with `RUNNING_GENERATION_ID` replaced by
    /// `running` (an open generation of the token's user); without one, the
    /// samples that need it are left out.
    pub fn for_function_running(
        &self,
        function: &str,
        running: Option<&str>,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for e in self.entries.iter().filter(|e| e.function == function) {
            let text = self.text(&e.file)?;
            let text = match running {
                Some(id) => text.replace(RUNNING, id),
                None if text.contains(RUNNING) => continue,
                None => text,
            };
            events.push(Event {
                name: e.file.trim_end_matches(".json").to_string(),
                body: text.into(),
                expect: Expect::Http(e.status),
            });
        }
        Ok(events)
    }

    /// An asynchronous generation sample with `prompt` (202).
    pub fn async_generation(&self, name: &str, prompt: &str) -> Result<Event> {
        let mut event: Value = serde_json::from_str(&self.text("generate-async.json")?)
            .context("parsing generate-async.json")?;
        let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap_or_default())
            .context("parsing the body of generate-async.json")?;
        body["prompt"] = Value::String(prompt.to_string());
        event["body"] = Value::String(body.to_string());
        Ok(Event {
            name: name.into(),
            body: event.to_string().into(),
            expect: Expect::Http(202),
        })
    }

    /// The status sample, asking about generation `id` (which exists).
    pub fn status_of(&self, id: &str) -> Result<Event> {
        Ok(Event {
            name: "status-completed".into(),
            body: self
                .text("status-unknown.json")?
                .replace(UNKNOWN_ID, id)
                .into(),
            expect: Expect::Http(200),
        })
    }

    /// The synchronous generation sample, with Seedream 3 at `side`×`side`
    /// and `prompt` (which carries the simulator's markers).
    pub fn sync_generation(&self, prompt: &str, side: u32) -> Result<Event> {
        let mut event: Value = serde_json::from_str(&self.text("generate-sync.json")?)
            .context("parsing generate-sync.json")?;
        let body = json!({
            "prompt": prompt,
            "modelId": SEEDREAM_ID,
            "width": side,
            "height": side,
            "waitForResult": true,
        });
        event["body"] = Value::String(body.to_string());
        Ok(Event {
            name: "generate-sync-large".into(),
            body: event.to_string().into(),
            expect: Expect::Http(201),
        })
    }

    fn text(&self, file: &str) -> Result<String> {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text.replace("DEV_TOKEN", &self.token))
    }
}

/// What EventBridge sends a scheduled function.
pub fn scheduled() -> Event {
    let body = json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-01-01T10:00:00Z",
        "region": "eu-central-1",
        "resources": ["arn:aws:events:eu-central-1:123456789012:rule/picture-reconcile"],
        "detail": {}
    });
    Event {
        name: "scheduled".into(),
        body: body.to_string().into(),
        expect: Expect::Success,
    }
}

/// A CloudFormation custom resource request of `kind` (`Create`, `Update`,
/// `Delete`) whose answer goes to `response_url`.
pub fn custom_resource(kind: &str, response_url: &str) -> Event {
    let body = json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:eu-central-1:123456789012:function:migrate",
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:eu-central-1:123456789012:stack/picture/1",
        "RequestId": uuid::Uuid::new_v4().to_string(),
        "LogicalResourceId": "SchemaMigration",
        "PhysicalResourceId": "picture-schema",
        "ResourceType": "Custom::SchemaMigration",
        "ResourceProperties": {}
    });
    Event {
        name: format!("custom-resource-{}", kind.to_lowercase()),
        body: body.to_string().into(),
        expect: Expect::Success,
    }
}

/// The status code of an API Gateway v2 response document.
pub fn http_status(answer: &[u8]) -> Option<u16> {
    let doc: Value = serde_json::from_slice(answer).ok()?;
    doc.get("statusCode")?.as_u64()?.try_into().ok()
}

/// The JSON body of an API Gateway v2 response document (text bodies only).
pub fn http_body(answer: &[u8]) -> Option<Value> {
    let doc: Value = serde_json::from_slice(answer).ok()?;
    if doc.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    serde_json::from_str(doc.get("body")?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_api_gateway_responses() {
        let answer = br#"{"statusCode":201,"headers":{},"body":"{\"generationId\":\"x\"}","isBase64Encoded":false}"#;
        assert_eq!(http_status(answer), Some(201));
        assert_eq!(http_body(answer), Some(json!({"generationId": "x"})));
        assert_eq!(http_status(b"null"), None);
    }

    #[test]
    fn every_sample_function_has_events() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
        let catalog = Catalog::load(&dir, "T")?;
        for function in [
            "models", "status", "cancel", "webhook", "images", "history", "credits",
        ] {
            assert!(!catalog.for_function(function)?.is_empty(), "{function}");
        }
        let status = catalog.for_function("status")?;
        assert!(status.iter().all(|e| !e.name.contains("running")));
        let status = catalog.for_function_running("status", Some("G"))?;
        assert!(status.iter().any(|e| e.name == "status-running"));
        let running = catalog.async_generation("generate-running", "p [sim:hang]")?;
        let event: Value = serde_json::from_slice(&running.body)?;
        let body: Value = serde_json::from_str(event["body"].as_str().unwrap_or_default())?;
        assert_eq!(body["prompt"], "p [sim:hang]");
        let sync = catalog.sync_generation("p [sim:noise]", 1448)?;
        let event: Value = serde_json::from_slice(&sync.body)?;
        let body: Value = serde_json::from_str(event["body"].as_str().unwrap_or_default())?;
        assert_eq!(body["modelId"], SEEDREAM_ID);
        assert!(event.to_string().contains("Bearer T"));
        Ok(())
    }
}
