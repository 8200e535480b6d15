//! Lambda entry point for the `payments` routes (see `picture::api::payments`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::payments::routes).await
}
