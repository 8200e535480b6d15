//! Lambda entry point for deploy-time migrations (see `picture::deploy`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use picture::deploy::{CustomResourceEvent, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    picture::telemetry::init_logging();
    let database_url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is required")?;
    let ca_file = std::env::var("DATABASE_CA_FILE").ok();
    let http = reqwest::Client::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<CustomResourceEvent>| {
        let (http, url, ca) = (&http, &database_url, ca_file.as_deref());
        async move {
            handle(http, url, ca, &event.payload)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
