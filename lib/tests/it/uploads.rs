//! `POST /uploads` against the real stores: the presigned PUT is accepted by
//! S3 (s3s-fs) with the signed content type and length, refused with others.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::Stack;

/// A 2×2 PNG.
fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(2, 2, image::Rgb([200, 30, 30]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn create(stack: &Stack, user: Uuid, body: Value) -> (StatusCode, Value) {
    stack
        .call(Method::POST, "/api/v1/uploads", Some(user), Some(body))
        .await
}

/// PUTs `body` to the upload URL with the returned headers, `replace` overriding
/// some; `Content-Length` is always the body's (the client sets it).
async fn put(stack: &Stack, upload: &Value, body: Vec<u8>, replace: &[(&str, &str)]) -> StatusCode {
    assert_eq!(upload["method"], "PUT");
    let mut headers = http::HeaderMap::new();
    for (k, v) in upload["headers"].as_object().unwrap() {
        if k.eq_ignore_ascii_case("content-length") {
            continue;
        }
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.as_str().unwrap().parse().unwrap(),
        );
    }
    for (k, v) in replace {
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    stack
        .http
        .put(upload["uploadUrl"].as_str().unwrap())
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn presigned_put_stores_the_upload_with_the_signed_type_and_length_only() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    let bytes = png();
    let len = bytes.len();
    let (status, upload) = create(
        &stack,
        user,
        json!({"contentType": "image/png", "contentLength": len}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    let key = format!("users/{user}/uploads/{}", upload["id"].as_str().unwrap());
    let headers = upload["headers"].as_object().unwrap();
    assert_eq!(headers["content-type"], "image/png", "{upload}");
    assert_eq!(headers["content-length"], len.to_string(), "{upload}");
    assert_eq!(headers["x-amz-tagging"], "picture-upload=true", "{upload}");
    let expires: chrono::DateTime<chrono::Utc> =
        upload["expiresAt"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15));

    // Another content type, or another length (the body's), is refused by S3.
    let wrong_type = put(
        &stack,
        &upload,
        bytes.clone(),
        &[("content-type", "image/jpeg")],
    )
    .await;
    assert_eq!(wrong_type, StatusCode::FORBIDDEN);
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing");
    let wrong_length = put(&stack, &upload, longer, &[]).await;
    assert_eq!(wrong_length, StatusCode::FORBIDDEN);
    assert!(!stack.object_exists(&key).await);

    // Exactly what was signed is stored.
    assert_eq!(
        put(&stack, &upload, bytes.clone(), &[]).await,
        StatusCode::OK
    );
    assert_eq!(
        stack.state.storage.read(&key).await.unwrap().unwrap(),
        bytes
    );
}

#[tokio::test]
async fn invalid_bodies_name_the_field() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    let max = stack.state.cfg.max_upload_bytes;
    for (body, field) in [
        (json!({"contentLength": 10}), "contentType"),
        (
            json!({"contentType": "image/gif", "contentLength": 10}),
            "contentType",
        ),
        (
            json!({"contentType": 7, "contentLength": 10}),
            "contentType",
        ),
        (json!({"contentType": "image/png"}), "contentLength"),
        (
            json!({"contentType": "image/png", "contentLength": 0}),
            "contentLength",
        ),
        (
            json!({"contentType": "image/png", "contentLength": "10"}),
            "contentLength",
        ),
        (
            json!({"contentType": "image/png", "contentLength": max + 1}),
            "contentLength",
        ),
        (
            json!({"contentType": "image/png", "contentLength": 10, "x": 1}),
            "x",
        ),
    ] {
        let (status, problem) = create(&stack, user, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["code"], "VALIDATION_FAILED", "{body}: {problem}");
        let fields: Vec<_> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{body}: {problem}");
    }
    let (status, _) = create(
        &stack,
        user,
        json!({"contentType": "image/webp", "contentLength": max}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}
