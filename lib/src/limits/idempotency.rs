//! `Idempotency-Key` on `POST /generate`, with the semantics of AWS Lambda
//! Powertools' idempotency utility. The first request with a key claims it
//! (a conditional put of an `IN_PROGRESS` record holding the SHA-256 of the
//! body), runs, and stores its status and body (`COMPLETED`, kept a day). A
//! retry with the same key and body gets that answer again, marked
//! `Idempotency-Replayed: true`, without running; one that arrives while the
//! first still runs waits up to two seconds for it, then gets 409
//! `IDEMPOTENCY_IN_PROGRESS`; the same key with another body gets 409
//! `IDEMPOTENCY_KEY_REUSED`. A 5xx answer deletes the record so that a retry
//! runs again. Keys are per user.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{RuntimeTable, Unavailable, n, number, s, string};
use crate::{
    AppState, Problem,
    db::generations::RequestKey,
    web::{self, problem::FieldError},
};

/// The request header carrying the key.
pub const HEADER: &str = "idempotency-key";
/// The response header marking a stored answer.
pub const REPLAYED: &str = "idempotency-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long a completed answer is kept.
const KEEP_SECS: i64 = 24 * 3600;
/// How long an `IN_PROGRESS` record holds its key: longer than any invocation (30 s),
/// so that a record left by a crashed instance frees the key by itself.
const IN_PROGRESS_SECS: i64 = 60;
/// Largest answer stored (DynamoDB items hold up to 400 KB).
const MAX_STORED: usize = 300 * 1024;
const WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

/// An answer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What an attempt to claim a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: run, then [`complete`] or [`release`].
    Claimed,
    /// An earlier request with this body has answered.
    Completed(Stored),
    /// An earlier request with this body is still running.
    InProgress,
    /// The key was used with another body.
    Reused,
}

fn pk(user: Uuid, key: &str) -> AttributeValue {
    s(format!("idempotency#{user}#{key}"))
}

/// Claims `key` of `user` for a request whose body hashes to `hash`, at `now` (epoch seconds).
pub async fn claim(
    table: &RuntimeTable,
    user: Uuid,
    key: &str,
    hash: &str,
    now: i64,
) -> Result<Claim, Unavailable> {
    let client = table.client().await;
    let put = client
        .put_item()
        .table_name(table.name())
        .item("pk", pk(user, key))
        .item("sk", s("record"))
        .item("status", s("IN_PROGRESS"))
        .item("hash", s(hash))
        .item("inProgressUntil", n(now + IN_PROGRESS_SECS))
        .item("expiresAt", n(now + KEEP_SECS))
        .condition_expression(
            "attribute_not_exists(pk) OR expiresAt <= :now \
             OR (#status = :in_progress AND inProgressUntil <= :now)",
        )
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":in_progress", s("IN_PROGRESS"))
        .send()
        .await;
    match put {
        Ok(_) => return Ok(Claim::Claimed),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
        Err(e) => return Err(Unavailable::from_sdk(e)),
    }
    let existing = client
        .get_item()
        .table_name(table.name())
        .key("pk", pk(user, key))
        .key("sk", s("record"))
        .consistent_read(true)
        .send()
        .await
        .map_err(Unavailable::from_sdk)?;
    // Gone since the put (deleted after a 5xx): the caller tries again.
    let Some(item) = existing.item() else {
        return Ok(Claim::InProgress);
    };
    if string(item, "hash") != Some(hash) {
        return Ok(Claim::Reused);
    }
    let body = item.get("body").and_then(|b| b.as_b().ok());
    match (string(item, "status"), number(item, "responseStatus"), body) {
        (Some("COMPLETED"), Some(status), Some(body)) => Ok(Claim::Completed(Stored {
            status: u16::try_from(status).unwrap_or(500),
            content_type: string(item, "contentType").unwrap_or_default().to_string(),
            body: body.as_ref().to_vec(),
        })),
        _ => Ok(Claim::InProgress),
    }
}

/// Stores the answer of a claimed key.
pub async fn complete(
    table: &RuntimeTable,
    user: Uuid,
    key: &str,
    hash: &str,
    answer: &Stored,
    now: i64,
) -> Result<(), Unavailable> {
    table
        .client()
        .await
        .put_item()
        .table_name(table.name())
        .item("pk", pk(user, key))
        .item("sk", s("record"))
        .item("status", s("COMPLETED"))
        .item("hash", s(hash))
        .item("responseStatus", n(answer.status))
        .item("contentType", s(answer.content_type.clone()))
        .item("body", AttributeValue::B(Blob::new(answer.body.clone())))
        .item("expiresAt", n(now + KEEP_SECS))
        .send()
        .await
        .map(drop)
        .map_err(Unavailable::from_sdk)
}

/// Gives up a claimed key, so that a retry runs again.
pub async fn release(table: &RuntimeTable, user: Uuid, key: &str) -> Result<(), Unavailable> {
    table
        .client()
        .await
        .delete_item()
        .table_name(table.name())
        .key("pk", pk(user, key))
        .key("sk", s("record"))
        .send()
        .await
        .map(drop)
        .map_err(Unavailable::from_sdk)
}

/// The SHA-256 of a body, in hex.
fn hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn replay(answer: Stored) -> Response {
    let mut res = Response::new(Body::from(answer.body));
    *res.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&answer.content_type) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    res.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    res
}

fn unavailable(e: Unavailable) -> Response {
    tracing::error!(error = %e, "idempotency store unavailable: request refused");
    axum::response::IntoResponse::into_response(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "IDEMPOTENCY_UNAVAILABLE",
        "Service unavailable",
        "Idempotency keys cannot be checked right now; retry shortly.",
    ))
}

/// Runs `next` for `user` at most once per `Idempotency-Key` (requests without one just run).
pub async fn run(st: &AppState, user: Uuid, req: Request, next: Next) -> Result<Response, Problem> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(next.run(req).await);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| (1..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::validation(vec![FieldError::new(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )])
        })?
        .to_string();
    let (mut parts, body) = req.into_parts();
    let bytes = web::read_body(body).await?;
    let hash = hash(&bytes);
    // The handler records the key with what it creates: a retry finds that even without this record.
    parts.extensions.insert(RequestKey {
        key: key.clone(),
        hash: hash.clone(),
    });
    let table = &st.runtime;
    let deadline = Instant::now() + WAIT;
    loop {
        let now = chrono::Utc::now().timestamp();
        match claim(table, user, &key, &hash, now).await {
            Ok(Claim::Claimed) => break,
            Ok(Claim::Completed(answer)) => return Ok(replay(answer)),
            Ok(Claim::Reused) => {
                return Err(Problem::conflict(
                    "IDEMPOTENCY_KEY_REUSED",
                    "This Idempotency-Key was used with another request body.",
                ));
            }
            Ok(Claim::InProgress) if Instant::now() >= deadline => {
                return Err(Problem::conflict(
                    "IDEMPOTENCY_IN_PROGRESS",
                    "A request with this Idempotency-Key is still running; retry shortly.",
                ));
            }
            Ok(Claim::InProgress) => tokio::time::sleep(POLL).await,
            Err(e) => return Ok(unavailable(e)),
        }
    }

    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = res.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            if let Err(e) = release(table, user, &key).await {
                tracing::error!(error = %e, "idempotency record not released");
            }
            return Err(crate::Error::Internal(format!("response body: {e}")).into());
        }
    };
    let answer = Stored {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: body.to_vec(),
    };
    let outcome = if parts.status.is_server_error() || answer.body.len() > MAX_STORED {
        release(table, user, &key).await
    } else {
        complete(
            table,
            user,
            &key,
            &hash,
            &answer,
            chrono::Utc::now().timestamp(),
        )
        .await
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, status = answer.status, "idempotency record not updated");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}
