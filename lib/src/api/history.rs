//! `history` function: `GET /generate/history?page=&limit=&status=` — the
//! caller's generations, newest first, each with its image, charge and
//! credits used → `{data, total, page, limit, totalPages}`.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    response::Response,
};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::{
    AppState, Problem,
    db::{generations, images},
    web::{self, AuthUser, Routes, policy::READ, problem::FieldError, text},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("history").route(Method::GET, "/api/v1/generate/history", READ, history)
}

#[derive(Deserialize)]
struct HistoryQuery {
    page: Option<String>,
    limit: Option<String>,
    status: Option<String>,
}

async fn history(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let [page, limit, status] = text::query_params(
        &mut errors,
        [("page", q.page), ("limit", q.limit), ("status", q.status)],
    );
    let page = text::int_param(&mut errors, "page", page.as_deref(), 1, 1_000_000);
    let limit = text::int_param(&mut errors, "limit", limit.as_deref(), 20, 100);
    let status = match status.as_deref() {
        None | Some("") => None,
        Some(s) => generations::Status::from_name(s).or_else(|| {
            errors.push(FieldError::new(
                "status",
                "must be pending, processing, completed, failed or cancelled",
            ));
            None
        }),
    };
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }

    let db = st.db.get().await.map_err(crate::Error::from)?;
    let (rows, total) = generations::page(&**db, user, status, (page - 1) * limit, limit).await?;
    let ids: Vec<_> = rows.iter().map(|g| g.id).collect();
    let mut by_generation: HashMap<_, _> = images::for_generations(&**db, &ids)
        .await?
        .into_iter()
        .map(|i| (i.file.generation_id, i))
        .collect();
    let free = st.credits.free_remaining(&**db, user).await?;
    drop(db);
    let mut data = Vec::with_capacity(rows.len());
    for g in &rows {
        data.push(super::views::render(&st, g, by_generation.remove(&g.id).as_ref(), free).await?);
    }
    let total_pages = (total + limit - 1) / limit;
    Ok(web::json(
        StatusCode::OK,
        json!({"data": data, "total": total, "page": page, "limit": limit, "totalPages": total_pages}),
    ))
}
