//! Short-lived records in DynamoDB (the table named by `RUNTIME_TABLE`):
//! rate-limit windows ([`ratelimit`]), the stored answers of idempotent
//! requests ([`answers`]) and the ids of processed webhook deliveries
//! ([`replay`]). Every item has a
//! string key `pk` + `sk` and an `expiresAt` TTL (epoch seconds), so DynamoDB
//! deletes old items by itself; readers still treat expired items as absent.
//!
//! An adapter: may import `aws`, `otel`, `config` and `error`; nothing of the
//! domain or the edge.

pub mod answers;
pub mod ratelimit;
pub mod replay;

use std::time::Duration;

use aws_sdk_dynamodb::{Client, config::timeout::TimeoutConfig, types::AttributeValue};
use tokio::sync::OnceCell;

use crate::Config;

/// A call to the records table failed (unreachable, throttled, misconfigured).
#[derive(Debug, thiserror::Error)]
#[error("records table: {0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    /// Wraps any SDK error with its full context.
    fn from_sdk<E: std::error::Error + 'static>(err: E) -> Self {
        Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string())
    }
}

/// The records table; the client is built on first use.
#[derive(Debug)]
pub struct RecordsTable {
    sdk: crate::aws::AwsConfig,
    client: OnceCell<Client>,
    name: String,
}

impl RecordsTable {
    /// `sdk`: the AWS settings its client is built from on first use.
    pub fn new(cfg: &Config, sdk: crate::aws::AwsConfig) -> Self {
        RecordsTable {
            sdk,
            client: OnceCell::new(),
            name: cfg.runtime_table.clone(),
        }
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The DynamoDB client, built on first use. Calls are capped at a few
    /// seconds: every request waits for this table, so it must fail fast.
    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let sdk = self.sdk.get().await;
                let timeouts = TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .operation_timeout(Duration::from_secs(3))
                    .build();
                let mut conf =
                    aws_sdk_dynamodb::config::Builder::from(&sdk).timeout_config(timeouts);
                if crate::otel::enabled() {
                    let table = crate::otel::aws::Resource::Table(self.name.clone());
                    conf = conf.interceptor(crate::otel::aws::AwsSpans(table));
                }
                Client::from_conf(conf.build())
            })
            .await
    }
}

/// A string attribute.
fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A number attribute of an item, if present and numeric.
fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// A string attribute of an item, if present.
fn string<'a>(
    item: &'a std::collections::HashMap<String, AttributeValue>,
    name: &str,
) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}
