//! The endpoints the functions call back into during a run, served on one
//! loopback port: the dev key set (`JWKS_URL`), a sink for the simulator's
//! webhooks (`WEBHOOK_BASE_URL`, so it stops retrying) and CloudFormation's
//! pre-signed response URL for `migrate` (the answers are kept for checking).

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    body::Bytes,
    http::{StatusCode, header},
    routing::{get, post, put},
};
use serde_json::Value;

/// The running server; dropping it stops it.
pub struct Callbacks {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    cfn_answers: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Callbacks {
    /// Serves `jwks` (the dev key set's JSON) and the sinks on a free port.
    pub async fn start(jwks: String) -> Result<Callbacks> {
        let cfn_answers = Arc::new(Mutex::new(Vec::new()));
        let answers = cfn_answers.clone();
        let app = Router::new()
            .route(
                "/dev/jwks.json",
                get(move || async move { ([(header::CONTENT_TYPE, "application/json")], jwks) }),
            )
            .route(
                "/api/v1/generate/webhook",
                post(|| async { StatusCode::NO_CONTENT }),
            )
            .route(
                "/cfn/{request}",
                put(move |body: Bytes| async move {
                    let answer = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    answers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(answer);
                    (StatusCode::OK, Json(Value::Null))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the callback port")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: callback server stopped: {e}");
            }
        });
        Ok(Callbacks {
            base_url,
            cfn_answers,
            server,
        })
    }

    /// The answers CloudFormation would have received from `migrate`, oldest first.
    pub fn cfn_answers(&self) -> Vec<Value> {
        self.cfn_answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
