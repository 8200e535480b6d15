//! `cancel` function: `DELETE /generate/{id}`. Cancels the prediction at
//! Replicate, marks the generation `cancelled` and releases its hold.

use axum::{
    extract::{Path, State},
    response::Response,
};
use http::{Method, StatusCode};

use crate::web::Problem;
use crate::{
    AppState, lifecycle,
    web::{self, AuthUser, Routes, policy::READ},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("cancel").route(Method::DELETE, "/api/v1/generate/{id}", READ, cancel)
}

async fn cancel(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let g = super::own_generation(&st, &id, user).await?;
    lifecycle::cancel(&st, &g).await?;
    let g = lifecycle::load(&st, g.id).await?;
    let deadline = std::time::Instant::now() + st.cfg.request_budget();
    lifecycle::queue::after(&st, &g, deadline).await;
    Ok(web::json(
        StatusCode::OK,
        super::views::generation(&st, &g).await?,
    ))
}
