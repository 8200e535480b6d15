//! Lambda entry point for the `cancel` routes (see `picture::api::cancel`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::cancel::routes).await
}
