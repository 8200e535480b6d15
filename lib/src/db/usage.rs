//! The usage report's read: generations, outcomes, charges, predict time and
//! estimated provider cost per model over a time window (`crate::usage`).

use super::Sql;
use chrono::{DateTime, Utc};
use postgres_from_row::FromRow;
use serde::Serialize;

use crate::Result;

/// The sums over some generations (the report's names and units).
#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Sums {
    /// Generations created in the window.
    pub generations: i64,
    /// Of them, completed.
    pub completed: i64,
    /// Of them, failed.
    pub failed: i64,
    /// Of them, cancelled.
    pub cancelled: i64,
    /// Failed by the provider's safety checker (`CONTENT_REFUSED`; a prompt refused before
    /// the provider ran is no generation).
    pub refused: i64,
    /// Of them, charged as free (every output on a free slot).
    pub free: i64,
    /// Of them, charged in credits.
    pub credits: i64,
    /// Of them, waived (credits not enforced).
    pub waived: i64,
    /// Credits captured for them (their `credits_used`).
    pub credits_captured: i64,
    /// Seconds the provider ran them (`metrics.predict_time`).
    pub predict_seconds: f64,
    /// The median of their predict times, seconds; `null` when none was reported.
    pub predict_seconds_p50: Option<f64>,
    /// Their estimated provider cost at each model's price, US dollars.
    pub estimated_cost_usd: f64,
    /// The part of `estimated_cost_usd` spent on `refused` generations.
    pub refused_cost_usd: f64,
}

/// Generations created in `[since, until)`: the sums of each model (by name)
/// with any, then the totals (always present, with no name).
pub async fn by_model(
    db: &impl Sql,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<(Option<String>, Sums)>> {
    let rows = db
        .query(
            "SELECT m.name AS model,
                    count(*) AS generations,
                    count(*) FILTER (WHERE g.status = 'completed') AS completed,
                    count(*) FILTER (WHERE g.status = 'failed') AS failed,
                    count(*) FILTER (WHERE g.status = 'cancelled') AS cancelled,
                    count(*) FILTER (WHERE g.error_code = 'CONTENT_REFUSED') AS refused,
                    count(*) FILTER (WHERE g.charge = 'free') AS free,
                    count(*) FILTER (WHERE g.charge = 'credits') AS credits,
                    count(*) FILTER (WHERE g.charge = 'waived') AS waived,
                    coalesce(sum(g.credits_used), 0)::bigint AS credits_captured,
                    coalesce(sum(g.predict_time), 0)::float8 AS predict_seconds,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY g.predict_time) AS predict_seconds_p50,
                    coalesce(sum(g.provider_cost_usd), 0)::float8 AS estimated_cost_usd,
                    coalesce(sum(g.provider_cost_usd) FILTER (WHERE g.error_code = 'CONTENT_REFUSED'), 0)::float8
                      AS refused_cost_usd
               FROM generations g JOIN models m ON m.id = g.model_id
              WHERE g.created_at >= $1 AND g.created_at < $2
              GROUP BY ROLLUP (m.name)
              ORDER BY m.name NULLS LAST",
            &[&since, &until],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("model"), Sums::from_row(r)))
        .collect())
}

/// What granted purchases made in one currency (amounts in its minor unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sales {
    /// ISO 4217 code, lower case.
    pub currency: String,
    /// Purchases granted.
    pub purchases: i64,
    /// Credits they granted.
    pub credits_sold: i64,
    /// What they were paid, in the currency's minor unit.
    pub gross_cents: i64,
    /// Gross less the share of refunds and lost disputes (their take-backs, net of reinstatements).
    pub net_cents: i64,
}

/// Purchases granted, made in `[since, until)`, per currency.
pub async fn sales(
    db: &impl Sql,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Sales>> {
    let rows = db
        .query(
            "SELECT p.currency, count(*) AS purchases, sum(p.credits)::bigint AS credits_sold,
                    sum(p.amount_cents)::bigint AS gross_cents,
                    sum(p.amount_cents::bigint * greatest(p.credits - coalesce(t.taken, 0), 0) / p.credits)::bigint
                      AS net_cents
               FROM purchases p
               LEFT JOIN (SELECT session_id,
                                 sum(CASE kind WHEN 'takeback' THEN amount ELSE -amount END) AS taken
                            FROM credit_transactions WHERE kind IN ('takeback', 'reinstate')
                           GROUP BY session_id) t ON t.session_id = p.session_id
              WHERE p.status = 'granted' AND p.created_at >= $1 AND p.created_at < $2
              GROUP BY p.currency ORDER BY p.currency",
            &[&since, &until],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Sales {
            currency: r.get("currency"),
            purchases: r.get("purchases"),
            credits_sold: r.get("credits_sold"),
            gross_cents: r.get("gross_cents"),
            net_cents: r.get("net_cents"),
        })
        .collect())
}
