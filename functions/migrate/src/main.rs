//! Lambda entry point for deploy-time migrations (see `picture::deploy`).
//!
//! It never fails at init: a missing or unreadable database setting becomes a
//! FAILED answer to CloudFormation, which rolls the deployment back instead of
//! waiting an hour for a response.

use lambda_runtime::{Error, LambdaEvent};
use picture::deploy::{CustomResourceEvent, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    picture::telemetry::init();
    // Built on first use: its TLS setup is the costliest part of a cold start.
    let http = picture::http_client::HttpClient::default();
    let mut vars = std::env::vars().collect();
    if let Err(e) = picture::secrets::resolve(&mut vars, &http).await {
        tracing::error!(error = %e, "secrets unavailable; the migration will report FAILED");
    }
    let database_url = vars.get("DATABASE_URL").cloned().unwrap_or_default();
    let ca_file = vars.get("DATABASE_CA_FILE").cloned();
    // Each invocation is a server span (`faas.trigger` `other`), flushed once answered.
    let handler = |event: LambdaEvent<CustomResourceEvent>| {
        let (http, url, ca) = (http.get(), &database_url, ca_file.as_deref());
        async move {
            handle(http, url, ca, &event.payload)
                .await
                .map_err(Error::from)
        }
    };
    picture::runtime::run_events("migrate", "other", None, handler).await
}
