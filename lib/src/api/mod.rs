//! The HTTP API: one module per Lambda function, each with `routes()` (its
//! routes, for merging) and `router(state)` (what its binary serves).

pub mod cancel;
pub mod credits;
pub mod generate;
pub mod history;
pub mod images;
pub mod models;
pub mod status;
pub mod views;
pub mod webhook;

use axum::Router;

use crate::web::policy::{Access, Limit, Route};
use crate::{AppState, web};

/// A user route drawing on the reads budget.
const READ: Access = Access::User {
    limit: Limit::Reads,
    idempotent: false,
};

/// Every route served, with what it demands ([`web::policy`]). `docs/openapi.yaml`
/// is tested against this list, and this list against the routers.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/api/v1/generate",
        access: Access::User {
            limit: Limit::Generate,
            idempotent: true,
        },
    },
    Route {
        method: "GET",
        path: "/api/v1/generate/{id}/status",
        access: READ,
    },
    Route {
        method: "DELETE",
        path: "/api/v1/generate/{id}",
        access: READ,
    },
    Route {
        method: "GET",
        path: "/api/v1/generate/history",
        access: READ,
    },
    Route {
        method: "POST",
        path: "/api/v1/generate/webhook",
        access: Access::Signed,
    },
    Route {
        method: "GET",
        path: "/api/v1/models",
        access: Access::Public,
    },
    Route {
        method: "GET",
        path: "/api/v1/models/{id}",
        access: Access::Public,
    },
    Route {
        method: "GET",
        path: "/api/v1/images",
        access: READ,
    },
    Route {
        method: "GET",
        path: "/api/v1/images/{id}",
        access: READ,
    },
    Route {
        method: "PATCH",
        path: "/api/v1/images/{id}",
        access: READ,
    },
    Route {
        method: "DELETE",
        path: "/api/v1/images/{id}",
        access: READ,
    },
    Route {
        method: "GET",
        path: "/api/v1/credits/balance",
        access: READ,
    },
];

/// Every function's routes in one service: the local dev gateway and tests.
pub fn all(state: AppState) -> Router {
    let routes = generate::routes()
        .merge(status::routes())
        .merge(cancel::routes())
        .merge(webhook::routes())
        .merge(models::routes())
        .merge(images::routes())
        .merge(history::routes())
        .merge(credits::routes());
    web::serve(routes, state)
}
