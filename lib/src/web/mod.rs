//! HTTP pieces shared by every function: the authenticated user, JSON bodies
//! with a size limit, path ids, request ids, CORS, security headers and the
//! common layers, including each route's [`policy`] (token, rate limit,
//! idempotency) and the [`ssrf`] guard.
//!
//! The edge's machinery: may import `auth`, `records`, `db`, `url_policy` and
//! the platform (`error`, `error_code`, `state`, `telemetry`, `otel`); never `api`.

pub mod cursor;
pub mod idempotency;
pub mod policy;
pub mod problem;
pub mod routes;
pub mod ssrf;
pub mod text;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, Method, StatusCode, header, request::Parts};
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use crate::AppState;
pub use problem::Problem;
pub use routes::Routes;
use std::sync::Arc;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The API's own URL as API Gateway received the request (`https://{domainName}`);
/// `None` outside API Gateway (the dev gateway and tests set `WEBHOOK_BASE_URL`).
#[derive(Debug, Clone, Default)]
pub struct ApiBase(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ApiBase {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        use lambda_http::request::RequestContext;
        let base = match parts.extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(c)) => {
                c.domain_name.as_ref().map(|d| format!("https://{d}"))
            }
            _ => None,
        };
        Ok(ApiBase(base))
    }
}

/// The request's `Idempotency-Key` with its body's hash, as `web::idempotency`
/// checked it; `None` when the caller sent none.
#[derive(Debug, Clone, Default)]
pub struct Idempotency(pub Option<crate::db::generations::RequestKey>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Idempotency(parts.extensions.get().cloned()))
    }
}

/// The user a request is authenticated as (from the bearer token's `sub`).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Uuid);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Problem;

    /// Verifies the token once per request; later extractions reuse the result.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(*user);
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(Problem::of(crate::ErrorCode::Unauthenticated));
        };
        let user = state
            .auth
            .verify(token)
            .await
            .map(AuthUser)
            .map_err(|e| match e {
                // The key set cannot be fetched: nobody's token can be checked, ours is the fault.
                crate::auth::AuthError::KeySet(reason) => {
                    tracing::error!(%reason, "key set unavailable: answered 503");
                    Problem::unavailable()
                }
                e => {
                    tracing::warn!(reason = %e, "token rejected");
                    Problem::of(crate::ErrorCode::Unauthenticated)
                }
            })?;
        tracing::Span::current().record("user_id", tracing::field::display(user.0));
        parts.extensions.insert(user);
        Ok(user)
    }
}

/// Reads a request body, refusing (413) as soon as it grows past [`BODY_LIMIT`].
pub async fn read_body(body: Body) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| Problem::payload_too_large(BODY_LIMIT))
}

/// A JSON request body (any JSON value), read with [`BODY_LIMIT`].
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, _: &S) -> Result<Self, Problem> {
        let bytes = read_body(req.into_body()).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Problem::malformed_json(format!("The body is not valid JSON ({e}).")))
    }
}

/// Parses a path id; anything that is not a uuid cannot exist, so it is a 404 with `code`.
pub fn path_id(raw: &str, what: crate::Resource) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(what))
}

/// Runs each request in a span carrying the log fields of [`crate::telemetry`],
/// inside the trace's server span ([`crate::otel::server_span`]), and gives every
/// response an `x-request-id`: the caller's, else API Gateway's request id (the
/// correlation id), else the Lambda request id, else a new one.
async fn request_id(req: Request, next: Next) -> Response {
    use axum::extract::MatchedPath;
    use lambda_http::{RequestExt, request::RequestContext};
    use tracing::Instrument;

    let lambda = req.lambda_context_ref();
    let server = crate::otel::server_span(
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        req.uri().path(),
        req.headers(),
        lambda.and_then(|c| c.xray_trace_id.as_deref()),
    );
    let function_request_id = lambda.map(|c| c.request_id.clone());
    let gateway_request_id = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
        _ => None,
    };
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .or(gateway_request_id)
        .or_else(|| function_request_id.clone())
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        service = %crate::telemetry::service_name(),
        cold_start = crate::telemetry::take_cold_start(),
        correlation_id = %id,
        function_request_id = function_request_id.as_deref().unwrap_or_default(),
        method = %req.method(),
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    let mut res = next
        .run(req)
        .instrument(span)
        .instrument(server.clone())
        .await;
    crate::otel::record_status(&server, res.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// CORS for the listed origins only (credentials allowed for them); none when the list is empty.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers(
            [
                "x-request-id",
                "retry-after",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "idempotency-replayed",
            ]
            .map(header::HeaderName::from_static),
        )
}

/// Headers every response carries (an API's answers are never framed, sniffed or cached
/// unless the route says so).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

/// Adds [`SECURITY_HEADERS`], and `Cache-Control: no-store` where the route set none.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Turns axum's own plain-text rejections (a query string that does not parse, …) into
/// problem documents (`MALFORMED_REQUEST`), so that every error has the same shape.
async fn plain_rejections(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let plain = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    if !(plain && status.is_client_error()) {
        return res;
    }
    let detail = axum::body::to_bytes(res.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Problem::of(crate::ErrorCode::MalformedRequest)
        .status(status)
        .detail(detail)
        .into_response()
}

/// Turns a function's routes into a service: each route's policy, problem-JSON
/// fallbacks and rejections, CORS, request ids and security headers.
pub fn serve(routes: Router<AppState>, table: Arc<[policy::Route]>, state: AppState) -> Router {
    let origins = state.cfg.cors_origins.clone();
    let service: Router = routes
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), table),
            policy::enforce,
        ))
        .fallback(|| async { Problem::of(crate::ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { Problem::of(crate::ErrorCode::MethodNotAllowed) })
        .with_state(state)
        .layer(axum::middleware::from_fn(plain_rejections));
    let service = if origins.is_empty() {
        service
    } else {
        service.layer(cors(&origins))
    };
    service
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn(security_headers))
}

/// A JSON response with a status.
pub fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return Problem::of(crate::ErrorCode::Internal).into_response();
    };
    let mut res = Response::new(Body::from(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
