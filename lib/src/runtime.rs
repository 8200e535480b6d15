//! Running a function on Lambda: JSON logs, state built once per cold start,
//! then the router served by `lambda_http`.

use axum::Router;

use crate::AppState;

/// Initialises JSON logging (level from `RUST_LOG`, default `info`).
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_target(false)
        .without_time()
        .try_init();
}

/// The body of every function's `main`: build the state once, serve `router`.
pub async fn run_function(router: fn(AppState) -> Router) -> Result<(), lambda_http::Error> {
    init_logging();
    let state = AppState::from_env()?;
    lambda_http::run(router(state)).await
}
