//! `POST /uploads` against the real stores: the presigned PUT is accepted by
//! S3 (s3s-fs) with the signed content type and length, refused with others.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use sha2::Digest;

use crate::common::{IMG2IMG, Stack};

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

/// An upload of `bytes` declared as `content_type`, PUT to its URL; returns its id.
async fn uploaded(stack: &Stack, user: Uuid, content_type: &str, bytes: Vec<u8>) -> String {
    let (status, upload) = create(
        stack,
        user,
        json!({"contentType": content_type, "contentLength": bytes.len()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    assert_eq!(put(stack, &upload, bytes, &[]).await, StatusCode::OK);
    id_of_upload(&upload)
}

fn id_of_upload(upload: &Value) -> String {
    upload["id"].as_str().unwrap().to_string()
}

/// A `w`×`h` PNG of noise: about 3 bytes per pixel, whatever the compressor does.
fn noisy_png(w: u32, h: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn generate_from(stack: &Stack, user: Uuid, body: Value) -> (StatusCode, Value) {
    stack
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await
}

/// What the simulator logged about the input image it fetched for a generation.
async fn provider_input(stack: &Stack, generation: &str) -> (Value, String) {
    let prediction = stack.row(generation).await.prediction_id.unwrap();
    let (status, p) = stack
        .sim(Method::GET, &format!("/v1/predictions/{prediction}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    (
        p["input"].clone(),
        p["logs"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn a_generation_from_an_upload_reaches_the_provider_inline_or_by_url() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    // Small enough to pass inline (a data URI), and too large for that (a presigned GET).
    for (bytes, inline) in [(png(), true), (noisy_png(320, 320), false)] {
        assert_eq!(bytes.len() <= 256 * 1024, inline);
        let id = uploaded(&stack, user, "image/png", bytes.clone()).await;
        let (status, g) = generate_from(
            &stack,
            user,
            json!({"prompt": "a red square, repainted", "modelId": IMG2IMG, "sourceImageId": id,
                   "waitForResult": true}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
        assert_eq!(g["status"], "completed", "{g}");
        let generation = g["generationId"].as_str().unwrap();
        assert_eq!(
            stack.row(generation).await.request.source_upload_id,
            Some(Uuid::parse_str(&id).unwrap())
        );
        let (input, logs) = provider_input(&stack, generation).await;
        let sent = input["image"].as_str().unwrap();
        if inline {
            assert!(sent.starts_with("data:image/png;base64,"), "{sent}");
        } else {
            assert!(sent.starts_with("http") && sent.contains(&id), "{sent}");
        }
        let sha = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let received = format!("input image: {} bytes sha256={sha}", bytes.len());
        assert!(logs.contains(&received), "{received} not in:\n{logs}");
    }
    stack.assert_audit_clean(user).await;
}

#[tokio::test]
async fn unusable_sources_are_refused_and_hold_nothing() {
    let stack = Stack::with(&[("RATE_LIMIT_GENERATE_PER_MINUTE", "100")]).await;
    let user = Uuid::new_v4();
    let request = |id: &str| json!({"prompt": "a cat", "modelId": IMG2IMG, "sourceImageId": id});

    // Unknown, and another user's (same answer: nothing tells them apart).
    let other = uploaded(&stack, Uuid::new_v4(), "image/png", png()).await;
    let mut not_found = Vec::new();
    for id in [Uuid::new_v4().to_string(), other] {
        let (status, p) = generate_from(&stack, user, request(&id)).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("UPLOAD_NOT_FOUND")),
            "{p}"
        );
        not_found.push(p["detail"].clone());
    }
    assert_eq!(not_found[0], not_found[1]);

    // Handed out, nothing PUT yet.
    let (_, pending) = create(
        &stack,
        user,
        json!({"contentType": "image/png", "contentLength": 10}),
    )
    .await;
    let (status, p) = generate_from(&stack, user, request(&id_of_upload(&pending))).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("UPLOAD_NOT_READY")),
        "{p}"
    );

    // Not an image; another type than declared; too many pixels; a model without image-to-image.
    let jpeg_declared = uploaded(&stack, user, "image/jpeg", png()).await;
    let text = uploaded(&stack, user, "image/webp", b"RIFF, but not really".to_vec()).await;
    let huge = uploaded(&stack, user, "image/png", noisy_png(4097, 1)).await;
    let fine = uploaded(&stack, user, "image/png", png()).await;
    for (body, message) in [
        (
            request(&jpeg_declared),
            "is image/png, not image/jpeg as declared",
        ),
        (
            request(&text),
            "is not an image of the declared type image/webp",
        ),
        (request(&huge), "is 4097×1 pixels"),
        (
            json!({"prompt": "a cat", "modelId": crate::common::FLUX, "sourceImageId": fine}),
            "is not supported by this model",
        ),
        (
            json!({"prompt": "a cat", "modelId": IMG2IMG, "sourceImageId": fine,
                   "sourceImageUrl": "https://93.184.216.34/a.png"}),
            "cannot be combined with sourceImageUrl",
        ),
    ] {
        let (status, p) = generate_from(&stack, user, body.clone()).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{body}: {p}"
        );
        assert_eq!(p["errors"][0]["field"], "sourceImageId", "{p}");
        let got = p["errors"][0]["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{got} vs {message}");
    }

    // Nothing was held or recorded for any of them.
    stack.assert_nothing_held(user).await;
}

/// A JPEG whose metadata (here six 64 KiB APP1 segments) pushes its size marker
/// past the first 256 KiB.
fn jpeg_with_long_metadata() -> Vec<u8> {
    let mut small = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(16, 8, image::Rgb([10, 120, 200]))
        .write_to(&mut small, image::ImageFormat::Jpeg)
        .unwrap();
    let small = small.into_inner();
    let mut out = small[..2].to_vec(); // SOI
    for i in 0..6u8 {
        out.extend_from_slice(&[0xFF, 0xE1, 0xFF, 0xFF]); // APP1, length 65535
        out.extend(std::iter::repeat_n(i, 65533));
    }
    out.extend_from_slice(&small[2..]);
    out
}

#[tokio::test]
async fn a_jpeg_with_long_metadata_is_a_usable_source() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    let bytes = jpeg_with_long_metadata();
    assert!(bytes.len() > 256 * 1024);
    let id = uploaded(&stack, user, "image/jpeg", bytes).await;
    let (status, g) = generate_from(
        &stack,
        user,
        json!({"prompt": "a blue strip", "modelId": IMG2IMG, "sourceImageId": id,
               "waitForResult": true}),
    )
    .await;
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::CREATED, Some("completed")),
        "{g}"
    );
    stack.assert_audit_clean(user).await;
}

/// The upload URL stays valid for a while after the upload was checked: the
/// provider reads a copy of what was checked, which a second PUT cannot replace.
#[tokio::test]
async fn what_the_provider_reads_is_what_was_checked() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    let checked = noisy_png(320, 320);
    let (_, upload) = create(
        &stack,
        user,
        json!({"contentType": "image/png", "contentLength": checked.len()}),
    )
    .await;
    assert_eq!(
        put(&stack, &upload, checked.clone(), &[]).await,
        StatusCode::OK
    );
    let (status, g) = generate_from(
        &stack,
        user,
        json!({"prompt": "a cat", "modelId": IMG2IMG, "sourceImageId": id_of_upload(&upload)}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    // The same URL, other bytes of the same length and type.
    let mut other = checked.clone();
    let at = other.len() - 100;
    other[at] ^= 0xFF;
    assert_eq!(put(&stack, &upload, other, &[]).await, StatusCode::OK);
    let (input, _) = provider_input(&stack, g["generationId"].as_str().unwrap()).await;
    let url = input["image"].as_str().unwrap();
    let read = stack.bytes(url).await;
    assert!(
        read.as_ref() == checked.as_slice(),
        "the provider would read other bytes"
    );
    s_cancel(&stack, user, &g).await;
}

async fn s_cancel(stack: &Stack, user: Uuid, g: &Value) {
    stack.cancel_all(user, std::slice::from_ref(g)).await;
    stack.assert_audit_clean(user).await;
}

/// A source image is moderated as the provider will read it: a flagged upload
/// (the moderation simulator reads `mod-flag-<category>` in an inline image's
/// bytes) is refused before anything is held.
#[tokio::test]
async fn a_flagged_source_image_is_refused_before_anything_is_held() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let mut flagged = png();
    flagged.extend_from_slice(b"mod-flag-sexual");
    let id = uploaded(&s, user, "image/png", flagged).await;
    let body = json!({"prompt": "a cat", "modelId": IMG2IMG, "sourceImageId": id});
    let (status, p) = generate_from(&s, user, body).await;
    assert_eq!(
        (status, &p["code"], &p["categories"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("CONTENT_REFUSED"),
            &json!(["sexual"])
        ),
        "{p}"
    );
    s.assert_nothing_held(user).await;
    // The same picture without the mark is used.
    let id = uploaded(&s, user, "image/png", png()).await;
    let body = json!({"prompt": "a cat [sim:slow=20]", "modelId": IMG2IMG, "sourceImageId": id, "waitForResult": true});
    let (status, g) = generate_from(&s, user, body).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
}
