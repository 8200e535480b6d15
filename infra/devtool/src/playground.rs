//! The dev gateway's pages for client developers (development only: this
//! binary is never deployed):
//!
//! - `GET /`: the playground (`infra/playground/`), a page that uses the public API;
//! - `GET /playground/{file}`: its script, style sheet and BlurHash decoder;
//! - `GET /docs`: the API reference, built from `docs/openapi.yaml` by `make docs`
//!   into `.dev/docs/index.html` (a 404 saying so until then);
//! - `GET /openapi.yaml`: `docs/openapi.yaml` as it is;
//! - `POST /dev/token` `{"userId": uuid}`: `{"token", "userId", "expiresIn"}`, a token
//!   signed by the local dev key, as `make token` prints;
//! - `PUT /dev/s3-relay?url=<presigned PUT>`: sends the request on, unchanged, to the
//!   local S3 server, which answers no CORS preflight, so a page cannot PUT to it itself.
//!
//! Files are read on each request, relative to the working directory (the repository's
//! root, where `make dev` runs the gateway), so an edited page needs only a reload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use picture::{auth::devkey::DevKey, web::Problem};
use serde::Serialize;
use serde_json::Value;

/// Where the page's files are, relative to the repository's root.
const PAGE_DIR: &str = "infra/playground";
/// The page's assets: name and content type (nothing else is served from `PAGE_DIR`).
const ASSETS: [(&str, &str); 3] = [
    ("app.js", "text/javascript; charset=utf-8"),
    ("blurhash.mjs", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
];
/// Tokens minted for the playground live as long as `make token`'s.
const TOKEN_TTL_SECS: i64 = 24 * 3600;
/// The largest upload relayed (the API's `MAX_UPLOAD_BYTES` default is 10 MiB).
const RELAY_MAX_BYTES: usize = 16 << 20;

/// The page may load images from, and PUT uploads to, wherever the API's presigned URLs point.
const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data: blob: *; connect-src 'self' *; \
                        script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes(key: DevKey) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/playground/{file}", get(asset))
        .route("/docs", get(reference))
        .route("/openapi.yaml", get(document))
        .route("/dev/token", post(move |body| token(key.clone(), body)))
        .route(
            "/dev/s3-relay",
            put(s3_relay).layer(DefaultBodyLimit::max(RELAY_MAX_BYTES)),
        )
}

fn file_response(content_type: &'static str, body: Vec<u8>, csp: Option<&'static str>) -> Response {
    let mut res = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    let headers = res.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = csp {
        headers.insert("content-security-policy", HeaderValue::from_static(csp));
    }
    res
}

fn missing(what: &str, path: &str, hint: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "{what} is missing: there is no {path} (in {}). {hint}\n",
            cwd()
        ),
    )
        .into_response()
}

fn cwd() -> String {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

async fn page() -> Response {
    let path = format!("{PAGE_DIR}/index.html");
    match tokio::fs::read(&path).await {
        Ok(body) => file_response("text/html; charset=utf-8", body, Some(PAGE_CSP)),
        Err(_) => missing(
            "The playground",
            &path,
            "Run the gateway from the repository's root (`make dev`).",
        ),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some((name, content_type)) = ASSETS.into_iter().find(|(name, _)| *name == file) else {
        return Problem::of(picture::ErrorCode::NotFound).into_response();
    };
    let path = format!("{PAGE_DIR}/{name}");
    match tokio::fs::read(&path).await {
        Ok(body) => file_response(content_type, body, None),
        Err(_) => missing(
            name,
            &path,
            "Run the gateway from the repository's root (`make dev`).",
        ),
    }
}

/// The reference that `make docs` (and `make e2e`) builds with Redocly.
pub fn reference_file() -> PathBuf {
    crate::dev_dir().join("docs/index.html")
}

async fn reference() -> Response {
    let path = reference_file();
    match tokio::fs::read(&path).await {
        // Redoc's page runs inline scripts: no policy of ours on it.
        Ok(body) => file_response("text/html; charset=utf-8", body, None),
        Err(_) => missing(
            "The API reference",
            &path.display().to_string(),
            "Build it from docs/openapi.yaml with `make docs` (or `make e2e`), then reload. \
             The document itself is at /openapi.yaml.",
        ),
    }
}

async fn document() -> Response {
    match tokio::fs::read("docs/openapi.yaml").await {
        Ok(body) => file_response("application/yaml; charset=utf-8", body, None),
        Err(_) => missing(
            "The OpenAPI document",
            "docs/openapi.yaml",
            "Run the gateway from the repository's root (`make dev`).",
        ),
    }
}

/// A development token for the playground.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DevToken {
    /// A bearer token signed by the dev key.
    token: String,
    /// The user it is for.
    user_id: uuid::Uuid,
    /// Seconds it is valid for.
    expires_in: i64,
}

/// `POST /dev/token`: a token for the given user, signed by the dev key (as `make token`).
async fn token(key: DevKey, body: Option<Json<Value>>) -> Response {
    let user = body
        .as_ref()
        .and_then(|Json(b)| b.get("userId"))
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok());
    let Some(user) = user else {
        return Problem::validation(vec![picture::web::problem::FieldError::new(
            "userId",
            "must be a uuid",
        )])
        .into_response();
    };
    let issuer = std::env::var("JWT_ISSUER").unwrap_or_else(|_| "picture-dev".into());
    let audience = std::env::var("JWT_AUDIENCE").unwrap_or_else(|_| "manacore".into());
    let token = key.token(
        user,
        issuer.split(',').next().unwrap_or_default(),
        &audience,
        TOKEN_TTL_SECS,
    );
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(DevToken {
            token,
            user_id: user,
            expires_in: TOKEN_TTL_SECS,
        }),
    )
        .into_response()
}

fn relay_error(status: StatusCode, detail: impl Into<String>) -> Response {
    Problem::of(picture::ErrorCode::RelayFailed)
        .status(status)
        .detail(detail)
        .into_response()
}

/// `PUT /dev/s3-relay?url=…`: the presigned PUT as the page made it (its body, its
/// content type and `x-amz-*` headers; the signature covers the host, which is kept), sent
/// to the local S3 server (`AWS_ENDPOINT_URL_S3`, plain HTTP) and its answer returned.
async fn s3_relay(
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(url) = q.get("url") else {
        return relay_error(
            StatusCode::BAD_REQUEST,
            "The query must name the presigned `url`.",
        );
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3").unwrap_or_default();
    let Some(authority) = endpoint
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
    else {
        return relay_error(
            StatusCode::CONFLICT,
            "AWS_ENDPOINT_URL_S3 is not a local http:// endpoint; PUT to the URL directly.",
        );
    };
    let Some(target) = url
        .strip_prefix(&format!("http://{authority}"))
        .filter(|t| t.starts_with('/'))
    else {
        return relay_error(
            StatusCode::BAD_REQUEST,
            format!("Only URLs of the local S3 server (http://{authority}/…) are relayed."),
        );
    };
    if target.contains(['\r', '\n', ' ']) {
        return relay_error(StatusCode::BAD_REQUEST, "The URL is malformed.");
    }
    // Only the headers S3 signs (or checks) go on: the signature covers them.
    let mut put = reqwest::Client::new()
        .put(format!("http://{authority}{target}"))
        .timeout(Duration::from_secs(30))
        .body(body);
    for (name, value) in &headers {
        let name = name.as_str();
        if name == "content-type" || name == "content-md5" || name.starts_with("x-amz-") {
            put = put.header(name, value);
        }
    }
    let answer = match put.send().await {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => {
            return relay_error(StatusCode::GATEWAY_TIMEOUT, "S3 did not answer in 30 s.");
        }
        Err(e) => return relay_error(StatusCode::BAD_GATEWAY, format!("S3: {e}")),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = answer.bytes().await.unwrap_or_default();
    let mut res = (status, body).into_response();
    if let Some(ct) = content_type {
        res.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    res
}
