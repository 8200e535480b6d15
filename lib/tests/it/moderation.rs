//! Prompt moderation against the real stack: the blocklist (data in
//! PostgreSQL), the moderation simulator (OpenAI's endpoint) and the image
//! provider's safety checker. A refusal holds nothing and costs nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack, id_of};

async fn generate(s: &Stack, user: Uuid, body: Value) -> (StatusCode, Value) {
    s.call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await
}

async fn refusals(s: &Stack, user: Uuid) -> i32 {
    let db = s.state.db.get().await.unwrap();
    db.query_opt(
        "SELECT content_refused FROM user_quotas WHERE user_id = $1",
        &[&user],
    )
    .await
    .unwrap()
    .map_or(0, |r| r.get(0))
}

#[tokio::test]
async fn blocklisted_words_are_refused_however_written_and_hold_nothing() {
    let s = Stack::with(&[("RATE_LIMIT_GENERATE_PER_MINUTE", "100")]).await;
    let user = Uuid::new_v4();
    for (field, text) in [
        ("prompt", "a PORN poster"),
        ("prompt", "a pórn poster"),
        ("prompt", "a p0rn poster"),
        ("style", "Hentai!"),
    ] {
        let mut body = json!({"prompt": "a cat", "modelId": FLUX});
        body[field] = json!(text);
        let (status, p) = generate(&s, user, body).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("CONTENT_REFUSED")),
            "{text}: {p}"
        );
        assert!(p["term"].is_string() && p["categories"].is_array(), "{p}");
    }
    let (_, p) = generate(&s, user, json!({"prompt": "child p0rn", "modelId": FLUX})).await;
    assert_eq!(
        (p["term"].as_str(), p["categories"][0].as_str()),
        (Some("child porn"), Some("sexual/minors")),
        "{p}"
    );
    s.assert_nothing_held(user).await;
    assert_eq!(refusals(&s, user).await, 5);

    // A blocked word inside another word is no hit.
    let (status, g) = s
        .generate(user, "a Gorey-style cat in Scunthorpe", false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    s.cancel_all(user, &[g]).await;
}

#[tokio::test]
async fn with_the_blocklist_off_only_the_always_terms_are_refused() {
    let s = Stack::with(&[("MODERATION_BLOCKLIST", "off")]).await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "gore", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    s.cancel_all(user, &[g]).await;
    let (status, p) = generate(&s, user, json!({"prompt": "l0l1 art", "modelId": FLUX})).await;
    assert_eq!(
        (status, p["term"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("loli")),
        "{p}"
    );
}

#[tokio::test]
async fn the_moderation_provider_refuses_by_category_and_its_outage_is_closed_in_staging() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, p) = generate(
        &s,
        user,
        json!({"prompt": "a duel [mod:violence]", "modelId": FLUX}),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str(), p["categories"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("CONTENT_REFUSED"),
            json!(["violence"])
        ),
        "{p}"
    );
    assert!(p.get("term").is_none(), "{p}");
    s.assert_nothing_held(user).await;

    // The provider does not answer: refused in staging (nothing held), allowed in development.
    let down = [("MODERATION_API_BASE_URL", "http://127.0.0.1:9")];
    let staging = Stack::with(&[down[0], ("APP_ENV", "staging")]).await;
    let (status, p) = staging.generate(user, "a quiet lake", false).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("MODERATION_UNAVAILABLE")
        ),
        "{p}"
    );
    s.assert_nothing_held(user).await;
    let development = Stack::with(&down).await;
    let (status, g) = development.generate(user, "a quiet lake", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    development.cancel_all(user, &[g]).await;
}

#[tokio::test]
async fn the_providers_safety_checker_fails_the_generation_without_a_charge() {
    // The simulator's marker holds a blocked word: the blocklist steps aside for the provider's check.
    let s = Stack::with(&[
        ("APP_ENV", "staging"),
        ("FREE_GENERATIONS", "0"),
        ("MODERATION_BLOCKLIST", "off"),
    ])
    .await;
    let user = Uuid::new_v4();
    picture::db::ledger::grant(&**s.state.db.get().await.unwrap(), user, 10, "test")
        .await
        .unwrap();
    let (status, g) = s
        .generate(
            user,
            "an innocent-looking prompt [sim:nsfw] [sim:slow=50]",
            true,
        )
        .await;
    assert_eq!(
        (status, g["status"].as_str(), g["error"]["code"].as_str()),
        (StatusCode::OK, Some("failed"), Some("CONTENT_REFUSED")),
        "{g}"
    );
    let (_, balance) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(balance["balance"], 10, "{balance}");
    let released =
        "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'released'";
    assert_eq!(s.count(released, &id_of(&g)).await, 1);
}

/// Output moderation, for a model that asks for it: a flagged output is never
/// stored nor charged (all of them flagged: `CONTENT_REFUSED`, hold released),
/// the others are delivered and charged alone.
#[tokio::test]
async fn flagged_outputs_are_never_stored_nor_charged() {
    // A database of its own: the catalog change must not reach other tests.
    let (db, name, server) = crate::common::own_database("moderation").await;
    let s = Stack::with(&[
        ("DATABASE_URL", db.as_str()),
        ("APP_ENV", "staging"),
        ("MODERATION_BLOCKLIST", "off"),
    ])
    .await;
    let conn = s.state.db.get().await.unwrap();
    conn.execute(
        "UPDATE models SET moderate_outputs = true WHERE name = 'flux-schnell'",
        &[],
    )
    .await
    .unwrap();
    drop(conn);
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let body = |prompt: &str, n: i64| json!({"prompt": prompt, "modelId": FLUX, "numOutputs": n, "waitForResult": true});
    let (status, g) = generate(
        &s,
        user,
        body("a duel [sim:flagged=violence] [sim:slow=20]", 1),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(
        (&g["status"], &g["error"]["code"], &g["creditsUsed"]),
        (&json!("failed"), &json!("CONTENT_REFUSED"), &json!(0)),
        "{g}"
    );
    assert_eq!(s.objects(user).await, Vec::<String>::new());
    assert_eq!(g["freeGenerationsRemaining"], 3, "{g}");

    // Two asked, the first flagged: one stored, one free slot used.
    let (status, g) = generate(
        &s,
        user,
        body("a duel [sim:flagged=violence] [sim:slow=20]", 2),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(g["images"].as_array().map(Vec::len), Some(1), "{g}");
    assert_eq!(
        s.objects(user)
            .await
            .iter()
            .filter(|k| !k.contains(".thumb."))
            .count(),
        1
    );
    let (_, credits) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(
        (&credits["freeGenerationsRemaining"], &credits["balance"]),
        (&json!(2), &json!(100))
    );
    assert!(refusals(&s, user).await >= 2);
    s.thumbnails_tried(user).await;
    s.assert_audit_clean(user).await;
    drop(s);
    crate::common::drop_database(&server, &name).await;
}
