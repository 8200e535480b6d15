//! Provider usage: what Replicate used for each generation and what it is
//! estimated to cost (operator data, never in user responses), and the usage
//! report (`picture-dev usage`). See docs/architecture.md, "Provider usage and cost".

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{
    AppState, Result,
    db::{
        generations::{self, ProviderReport},
        usage::{self as rows, Sums},
    },
    replicate::Prediction,
    telemetry,
};

/// What Replicate bills for a finished prediction, following its billing:
/// per-image (official) models bill the outputs produced, and not a failed
/// prediction; per-second models bill the predict time whatever the outcome;
/// an `aborted` prediction (stopped before it started) is not billed.
pub fn billable(p: &Prediction) -> (i32, f64) {
    let seconds = p.predict_time().unwrap_or(0.0);
    match p.status.as_str() {
        "aborted" => (0, 0.0),
        "failed" => (0, seconds),
        _ => (i32::try_from(p.output_count()).unwrap_or(i32::MAX), seconds),
    }
}

/// Records a finished prediction's timings and estimated cost on its
/// generation (later reports win); the first time, also as metrics.
pub async fn record(st: &AppState, generation_id: Uuid, p: &Prediction) -> Result<()> {
    let (billed_images, billed_seconds) = billable(p);
    let report = ProviderReport {
        created_at: p.created_at,
        started_at: p.started_at,
        completed_at: p.completed_at,
        predict_time: p.predict_time(),
        billed_images,
        billed_seconds,
    };
    let db = st.db.get().await?;
    let Some(recorded) = generations::record_usage(&**db, generation_id, &report).await? else {
        return Ok(());
    };
    if recorded.first {
        let queue = p
            .started_at
            .zip(p.created_at)
            .map(|(started, created)| (started - created).as_seconds_f64().max(0.0));
        let usage = telemetry::ProviderUsage {
            predict_seconds: report.predict_time,
            cost_usd: recorded.cost_usd,
            queue_seconds: queue,
        };
        telemetry::provider_usage(&recorded.model, usage);
    }
    Ok(())
}

/// The report's time window, `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Its start, included.
    pub since: DateTime<Utc>,
    /// Its end, excluded.
    pub until: DateTime<Utc>,
}

impl Window {
    /// From `SINCE` (a date: its midnight UTC; or an RFC 3339 time) and `UNTIL`
    /// (a date: the end of that day; or a time); by default the last 7 days.
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Window, String> {
        let until = match until {
            Some(s) => parse_time(s, TimeDelta::days(1)).map_err(|e| format!("--until: {e}"))?,
            None => now,
        };
        let since = match since {
            Some(s) => parse_time(s, TimeDelta::zero()).map_err(|e| format!("--since: {e}"))?,
            None => until - TimeDelta::days(7),
        };
        Ok(Window { since, until })
    }
}

/// An RFC 3339 time, or a date's midnight UTC plus `date_offset` (the
/// command-line form of a time, for `usage` and `audit`).
pub fn parse_time(s: &str, date_offset: TimeDelta) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc() + date_offset)
        .map_err(|_| format!("expected YYYY-MM-DD or an RFC 3339 time, got {s:?}"))
}

/// Usage of one model or of all: the sums, rounded, and the cost per completed generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The sums, seconds to the millisecond and dollars to the millionth.
    #[serde(flatten)]
    pub sums: Sums,
    /// `null` without a completed generation.
    pub cost_per_completed_usd: Option<f64>,
}

/// A model's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelUsage {
    /// The model's name.
    pub model: String,
    /// Its usage.
    #[serde(flatten)]
    pub usage: Usage,
    /// Its gross margin ([`Revenue`]), US dollars; `null` without sales.
    #[serde(rename = "marginUsd")]
    pub margin_usd: Option<f64>,
}

/// The usage report: `{"since", "until", "models": [...], "totals": {...}, "revenue": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The window (`since`, `until`).
    #[serde(flatten)]
    pub window: Window,
    /// Each model with generations in the window, by name.
    pub models: Vec<ModelUsage>,
    /// All models together.
    pub totals: Usage,
    /// What credit sales brought in, and the margin.
    pub revenue: Revenue,
}

/// What credit sales brought in over the window, and the gross margin of the
/// credits spent: revenue per credit (net, in US dollars at `usdRate`) times
/// the credits captured, less the estimated provider cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revenue {
    /// Per currency.
    pub sales: Vec<rows::Sales>,
    /// US dollars per unit of the sales' currency (`USD_RATE`, default 1).
    pub usd_rate: f64,
    /// Net revenue per credit sold, in US dollars; `null` without sales.
    pub net_usd_per_credit: Option<f64>,
    /// Gross margin of all the credits spent, US dollars (per model: `models[].marginUsd`).
    pub margin_usd: Option<f64>,
}

impl Revenue {
    fn new(sales: Vec<rows::Sales>, usd_rate: f64) -> Self {
        let credits: i64 = sales.iter().map(|s| s.credits_sold).sum();
        let net: i64 = sales.iter().map(|s| s.net_cents).sum();
        let per_credit = (credits > 0).then(|| net as f64 / 100.0 * usd_rate / credits as f64);
        Revenue {
            net_usd_per_credit: per_credit.map(|c| round(c, 6)),
            margin_usd: None,
            usd_rate,
            sales,
        }
    }

    /// The gross margin of `usage`: its credits at the net revenue per credit, less its cost.
    fn margin(&self, usage: &Usage) -> Option<f64> {
        let per_credit = self.net_usd_per_credit?;
        Some(round(
            usage.sums.credits_captured as f64 * per_credit - usage.sums.estimated_cost_usd,
            6,
        ))
    }
}

/// Seconds to the millisecond, dollars to the millionth.
fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

impl From<Sums> for Usage {
    fn from(sums: Sums) -> Self {
        let cost_per_completed_usd =
            (sums.completed > 0).then(|| round(sums.estimated_cost_usd / sums.completed as f64, 6));
        Usage {
            sums: Sums {
                predict_seconds: round(sums.predict_seconds, 3),
                predict_seconds_p50: sums.predict_seconds_p50.map(|s| round(s, 3)),
                estimated_cost_usd: round(sums.estimated_cost_usd, 6),
                refused_cost_usd: round(sums.refused_cost_usd, 6),
                ..sums
            },
            cost_per_completed_usd,
        }
    }
}

/// The usage of generations created in `window`, per model and in total, and
/// the revenue of credits sold in it (`usd_rate`: US dollars per unit of the
/// sales' currency).
pub async fn report(db: &impl GenericClient, window: Window, usd_rate: f64) -> Result<Report> {
    let rows = rows::by_model(db, window.since, window.until).await?;
    let mut models = Vec::new();
    let mut totals = None;
    for (model, sums) in rows {
        match model {
            Some(model) => models.push(ModelUsage {
                model,
                usage: sums.into(),
                margin_usd: None,
            }),
            None => totals = Some(sums.into()),
        }
    }
    let totals: Usage =
        totals.ok_or_else(|| crate::Error::Internal("usage: no totals row".into()))?;
    let mut revenue = Revenue::new(rows::sales(db, window.since, window.until).await?, usd_rate);
    for m in &mut models {
        m.margin_usd = revenue.margin(&m.usage);
    }
    revenue.margin_usd = revenue.margin(&totals);
    Ok(Report {
        window,
        models,
        totals,
        revenue,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prediction(status: &str, output: serde_json::Value, predict: Option<f64>) -> Prediction {
        serde_json::from_value(json!({
            "id": "p", "status": status, "output": output,
            "metrics": predict.map(|p| json!({"predict_time": p})),
        }))
        .unwrap()
    }

    #[test]
    fn billing_follows_replicate() {
        let out = json!(["https://replicate.delivery/a.webp"]);
        assert_eq!(
            billable(&prediction("succeeded", out.clone(), Some(2.5))),
            (1, 2.5)
        );
        // Official models do not bill a failure; run-time models bill the time it used.
        assert_eq!(
            billable(&prediction("failed", json!(null), Some(1.0))),
            (0, 1.0)
        );
        assert_eq!(
            billable(&prediction("canceled", json!(null), Some(0.5))),
            (0, 0.5)
        );
        // Stopped before it started: nothing.
        assert_eq!(
            billable(&prediction("aborted", json!(null), Some(0.0))),
            (0, 0.0)
        );
        assert_eq!(billable(&prediction("succeeded", out, None)), (1, 0.0));
    }

    #[test]
    fn window_takes_dates_and_times() {
        let now = "2026-03-10T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let w = Window::parse(Some("2026-03-01"), Some("2026-03-01"), now).unwrap();
        assert_eq!(w.since.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(w.until.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        let w = Window::parse(None, Some("2026-03-05T10:00:00+02:00"), now).unwrap();
        assert_eq!(w.until.to_rfc3339(), "2026-03-05T08:00:00+00:00");
        assert_eq!(w.since, w.until - TimeDelta::days(7));
        assert_eq!(Window::parse(None, None, now).unwrap().until, now);
        assert!(Window::parse(Some("last week"), None, now).is_err());
    }

    #[test]
    fn cost_per_completed_is_null_without_completions() {
        let row = Sums {
            generations: 2,
            completed: 0,
            failed: 2,
            cancelled: 0,
            refused: 0,
            free: 2,
            credits: 0,
            waived: 0,
            credits_captured: 0,
            predict_seconds: 1.23456,
            predict_seconds_p50: Some(0.61728),
            estimated_cost_usd: 0.0012037,
            refused_cost_usd: 0.0,
        };
        let u = Usage::from(row);
        assert_eq!(u.cost_per_completed_usd, None);
        assert_eq!(
            (u.sums.predict_seconds, u.sums.estimated_cost_usd),
            (1.235, 0.001204)
        );
        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(json["costPerCompletedUsd"], json!(null));
        assert_eq!(json["predictSecondsP50"], json!(0.617));
    }
}
