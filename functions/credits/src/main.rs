//! Lambda entry point for the `credits` routes (see `picture::api::credits`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::credits::routes).await
}
