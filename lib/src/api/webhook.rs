//! `webhook` function: `POST /generate/webhook`, called by Replicate when a
//! prediction finishes. Verifies the signature, then settles the generation
//! through the same exactly-once path as every other completion. Unknown
//! predictions are acknowledged so that Replicate stops retrying. A delivery
//! is acknowledged only once its work is done: a fault on our side, or a
//! completion still running elsewhere, answers 5xx so that Replicate retries,
//! and only a processed delivery's `webhook-id` is remembered (for a day): a
//! replay of it is acknowledged (`{"received":true,"duplicate":true}`)
//! without doing anything.

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    extract::{Query, State},
    response::Response,
};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use crate::web::Problem;
use crate::{
    AppState, Error,
    db::generations::LeaseBy,
    lifecycle,
    records::replay,
    replicate::{Prediction, signature},
    telemetry::{self, metric},
    web::{self, Routes, policy::Access, text::Text},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("webhook").route(
        Method::POST,
        "/api/v1/generate/webhook",
        Access::Signed,
        webhook,
    )
}

/// How long a delivery waits for another completion of its generation to end.
const HOLDER_WAIT: Duration = Duration::from_secs(5);
/// Time a delivery spends starting the user's queued batch items once its generation ended.
const QUEUE_SHARE: Duration = Duration::from_secs(8);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    generation_id: Option<String>,
}

async fn webhook(
    State(st): State<AppState>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let body = web::read_body(body).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = st.webhook_secret().await?;
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = signature::verify(
        secret,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        now,
    ) {
        tracing::warn!(reason = %e, "webhook rejected");
        telemetry::count(metric::WEBHOOK_REJECTED, 1);
        return Err(Problem::of(crate::ErrorCode::InvalidSignature));
    }
    telemetry::count(metric::WEBHOOK_RECEIVED, 1);
    let delivery = header("webhook-id").unwrap_or_default();
    match replay::seen(&st.records, delivery, now).await {
        Ok(true) => {
            tracing::info!(
                webhook_id = delivery,
                "webhook replay acknowledged without work"
            );
            return Ok(web::json(StatusCode::OK, super::views::Received::DUPLICATE));
        }
        Ok(false) => {}
        // Settling is idempotent, so an unknown replay state only costs a repeat.
        Err(e) => tracing::warn!(error = %e, "webhook replay check unavailable: processing"),
    }
    let answer = process(&st, &q, &body).await?;
    if let Err(e) = replay::remember(&st.records, delivery, now).await {
        tracing::warn!(error = %e, webhook_id = delivery, "webhook id not remembered");
    }
    Ok(answer)
}

/// Settles the generation a verified delivery reports on.
async fn process(st: &AppState, q: &Params, body: &[u8]) -> Result<Response, Problem> {
    let prediction: Prediction = serde_json::from_slice(body)
        .map_err(|_| Problem::malformed_json("The body is not a prediction."))?;
    let hint = q
        .generation_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok());
    let db = st.db.get().await.map_err(crate::Error::from)?;
    // An id with control characters (PostgreSQL refuses NUL) is no prediction of ours.
    let found = if Text::Strict.allows(&prediction.id) {
        lifecycle::find_for_prediction(&**db, &prediction.id, hint).await?
    } else {
        None
    };
    drop(db);
    let deadline = Instant::now() + st.cfg.request_budget();
    let Some(g) = found else {
        tracing::warn!(prediction_id = %prediction.id, "webhook for an unknown prediction acknowledged");
        return Ok(web::json(StatusCode::OK, super::views::Received::NEW));
    };
    tracing::info!(generation_id = %g.id, prediction_id = %prediction.id, status = %prediction.status, "webhook received");
    match lifecycle::settle(st, g.id, &prediction, deadline, LeaseBy::Other).await {
        // Another path (the sync wait, a poll) is completing it right now: its outcome is
        // usually a moment away, and waiting for it spares Replicate a retry. A poll that has
        // not finished by then gives its lease up to this delivery (polls keep coming; the
        // webhook's retries stop after a minute).
        Err(Error::CompletionInProgress) => {
            let until = deadline.min(Instant::now() + HOLDER_WAIT);
            if !lifecycle::wait_for_end(st, g.id, until).await? {
                lifecycle::settle(st, g.id, &prediction, deadline, LeaseBy::Webhook).await?;
            }
        }
        settled => settled?,
    }
    // Its end frees a slot for the user's queued batch items: started within a short share
    // of the budget, so that Replicate gets its answer soon (the reconciler starts the rest).
    if let Ok(ended) = lifecycle::load(st, g.id).await {
        let until = deadline.min(Instant::now() + QUEUE_SHARE);
        lifecycle::queue::after(st, &ended, until).await;
    }
    Ok(web::json(StatusCode::OK, super::views::Received::NEW))
}
