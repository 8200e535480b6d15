//! The Stripe objects we read, with only the fields we use. Unknown fields
//! are ignored, so newer API versions keep deserialising.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// A Checkout Session.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// The session's id (`cs_…`).
    pub id: String,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: Option<String>,
    /// What the customer pays, in the currency's minor unit.
    pub amount_total: Option<i64>,
    /// ISO 4217 code, lower case.
    pub currency: Option<String>,
    /// Our user id, as the session was created with.
    pub client_reference_id: Option<String>,
    /// Our `user_id` and `pack_id`, as set at creation.
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Set once the customer paid (or started an async payment).
    pub payment_intent: Option<String>,
    /// The hosted payment page; `None` once the session is closed.
    pub url: Option<String>,
    /// When it closes unpaid, Unix seconds.
    pub expires_at: Option<i64>,
}

impl Session {
    pub fn is_paid(&self) -> bool {
        self.payment_status.as_deref() == Some("paid")
    }

    pub fn is_expired(&self) -> bool {
        self.status.as_deref() == Some("expired")
    }
}

/// A page of a Stripe list.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    /// This page's objects.
    pub data: Vec<T>,
    /// Whether more follow (asked for after the last one's id).
    #[serde(default)]
    pub has_more: bool,
}

/// A webhook event; `data.object` is read by type.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// The event's id (`evt_…`): a redelivery has the same.
    pub id: String,
    /// Its type (`checkout.session.completed`, `charge.refunded`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// What it is about.
    pub data: EventData,
}

/// An event's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    /// The object the event is about, read as the event's type says.
    pub object: Value,
}

/// A charge, as `charge.refunded` carries it (with its refunds).
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    /// The charge's id (`ch_…`).
    pub id: String,
    /// The PaymentIntent it belongs to: it finds the purchase.
    pub payment_intent: Option<String>,
    /// Its refunds, as `charge.refunded` embeds them.
    #[serde(default)]
    pub refunds: Option<List<Refund>>,
}

/// One refund of a charge.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    /// The refund's id (`re_…`): the key of its take-back.
    pub id: String,
    /// Amount refunded, in the currency's minor unit.
    pub amount: i64,
    /// When it was made, Unix seconds (orders the refunds' shares).
    #[serde(default)]
    pub created: i64,
    /// `pending`, `succeeded`, `failed`, …: only pending and succeeded ones take back.
    pub status: Option<String>,
}

/// A dispute (chargeback).
#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    /// The dispute's id (`dp_…`): the key of its take-back and reinstatement.
    pub id: String,
    /// The PaymentIntent disputed: it finds the purchase.
    pub payment_intent: Option<String>,
    /// `needs_response`, …, `won`, `lost`.
    pub status: Option<String>,
}
