//! `credits` function: the caller's balance (`GET /credits/balance`), the
//! packs on sale (`GET /credits/packs`), buying one through Stripe Checkout
//! (`POST /credits/checkout`, then `GET /credits/checkout/{sessionId}`, which
//! also fulfils a paid session whose webhook is late) and the ledger's
//! entries (`GET /credits/transactions`, newest first, cursor pages).

use axum::{
    Extension,
    extract::{Path, Query, State},
    response::Response,
};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::web::Problem;
use crate::{
    AppState,
    db::{generations::RequestKey, ledger, purchases::Purchase},
    purchases,
    web::{
        self, ApiBase, AuthUser, JsonBody, Routes,
        policy::{Access, Limit, READ},
        problem::FieldError,
        text::{self, Checker, Text},
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    let checkout = Access::User {
        limit: Limit::Generate,
        idempotent: true,
    };
    Routes::new("credits")
        .route(Method::GET, "/api/v1/credits/balance", READ, balance)
        .route(Method::GET, "/api/v1/credits/packs", READ, packs)
        .route(
            Method::POST,
            "/api/v1/credits/checkout",
            checkout,
            start_checkout,
        )
        .route(
            Method::GET,
            "/api/v1/credits/checkout/{sessionId}",
            READ,
            checkout_status,
        )
        .route(
            Method::GET,
            "/api/v1/credits/transactions",
            READ,
            transactions,
        )
}

async fn balance(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Response, Problem> {
    let db = st.db.get().await.map_err(crate::Error::from)?;
    let b = st.credits.balance(&**db, user).await?;
    let free = st.credits.free_remaining(&**db, user).await?;
    Ok(web::json(
        StatusCode::OK,
        json!({
            "balance": b.balance,
            "totalEarned": b.total_earned,
            "totalSpent": b.total_spent,
            "creditsPerGeneration": st.credits.cost,
            "freeGenerationsLimit": st.credits.free_generations,
            "freeGenerationsRemaining": free,
            "enforced": st.credits.enforced,
        }),
    ))
}

async fn packs(State(st): State<AppState>, AuthUser(_): AuthUser) -> Result<Response, Problem> {
    Ok(web::json(StatusCode::OK, purchases::packs(&st).await?))
}

/// A purchase as its owner sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckoutView {
    session_id: String,
    checkout_url: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    pack_id: String,
    /// `open`, `paid`, `granted`, `expired` or `failed`.
    status: &'static str,
    credits: i32,
}

impl From<Purchase> for CheckoutView {
    fn from(p: Purchase) -> Self {
        CheckoutView {
            session_id: p.session_id,
            checkout_url: p.checkout_url,
            expires_at: p.expires_at,
            pack_id: p.pack_id,
            status: p.status.as_str(),
            credits: p.credits,
        }
    }
}

async fn start_checkout(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    key: Option<Extension<RequestKey>>,
    ApiBase(api_base): ApiBase,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let Value::Object(map) = &body else {
        return Err(Problem::validation(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    };
    let mut c = Checker::new(map);
    for k in map.keys().filter(|k| k.as_str() != "packId") {
        c.errors
            .push(FieldError::new(k.clone(), "is not a known field"));
    }
    let pack = c.string("packId", Text::Strict, 1, 100);
    if pack.is_none() && c.errors.iter().all(|e| e.field != "packId") {
        c.fail("packId", "is required");
    }
    let (Some(pack), true) = (pack, c.errors.is_empty()) else {
        return Err(Problem::validation(c.errors));
    };
    let key = key.map(|Extension(k)| k);
    let purchase = purchases::checkout(&st, user, &pack, key.as_ref(), api_base.as_deref()).await?;
    Ok(web::json(StatusCode::CREATED, CheckoutView::from(purchase)))
}

async fn checkout_status(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Path(session_id): Path<String>,
) -> Result<Response, Problem> {
    // Stripe ids are short and plain: anything else names no purchase.
    let plain = session_id.len() <= 255
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain {
        return Err(crate::Error::PurchaseNotFound.into());
    }
    let purchase = purchases::status(&st, user, &session_id).await?;
    Ok(web::json(StatusCode::OK, CheckoutView::from(purchase)))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn transactions(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let [limit, cursor] =
        text::query_params(&mut errors, [("limit", q.limit), ("cursor", q.cursor)]);
    let limit = text::int_param(&mut errors, "limit", limit.as_deref(), 20, 100);
    let cursor = web::cursor::param(&mut errors, cursor.as_deref());
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let db = st.db.get().await.map_err(crate::Error::from)?;
    let mut rows = ledger::page(&**db, user, cursor, limit + 1).await?;
    let next = web::cursor::next_page(&mut rows, limit, |t| (t.created_at, t.id));
    Ok(web::json(
        StatusCode::OK,
        json!({"data": rows, "nextCursor": next}),
    ))
}
