//! Processed webhook deliveries, remembered by `webhook-id` for a day, so a
//! replay of one (a redelivery, or a captured request sent again within the
//! signature's five minutes) is acknowledged without doing the work twice.

use super::{RecordsTable, Unavailable, n, number, s};

/// How long a delivery id is remembered.
pub const REMEMBER_SECS: i64 = 24 * 3600;

fn pk(id: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    s(format!("webhook#{id}"))
}

/// Whether the delivery `id` was processed already (and not yet forgotten) at `now`.
pub async fn seen(table: &RecordsTable, id: &str, now: i64) -> Result<bool, Unavailable> {
    let out = table
        .client()
        .await
        .get_item()
        .table_name(table.name())
        .key("pk", pk(id))
        .key("sk", s("delivery"))
        .consistent_read(true)
        .send()
        .await
        .map_err(Unavailable::from_sdk)?;
    Ok(out
        .item()
        .and_then(|item| number(item, "expiresAt"))
        .is_some_and(|expires| expires > now))
}

/// Records that the delivery `id` was processed at `now`; a concurrent duplicate's record wins.
pub async fn remember(table: &RecordsTable, id: &str, now: i64) -> Result<(), Unavailable> {
    let res = table
        .client()
        .await
        .put_item()
        .table_name(table.name())
        .item("pk", pk(id))
        .item("sk", s("delivery"))
        .item("processedAt", n(now))
        .item("expiresAt", n(now + REMEMBER_SECS))
        .condition_expression("attribute_not_exists(pk) OR expiresAt <= :now")
        .expression_attribute_values(":now", n(now))
        .send()
        .await;
    match res {
        Err(e)
            if !e
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Err(Unavailable::from_sdk(e))
        }
        _ => Ok(()),
    }
}
