//! Bad input and failures: every one a problem document with a stable code,
//! and no generation left stuck or charged.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack, id_of};

fn codes(v: &Value) -> (Option<&str>, Vec<&str>) {
    let fields = v["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|x| x["field"].as_str()).collect())
        .unwrap_or_default();
    (v["code"].as_str(), fields)
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let s = Stack::start().await;
    let other_key = picture::auth::devkey::DevKey::generate(&s.key.kid);
    let forged = other_key.token(Uuid::new_v4(), crate::common::ISSUER, "manacore", 600);
    let expired = s
        .key
        .token(Uuid::new_v4(), crate::common::ISSUER, "manacore", -3600);
    let wrong_aud = s
        .key
        .token(Uuid::new_v4(), crate::common::ISSUER, "someone-else", 600);
    for auth in [
        None,
        Some("Bearer".to_string()),
        Some("Bearer nonsense".into()),
        Some(format!("Bearer {forged}")),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {wrong_aud}")),
    ] {
        let mut req = s
            .http
            .post(format!("{}/api/v1/generate", s.base))
            .json(&json!({"prompt": "x"}));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "UNAUTHENTICATED"
        );
    }
}

#[tokio::test]
async fn malformed_and_invalid_bodies_are_400() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let res = s
        .http
        .post(format!("{}/api/v1/generate", s.base))
        .bearer_auth(s.token(user))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "MALFORMED_JSON");

    let cases = [
        (json!({"modelId": FLUX}), vec!["prompt"]),
        (json!({"prompt": "x".repeat(10_001)}), vec!["prompt"]),
        (json!({"prompt": "x", "modelId": "flux"}), vec!["modelId"]),
        (json!({"prompt": "x", "width": 100}), vec!["width"]),
        (
            json!({"prompt": "x", "width": 4096, "height": 16}),
            vec!["width", "height"],
        ),
        (json!({"prompt": "x", "colour": "red"}), vec!["colour"]),
        // Within the contract's bounds but beyond the model's own limits.
        (
            json!({"prompt": "x", "modelId": FLUX, "width": 2048, "steps": 20, "negativePrompt": "blur"}),
            vec!["width", "steps", "negativePrompt"],
        ),
    ];
    for (body, fields) in cases {
        let (status, p) = s
            .call(
                Method::POST,
                "/api/v1/generate",
                Some(user),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(codes(&p), (Some("VALIDATION_FAILED"), fields), "{body}");
    }
    // Nothing was started or held for any of them.
    let db = s.state.db.get().await.unwrap();
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM generations WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    let big = json!({"prompt": "x".repeat(1024 * 1024 + 1)});
    let (status, p) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(big))
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
    );
}

#[tokio::test]
async fn unknown_model_is_404() {
    let s = Stack::start().await;
    let (status, p) = s
        .call(
            Method::POST,
            "/api/v1/generate",
            Some(Uuid::new_v4()),
            Some(json!({"prompt": "x", "modelId": Uuid::new_v4()})),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("MODEL_NOT_FOUND"))
    );
}

/// Asserts a failed generation with `code`, no image, and its free hold given back.
async fn assert_failed_and_free(s: &Stack, g: &Value, code: &str) {
    let id = id_of(g);
    let row = s.row(&id).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some(code)),
        "{g}"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM images WHERE generation_id = $1", &id)
            .await,
        0
    );
    assert_eq!(
        s.count(
            "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'released'",
            &id
        )
        .await,
        1
    );
    let free = s
        .state
        .credits
        .free_remaining(&**s.state.db.get().await.unwrap(), row.user_id)
        .await
        .unwrap();
    assert_eq!(free, 3);
}

#[tokio::test]
async fn provider_failure_fails_the_generation() {
    let s = Stack::start().await;
    let (status, g) = s.generate(Uuid::new_v4(), "doomed [sim:fail]", true).await;
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{g}"
    );
    assert_eq!(g["error"]["code"], "GENERATION_FAILED");
    assert!(
        !g["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Simulated"),
        "provider text must not leak"
    );
    assert_failed_and_free(&s, &g, "GENERATION_FAILED").await;
}

#[tokio::test]
async fn missing_output_fails_without_image() {
    let s = Stack::start().await;
    let (status, g) = s
        .generate(Uuid::new_v4(), "gone [sim:bad-output]", true)
        .await;
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{g}"
    );
    assert_failed_and_free(&s, &g, "OUTPUT_COPY_FAILED").await;
}

#[tokio::test]
async fn wrong_replicate_token_is_502_and_a_failed_generation() {
    let s = Stack::with(&[("REPLICATE_API_TOKEN", "r8_wrong")]).await;
    let user = Uuid::new_v4();
    let (status, p) = s.generate(user, "never runs", true).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("PROVIDER_ERROR")),
        "{p}"
    );
    assert!(
        !p.to_string().contains("Unauthenticated"),
        "upstream body must not leak: {p}"
    );
    let db = s.state.db.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT id::text FROM generations WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let g = json!({"generationId": row.get::<_, String>(0)});
    drop(db);
    assert_failed_and_free(&s, &g, "PROVIDER_ERROR").await;
}

#[tokio::test]
async fn unavailable_s3_leaves_the_generation_open_and_a_later_poll_completes_it() {
    let dead_s3 = crate::common::dead_aws().await;
    let broken = Stack::with_aws(
        &[],
        picture::state::AwsOverrides {
            s3: Some(dead_s3),
            ..Default::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let (status, g) = broken.generate(user, "nowhere to put it yet", true).await;
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing")),
        "{g}"
    );
    let id = id_of(&g);
    let row = broken.row(&id).await;
    assert_eq!(row.status.as_str(), "processing");
    let held = "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'held'";
    assert_eq!(
        broken.count(held, &id).await,
        1,
        "the hold stays while S3 is away"
    );
    // S3 is back (another instance): the next status poll completes it, once.
    let healthy = Stack::start().await;
    let path = format!("/api/v1/generate/{id}/status");
    let mut last = Value::Null;
    for _ in 0..20 {
        let (status, v) = healthy.call(Method::GET, &path, Some(user), None).await;
        assert_eq!(status, StatusCode::OK);
        last = v;
        if last["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
    assert_eq!(last["status"], "completed", "{last}");
    healthy.assert_completed_once(&id).await;
}

#[tokio::test]
async fn another_users_generation_and_image_are_404_everywhere() {
    let s = Stack::start().await;
    let (owner, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, g) = s.generate(owner, "mine", true).await;
    let (id, image) = (id_of(&g), g["image"]["id"].as_str().unwrap().to_string());
    let probes = [
        (
            Method::GET,
            format!("/api/v1/generate/{id}/status"),
            None,
            "GENERATION_NOT_FOUND",
        ),
        (
            Method::DELETE,
            format!("/api/v1/generate/{id}"),
            None,
            "GENERATION_NOT_FOUND",
        ),
        (
            Method::GET,
            format!("/api/v1/images/{image}"),
            None,
            "IMAGE_NOT_FOUND",
        ),
        (
            Method::PATCH,
            format!("/api/v1/images/{image}"),
            Some(json!({"isFavorite": true})),
            "IMAGE_NOT_FOUND",
        ),
        (
            Method::DELETE,
            format!("/api/v1/images/{image}"),
            None,
            "IMAGE_NOT_FOUND",
        ),
    ];
    for (method, path, body, code) in probes {
        let (status, p) = s.call(method.clone(), &path, Some(stranger), body).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::NOT_FOUND, Some(code)),
            "{method} {path}"
        );
    }
    let (_, list) = s
        .call(Method::GET, "/api/v1/images", Some(stranger), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Still intact for its owner.
    let (status, _) = s
        .call(
            Method::GET,
            &format!("/api/v1/images/{image}"),
            Some(owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn webhooks_need_a_valid_signature() {
    let s = Stack::start().await;
    let body = json!({"id": "abc", "status": "succeeded", "output": ["http://127.0.0.1:1/x.png"]})
        .to_string();
    let secret = s.state.webhook_secret().await.unwrap().to_string();
    let now = chrono::Utc::now().timestamp();
    let good = picture::replicate::signature::sign(&secret, "msg_1", now, body.as_bytes()).unwrap();
    let send = |sig: Option<String>, ts: i64, body: String| {
        let mut req = s
            .http
            .post(format!("{}/api/v1/generate/webhook", s.base))
            .body(body);
        if let Some(sig) = sig {
            req = req
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig);
        }
        req.send()
    };
    for (sig, ts, b) in [
        (None, now, body.clone()),
        (Some("v1,AAAA".to_string()), now, body.clone()),
        (Some(good.clone()), now, body.replace("succeeded", "failed")),
        (
            Some(
                picture::replicate::signature::sign(&secret, "msg_1", now - 600, body.as_bytes())
                    .unwrap(),
            ),
            now - 600,
            body.clone(),
        ),
    ] {
        let res = send(sig, ts, b).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "INVALID_SIGNATURE"
        );
    }
    // A valid delivery for a prediction we never made is acknowledged.
    assert_eq!(
        send(Some(good), now, body).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn only_the_catalogs_versions_run_and_another_costs_nothing() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    // Another model's real version (the simulator would run it), and one nobody has.
    let seedream = "ed344813bc9f4996be6de4febd8b9c14c7849ad7b21ab047572e3620ee374ee7";
    for version in [seedream.to_string(), "0".repeat(64)] {
        let body = json!({"prompt": "x", "modelId": FLUX, "modelVersion": version});
        let (status, p) = s
            .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
        assert_eq!(
            codes(&p),
            (Some("VALIDATION_FAILED"), vec!["modelVersion"]),
            "{p}"
        );
    }
    let recorded = "SELECT count(*) FROM generations WHERE user_id = $1";
    assert_eq!(s.count(recorded, &user.to_string()).await, 0);
    // The model's own version is accepted.
    let flux = "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e";
    let body = json!({"prompt": "x", "modelId": FLUX, "modelVersion": flux});
    let (status, g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    s.cancel_all(user, &[g]).await;
}

#[tokio::test]
async fn deleting_an_image_while_s3_is_away_keeps_the_row_for_a_retry() {
    let healthy = Stack::start().await;
    let broken = Stack::with_aws(
        &[],
        picture::state::AwsOverrides {
            s3: Some(crate::common::dead_aws().await),
            ..Default::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let (status, g) = healthy
        .generate(user, "to be deleted [sim:slow=50]", true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    let image = g["image"]["id"].as_str().unwrap().to_string();
    let key: String = healthy
        .state
        .db
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT storage_key FROM images WHERE id = $1",
            &[&Uuid::parse_str(&image).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let path = format!("/api/v1/images/{image}");
    let (status, p) = broken.call(Method::DELETE, &path, Some(user), None).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("SERVICE_UNAVAILABLE")),
        "{p}"
    );
    let (status, _) = healthy.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the row stays until its object is gone"
    );
    assert!(healthy.object_exists(&key).await);

    let (status, _) = healthy.call(Method::DELETE, &path, Some(user), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!healthy.object_exists(&key).await);
    assert!(healthy.row(&id_of(&g)).await.status.is_terminal());
    healthy.assert_audit_clean(user).await; // a user's delete is no violation
}
