//! `status` function: `GET /generate/{id}/status`. An open generation is
//! checked with Replicate (at most once a second), so polling clients see it
//! finish even when the webhook is late or lost. The check has a time budget:
//! when a dependency hangs, the answer is the state the generation has.

use axum::{
    extract::{Path, State},
    response::Response,
};
use http::{Method, StatusCode};
use std::time::{Duration, Instant};

use crate::web::Problem;
use crate::{
    AppState, lifecycle,
    web::{self, AuthUser, Routes, policy::READ},
};

/// How long a status request may spend asking Replicate and completing:
/// the answer comes within about this, whatever S3 or Replicate do.
const POLL_BUDGET: Duration = Duration::from_secs(4);

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("status").route(Method::GET, "/api/v1/generate/{id}/status", READ, status)
}

async fn status(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let mut g = super::own_generation(&st, &id, user).await?;
    if !g.status.is_terminal() {
        let deadline = Instant::now() + POLL_BUDGET;
        lifecycle::poll(&st, &g, deadline).await?;
        g = lifecycle::load(&st, g.id).await?;
        // Its end frees a slot for the user's queued batch items (a short window of its own).
        lifecycle::queue::after(&st, &g, Instant::now() + POLL_BUDGET).await;
    }
    Ok(web::json(
        StatusCode::OK,
        super::views::generation(&st, &g).await?,
    ))
}
