//! `numOutputs` against the real stores: every delivered output is one image
//! (S3 object and row), free slots are used first and credits after, all held
//! at once or refused; outputs the provider dropped or that could not be
//! stored are released, never charged; the audit proves it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack, id_of};

const SEEDREAM: &str = "3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e02";

/// Uses the user's 3 free generations with one real generation of 3 outputs.
async fn use_free(s: &Stack, user: Uuid) {
    let (status, g) = generate(s, user, asking("free ones [sim:slow=20]", 3, true)).await;
    assert_eq!(
        (status, &g["charge"]),
        (StatusCode::CREATED, &json!("free")),
        "{g}"
    );
}

async fn generate(s: &Stack, user: Uuid, body: Value) -> (StatusCode, Value) {
    s.call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await
}

fn asking(prompt: &str, n: i64, wait: bool) -> Value {
    json!({"prompt": prompt, "modelId": FLUX, "numOutputs": n, "waitForResult": wait})
}

async fn status_view(s: &Stack, user: Uuid, g: &Value) -> Value {
    let path = format!("/api/v1/generate/{}/status", id_of(g));
    let (status, view) = s.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

async fn balance(s: &Stack, user: Uuid) -> (i64, i64) {
    let (status, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    (
        b["balance"].as_i64().unwrap(),
        b["freeGenerationsRemaining"].as_i64().unwrap(),
    )
}

/// The generation's hold: (state, units, free units, amount, delivered).
async fn hold(s: &Stack, id: &str) -> (String, i32, i32, i32, Option<i32>) {
    let db = s.state.db.get().await.unwrap();
    let r = db
        .query_one(
            "SELECT state, units, free_units, amount, delivered FROM credit_holds WHERE generation_id = $1",
            &[&Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Checks the views' images: `n` distinct ones, each stored at its own key.
async fn assert_images(s: &Stack, g: &Value, n: usize) {
    let images = g["images"].as_array().unwrap();
    assert_eq!(images.len(), n, "{g}");
    assert_eq!(g["image"], images[0], "`image` is the first of `images`");
    let mut sizes = std::collections::HashSet::new();
    for img in images {
        let bytes = s.bytes(img["url"].as_str().unwrap()).await;
        assert_eq!(bytes.len() as i64, img["fileSize"].as_i64().unwrap());
        sizes.insert(bytes);
    }
    assert_eq!(sizes.len(), n, "every output is a different image");
    let db = s.state.db.get().await.unwrap();
    let rows = db
        .query(
            "SELECT output_index, storage_key FROM images WHERE generation_id = $1 ORDER BY output_index",
            &[&Uuid::parse_str(&id_of(g)).unwrap()],
        )
        .await
        .unwrap();
    let indexes: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(indexes, (0..n as i32).collect::<Vec<_>>());
    for r in &rows {
        assert!(s.object_exists(r.get(1)).await);
    }
}

#[tokio::test]
async fn four_outputs_are_four_images_paid_with_free_slots_then_credits() {
    let s = Stack::with(&[("APP_ENV", "staging")]).await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let (status, g) = generate(&s, user, asking("four foxes [sim:slow=30]", 4, true)).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(
        (&g["numOutputs"], &g["charge"], &g["creditsUsed"]),
        (&json!(4), &json!("credits"), &json!(10)),
        "3 free slots, then 10 credits: {g}"
    );
    assert_images(&s, &g, 4).await;
    assert_eq!(balance(&s, user).await, (90, 0));
    assert_eq!(
        hold(&s, &id_of(&g)).await,
        ("captured".into(), 4, 3, 10, Some(4))
    );

    // Every later output costs 10 credits; the status and history views show all four.
    let (status, g2) = generate(&s, user, asking("two owls [sim:slow=30]", 2, true)).await;
    assert_eq!(
        (status, &g2["creditsUsed"]),
        (StatusCode::CREATED, &json!(20)),
        "{g2}"
    );
    assert_eq!(balance(&s, user).await, (70, 0));
    let view = status_view(&s, user, &g).await;
    assert_eq!(view["images"].as_array().map(Vec::len), Some(4), "{view}");
    let (_, history) = s
        .call(Method::GET, "/api/v1/generate/history", Some(user), None)
        .await;
    let counts: Vec<_> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["images"].as_array().unwrap().len(),
                g["creditsUsed"].clone(),
            )
        })
        .collect();
    assert_eq!(counts, [(2, json!(20)), (4, json!(10))]);
    let (_, list) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(6), "{list}");

    // Deleting one output keeps the others.
    let one = g["images"][1]["id"].as_str().unwrap();
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/images/{one}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let view = status_view(&s, user, &g).await;
    assert_eq!(view["images"].as_array().map(Vec::len), Some(3), "{view}");
    s.thumbnails_tried(user).await;
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn outputs_the_provider_did_not_deliver_are_released() {
    // The blocklist would refuse the simulator's `nsfw` marker itself.
    let s = Stack::with(&[("APP_ENV", "staging"), ("MODERATION_BLOCKLIST", "off")]).await;
    // 4 asked, 2 delivered. Without free slots: 20 credits charged and 20 released. With 3
    // free slots: the 2 delivered use 2 of them, the third comes back, no credit is spent.
    let paying = Uuid::new_v4();
    use_free(&s, paying).await;
    s.grant(paying, 40).await;
    let fresh = Uuid::new_v4();
    s.grant(fresh, 10).await;
    let cases = [
        (paying, 20, (20, 0), ("captured".into(), 4, 0, 20, Some(2))),
        (fresh, 0, (10, 1), ("captured".into(), 4, 2, 0, Some(2))),
    ];
    for (user, charged, after, held) in cases {
        let body = asking("a pair [sim:outputs=2] [sim:slow=30]", 4, true);
        let (status, g) = generate(&s, user, body).await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
        assert_eq!(
            (&g["creditsUsed"], &g["charge"]),
            (&json!(charged), &json!("credits")),
            "{g}"
        );
        assert_images(&s, &g, 2).await;
        assert_eq!(balance(&s, user).await, after);
        assert_eq!(hold(&s, &id_of(&g)).await, held);
    }

    // The safety checker dropping some outputs: only those delivered are charged.
    let (status, g) = generate(
        &s,
        paying,
        asking("some flagged [sim:nsfw-partial] [sim:slow=30]", 2, true),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(g["creditsUsed"], 10, "{g}");
    assert_images(&s, &g, 1).await;
    assert_eq!(balance(&s, paying).await, (10, 0));

    // An output that cannot be stored is not charged either; with none stored, the generation fails.
    let (status, g) = generate(
        &s,
        paying,
        asking("gone [sim:bad-output] [sim:slow=30]", 1, true),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(g["error"]["code"], "OUTPUT_COPY_FAILED", "{g}");
    assert_eq!(balance(&s, paying).await, (10, 0));
    for user in [paying, fresh] {
        s.thumbnails_tried(user).await;
        s.assert_audit_clean(user).await;
    }
}

#[tokio::test]
async fn outputs_are_held_all_or_nothing() {
    let s = Stack::with(&[("APP_ENV", "staging")]).await;
    let user = Uuid::new_v4();
    let (status, g) = generate(&s, user, asking("one free [sim:slow=20]", 1, true)).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    let (status, p) = generate(&s, user, asking("too many", 4, true)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{p}");
    assert_eq!(
        (
            &p["code"],
            &p["required"],
            &p["balance"],
            &p["freeGenerationsRemaining"]
        ),
        (
            &json!("INSUFFICIENT_CREDITS"),
            &json!(20),
            &json!(0),
            &json!(2)
        ),
        "{p}"
    );
    let db = s.state.db.get().await.unwrap();
    let held: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM generations WHERE user_id = $1)
                  + (SELECT count(*) FROM credit_holds WHERE user_id = $1 AND state = 'held')",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    drop(db);
    assert_eq!(held, 1, "only the first generation recorded, nothing held");
    assert_eq!(balance(&s, user).await, (0, 2));

    // Two fit in the free slots left.
    let (status, g) = generate(&s, user, asking("two fit [sim:slow=30]", 2, true)).await;
    assert_eq!(
        (status, &g["charge"]),
        (StatusCode::CREATED, &json!("free")),
        "{g}"
    );
    assert_eq!(balance(&s, user).await, (0, 0));
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn num_outputs_is_checked_against_the_model() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let cases = [
        json!({"prompt": "p", "modelId": FLUX, "numOutputs": 0}),
        json!({"prompt": "p", "modelId": FLUX, "numOutputs": 5}),
        json!({"prompt": "p", "modelId": FLUX, "numOutputs": "2"}),
        json!({"prompt": "p", "modelId": FLUX, "numOutputs": 2.5}),
        json!({"prompt": "p", "modelId": SEEDREAM, "numOutputs": 2}),
    ];
    for body in cases {
        let (status, p) = generate(&s, user, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {p}");
        assert_eq!(p["code"], "VALIDATION_FAILED");
        assert_eq!(p["errors"][0]["field"], "numOutputs", "{p}");
    }
    let (_, models) = s.call(Method::GET, "/api/v1/models", None, None).await;
    let max: Vec<_> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].clone(), m["maxOutputs"].clone()))
        .collect();
    assert!(max.contains(&(json!("flux-schnell"), json!(4))), "{max:?}");
    assert!(max.contains(&(json!("seedream-3"), json!(1))), "{max:?}");
}

#[tokio::test]
async fn several_outputs_complete_by_webhook_once() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = generate(
        &s,
        user,
        asking("three by webhook [sim:slow=200]", 3, false),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    let row = s.wait_terminal(&id_of(&g)).await;
    assert_eq!(row.status.as_str(), "completed");
    let view = status_view(&s, user, &g).await;
    assert_images(&s, &view, 3).await;
    assert_eq!(view["freeGenerationsRemaining"], 0, "{view}");
    s.thumbnails_tried(user).await;
    s.assert_audit_clean(user).await;
}
