//! `payments` function: `POST /payments/webhook`, Stripe's event deliveries.
//! Verifies `Stripe-Signature` (a bad or stale one: 400, nothing recorded),
//! then applies the event through [`crate::purchases`], keyed on the Stripe
//! object (never the event id alone: Stripe may send two events for one
//! change, in any order). A fault on our side answers 5xx so that Stripe
//! retries; event types we do not use are acknowledged and ignored.

use axum::{body::Body, extract::State, response::Response};
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::web::Problem;
use crate::{
    AppState, Error, purchases,
    stripe::{Charge, Dispute, Event, Session, signature},
    telemetry::{self, metric},
    web::{self, Routes, policy::Access},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("payments").route(
        Method::POST,
        "/api/v1/payments/webhook",
        Access::Signed,
        webhook,
    )
}

async fn webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let body = web::read_body(body).await?;
    let Some(secret) = st.cfg.stripe_webhook_secret.as_deref() else {
        tracing::error!("a Stripe delivery arrived, but STRIPE_WEBHOOK_SECRET is not set");
        return Err(Error::PurchaseNotAvailable.into());
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = signature::verify(secret, header, &body, chrono::Utc::now().timestamp()) {
        tracing::warn!(reason = %e, "Stripe delivery rejected");
        telemetry::count(metric::WEBHOOK_REJECTED, 1);
        return Err(Problem::of(crate::ErrorCode::InvalidSignature)
            .status(StatusCode::BAD_REQUEST)
            .detail("The Stripe-Signature header does not match this body."));
    }
    let event: Event = serde_json::from_slice(&body)
        .map_err(|_| Problem::malformed_json("The body is not a Stripe event."))?;
    tracing::info!(event_id = %event.id, kind = %event.kind, "Stripe event received");
    match apply(&st, &event).await {
        Ok(()) => Ok(web::json(StatusCode::OK, super::views::Received::NEW)),
        Err(e) => {
            telemetry::count(metric::PAYMENT_WEBHOOK_FAILED, 1);
            tracing::error!(event_id = %event.id, kind = %event.kind, error = %e, "Stripe event not applied; Stripe retries it");
            Err(e.into())
        }
    }
}

/// Applies one verified event.
async fn apply(st: &AppState, event: &Event) -> Result<(), Error> {
    match event.kind.as_str() {
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.expired" => {
            purchases::fulfil(st, &object::<Session>(event)?).await?;
        }
        "checkout.session.async_payment_failed" => {
            purchases::payment_failed(st, &object::<Session>(event)?).await?;
        }
        "charge.refunded" => purchases::refunded(st, &object::<Charge>(event)?).await?,
        "charge.dispute.created" => {
            purchases::disputed(st, &object::<Dispute>(event)?, false).await?;
        }
        "charge.dispute.funds_reinstated" => {
            purchases::disputed(st, &object::<Dispute>(event)?, true).await?;
        }
        "charge.dispute.closed" => {
            let dispute = object::<Dispute>(event)?;
            let won = dispute.status.as_deref() == Some("won");
            purchases::disputed(st, &dispute, won).await?;
        }
        other => tracing::info!(kind = other, "Stripe event type not used: ignored"),
    }
    Ok(())
}

/// The event's `data.object` as `T`. A signed event whose object is not what its
/// type says is a bug at Stripe's end, or ours: an internal error, retried.
fn object<T: DeserializeOwned>(event: &Event) -> Result<T, Error> {
    serde_json::from_value(event.data.object.clone())
        .map_err(|e| Error::Internal(format!("{} object: {e}", event.kind)))
}
