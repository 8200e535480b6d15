//! Lambda entry point for the `images` routes (see `picture::api::images`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::images::routes).await
}
