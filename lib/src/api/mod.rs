//! The HTTP API: one module per Lambda function, each with `routes()` (its
//! routes, for merging) and `router(state)` (what its binary serves).

pub mod cancel;
pub mod credits;
pub mod generate;
pub mod history;
pub mod images;
pub mod models;
pub mod status;
pub mod views;
pub mod webhook;

use axum::Router;

use crate::{AppState, web};

/// Every function's routes in one service: the local dev gateway and tests.
pub fn all(state: AppState) -> Router {
    let routes = generate::routes()
        .merge(status::routes())
        .merge(cancel::routes())
        .merge(webhook::routes())
        .merge(models::routes())
        .merge(images::routes())
        .merge(history::routes())
        .merge(credits::routes());
    web::serve(routes, state)
}
