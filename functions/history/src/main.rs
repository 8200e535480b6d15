//! Lambda entry point for the `history` routes (see `picture::api::history`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    picture::runtime::run_function(picture::api::history::routes).await
}
