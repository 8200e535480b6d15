//! `images` function: the caller's gallery. `GET /images` (newest first,
//! `?limit=&cursor=&favorites=true` → `{data, nextCursor}`), `GET`, `PATCH`
//! (`{isFavorite}`) and `DELETE /images/{id}` (the S3 objects, image and
//! thumbnail, then the row; the generation remembers that its image was deleted).

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::web::Problem;
use crate::{
    AppState,
    db::images,
    web::{self, AuthUser, JsonBody, Routes, policy::READ, problem::FieldError, text},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("images")
        .route(Method::GET, "/api/v1/images", READ, list)
        .route(Method::GET, "/api/v1/images/{id}", READ, one)
        .route(Method::PATCH, "/api/v1/images/{id}", READ, update)
        .route(Method::DELETE, "/api/v1/images/{id}", READ, remove)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(flatten)]
    page: web::cursor::PageQuery,
    favorites: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let (limit, cursor) = q.page.read_into(&mut errors);
    let [favorites] = text::query_params(&mut errors, [("favorites", q.favorites)]);
    let favorites = match favorites.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            errors.push(FieldError::new("favorites", "must be true or false"));
            false
        }
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let db = st.db.get().await.map_err(crate::Error::from)?;
    let mut rows = images::list(&**db, user, favorites, cursor, limit + 1).await?;
    drop(db);
    let next = web::cursor::next_page(&mut rows, limit, |i| (i.created_at, i.id));
    let mut data = Vec::with_capacity(rows.len());
    for img in &rows {
        data.push(super::views::image(&st, img).await?);
    }
    Ok(web::json(
        StatusCode::OK,
        super::views::Page {
            data,
            next_cursor: next,
        },
    ))
}

fn image_id(raw: &str) -> Result<Uuid, Problem> {
    web::path_id(raw, crate::Resource::Image)
}

fn missing() -> Problem {
    Problem::not_found(crate::Resource::Image)
}

async fn one(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let img = owned(&st, image_id(&id)?, user).await?;
    Ok(web::json(
        StatusCode::OK,
        super::views::image(&st, &img).await?,
    ))
}

/// The caller's image, or 404 (also for another user's).
async fn owned(st: &AppState, id: Uuid, user: Uuid) -> Result<images::Image, Problem> {
    let db = st.db.get().await.map_err(crate::Error::from)?;
    images::get_owned(&**db, id, user)
        .await?
        .ok_or_else(missing)
}

async fn update(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let id = image_id(&id)?;
    let favorite = match &body {
        Value::Object(m) if m.len() == 1 => m.get("isFavorite").and_then(Value::as_bool),
        _ => None,
    }
    .ok_or_else(|| {
        Problem::validation(vec![FieldError::new(
            "isFavorite",
            "the body must be {\"isFavorite\": true|false}",
        )])
    })?;
    let db = st.db.get().await.map_err(crate::Error::from)?;
    if !images::set_favorite(&**db, id, user, favorite).await? {
        return Err(missing());
    }
    drop(db);
    let img = owned(&st, id, user).await?;
    Ok(web::json(
        StatusCode::OK,
        super::views::image(&st, &img).await?,
    ))
}

async fn remove(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = image_id(&id)?;
    let img = owned(&st, id, user).await?;
    if !crate::images::delete(&st, &img).await? {
        return Err(missing()); // deleted by a concurrent request
    }
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
