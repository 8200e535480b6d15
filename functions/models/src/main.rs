//! Lambda entry point for the `models` routes (see `picture::api::models`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::models::routes).await
}
