//! Lambda entry point for the `account` routes (see `picture::api::account`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::account::routes).await
}
