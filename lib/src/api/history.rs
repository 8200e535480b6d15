//! `history` function: `GET /generate/history?cursor=|page=&limit=&status=` —
//! the caller's generations, newest first, each with its image, charge and
//! credits used → `{data, total, page, limit, totalPages, nextCursor}`.
//!
//! `cursor` (a previous page's `nextCursor`) costs the same at any depth;
//! `page` stays for existing clients, up to [`MAX_OFFSET`] generations deep.
//! `total` is read from the user's counters (`generation_counts`), never counted.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    response::Response,
};
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::web::Problem;
use crate::{
    AppState,
    db::{
        generations::{self, Start},
        images,
    },
    web::{self, AuthUser, Routes, policy::READ, problem::FieldError, text},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("history").route(Method::GET, "/api/v1/generate/history", READ, history)
}

/// The deepest `page` serves: `(page - 1) * limit` at most this; beyond, `cursor`.
pub const MAX_OFFSET: i64 = 10_000;

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(flatten)]
    list: web::cursor::PageQuery,
    page: Option<String>,
    status: Option<String>,
}

async fn history(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let (limit, cursor) = q.list.read_into(&mut errors);
    let [page, status] = text::query_params(&mut errors, [("page", q.page), ("status", q.status)]);
    let by_page = page.as_deref().is_some_and(|p| !p.is_empty());
    let page = text::int_param(&mut errors, "page", page.as_deref(), 1, 1_000_000);
    if by_page && cursor.is_some() {
        errors.push(FieldError::new(
            "cursor",
            "cannot be given with page: follow nextCursor, or ask by page",
        ));
    } else if (page - 1) * limit > MAX_OFFSET {
        errors.push(FieldError::new(
            "page",
            format!(
                "(page - 1) * limit must be at most {MAX_OFFSET}; use cursor (nextCursor) to go further"
            ),
        ));
    }
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

    let start = match cursor {
        Some(_) => Start::After(cursor),
        None => Start::Offset((page - 1) * limit),
    };
    let db = st.db.get().await.map_err(crate::Error::from)?;
    let (mut rows, total) = tokio::try_join!(
        generations::page(&**db, user, status, start, limit + 1),
        generations::count(&**db, user, status),
    )?;
    let next = web::cursor::next_page(&mut rows, limit, |g| (g.created_at, g.id));
    let ids: Vec<_> = rows.iter().map(|g| g.id).collect();
    let mut by_generation: HashMap<_, Vec<_>> = HashMap::new();
    for i in images::for_generations(&**db, &ids).await? {
        by_generation
            .entry(i.file.generation_id)
            .or_default()
            .push(i);
    }
    let free = st.credits.free_remaining(&**db, user).await?;
    drop(db);
    let mut data = Vec::with_capacity(rows.len());
    for g in &rows {
        data.push(
            super::views::render(
                &st,
                g,
                &by_generation.remove(&g.id).unwrap_or_default(),
                free,
            )
            .await?,
        );
    }
    let total_pages = (total + limit - 1) / limit;
    // A page asked by cursor has no number.
    let page = cursor.is_none().then_some(page);
    Ok(web::json(
        StatusCode::OK,
        super::views::HistoryPage {
            entries: super::views::Page {
                data,
                next_cursor: next,
            },
            total,
            page,
            limit,
            total_pages,
        },
    ))
}
