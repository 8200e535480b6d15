//! The records behind `Idempotency-Key` (the HTTP half is `web::idempotency`),
//! as in AWS Lambda Powertools' idempotency utility: a conditional put of an
//! `IN_PROGRESS` record holding the SHA-256 of the body claims a key; the
//! answer is then stored (`COMPLETED`, kept a day) or the record released.
//! Keys are per user.

use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
use uuid::Uuid;

use super::{RecordsTable, Unavailable, n, number, s, string};

/// How long a completed answer is kept.
const KEEP_SECS: i64 = 24 * 3600;
/// How long an `IN_PROGRESS` record holds its key: longer than any invocation (30 s),
/// so that a record left by a crashed instance frees the key by itself.
const IN_PROGRESS_SECS: i64 = 60;

/// An answer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The HTTP status answered.
    pub status: u16,
    /// The answer's `Content-Type`.
    pub content_type: String,
    /// The answer's body, byte for byte.
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
    table: &RecordsTable,
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
    table: &RecordsTable,
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
pub async fn release(table: &RecordsTable, user: Uuid, key: &str) -> Result<(), Unavailable> {
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
