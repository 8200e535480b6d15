//! `account` function: the caller's own data. `DELETE /me` deletes it
//! ([`crate::account`]): 202 `{"status": "deleted"}` once done, or
//! `{"status": "deleting"}` when the request's time ran out first (the
//! reconciler finishes it). `POST /me/export` starts a copy of it
//! ([`crate::export`]) and `GET /me/export/{id}` tells where it is, with a
//! download URL once ready.

use std::time::Instant;

use axum::{
    extract::{Path, State},
    response::Response,
};
use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::web::Problem;
use crate::{
    AppState, Error,
    db::exports::{self, Export, ExportStatus},
    web::{
        self, AuthUser, JsonBody, Routes,
        policy::{READ, WRITE},
        problem::FieldError,
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("account")
        .route(Method::DELETE, "/api/v1/me", WRITE, delete_me)
        .route(Method::POST, "/api/v1/me/export", WRITE, start_export)
        .route(Method::GET, "/api/v1/me/export/{id}", READ, export_status)
}

async fn delete_me(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let confirmed = matches!(&body, Value::Object(m)
        if m.len() == 1 && m.get("confirm") == Some(&Value::Bool(true)));
    if !confirmed {
        return Err(Problem::validation(vec![FieldError::new(
            "confirm",
            "must be true (and the only field): this deletes your images and prompts for good",
        )]));
    }
    let budget = st.cfg.request_budget();
    let status = match tokio::time::timeout(budget, crate::account::delete(&st, user)).await {
        Ok(Ok(())) => "deleted",
        Ok(Err(e)) if e.is_transient() => {
            tracing::warn!(%user, error = %e, "account deletion left for the reconciler");
            "deleting"
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => "deleting",
    };
    Ok(web::json(StatusCode::ACCEPTED, Deletion { status }))
}

/// `DELETE /me`: `deleted`, or `deleting` when the reconciler finishes it.
#[derive(Serialize)]
struct Deletion {
    /// Where the deletion stands.
    status: &'static str,
}

/// An export as its user sees it: `url` (a download, valid until
/// `expiresAt`) once ready.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportView {
    /// The export's id (`GET /me/export/{id}`).
    id: Uuid,
    /// `pending`, `ready`, `failed` or `expired`.
    status: ExportStatus,
    /// When it was asked for.
    created_at: DateTime<Utc>,
    /// When it became ready or failed; `null` while pending.
    finished_at: Option<DateTime<Utc>>,
    /// Until when `url` works (a day after it was ready); `null` until ready.
    expires_at: Option<DateTime<Utc>>,
    /// Images in the zip; `null` until ready.
    images: Option<i32>,
    /// The zip's size in bytes; `null` until ready.
    size_bytes: Option<i64>,
    /// A presigned GET of the zip, valid until `expiresAt`; `null` unless ready.
    url: Option<String>,
}

async fn export_view(st: &AppState, e: &Export) -> Result<ExportView, Problem> {
    let url = match (&e.status, &e.storage_key, e.expires_at) {
        (ExportStatus::Ready, Some(key), Some(until)) => {
            let left = (until - Utc::now()).to_std().unwrap_or_default();
            let ttl = left.max(std::time::Duration::from_secs(1));
            Some(
                st.storage
                    .presign_get(key, ttl)
                    .await
                    .map_err(Error::from)?,
            )
        }
        _ => None,
    };
    Ok(ExportView {
        id: e.id,
        status: e.status,
        created_at: e.created_at,
        finished_at: e.finished_at,
        expires_at: e.expires_at,
        images: e.images,
        size_bytes: e.size_bytes,
        url,
    })
}

/// Starts an export of the caller's data (or goes on with the one unfinished)
/// and works on it within the request's time: 202 with where it is.
async fn start_export(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Response, Problem> {
    let deadline = Instant::now() + st.cfg.request_budget();
    let db = st.db.get().await.map_err(Error::from)?;
    let export = exports::pending_or_new(&**db, user).await?;
    drop(db);
    crate::export::make(&st, export.id, deadline).await?;
    let db = st.db.get().await.map_err(Error::from)?;
    let export = exports::get_owned(&**db, export.id, user)
        .await?
        .ok_or_else(missing)?;
    drop(db);
    Ok(web::json(
        StatusCode::ACCEPTED,
        export_view(&st, &export).await?,
    ))
}

fn missing() -> Problem {
    Problem::not_found(crate::Resource::Export)
}

async fn export_status(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = web::path_id(&id, crate::Resource::Export)?;
    let db = st.db.get().await.map_err(Error::from)?;
    let export = exports::get_owned(&**db, id, user)
        .await?
        .ok_or_else(missing)?;
    drop(db);
    Ok(web::json(StatusCode::OK, export_view(&st, &export).await?))
}
