//! Lambda entry point for the `batches` routes (see `picture::api::batches`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::batches::routes).await
}
