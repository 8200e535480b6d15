//! `models` function: `GET /models` (active catalog, default first) and
//! `GET /models/{id}`. Public; cached per instance and by clients.

use axum::{
    Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::{AppState, Problem, web};

const CACHE_CONTROL: &str = "public, max-age=300";

/// The routes of this function.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models", get(list))
        .route("/api/v1/models/{id}", get(one))
}

/// What the `models` binary serves.
pub fn router(state: AppState) -> Router {
    web::serve(routes(), state)
}

fn cached(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    res
}

async fn list(State(st): State<AppState>) -> Result<Response, Problem> {
    let models = st.models().await?;
    Ok(cached(web::json(StatusCode::OK, json!(*models))))
}

async fn one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = web::path_id(&id, "MODEL_NOT_FOUND", "Model")?;
    let models = st.models().await?;
    let model = models
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| Problem::not_found("MODEL_NOT_FOUND", "Model"))?;
    Ok(cached(axum::Json(model).into_response()))
}
