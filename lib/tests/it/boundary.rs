//! The edge every response passes: `sourceImageUrl` refused when it points
//! inside (by address or by name), security headers, CORS per `CORS_ORIGINS`,
//! and problem documents for requests the framework itself refuses.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{IMG2IMG, Stack};

#[tokio::test]
async fn source_image_urls_pointing_inside_are_400() {
    let s = Stack::with(&[("RATE_LIMIT_GENERATE_PER_MINUTE", "100")]).await;
    let user = Uuid::new_v4();
    for url in [
        "http://images.example.com/cat.png",
        "https://127.0.0.1/cat.png",
        "https://10.1.2.3/cat.png",
        "https://172.20.0.5/cat.png",
        "https://192.168.0.10/cat.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/cat.png",
        "https://[fd00::1]/cat.png",
        "https://[::ffff:10.0.0.1]/cat.png",
        "https://localhost/cat.png",
        "https://localhost.:8443/cat.png",
    ] {
        let body = json!({"prompt": "a cat", "modelId": IMG2IMG, "sourceImageUrl": url});
        let (status, p) = s
            .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
            .await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{url}: {p}"
        );
        assert_eq!(p["errors"][0]["field"], "sourceImageUrl", "{url}");
        assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{url}: {p}");
    }
    // A public address passes validation and starts a generation.
    let body = json!({"prompt": "a cat [sim:hang]", "modelId": IMG2IMG, "sourceImageUrl": "https://93.184.216.34/cat.png"});
    let (status, g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    s.call(
        Method::DELETE,
        &format!("/api/v1/generate/{}", g["generationId"].as_str().unwrap()),
        Some(user),
        None,
    )
    .await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let s = Stack::start().await;
    let token = s.token(Uuid::new_v4());
    let probes = [
        ("/api/v1/models", None, Some("public, max-age=300")),
        ("/api/v1/images", Some(&token), None),
        ("/api/v1/images", None, None),
        ("/api/v1/no-such-route", None, None),
    ];
    for (path, auth, cache) in probes {
        let mut req = s.http.get(format!("{}{path}", s.base));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let h = res.headers();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
            ("cache-control", cache.unwrap_or("no-store")),
        ] {
            assert_eq!(h[name], value, "{path} {name}");
        }
        assert!(
            h["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
        assert!(h.contains_key("x-request-id"), "{path}");
    }
}

#[tokio::test]
async fn a_path_no_route_serves_answers_a_not_found_problem() {
    let s = Stack::start().await;
    let res = s
        .http
        .get(format!("{}/api/v1/no-such-route", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let s = Stack::with(&[(
        "CORS_ORIGINS",
        "https://app.example.com,https://m.example.com",
    )])
    .await;
    let get = |origin: &'static str| {
        s.http
            .get(format!("{}/api/v1/models", s.base))
            .header("origin", origin)
            .send()
    };
    let res = get("https://app.example.com").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let res = get("https://evil.example.com").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert_eq!(res.status(), StatusCode::OK, "CORS is the browser's check");

    let preflight = |origin: &'static str| {
        s.http
            .request(Method::OPTIONS, format!("{}/api/v1/generate", s.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let res = preflight("https://m.example.com").await.unwrap();
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://m.example.com");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("idempotency-key")
    );
    let res = preflight("https://evil.example.com").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn requests_axum_cannot_read_get_problem_documents() {
    let s = Stack::start().await;
    let res = s
        .http
        .get(format!("{}/api/v1/images?limit=1&limit=2", s.base))
        .bearer_auth(s.token(Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = res.json().await.unwrap();
    assert_eq!(p["code"], "MALFORMED_REQUEST");
}
