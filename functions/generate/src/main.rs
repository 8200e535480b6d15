//! Lambda entry point for the `generate` routes (see `picture::api::generate`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::generate::routes).await
}
