//! `credits` function: the caller's balance (`GET /credits/balance`), the
//! packs on sale (`GET /credits/packs`), buying one through Stripe Checkout
//! (`POST /credits/checkout`, then `GET /credits/checkout/{sessionId}`, which
//! also fulfils a paid session whose webhook is late) and the ledger's
//! entries (`GET /credits/transactions`, newest first, cursor pages).

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use http::{Method, StatusCode};
use serde::Serialize;

use crate::web::Problem;
use crate::{
    AppState,
    db::{ledger, purchases::Purchase},
    purchases,
    web::{
        self, ApiBase, AuthUser, Idempotency, JsonBody, Routes,
        policy::{READ, WRITE_ONCE},
        text::{Checker, Text},
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("credits")
        .route(Method::GET, "/api/v1/credits/balance", READ, balance)
        .route(Method::GET, "/api/v1/credits/packs", READ, packs)
        .route(
            Method::POST,
            "/api/v1/credits/checkout",
            WRITE_ONCE,
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

/// `GET /credits/balance`: the caller's balance and the freemium rules.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalanceView {
    /// The provider's balance (credits held for open generations not deducted); negative
    /// after a refund or dispute took back credits already spent.
    balance: i64,
    /// Credits ever granted, bought or reinstated, less those taken back.
    total_earned: i64,
    /// Credits ever charged for generations, less refunds.
    total_spent: i64,
    /// What one output costs once the free generations are used.
    credits_per_generation: i32,
    /// Free generations every user gets.
    free_generations_limit: i32,
    /// Free generations the caller has left.
    free_generations_remaining: i32,
    /// Whether credits are charged at all (`APP_ENV` staging or production).
    enforced: bool,
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
        BalanceView {
            balance: b.balance,
            total_earned: b.total_earned,
            total_spent: b.total_spent,
            credits_per_generation: st.credits.cost,
            free_generations_limit: st.credits.free_generations,
            free_generations_remaining: free,
            enforced: st.credits.enforced,
        },
    ))
}

async fn packs(State(st): State<AppState>, AuthUser(_): AuthUser) -> Result<Response, Problem> {
    Ok(web::json(StatusCode::OK, purchases::packs(&st).await?))
}

/// A purchase as its owner sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckoutView {
    /// The Checkout Session's id (`GET /credits/checkout/{sessionId}`).
    session_id: String,
    /// Stripe's payment page for the session.
    checkout_url: String,
    /// When the session closes unpaid.
    expires_at: chrono::DateTime<chrono::Utc>,
    /// The pack bought.
    pack_id: String,
    /// `open`, `paid`, `granted`, `expired` or `failed`.
    status: &'static str,
    /// Credits the pack grants.
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
    Idempotency(key): Idempotency,
    ApiBase(api_base): ApiBase,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let mut c = Checker::of(&body).map_err(Problem::validation)?;
    let pack = c.required("packId", |c| c.string("packId", Text::Strict, 1, 100));
    c.unknown_fields();
    let (Some(pack), true) = (pack, c.errors.is_empty()) else {
        return Err(Problem::validation(c.errors));
    };
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
        return Err(crate::Error::NotFound(crate::Resource::Purchase).into());
    }
    let purchase = purchases::status(&st, user, &session_id).await?;
    Ok(web::json(StatusCode::OK, CheckoutView::from(purchase)))
}

async fn transactions(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<web::cursor::PageQuery>,
) -> Result<Response, Problem> {
    let (limit, cursor) = q.read()?;
    let db = st.db.get().await.map_err(crate::Error::from)?;
    let mut rows = ledger::page(&**db, user, cursor, limit + 1).await?;
    let next = web::cursor::next_page(&mut rows, limit, |t| (t.created_at, t.id));
    Ok(web::json(
        StatusCode::OK,
        super::views::Page {
            data: rows,
            next_cursor: next,
        },
    ))
}
