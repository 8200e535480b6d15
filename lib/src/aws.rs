//! The AWS SDK settings, loaded from the environment once, on first use, and
//! shared by the S3 and DynamoDB clients (a function that needs neither never
//! loads them). Their HTTPS client trusts the compiled-in roots
//! ([`crate::tls`]). A per-service override replaces them for one client.

use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

/// A handle to the instance's AWS settings, or to an override.
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    shared: Arc<OnceCell<SdkConfig>>,
    replaced: Option<SdkConfig>,
}

impl AwsConfig {
    /// The same shared settings, or `replacement` when given.
    pub fn or(&self, replacement: Option<SdkConfig>) -> AwsConfig {
        AwsConfig {
            shared: self.shared.clone(),
            replaced: replacement,
        }
    }

    /// The settings, loaded on first call.
    pub async fn get(&self) -> SdkConfig {
        match &self.replaced {
            Some(r) => r.clone(),
            None => self
                .shared
                .get_or_init(|| {
                    aws_config::from_env()
                        .http_client(crate::tls::aws_http_client())
                        .load()
                })
                .await
                .clone(),
        }
    }
}
