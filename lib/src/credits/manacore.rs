//! The external credit service's internal API (docs/architecture.md,
//! "Credits"): balance, use and refund, authenticated with `X-Service-Key` and
//! `X-App-Id`. Use and refund carry a stable `Idempotency-Key` derived from
//! the generation id (`picture:use:{id}`, `picture:refund:{id}`, also as
//! `idempotencyKey` in the body, beside the generation id in the metadata):
//! a call that went through but whose answer was lost is sent again with the
//! same key, and the service must apply it once.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Balance, ProviderError};
use crate::otel::http::SendTraced;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Client of the credit service.
#[derive(Debug, Clone)]
pub struct Client {
    http: crate::http_client::HttpClient,
    base: String,
    service_key: String,
    app_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BalanceBody {
    balance: i64,
    #[serde(default)]
    total_earned: i64,
    #[serde(default)]
    total_spent: i64,
}

impl Client {
    pub fn new(
        http: crate::http_client::HttpClient,
        base: &str,
        service_key: &str,
        app_id: &str,
    ) -> Self {
        Client {
            http,
            base: base.to_string(),
            service_key: service_key.to_string(),
            app_id: app_id.to_string(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get()
            .request(
                method,
                format!("{}/api/v1/internal/credits/{path}", self.base),
            )
            .header("X-Service-Key", &self.service_key)
            .header("X-App-Id", &self.app_id)
            .timeout(TIMEOUT)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
        let res = req
            .send_traced("credits")
            .await
            .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        let status = res.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::Unavailable(format!("status {status}")));
        }
        if !status.is_success() {
            return Err(ProviderError::Rejected(status.as_u16()));
        }
        Ok(res)
    }

    /// The user's balance (a body of `{balance, totalEarned, totalSpent}`, possibly under `data`).
    pub async fn balance(&self, user_id: Uuid) -> Result<Balance, ProviderError> {
        let res = self
            .send(self.request(reqwest::Method::GET, &format!("balance/{user_id}")))
            .await?;
        let body: Value = res
            .json()
            .await
            .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        let inner = body.get("data").cloned().unwrap_or(body);
        let b: BalanceBody = serde_json::from_value(inner)
            .map_err(|e| ProviderError::Unavailable(format!("balance body: {e}")))?;
        Ok(Balance {
            balance: b.balance,
            total_earned: b.total_earned,
            total_spent: b.total_spent,
        })
    }

    /// A use or refund of a generation's credits, sent with its idempotency key.
    async fn post(
        &self,
        op: &str,
        user_id: Uuid,
        amount: i64,
        generation_id: Uuid,
        description: &str,
    ) -> Result<(), ProviderError> {
        let key = format!("picture:{op}:{generation_id}");
        let body = json!({
            "userId": user_id,
            "amount": amount,
            "appId": self.app_id,
            "description": description,
            "idempotencyKey": key,
            "metadata": {"generationId": generation_id},
        });
        let req = self
            .request(reqwest::Method::POST, op)
            .header("Idempotency-Key", &key)
            .json(&body);
        self.send(req).await.map(drop)
    }

    /// Charges `amount` credits for a generation.
    pub async fn use_credits(
        &self,
        user_id: Uuid,
        amount: i64,
        generation_id: Uuid,
    ) -> Result<(), ProviderError> {
        self.post("use", user_id, amount, generation_id, "Image generation")
            .await
    }

    /// Gives `amount` credits of a generation back.
    pub async fn refund(
        &self,
        user_id: Uuid,
        amount: i64,
        generation_id: Uuid,
    ) -> Result<(), ProviderError> {
        self.post(
            "refund",
            user_id,
            amount,
            generation_id,
            "Image generation refund",
        )
        .await
    }
}
