//! `credits` function: `GET /credits/balance` — the caller's balance and
//! totals, the price of a generation and the free generations left.

use axum::{extract::State, response::Response};
use http::{Method, StatusCode};
use serde_json::json;

use crate::{
    AppState, Problem,
    web::{self, AuthUser, Routes, policy::READ},
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("credits").route(Method::GET, "/api/v1/credits/balance", READ, balance)
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
