//! Running a function on Lambda: JSON logs, traces and EMF metrics, state built
//! once per cold start, then the router served by `lambda_http` (HTTP functions)
//! or a handler run per event by `lambda_runtime` (scheduled, notified and
//! deploy-time functions). Once an invocation has answered, its [`deferred`] work is
//! settled and its spans and metrics are flushed: Lambda may freeze the process
//! before the next one.

use std::{future::Future, pin::Pin, task};

use lambda_runtime::{Diagnostic, IntoFunctionResponse, LambdaEvent, LambdaInvocation};
use metrics_cloudwatch_embedded::{Collector, lambda::MetricsLayer};
use tracing::Instrument;

use crate::{AppState, deferred, otel, telemetry, web::Routes};

type BoxError = lambda_runtime::Error;

/// The body of every HTTP function's `main`: build the state once, serve its `routes`.
pub async fn run_function(routes: fn() -> Routes) -> Result<(), lambda_http::Error> {
    telemetry::init();
    let metrics = telemetry::init_metrics()?;
    let state = AppState::from_env().await?;
    serve(
        lambda_http::Adapter::from(routes().serve(state)),
        Some(metrics),
    )
    .await
}

/// The body of an event-driven function's `main` (the scheduled reconciler, the
/// bucket's notifications): build the state once, run `job` per event, each run a
/// server span named `name` with `faas.trigger` = `trigger`. A failed run is the
/// invocation's error (a Lambda diagnostic; asynchronous invocations are retried).
pub async fn run_job<E, F, Fut, T>(
    name: &'static str,
    trigger: &'static str,
    job: F,
) -> Result<(), BoxError>
where
    E: serde::de::DeserializeOwned,
    F: Fn(AppState, E) -> Fut,
    Fut: Future<Output = Result<T, crate::Error>>,
    T: serde::Serialize,
{
    telemetry::init();
    let metrics = telemetry::init_metrics()?;
    let state = AppState::from_env().await?;
    let job = &job;
    // Its metrics (AuditViolations, CaptureRejected, …) are flushed as EMF after each run.
    run_events(
        name,
        trigger,
        Some(metrics),
        move |event: LambdaEvent<E>| {
            let state = state.clone();
            // Boxed: the job's future is deep, and the runtime's own future stays small.
            async move {
                Box::pin(job(state, event.payload))
                    .await
                    .map_err(BoxError::from)
            }
        },
    )
    .await
}

/// Runs `handler` per event of a function without routes, each invocation a server
/// span named `name` with `faas.trigger` = `trigger` (in Lambda's X-Ray trace); its
/// spans, and the metrics when there is a `metrics` collector, are flushed after each.
pub async fn run_events<E, T, F, Fut>(
    name: &'static str,
    trigger: &'static str,
    metrics: Option<&'static Collector>,
    handler: F,
) -> Result<(), BoxError>
where
    E: serde::de::DeserializeOwned,
    T: serde::Serialize,
    F: Fn(LambdaEvent<E>) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let handler = &handler;
    let service = lambda_runtime::service_fn(move |event: LambdaEvent<E>| {
        let span = otel::invocation_span(name, trigger, Some(&event.context));
        handler(event).instrument(span)
    });
    serve(service, metrics).await
}

/// The Lambda runtime around `handler`: the runtime's invocation span (for logs), the
/// deferred work and the traces' flush and, with a collector, the metrics' flush after
/// each invocation.
async fn serve<A, F, R, B, S, D, E>(
    handler: F,
    metrics: Option<&'static Collector>,
) -> Result<(), BoxError>
where
    F: tower::Service<LambdaEvent<A>, Response = R>,
    F::Future: Future<Output = Result<R, F::Error>>,
    F::Error: Into<Diagnostic> + std::fmt::Debug,
    A: for<'de> serde::Deserialize<'de>,
    R: IntoFunctionResponse<B, S>,
    B: serde::Serialize,
    S: futures_util::Stream<Item = Result<D, E>> + Unpin + Send + 'static,
    D: Into<bytes::Bytes> + Send,
    E: Into<BoxError> + Send + std::fmt::Debug,
{
    deferred::after_answers();
    lambda_runtime::Runtime::new(handler)
        .layer(lambda_runtime::layers::TracingLayer::new())
        .layer(tower::layer::layer_fn(AfterAnswer))
        .layer(tower::util::option_layer(metrics.map(MetricsLayer::new)))
        .run()
        .await
}

/// Once an invocation has answered: settles its deferred work ([`deferred::settle`]),
/// then flushes the spans ([`otel::flush`]).
struct AfterAnswer<S>(S);

impl<S> tower::Service<LambdaInvocation> for AfterAnswer<S>
where
    S: tower::Service<LambdaInvocation, Response = (), Error = BoxError>,
{
    type Response = ();
    type Error = BoxError;
    type Future = Flushed<S::Future>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        Flushed::Answering {
            answer: self.0.call(invocation),
        }
    }
}

pin_project_lite::pin_project! {
    /// An invocation being answered, then its deferred work settled and its spans flushed.
    #[project = State]
    enum Flushed<F> {
        Answering { #[pin] answer: F },
        Flushing {
            flush: Pin<Box<dyn Future<Output = ()> + Send>>,
            outcome: Option<Result<(), BoxError>>,
        },
    }
}

impl<F: Future<Output = Result<(), BoxError>>> Future for Flushed<F> {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> task::Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                State::Answering { answer } => {
                    let outcome = std::task::ready!(answer.poll(cx));
                    if deferred::is_idle() && !otel::enabled() {
                        return task::Poll::Ready(outcome);
                    }
                    let flush = Box::pin(async {
                        deferred::settle().await;
                        if otel::enabled() {
                            otel::flush().await;
                        }
                    });
                    let outcome = Some(outcome);
                    self.set(Flushed::Flushing { flush, outcome });
                }
                State::Flushing { flush, outcome } => {
                    std::task::ready!(flush.as_mut().poll(cx));
                    let outcome = outcome.take();
                    return task::Poll::Ready(outcome.unwrap_or(Ok(())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    use std::time::Duration;

    use tower::Service;

    use super::*;

    #[tokio::test]
    async fn an_invocation_ends_once_its_deferred_work_has_settled() {
        deferred::after_answers();
        let counted = Arc::new(AtomicBool::new(false));
        let seen = counted.clone();
        let answer = tower::service_fn(move |_: LambdaInvocation| {
            let seen = seen.clone();
            async move {
                deferred::defer(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    seen.store(true, Ordering::SeqCst);
                });
                Ok::<(), BoxError>(())
            }
        });
        let invocation = LambdaInvocation {
            parts: http::Response::new(()).into_parts().0,
            body: bytes::Bytes::new(),
            context: lambda_runtime::Context::default(),
        };
        AfterAnswer(answer).call(invocation).await.unwrap();
        assert!(
            counted.load(Ordering::SeqCst),
            "the next event came before the count"
        );
    }
}
