//! HTTP pieces shared by every function: the authenticated user, JSON bodies
//! with a size limit, path ids, request ids, CORS and the common layers.

use axum::{
    Router,
    body::Body,
    extract::{FromRequest, FromRequestParts, Request},
    middleware::Next,
    response::Response,
};
use http::{HeaderValue, Method, StatusCode, header, request::Parts};
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use crate::{AppState, Problem};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The user a request is authenticated as (from the bearer token's `sub`).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Uuid);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
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
            return Err(Problem::unauthenticated());
        };
        state.auth.verify(token).await.map(AuthUser).map_err(|e| {
            tracing::warn!(reason = %e, "token rejected");
            Problem::unauthenticated()
        })
    }
}

/// A JSON request body (any JSON value), read with [`BODY_LIMIT`].
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, _: &S) -> Result<Self, Problem> {
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| Problem::payload_too_large(BODY_LIMIT))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Problem::malformed_json(format!("The body is not valid JSON ({e}).")))
    }
}

/// Parses a path id; anything that is not a uuid cannot exist, so it is a 404 with `code`.
pub fn path_id(raw: &str, code: &'static str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(code, what))
}

/// Gives every response an `x-request-id`: the caller's, the Lambda request id, or a new one.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .or_else(|| {
            use lambda_http::RequestExt;
            req.lambda_context_ref().map(|c| c.request_id.clone())
        })
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut res = {
        let _enter = span.enter();
        next.run(req)
    }
    .await;
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
        .expose_headers([header::HeaderName::from_static("x-request-id")])
}

/// Turns a function's routes into a service: problem-JSON fallbacks, CORS, request ids.
pub fn serve(routes: Router<AppState>, state: AppState) -> Router {
    let origins = state.cfg.cors_origins.clone();
    let service: Router = routes
        .fallback(|| async { Problem::not_found("NOT_FOUND", "Route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
                "This route does not take that method.",
            )
        })
        .with_state(state);
    let service = if origins.is_empty() {
        service
    } else {
        service.layer(cors(&origins))
    };
    service.layer(axum::middleware::from_fn(request_id))
}

/// A JSON response with a status.
pub fn json(status: StatusCode, body: Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
