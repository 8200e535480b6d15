//! A Lambda Runtime API (`/2018-06-01/runtime/...`) served on loopback for one
//! function instance: `next` hands out queued events with the headers the
//! Rust runtime requires, `response` and `error` complete them, `init/error`
//! reports a failed start. The first `next` marks the end of init.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::{mpsc, oneshot};

/// How long the function may run per event (the `Lambda-Runtime-Deadline-Ms` header).
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the function answered to one event.
#[derive(Debug)]
pub enum Outcome {
    /// `POST …/invocation/{id}/response` with this body.
    Response(Bytes),
    /// `POST …/invocation/{id}/error` with this body (an error document).
    Error(Bytes),
}

/// Start-up milestones reported by the server.
#[derive(Debug)]
pub enum Signal {
    /// The first `GET …/invocation/next`: init is over.
    Ready(Instant),
    /// `POST …/runtime/init/error` with this body.
    InitError(String),
}

struct Invocation {
    id: String,
    body: Bytes,
}

struct Shared {
    arn: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    signals: mpsc::UnboundedSender<Signal>,
    ready_sent: AtomicBool,
}

/// The running server; dropping it stops it.
pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    shared: Arc<Shared>,
    queue: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Binds a free loopback port for `function` and serves on it; start-up
    /// milestones arrive on the returned receiver.
    pub async fn start(function: &str) -> Result<(Self, mpsc::UnboundedReceiver<Signal>)> {
        let (queue, queue_rx) = mpsc::channel(1);
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            arn: format!("arn:aws:lambda:eu-central-1:123456789012:function:{function}"),
            queue: tokio::sync::Mutex::new(queue_rx),
            pending: Mutex::new(HashMap::new()),
            signals,
            ready_sent: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Runtime API port")?;
        let address = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: runtime API server stopped: {e}");
            }
        });
        let api = RuntimeApi {
            address,
            shared,
            queue,
            server,
        };
        Ok((api, signals_rx))
    }

    /// Hands `event` to the function and waits for its answer; the duration
    /// runs from queueing the event to receiving the answer.
    pub async fn invoke(&self, event: Bytes, timeout: Duration) -> Result<(Duration, Outcome)> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id.clone(), tx);
        let started = Instant::now();
        let sent = async {
            self.queue
                .send(Invocation {
                    id: id.clone(),
                    body: event,
                })
                .await
                .map_err(|_| anyhow!("the Runtime API server is gone"))?;
            rx.await
                .map_err(|_| anyhow!("the invocation was dropped unanswered"))
        };
        let outcome = tokio::time::timeout(timeout, sent).await;
        let elapsed = started.elapsed();
        self.lock_pending().remove(&id);
        match outcome {
            Ok(result) => Ok((elapsed, result?)),
            Err(_) => bail!("no answer within {timeout:?}"),
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Outcome>>> {
        // A poisoned map only means a handler panicked; its data is still usable.
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.ready_sent.swap(true, Ordering::SeqCst) {
        let _ = shared.signals.send(Signal::Ready(Instant::now()));
    }
    let Some(invocation) = shared.queue.lock().await.recv().await else {
        return (StatusCode::GONE, "benchmark over").into_response();
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(FUNCTION_TIMEOUT)
        .as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", invocation.id.clone());
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set("lambda-runtime-invoked-function-arn", shared.arn.clone());
    set(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-00000000-{};Sampled=0",
            &invocation.id.replace('-', "")[..24]
        ),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, invocation.body).into_response()
}

fn complete(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    let waiter = shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    match waiter {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    complete(&shared, &id, Outcome::Response(body))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    complete(&shared, &id, Outcome::Error(body))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let _ = shared.signals.send(Signal::InitError(
        String::from_utf8_lossy(&body).into_owned(),
    ));
    StatusCode::ACCEPTED
}
