//! HTTP clients: the gateway (every call recorded under its route template)
//! and the Replicate simulator's test controls.

use std::{sync::Arc, time::Instant};

use anyhow::{Context, Result};
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};

use crate::record::Recorder;

/// An answer from the gateway; status 0 when none came (transport error).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn str(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.status, self.body)
    }
}

/// The dev gateway under test.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub rec: Arc<Recorder>,
}

/// One request: `route` is the template it is recorded under (`POST /api/v1/generate`).
pub struct Call<'a> {
    pub route: &'static str,
    pub path: String,
    pub token: &'a str,
    pub body: Option<Value>,
    pub idempotency_key: Option<&'a str>,
}

impl Api {
    pub async fn send(&self, call: Call<'_>) -> Answer {
        let (method, _) = call.route.split_once(' ').expect("route is METHOD PATH");
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, call.path))
            .bearer_auth(call.token);
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        if let Some(key) = call.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let started = Instant::now();
        let answer = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let body = res.json().await.unwrap_or(Value::Null);
                Answer {
                    status,
                    headers,
                    body,
                }
            }
            Err(_) => Answer {
                status: 0,
                headers: HeaderMap::new(),
                body: Value::Null,
            },
        };
        self.rec
            .request(call.route, answer.status, started.elapsed());
        answer
    }
}

/// The simulator's own API (predictions list) and test controls (`/_sim/...`).
pub struct Sim {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Sim {
    /// The prediction whose webhook URL names `generation`, searching the newest predictions.
    pub async fn find_prediction(&self, generation: &str) -> Result<Option<String>> {
        let needle = format!("generationId={generation}");
        let mut url = format!("{}/v1/predictions?page_size=200", self.base);
        for _ in 0..3 {
            let page: Value = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let results = page["results"].as_array().context("no results")?;
            let found = results
                .iter()
                .find(|p| p["webhook"].as_str().is_some_and(|w| w.contains(&needle)));
            if let Some(p) = found {
                return Ok(p["id"].as_str().map(String::from));
            }
            match page["next"].as_str() {
                Some(next) => url = next.to_string(),
                None => break,
            }
        }
        Ok(None)
    }

    /// Re-sends a finished prediction's final webhook; the status our webhook
    /// answered, 0 if it did not answer.
    pub async fn redeliver(&self, prediction: &str) -> Result<u16> {
        let url = format!("{}/_sim/predictions/{prediction}/redeliver", self.base);
        let res: Value = self
            .http
            .post(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(res["status"].as_u64().map_or(0, |s| s as u16))
    }

    /// The next `count` calls of each of `ops` answer `status`.
    pub async fn inject(&self, ops: &[&str], status: u16, count: u32) -> Result<()> {
        self.http
            .post(format!("{}/_sim/faults", self.base))
            .json(&json!({"ops": ops, "status": status, "count": count}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.http
            .delete(format!("{}/_sim/faults", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
