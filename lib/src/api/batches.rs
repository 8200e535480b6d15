//! `batches` function: `POST /batches` (1 to 10 prompts with shared
//! settings, admitted all or nothing; `Idempotency-Key` honoured),
//! `GET /batches` (newest first, by cursor), `GET /batches/{id}` (items with
//! their generation views and counts), `POST /batches/{id}/cancel`,
//! `POST /batches/{id}/retry` (the failed items) and `DELETE /batches/{id}`.
//! The rules live in [`crate::batches`].

use std::{collections::HashMap, time::Instant};

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::views::GenerationView;
use crate::web::Problem;
use crate::{
    AppState, Error,
    batches::{self, BatchStatus, Counts, MAX_ITEMS},
    db::{
        batches::{self as rows, Batch, BatchRequest, NewBatch},
        generations::{Generation, NewGeneration, RequestKey, Status},
        images,
        models::Model,
    },
    lifecycle,
    web::{
        self, ApiBase, AuthUser, Idempotency, JsonBody, Routes,
        policy::{READ, WRITE, WRITE_ONCE},
        problem::FieldError,
        text::{Checker, Text},
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("batches")
        .route(Method::POST, "/api/v1/batches", WRITE_ONCE, create_batch)
        .route(Method::GET, "/api/v1/batches", READ, list)
        .route(Method::GET, "/api/v1/batches/{id}", READ, one)
        .route(Method::POST, "/api/v1/batches/{id}/cancel", READ, cancel)
        .route(
            Method::POST,
            "/api/v1/batches/{id}/retry",
            WRITE,
            retry_failed,
        )
        .route(Method::DELETE, "/api/v1/batches/{id}", READ, remove)
}

/// The settings every item shares (a subset of `POST /generate`'s fields).
const SETTINGS: [&str; 7] = [
    "modelId",
    "width",
    "height",
    "steps",
    "guidanceScale",
    "style",
    "numOutputs",
];
/// The fields of one prompt.
const ITEM: [&str; 3] = ["prompt", "negativePrompt", "seed"];

/// A batch request checked against the contract and the model.
struct Parsed {
    name: Option<String>,
    settings: Map<String, Value>,
    /// The items as the generations they become, with the texts moderation checks.
    items: Vec<(NewGeneration, Vec<String>)>,
}

/// Checks a batch request: its own fields, then each item as the generate
/// request it becomes (the shared settings with its own fields), errors named
/// where they were written (`settings.width`, `prompts[2].prompt`).
fn parse(body: &Value, models: &[Model], user: Uuid) -> Result<Parsed, Problem> {
    let mut c = Checker::of(body).map_err(Problem::validation)?;
    let name = c.string("name", Text::Free, 0, 200);
    let settings = match c.field("settings") {
        None => Map::new(),
        Some(Value::Object(s)) => s.clone(),
        Some(_) => {
            c.fail("settings", "must be an object");
            Map::new()
        }
    };
    for key in settings.keys().filter(|k| !SETTINGS.contains(&k.as_str())) {
        c.fail(&format!("settings.{key}"), "is not a known field");
    }
    let prompts = match c.field("prompts") {
        Some(Value::Array(p)) if (1..=MAX_ITEMS).contains(&p.len()) => p.as_slice(),
        Some(Value::Array(_)) => {
            c.fail("prompts", format!("must hold 1 to {MAX_ITEMS} prompts"));
            &[]
        }
        None => {
            c.fail("prompts", "is required");
            &[]
        }
        Some(_) => {
            c.fail("prompts", "must be an array");
            &[]
        }
    };
    c.unknown_fields();
    let mut errors = std::mem::take(&mut c.errors);
    let mut items = Vec::with_capacity(prompts.len());
    for (i, item) in prompts.iter().enumerate() {
        match parse_item(i, item, &settings, models, user) {
            Ok(Some(parsed)) => items.push(parsed),
            Ok(None) => {}
            Err(e) => errors.extend(e),
        }
    }
    if items.is_empty() && errors.is_empty() {
        return Err(Error::NotFound(crate::Resource::Model).into());
    }
    // A wrong shared setting is said once, not once per item.
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert((e.field.clone(), e.message.clone())));
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    Ok(Parsed {
        name,
        settings,
        items,
    })
}

/// Item `i` as a generation and its texts; `None` when its model is unknown.
fn parse_item(
    i: usize,
    item: &Value,
    settings: &Map<String, Value>,
    models: &[Model],
    user: Uuid,
) -> Result<Option<(NewGeneration, Vec<String>)>, Vec<FieldError>> {
    let Value::Object(own) = item else {
        return Err(vec![FieldError::new(
            format!("prompts[{i}]"),
            "must be an object",
        )]);
    };
    let unknown = own.keys().filter(|k| !ITEM.contains(&k.as_str()));
    let mut errors: Vec<_> = unknown
        .map(|k| FieldError::new(format!("prompts[{i}].{k}"), "is not a known field"))
        .collect();
    let mut merged = settings.clone();
    let known = own.iter().filter(|(k, _)| ITEM.contains(&k.as_str()));
    merged.extend(known.map(|(k, v)| (k.clone(), v.clone())));
    let place = |e: FieldError| match ITEM.contains(&e.field.as_str()) {
        true => FieldError::new(format!("prompts[{i}].{}", e.field), e.message),
        false => FieldError::new(format!("settings.{}", e.field), e.message),
    };
    let checked = super::generate::check(&Value::Object(merged)).and_then(|req| {
        let model = match req.model_id {
            Some(id) => models.iter().find(|m| m.id == id),
            None => models.iter().find(|m| m.is_default).or(models.first()),
        };
        let Some(model) = model else { return Ok(None) };
        let texts = [
            Some(&req.prompt),
            req.negative_prompt.as_ref(),
            req.style.as_ref(),
        ];
        let texts = texts.into_iter().flatten().cloned().collect();
        super::generate::apply_model(&req, model, user).map(|g| Some((g, texts)))
    });
    match checked {
        Ok(parsed) if errors.is_empty() => Ok(parsed),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.extend(e.into_iter().map(place));
            Err(errors)
        }
    }
}

/// An item of a batch: its index and current run.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemView {
    /// The prompt's place in `prompts` (0 to 9).
    index: i32,
    /// The item's current run (a retry makes a new one).
    generation_id: Uuid,
    /// Its current run's status.
    status: Status,
    /// Its current run, as `GET /generate/{id}/status` shows it.
    generation: GenerationView,
}

/// A batch as clients see it (`items` only on the batch's own views).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchView {
    /// The batch's id (`/batches/{id}`).
    id: Uuid,
    /// The caller's name for it; `null` when none.
    name: Option<String>,
    /// Where it is, from its items' current runs.
    status: BatchStatus,
    /// The shared settings as given (`{}` when none).
    settings: Value,
    /// How many items are in which state.
    counts: Counts,
    /// The items in prompt order, each with its current run.
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<ItemView>>,
    /// When it was admitted.
    created_at: DateTime<Utc>,
    /// When its user cancelled it; `null` if never.
    cancelled_at: Option<DateTime<Utc>>,
}

/// The view of a batch whose items' current runs are `runs` (in item order).
fn view(b: &Batch, runs: &[(i32, Generation)], items: Option<Vec<ItemView>>) -> BatchView {
    let counts = Counts::of(runs.iter().map(|(_, g)| g.status));
    BatchView {
        id: b.id,
        name: b.request.name.clone(),
        status: counts.status(b.cancelled_at.is_some()),
        settings: b.request.settings.clone(),
        counts,
        items,
        created_at: b.created_at,
        cancelled_at: b.cancelled_at,
    }
}

/// The batch with every item's generation view.
async fn full(st: &AppState, b: &Batch) -> Result<BatchView, Problem> {
    let runs = batches::items(st, b).await?;
    let ids: Vec<Uuid> = runs.iter().map(|(_, g)| g.id).collect();
    let db = st.db.get().await.map_err(Error::from)?;
    let mut stored: HashMap<Uuid, Vec<images::Image>> = HashMap::new();
    for img in images::for_generations(&**db, &ids).await? {
        stored.entry(img.file.generation_id).or_default().push(img);
    }
    let free = st.credits.free_remaining(&**db, b.user_id).await?;
    drop(db);
    let mut items = Vec::with_capacity(runs.len());
    for (index, g) in &runs {
        let imgs = stored.remove(&g.id).unwrap_or_default();
        items.push(ItemView {
            index: *index,
            generation_id: g.id,
            status: g.status,
            generation: super::views::render(st, g, &imgs, free).await?,
        });
    }
    Ok(view(b, &runs, Some(items)))
}

/// The caller's batch named by a path id, or 404 (also for another user's or a deleted one).
async fn own_batch(st: &AppState, raw_id: &str, user: Uuid) -> Result<Batch, Problem> {
    let id = web::path_id(raw_id, crate::Resource::Batch)?;
    let db = st.db.get().await.map_err(Error::from)?;
    Ok(rows::get_owned(&**db, id, user, false)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Batch))?)
}

/// Starts what the user's free slots allow, within the request's budget.
async fn start_queued(st: &AppState, user: Uuid, began: Instant) {
    let deadline = began + st.cfg.request_budget();
    if let Err(e) = lifecycle::queue::start_next(st, user, deadline).await {
        tracing::warn!(%user, error = %e, "queued items not started; left to the reconciler");
    }
}

async fn create_batch(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Idempotency(key): Idempotency,
    ApiBase(api_base): ApiBase,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let began = Instant::now();
    if let Some(k) = &key
        && let Some(b) = earlier(&st, user, k).await?
    {
        return Ok(web::json(StatusCode::CREATED, full(&st, &b).await?));
    }
    let models = st.models().await?;
    let parsed = parse(&body, &models, user)?;
    // Before anything is held: a refused prompt costs nothing and leaves nothing behind.
    let texts: Vec<&str> = parsed
        .items
        .iter()
        .flat_map(|(_, t)| t.iter().map(String::as_str))
        .collect();
    crate::moderation::check_texts(&st, user, &texts).await?;
    let batch = NewBatch {
        id: Uuid::new_v4(),
        user_id: user,
        request: BatchRequest {
            name: parsed.name,
            settings: Value::Object(parsed.settings),
        },
        api_base,
        idempotency: key.clone(),
    };
    let items: Vec<NewGeneration> = parsed
        .items
        .into_iter()
        .map(|(g, _)| NewGeneration {
            batch_id: Some(batch.id),
            ..g
        })
        .collect();
    match batches::admit(&st, &batch, &items).await {
        // A concurrent request with the same key recorded its batch first.
        Err(Error::IdempotencyKeyTaken) => {
            let k = key.as_ref().ok_or(Error::IdempotencyKeyTaken)?;
            let b = earlier(&st, user, k)
                .await?
                .ok_or(Error::IdempotencyKeyTaken)?;
            return Ok(web::json(StatusCode::CREATED, full(&st, &b).await?));
        }
        other => other?,
    }
    start_queued(&st, user, began).await;
    let b = rows::get_owned(
        &**st.db.get().await.map_err(Error::from)?,
        batch.id,
        user,
        false,
    )
    .await?
    .ok_or(Error::NotFound(crate::Resource::Batch))?;
    Ok(web::json(StatusCode::CREATED, full(&st, &b).await?))
}

/// The user's batch recorded earlier with this key; 409 if the key came with another body.
async fn earlier(st: &AppState, user: Uuid, key: &RequestKey) -> Result<Option<Batch>, Problem> {
    let db = st.db.get().await.map_err(Error::from)?;
    match rows::get_by_key(&**db, user, &key.key).await? {
        Some(b) if b.request_hash.as_deref() != Some(key.hash.as_str()) => {
            Err(Error::IdempotencyKeyReused.into())
        }
        found => Ok(found),
    }
}

async fn list(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<web::cursor::PageQuery>,
) -> Result<Response, Problem> {
    let (limit, cursor) = q.read()?;
    let db = st.db.get().await.map_err(Error::from)?;
    let mut page = rows::page(&**db, user, cursor, limit + 1).await?;
    let next = web::cursor::next_page(&mut page, limit, |b| (b.created_at, b.id));
    let ids: Vec<Uuid> = page.iter().map(|b| b.id).collect();
    let mut runs: HashMap<Uuid, Vec<(i32, Generation)>> = HashMap::new();
    for (batch, index, g) in rows::items(&**db, &ids).await? {
        runs.entry(batch).or_default().push((index, g));
    }
    let data: Vec<BatchView> = page
        .iter()
        .map(|b| view(b, runs.get(&b.id).map_or(&[], Vec::as_slice), None))
        .collect();
    Ok(web::json(
        StatusCode::OK,
        super::views::Page {
            data,
            next_cursor: next,
        },
    ))
}

async fn one(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let b = own_batch(&st, &id, user).await?;
    Ok(web::json(StatusCode::OK, full(&st, &b).await?))
}

/// What a batch route does to the caller's batch.
enum Action {
    Cancel,
    Retry,
    Delete,
}

/// Does `action` to the caller's batch `id`, then starts what the user's
/// freed slots allow; returns the batch as it is now.
async fn act(st: &AppState, user: Uuid, id: &str, action: Action) -> Result<Batch, Problem> {
    let began = Instant::now();
    let b = own_batch(st, id, user).await?;
    match action {
        Action::Cancel => batches::cancel(st, &b).await?,
        Action::Retry => {
            batches::retry(st, &b).await?;
        }
        Action::Delete => batches::delete(st, &b).await?,
    }
    start_queued(st, user, began).await;
    Ok(b)
}

async fn cancel(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    act(&st, user, &id, Action::Cancel).await?;
    let b = own_batch(&st, &id, user).await?;
    Ok(web::json(StatusCode::OK, full(&st, &b).await?))
}

async fn retry_failed(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    act(&st, user, &id, Action::Retry).await?;
    let b = own_batch(&st, &id, user).await?;
    Ok(web::json(StatusCode::OK, full(&st, &b).await?))
}

async fn remove(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    act(&st, user, &id, Action::Delete).await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_settings_and_item_fields_are_fields_of_a_generate_request() {
        for field in SETTINGS.iter().chain(&ITEM) {
            let body = serde_json::json!({ *field: null, "notAField": 1 });
            let errors = super::super::generate::check(&body).unwrap_err();
            let unknown: Vec<_> = errors
                .iter()
                .filter(|e| e.message == "is not a known field")
                .map(|e| e.field.as_str())
                .collect();
            assert_eq!(unknown, ["notAField"], "{field}");
        }
    }
}
