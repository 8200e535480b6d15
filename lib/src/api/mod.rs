//! The HTTP API: one module per Lambda function, each with `routes()`: its
//! routes, declared once with what each demands (`web::Routes`).
//!
//! The edge: may import the domain, `db` rows, `web` and the platform; only
//! the functions (`functions/<name>`) import it.

pub mod account;
pub mod batches;
pub mod cancel;
pub mod credits;
pub mod generate;
pub mod history;
pub mod images;
pub mod models;
pub mod payments;
pub mod status;
pub mod uploads;
pub mod views;
pub mod webhook;

use axum::Router;
use uuid::Uuid;

use crate::web::Problem;
use crate::{
    AppState, Error,
    db::generations::{self, Generation},
    web::{self, Routes},
};

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
        .merge(uploads::routes())
        .merge(payments::routes())
        .merge(account::routes())
        .merge(batches::routes())
}

/// Every function's routes in one service.
pub fn all(state: AppState) -> Router {
    routes().serve(state)
}

/// The caller's generation named by a path id, or 404 (also for another user's).
async fn own_generation(st: &AppState, raw_id: &str, user: Uuid) -> Result<Generation, Problem> {
    let id = web::path_id(raw_id, crate::Resource::Generation)?;
    let db = st.db.get().await.map_err(Error::from)?;
    Ok(generations::get_owned(&**db, id, user)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Generation))?)
}
