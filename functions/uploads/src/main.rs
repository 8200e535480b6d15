//! Lambda entry point for the `uploads` route (see `picture::api::uploads`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::uploads::routes).await
}
