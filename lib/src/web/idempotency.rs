//! `Idempotency-Key` on `POST /generate`, with the semantics of AWS Lambda
//! Powertools' idempotency utility, over the records of
//! [`crate::records::answers`]. The first request with a key claims it,
//! runs, and stores its answer. A retry with the same key and body gets that
//! answer again, marked `Idempotency-Replayed: true`, without running; one
//! that arrives while the first still runs waits up to two seconds for it,
//! then gets 409 `IDEMPOTENCY_IN_PROGRESS`; the same key with another body
//! gets 409 `IDEMPOTENCY_KEY_REUSED`. Only an answer that is final for the
//! request is kept: a 5xx, 402, 409 or 429 releases the record so that a
//! retry runs again (see [`is_final`]). The record is a cache of answers: the generation
//! itself records its key (see `api::generate`), so when the records table
//! cannot be reached the request runs without a record and stays exactly-once.

use std::time::{Duration, Instant};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::problem::FieldError;
use crate::web::Problem;
use crate::{
    AppState,
    db::generations::RequestKey,
    records::answers::{Claim, Stored, claim, complete, release},
};

/// The request header carrying the key.
pub const HEADER: &str = "idempotency-key";
/// The response header marking a stored answer.
pub const REPLAYED: &str = "idempotency-replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Largest answer stored (DynamoDB items hold up to 400 KB).
const MAX_STORED: usize = 300 * 1024;
const WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

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

/// Whether an answer is final for its request, so that a retry with the key
/// must get it again. Answers that depend on the moment are not: a 5xx, 402
/// (credits may be bought), 409 (an upload not there yet, a conflict), 429
/// (a slot frees up) and 401/403 (a fresh token): a retry runs again.
fn is_final(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error()
            && !matches!(
                status,
                StatusCode::UNAUTHORIZED
                    | StatusCode::PAYMENT_REQUIRED
                    | StatusCode::FORBIDDEN
                    | StatusCode::REQUEST_TIMEOUT
                    | StatusCode::CONFLICT
                    | StatusCode::TOO_MANY_REQUESTS
            ))
}

/// Runs `next` for `user` at most once per `Idempotency-Key` (requests without one just run).
pub async fn once(
    st: &AppState,
    user: Uuid,
    req: Request,
    next: Next,
) -> Result<Response, Problem> {
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
    let bytes = super::read_body(body).await?;
    let hash = hash(&bytes);
    // The handler records the key with what it creates: a retry finds that even without this record.
    parts.extensions.insert(RequestKey {
        key: key.clone(),
        hash: hash.clone(),
    });
    let table = &st.records;
    let deadline = Instant::now() + WAIT;
    loop {
        let now = chrono::Utc::now().timestamp();
        match claim(table, user, &key, &hash, now).await {
            Ok(Claim::Claimed) => break,
            Ok(Claim::Completed(answer)) => return Ok(replay(answer)),
            Ok(Claim::Reused) => {
                return Err(Problem::of(crate::ErrorCode::IdempotencyKeyReused));
            }
            Ok(Claim::InProgress) if Instant::now() >= deadline => {
                return Err(Problem::of(crate::ErrorCode::IdempotencyInProgress));
            }
            Ok(Claim::InProgress) => tokio::time::sleep(POLL).await,
            Err(e) => {
                // The generation itself carries the key (unique per user), so the request
                // stays exactly-once without the record: run it, and keep nothing here.
                tracing::warn!(error = %e, "idempotency store unavailable: running on the generation's key alone");
                return Ok(next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await);
            }
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
    let outcome = if !is_final(parts.status) || answer.body.len() > MAX_STORED {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_answers_are_kept() {
        for kept in [200, 201, 202, 400, 404, 413, 422] {
            assert!(is_final(StatusCode::from_u16(kept).unwrap()), "{kept}");
        }
        for retried in [401, 402, 403, 408, 409, 429, 500, 502, 503, 504] {
            assert!(
                !is_final(StatusCode::from_u16(retried).unwrap()),
                "{retried}"
            );
        }
    }
}
