//! The Stripe API calls Picture makes: create, read and list Checkout
//! Sessions (form-encoded requests, JSON answers). Every call has a 10 s
//! attempt timeout (and the shared client's 5 s connect timeout); reads and
//! creates are retried on 429, 5xx and lost connections, up to three
//! attempts: a create carries an `Idempotency-Key`, so Stripe answers a
//! repeat with the first session instead of making a second.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::objects::{List, Session};
use crate::otel::http::SendTraced;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: u32 = 3;

/// A failed call to Stripe.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error status (its error message kept for logs).
    #[error("stripe answered {status}: {message}")]
    Status { status: u16, message: String },
    /// No answer in time, no connection, or an answer lost or unreadable.
    #[error("stripe unreachable: {0}")]
    Unreachable(String),
    /// Purchases are not configured (`STRIPE_SECRET_KEY`).
    #[error("stripe is not configured")]
    NotConfigured,
}

impl StripeError {
    /// Timeouts, lost connections, throttling and 5xx pass; refusals stay.
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Status { status, .. } => *status == 429 || *status >= 500,
            StripeError::Unreachable(_) => true,
            StripeError::NotConfigured => false,
        }
    }
}

/// What a new Checkout Session sells, to whom, and where the customer goes after.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// The buyer, sent as `client_reference_id` and in the metadata.
    pub user_id: &'a str,
    /// The pack sold, sent in the metadata.
    pub pack_id: &'a str,
    /// The line item's name, shown at checkout.
    pub product_name: &'a str,
    /// The price, in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO currency code, e.g. `eur`.
    pub currency: &'a str,
    /// Where the customer goes after paying.
    pub success_url: &'a str,
    /// Where the customer goes after cancelling.
    pub cancel_url: &'a str,
    /// When the session expires (unix seconds).
    pub expires_at: i64,
    /// Sent as `Idempotency-Key`: a retried create answers the same session.
    pub idempotency_key: &'a str,
}

/// Client for one Stripe account (or the local simulator).
#[derive(Debug, Clone)]
pub struct Stripe {
    http: crate::http_client::HttpClient,
    base: String,
    key: Option<String>,
}

impl Stripe {
    pub fn new(http: crate::http_client::HttpClient, base: &str, key: Option<&str>) -> Self {
        Stripe {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.map(str::to_string),
        }
    }

    /// Whether a secret key is configured.
    pub fn configured(&self) -> bool {
        self.key.is_some()
    }

    /// Creates a Checkout Session in `payment` mode for one pack.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<Session, StripeError> {
        let amount = new.amount_cents.to_string();
        let expires = new.expires_at.to_string();
        let form = [
            ("mode", "payment"),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", new.currency),
            ("line_items[0][price_data][unit_amount]", &amount),
            (
                "line_items[0][price_data][product_data][name]",
                new.product_name,
            ),
            ("client_reference_id", new.user_id),
            ("metadata[user_id]", new.user_id),
            ("metadata[pack_id]", new.pack_id),
            ("success_url", new.success_url),
            ("cancel_url", new.cancel_url),
            ("expires_at", &expires),
        ];
        let url = format!("{}/v1/checkout/sessions", self.base);
        self.call(Method::POST, &url, &form, Some(new.idempotency_key))
            .await
    }

    /// A Checkout Session as Stripe has it now.
    pub async fn session(&self, id: &str) -> Result<Session, StripeError> {
        let url = format!("{}/v1/checkout/sessions/{}", self.base, encode(id));
        self.call(Method::GET, &url, &[], None).await
    }

    /// A page of the Checkout Sessions created since `created_gte` (unix
    /// seconds) with `status`, newest first, after `starting_after`.
    pub async fn sessions(
        &self,
        created_gte: i64,
        status: &str,
        starting_after: Option<&str>,
    ) -> Result<List<Session>, StripeError> {
        let since = created_gte.to_string();
        let mut query = vec![
            ("created[gte]", since.as_str()),
            ("status", status),
            ("limit", "100"),
        ];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        let url = format!("{}/v1/checkout/sessions", self.base);
        self.call(Method::GET, &url, &query, None).await
    }

    /// The Checkout Session that made a PaymentIntent, if any.
    pub async fn session_of_payment(
        &self,
        payment_intent: &str,
    ) -> Result<Option<Session>, StripeError> {
        let url = format!("{}/v1/checkout/sessions", self.base);
        let query = [("payment_intent", payment_intent), ("limit", "1")];
        let list: List<Session> = self.call(Method::GET, &url, &query, None).await?;
        Ok(list.data.into_iter().next())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        params: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let key = self.key.as_deref().ok_or(StripeError::NotConfigured)?;
        let mut attempt = 1;
        loop {
            let mut req = self
                .http
                .get()
                .request(method.clone(), url)
                .bearer_auth(key)
                .timeout(CALL_TIMEOUT);
            req = if method == Method::GET {
                req.query(params)
            } else {
                req.form(params)
            };
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let outcome = match req.send_traced("stripe").await {
                Ok(res) if res.status().is_success() => {
                    return res
                        .json::<T>()
                        .await
                        .map_err(|e| StripeError::Unreachable(e.without_url().to_string()));
                }
                Ok(res) => {
                    let status = res.status();
                    let message = res
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    StripeError::Status {
                        status: status.as_u16(),
                        message,
                    }
                }
                Err(e) => StripeError::Unreachable(e.without_url().to_string()),
            };
            if !outcome.is_transient() || attempt >= MAX_ATTEMPTS {
                return Err(outcome);
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            attempt += 1;
        }
    }
}

/// A path segment as Stripe ids are: letters, digits and `_`; anything else escaped.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_outages_pass_refusals_stay() {
        let status = |s: u16| StripeError::Status {
            status: s,
            message: String::new(),
        };
        assert!(status(429).is_transient() && status(503).is_transient());
        assert!(!status(400).is_transient() && !status(404).is_transient());
        assert!(StripeError::Unreachable("reset".into()).is_transient());
        assert!(!StripeError::NotConfigured.is_transient());
        assert_eq!(encode("cs_test_a1"), "cs_test_a1");
        assert_eq!(encode("../x"), "%2E%2E%2Fx");
    }
}
