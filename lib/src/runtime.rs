//! Running a function on Lambda: JSON logs, state built once per cold start,
//! then the router served by `lambda_http` (HTTP functions) or a job run per
//! event by `lambda_runtime` (scheduled functions).

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

/// The body of a scheduled function's `main`: build the state once, run `job` per event.
pub async fn run_job<F, Fut, T>(job: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(AppState) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::Problem>>,
    T: serde::Serialize,
{
    init_logging();
    let state = AppState::from_env()?;
    let job = &job;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let state = state.clone();
            async move {
                // Boxed: the job's future is deep, and the runtime's own future stays small.
                Box::pin(job(state))
                    .await
                    .map_err(|p| lambda_runtime::Error::from(format!("{}: {}", p.code, p.detail)))
            }
        },
    ))
    .await
}
