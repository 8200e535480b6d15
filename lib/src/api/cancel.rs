//! `cancel` function: `DELETE /generate/{id}`. Cancels the prediction at
//! Replicate, marks the generation `cancelled` and releases its hold.

use axum::{
    Router,
    extract::{Path, State},
    response::Response,
    routing::delete,
};
use http::StatusCode;

use crate::{
    AppState, Problem, lifecycle,
    web::{self, AuthUser},
};

/// The routes of this function.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/generate/{id}", delete(cancel))
}

/// What the `cancel` binary serves.
pub fn router(state: AppState) -> Router {
    web::serve(routes(), state)
}

async fn cancel(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let g = super::status::owned(&st, &id, user).await?;
    lifecycle::cancel(&st, &g).await?;
    let g = lifecycle::load(&st, g.id).await?;
    Ok(web::json(
        StatusCode::OK,
        super::views::generation(&st, &g).await?,
    ))
}
