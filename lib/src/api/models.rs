//! `models` function: `GET /models` (active catalog, default first) and
//! `GET /models/{id}`. Public; cached per instance and by clients.

use axum::{
    extract::{Path, State},
    response::Response,
};
use http::{HeaderValue, Method, StatusCode, header};

use crate::web::Problem;
use crate::{
    AppState,
    web::{self, Routes, policy::Access},
};

const CACHE_CONTROL: &str = "public, max-age=300";

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("models")
        .route(Method::GET, "/api/v1/models", Access::Public, list)
        .route(Method::GET, "/api/v1/models/{id}", Access::Public, one)
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
    Ok(cached(web::json(StatusCode::OK, &*models)))
}

async fn one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = web::path_id(&id, crate::Resource::Model)?;
    let models = st.models().await?;
    let model = models
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| Problem::not_found(crate::Resource::Model))?;
    Ok(cached(web::json(StatusCode::OK, model)))
}
