//! What each route demands before its handler runs, declared once with the
//! route ([`super::routes`]) and enforced by one middleware around every route:
//! a bearer token, then the caller's rate limit (with `RateLimit-*` headers,
//! 429 `RATE_LIMITED` beyond it), then the idempotency key where the route
//! takes one. A served route missing from the table answers 500, so a new
//! route cannot run without a declared policy.

use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, header};
use std::sync::Arc;

use super::AuthUser;
use crate::web::Problem;
use crate::{
    AppState,
    records::ratelimit::{self, Decision},
    state::Early,
};

/// A route and what it demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The function (binary) that serves it.
    pub function: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// The path pattern, as axum takes it (e.g. `/v1/generations/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

impl Route {
    /// A read: a `GET` on the reads budget, admitted without waiting for the
    /// records table and counted there after its answer.
    pub fn is_read(&self) -> bool {
        self.method == Method::GET
            && self.access
                == (Access::User {
                    limit: Limit::Reads,
                    idempotent: false,
                })
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the model catalog).
    Public,
    /// Anyone; the handler checks the request's own signature (the Replicate webhook).
    Signed,
    /// A user with a bearer token, within the rate limit of `limit`.
    User { limit: Limit, idempotent: bool },
}

/// A user route drawing on the reads budget.
pub const READ: Access = Access::User {
    limit: Limit::Reads,
    idempotent: false,
};

/// A user route drawing on the generate budget (a write).
pub const WRITE: Access = Access::User {
    limit: Limit::Generate,
    idempotent: false,
};

/// A [`WRITE`] that honours `Idempotency-Key`.
pub const WRITE_ONCE: Access = Access::User {
    limit: Limit::Generate,
    idempotent: true,
};

/// Which per-minute budget a route draws on (per user and per route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `RATE_LIMIT_GENERATE_PER_MINUTE`; fails closed when DynamoDB is unreachable.
    Generate,
    /// `RATE_LIMIT_READS_PER_MINUTE`; fails open when DynamoDB is unreachable.
    Reads,
}

/// The declared route for a method and matched path (`HEAD` is served by `GET`).
fn find<'a>(routes: &'a [Route], method: &Method, path: &str) -> Option<&'a Route> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    routes.iter().find(|r| r.method == method && r.path == path)
}

/// What the first request of a function with `routes` starts opening early
/// ([`AppState::open_early`]): a database connection (every function's
/// handlers use it) and, when a route waits for the records table (a write's
/// rate limit or idempotency, a webhook's replay record), that table's client.
/// Reads alone count after their answer, so they leave it for later.
pub fn early(routes: &[Route]) -> Early {
    Early {
        db: true,
        runtime_table: routes
            .iter()
            .any(|r| r.access != Access::Public && !r.is_read()),
    }
}

/// The middleware: applies the declared route's [`Access`] before its handler.
/// The instance's first request first starts opening what requests need.
pub async fn enforce(
    State((st, routes)): State<(AppState, Arc<[Route]>)>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    st.open_early(early(&routes));
    let Some(path) = matched.map(|m| m.as_str().to_string()) else {
        return next.run(req).await;
    };
    let Some(route) = find(&routes, req.method(), &path) else {
        if routes.iter().any(|r| r.path == path) {
            return next.run(req).await; // another method of a known path: 405
        }
        tracing::error!(%path, "route served without a declaration: refused");
        return Problem::of(crate::ErrorCode::Internal).into_response();
    };
    match route.access {
        Access::Public | Access::Signed => next.run(req).await,
        Access::User { limit, idempotent } => user_route(&st, route, limit, idempotent, req, next)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

async fn user_route(
    st: &AppState,
    route: &Route,
    limit: Limit,
    idempotent: bool,
    req: Request,
    next: Next,
) -> Result<Response, Problem> {
    let (mut parts, body) = req.into_parts();
    let AuthUser(user) = AuthUser::from_request_parts(&mut parts, st).await?;
    let req = Request::from_parts(parts, body);
    let max = match limit {
        Limit::Generate => st.cfg.rate_limit_generate_per_minute,
        Limit::Reads => st.cfg.rate_limit_reads_per_minute,
    };
    let name = format!("{} {}", route.method, route.path);
    let now = chrono::Utc::now().timestamp();

    // A read (a GET on the reads budget) has no side effects: it is admitted by
    // this instance's view of its window and counted in the table after its
    // answer (`deferred`), so it never waits for DynamoDB (and fails open).
    // Anything else is counted first.
    let (decision, mut res) = if route.is_read() {
        let decision = st.reads.admit(user, &name, max, now);
        if !decision.allowed {
            return Ok(limited(&decision));
        }
        let st = st.clone();
        crate::deferred::defer(async move {
            let checked = ratelimit::check(&st.records, user, &name, max, now).await;
            if let Ok(Some(counted)) = decide(checked, limit, &name) {
                st.reads.learn(user, &name, now, &counted);
            }
        });
        (Some(decision), next.run(req).await)
    } else {
        let checked = ratelimit::check(&st.records, user, &name, max, now).await;
        let decision = decide(checked, limit, &name)?;
        if let Some(refused) = decision.filter(|d| !d.allowed) {
            return Ok(limited(&refused));
        }
        let res = if idempotent {
            super::idempotency::once(st, user, req, next)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        } else {
            next.run(req).await
        };
        (decision, res)
    };
    if let Some(d) = decision {
        rate_headers(res.headers_mut(), &d);
    }
    Ok(res)
}

/// The outcome of a rate-limit check: a decision, none when DynamoDB is
/// unreachable for a read (fail open), or 503 for generate (fail closed).
fn decide(
    checked: Result<Decision, crate::records::Unavailable>,
    limit: Limit,
    name: &str,
) -> Result<Option<Decision>, Problem> {
    match checked {
        Ok(d) => Ok(Some(d)),
        Err(e) if limit == Limit::Reads => {
            tracing::warn!(error = %e, route = %name, "rate limit unavailable: read allowed (fail open)");
            Ok(None)
        }
        Err(e) => {
            tracing::error!(error = %e, route = %name, "rate limit unavailable: request refused (fail closed)");
            Err(Problem::of(crate::ErrorCode::RateLimitUnavailable))
        }
    }
}

/// The 429 answer for a request over its limit.
fn limited(d: &Decision) -> Response {
    crate::telemetry::count(crate::telemetry::metric::RATE_LIMITED, 1);
    let mut res = Problem::of(crate::ErrorCode::RateLimited)
        .detail(format!(
            "At most {} requests a minute; retry in {} s.",
            d.limit, d.reset_secs
        ))
        .into_response();
    rate_headers(res.headers_mut(), d);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(d.reset_secs));
    res
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds).
fn rate_headers(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
}
