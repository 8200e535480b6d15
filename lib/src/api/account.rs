//! `account` function: `DELETE /me`, the caller's request to delete their
//! data ([`crate::account`]). Answers 202 `{"status": "deleted"}` once done,
//! or `{"status": "deleting"}` when the request's time ran out first (the
//! reconciler finishes it).

use axum::{extract::State, response::Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    AppState, Problem,
    web::{
        self, AuthUser, JsonBody, Routes,
        policy::{Access, Limit},
        problem::FieldError,
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    let access = Access::User {
        limit: Limit::Generate,
        idempotent: false,
    };
    Routes::new("account").route(Method::DELETE, "/api/v1/me", access, delete_me)
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
    Ok(web::json(StatusCode::ACCEPTED, json!({"status": status})))
}
