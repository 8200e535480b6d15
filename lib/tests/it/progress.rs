//! What a waiting user sees: progress that never goes back and `startedAt`,
//! the provider stopping a generation at its deadline (`Cancel-After`), and
//! Replicate's own throttling of creates.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::common::{Stack, id_of};

#[tokio::test]
async fn a_running_generation_reports_progress_that_never_goes_back() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(user, "step by step [sim:slow=5000]", false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    assert!(g["progress"].is_null(), "nothing is known yet: {g}");
    let id = id_of(&g);
    let path = format!("/api/v1/generate/{id}/status");
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let (status, v) = s.call(Method::GET, &path, Some(user), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if let Some(p) = v["progress"].as_f64() {
            seen.push(p);
        }
        if v["status"] == "completed" || Instant::now() > end {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["progress"], 1.0);
    assert!(last["startedAt"].is_string(), "{last}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "went back: {seen:?}");
    let mut between: Vec<f64> = seen
        .iter()
        .copied()
        .filter(|p| *p > 0.0 && *p < 1.0)
        .collect();
    between.dedup();
    assert!(between.len() >= 2, "two steps between 0 and 1: {seen:?}");

    // History shows the same.
    let (_, h) = s
        .call(Method::GET, "/api/v1/generate/history", Some(user), None)
        .await;
    let entry = &h["data"][0];
    assert_eq!(entry["generationId"], last["generationId"]);
    assert_eq!(
        (&entry["progress"], &entry["startedAt"]),
        (&last["progress"], &last["startedAt"])
    );
}

#[tokio::test]
async fn the_provider_stops_a_generation_at_its_deadline() {
    let s = Stack::with(&[("GENERATION_DEADLINE_SECONDS", "6")]).await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "never ends [sim:hang]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    assert_eq!(g["freeGenerationsRemaining"], 2);
    let id = id_of(&g);
    // No reconciler, no poll: Replicate cancels it at `Cancel-After` and its webhook ends it.
    let end = Instant::now() + Duration::from_secs(20);
    while !s.row(&id).await.status.is_terminal() {
        assert!(Instant::now() < end, "not stopped at the deadline");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = s.row(&id).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("TIMEOUT"))
    );
    let (_, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(b["freeGenerationsRemaining"], 3, "the free slot comes back");
}

#[tokio::test]
async fn throttled_creates_are_retried_within_the_budget_then_answered_503() {
    let s = Stack::with(&[("SYNC_WAIT_SECONDS", "3")]).await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(
            user,
            "throttled once [sim:create-429=1] [sim:slow=50]",
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");

    let res = s
        .http
        .post(format!("{}/api/v1/generate", s.base))
        .bearer_auth(s.token(user))
        .json(&serde_json::json!({"prompt": "throttled for good [sim:create-429=99]", "modelId": crate::common::FLUX, "waitForResult": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "PROVIDER_BUSY", "{p}");
    // Nothing is held: the throttled generation failed and gave its free slot back.
    let open = "SELECT count(*) FROM credit_holds h JOIN generations g ON g.id = h.generation_id
                 WHERE g.user_id = $1 AND h.state = 'held'";
    let db = s.state.db.get().await.unwrap();
    let held: i64 = db.query_one(open, &[&user]).await.unwrap().get(0);
    assert_eq!(held, 0);
    let (_, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(
        b["freeGenerationsRemaining"], 2,
        "only the completed one counts"
    );
}
