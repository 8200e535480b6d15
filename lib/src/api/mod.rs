//! The HTTP API: one module per Lambda function, each with `routes()`: its
//! routes, declared once with what each demands (`web::Routes`).

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

use crate::{AppState, web::Routes};

/// Every function's routes: the dev gateway and tests serve them all at once;
/// `docs/openapi.yaml` and `template.yaml` are tested against their table.
pub fn routes() -> Routes {
    generate::routes()
        .merge(status::routes())
        .merge(cancel::routes())
        .merge(webhook::routes())
        .merge(models::routes())
        .merge(images::routes())
        .merge(history::routes())
        .merge(credits::routes())
}

/// Every function's routes in one service.
pub fn all(state: AppState) -> Router {
    routes().serve(state)
}
