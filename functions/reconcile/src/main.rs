//! Lambda entry point for the scheduled reconciler (see `picture::reconcile`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    picture::runtime::run_job(
        "reconcile",
        "timer",
        |state, _: serde_json::Value| async move { picture::reconcile::sweep(&state).await },
    )
    .await
}
