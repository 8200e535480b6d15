//! Lambda entry point for deploy-time migrations (see `picture::deploy`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use picture::deploy::{CustomResourceEvent, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    picture::telemetry::init_logging();
    let database_url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is required")?;
    let http = reqwest::Client::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<CustomResourceEvent>| {
        let (http, url) = (&http, &database_url);
        async move { handle(http, url, &event.payload).await.map_err(Error::from) }
    }))
    .await
}
