//! Lambda entry point for the `status` routes (see `picture::api::status`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::status::routes).await
}
