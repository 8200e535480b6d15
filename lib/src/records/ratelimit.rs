//! Fixed one-minute windows per user and route, counted in the records table.
//! Each request is one atomic conditional update (`ADD count 1` only while
//! `count < max`), so however many arrive at once, exactly `max` per window
//! are admitted. A window's item expires shortly after the window ends.

use aws_sdk_dynamodb::types::ReturnValue;
use uuid::Uuid;

use super::{RecordsTable, Unavailable, n, number, s};

/// Length of a window in seconds.
pub const WINDOW_SECS: i64 = 60;

/// The outcome of one request against its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (false once `limit` were admitted this window).
    pub allowed: bool,
    /// Requests admitted per window.
    pub limit: u32,
    /// Requests still admitted in this window after this one.
    pub remaining: u32,
    /// Seconds until the window ends (1–60).
    pub reset_secs: i64,
}

/// Counts a request of `user` on `route` at `now` (epoch seconds) against `max` per window.
pub async fn check(
    table: &RecordsTable,
    user: Uuid,
    route: &str,
    max: u32,
    now: i64,
) -> Result<Decision, Unavailable> {
    let start = now - now.rem_euclid(WINDOW_SECS);
    let mut decision = Decision {
        allowed: false,
        limit: max,
        remaining: 0,
        reset_secs: start + WINDOW_SECS - now,
    };
    if max == 0 {
        return Ok(decision);
    }
    let res = table
        .client()
        .await
        .update_item()
        .table_name(table.name())
        .key("pk", s(format!("ratelimit#{user}#{route}")))
        .key("sk", s(start.to_string()))
        .update_expression("ADD #count :one SET expiresAt = :expires")
        .condition_expression("attribute_not_exists(#count) OR #count < :max")
        .expression_attribute_names("#count", "count")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":max", n(max))
        .expression_attribute_values(":expires", n(start + 2 * WINDOW_SECS))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await;
    match res {
        Ok(out) => {
            let count = out
                .attributes()
                .and_then(|a| number(a, "count"))
                .unwrap_or(i64::from(max));
            decision.allowed = true;
            decision.remaining = u32::try_from(i64::from(max) - count).unwrap_or(0);
            Ok(decision)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(decision)
        }
        Err(e) => Err(Unavailable::from_sdk(e)),
    }
}
