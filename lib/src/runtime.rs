//! Running a function on Lambda: JSON logs, EMF metrics, state built once per
//! cold start, then the router served by `lambda_http` (HTTP functions) or a
//! job run per event by `lambda_runtime` (scheduled functions).

use crate::{AppState, telemetry, web::Routes};

/// The body of every HTTP function's `main`: build the state once, serve its `routes`.
pub async fn run_function(routes: fn() -> Routes) -> Result<(), lambda_http::Error> {
    telemetry::init_logging();
    let metrics = telemetry::init_metrics()?;
    let state = AppState::from_env().await?;
    metrics_cloudwatch_embedded::lambda::service::run_http(metrics, routes().serve(state)).await
}

/// The body of a scheduled function's `main`: build the state once, run `job` per event.
pub async fn run_job<F, Fut, T>(job: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(AppState) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::Error>>,
    T: serde::Serialize,
{
    telemetry::init_logging();
    let metrics = telemetry::init_metrics()?;
    let state = AppState::from_env().await?;
    let job = &job;
    // Its metrics (AuditViolations, CaptureRejected, …) are flushed as EMF after each run.
    metrics_cloudwatch_embedded::lambda::service::run(
        metrics,
        lambda_runtime::service_fn(move |_: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let state = state.clone();
            async move {
                // Boxed: the job's future is deep, and the runtime's own future stays small.
                // A failed run is reported as the invocation's error (a Lambda diagnostic).
                Box::pin(job(state))
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
        }),
    )
    .await
}
