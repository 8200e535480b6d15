//! Lambda entry point for the `webhook` routes (see `picture::api::webhook`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::webhook::routes).await
}
