//! The Stripe objects we read, with only the fields we use. Unknown fields
//! are ignored, so newer API versions keep deserialising.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// A Checkout Session.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub id: String,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Set once the customer paid (or started an async payment).
    pub payment_intent: Option<String>,
    pub url: Option<String>,
    pub expires_at: Option<i64>,
    pub created: Option<i64>,
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
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// A webhook event; `data.object` is read by type.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// A charge, as `charge.refunded` carries it (with its refunds).
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub refunds: Option<List<Refund>>,
}

/// One refund of a charge.
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub created: i64,
    pub status: Option<String>,
}

/// A dispute (chargeback).
#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub amount: i64,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    /// `needs_response`, …, `won`, `lost`.
    pub status: Option<String>,
}
