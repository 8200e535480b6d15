//! `uploads` function: `POST /uploads` (`{contentType, contentLength}`) → 201
//! `{id, uploadUrl, method, headers, expiresAt}`, a presigned S3 PUT of
//! `users/{userId}/uploads/{id}` that S3 accepts only with that content type
//! and length. The bucket expires uploads after a day (`template.yaml`).

use axum::{extract::State, response::Response};
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::web::Problem;
use crate::{
    AppState,
    uploads::{self, CONTENT_TYPES},
    web::{
        self, AuthUser, JsonBody, Routes,
        policy::WRITE,
        text::{Checker, Text},
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("uploads").route(Method::POST, "/api/v1/uploads", WRITE, create)
}

/// Checks the body (docs/openapi.yaml, `UploadRequest`): the content type and length.
fn parse(body: &Value, max_bytes: usize) -> Result<(String, i64), Problem> {
    let mut c = Checker::of(body).map_err(Problem::validation)?;
    let content_type = c.required("contentType", |c| {
        c.string("contentType", Text::Strict, 1, 100)
    });
    if content_type
        .as_deref()
        .is_some_and(|t| !CONTENT_TYPES.contains(&t))
    {
        c.fail(
            "contentType",
            format!("must be one of {}", CONTENT_TYPES.join(", ")),
        );
    }
    let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    let content_length = c.required("contentLength", |c| c.int("contentLength", 1, max));
    c.unknown_fields();
    match (content_type, content_length) {
        (Some(t), Some(n)) if c.errors.is_empty() => Ok((t, n)),
        _ => Err(Problem::validation(c.errors)),
    }
}

/// `POST /uploads`: where and how to PUT the image.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadView {
    /// The id to pass as `sourceImageId`.
    id: uuid::Uuid,
    /// The presigned URL to PUT the image to.
    upload_url: String,
    /// Always `PUT`.
    method: &'static str,
    /// Headers the PUT must carry, as given.
    headers: std::collections::BTreeMap<String, String>,
    /// When the URL stops working.
    expires_at: String,
}

async fn create(
    State(st): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let (content_type, content_length) = parse(&body, st.cfg.max_upload_bytes)?;
    let ticket = uploads::create(&st, user, &content_type, content_length).await?;
    Ok(web::json(
        StatusCode::CREATED,
        UploadView {
            id: ticket.id,
            upload_url: ticket.url,
            method: "PUT",
            headers: ticket.headers.into_iter().collect(),
            expires_at: ticket
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(body: Value) -> Vec<String> {
        parse(&body, 100).unwrap_err().error_fields()
    }

    #[test]
    fn accepts_the_three_types_within_the_limit() {
        for t in CONTENT_TYPES {
            let ok = parse(&json!({"contentType": t, "contentLength": 100}), 100).unwrap();
            assert_eq!(ok, (t.to_string(), 100));
        }
    }

    #[test]
    fn names_each_bad_field() {
        assert_eq!(fields(json!({})), ["contentType", "contentLength"]);
        assert_eq!(
            fields(json!({"contentType": "image/gif", "contentLength": 0})),
            ["contentType", "contentLength"]
        );
        assert_eq!(
            fields(json!({"contentType": "image/png", "contentLength": 101})),
            ["contentLength"]
        );
        assert_eq!(
            fields(json!({"contentType": "image/png", "contentLength": 1, "x": 1})),
            ["x"]
        );
        assert_eq!(fields(json!([1])), ["body"]);
    }
}
