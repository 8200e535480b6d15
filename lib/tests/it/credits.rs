//! Freemium credits end to end: free allowance, waived and enforced modes,
//! the ledger and the external credit service (a local fake of its API),
//! captures exactly once under concurrency and retries.

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode as AxStatus},
    routing::{get, post},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Stack, id_of};

async fn balance(s: &Stack, user: Uuid) -> Value {
    let (status, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn development_counts_down_free_generations_then_waives() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let mut seen = Vec::new();
    for i in 0..4 {
        let (status, g) = s
            .generate(user, &format!("free {i} [sim:slow=50]"), true)
            .await;
        assert_eq!(
            (status, g["status"].as_str()),
            (StatusCode::CREATED, Some("completed")),
            "{g}"
        );
        seen.push((
            g["freeGenerationsRemaining"].as_i64().unwrap(),
            g["charge"].as_str().unwrap().to_string(),
            g["creditsUsed"].as_i64().unwrap(),
        ));
    }
    let want: Vec<(i64, String, i64)> = vec![
        (2, "free".into(), 0),
        (1, "free".into(), 0),
        (0, "free".into(), 0),
        (0, "waived".into(), 0),
    ];
    assert_eq!(seen, want);
    let b = balance(&s, user).await;
    assert_eq!(
        (
            b["enforced"].as_bool(),
            b["freeGenerationsRemaining"].as_i64(),
            b["balance"].as_i64()
        ),
        (Some(false), Some(0), Some(0))
    );
}

#[tokio::test]
async fn staging_ledger_charges_ten_credits_after_the_free_ones() {
    let s = Stack::with(&[("APP_ENV", "staging")]).await;
    let user = Uuid::new_v4();
    for i in 0..3 {
        let (status, _) = s
            .generate(user, &format!("free {i} [sim:slow=50]"), true)
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, p) = s.generate(user, "fourth", true).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{p}");
    assert_eq!(
        (
            p["code"].as_str(),
            p["required"].as_i64(),
            p["balance"].as_i64()
        ),
        (Some("INSUFFICIENT_CREDITS"), Some(10), Some(0))
    );

    s.grant(user, 15).await;
    let (status, g) = s.generate(user, "paid", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(
        (g["charge"].as_str(), g["creditsUsed"].as_i64()),
        (Some("credits"), Some(10))
    );
    let b = balance(&s, user).await;
    assert_eq!(
        (
            b["balance"].as_i64(),
            b["totalEarned"].as_i64(),
            b["totalSpent"].as_i64()
        ),
        (Some(5), Some(15), Some(10))
    );
    assert_eq!(
        (
            b["enforced"].as_bool(),
            b["creditsPerGeneration"].as_i64(),
            b["freeGenerationsLimit"].as_i64()
        ),
        (Some(true), Some(10), Some(3))
    );

    let (status, p) = s.generate(user, "too poor", true).await;
    assert_eq!(
        (status, p["balance"].as_i64()),
        (StatusCode::PAYMENT_REQUIRED, Some(5))
    );
}

#[tokio::test]
async fn failed_and_cancelled_generations_cost_nothing_on_the_ledger() {
    let s = Stack::with(&[("APP_ENV", "staging"), ("FREE_GENERATIONS", "0")]).await;
    let user = Uuid::new_v4();
    s.grant(user, 10).await;
    let (status, g) = s.generate(user, "doomed [sim:fail]", true).await;
    assert_eq!(
        (status, g["status"].as_str(), g["creditsUsed"].as_i64()),
        (StatusCode::OK, Some("failed"), Some(0))
    );
    let (status, g) = s.generate(user, "forever [sim:hang]", false).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the released credits are available again: {g}"
    );
    let (_, c) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{}", id_of(&g)),
            Some(user),
            None,
        )
        .await;
    assert_eq!(c["status"], "cancelled");
    let b = balance(&s, user).await;
    assert_eq!(
        (b["balance"].as_i64(), b["totalSpent"].as_i64()),
        (Some(10), Some(0))
    );
    let (status, _) = s.generate(user, "finally [sim:slow=50]", true).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(balance(&s, user).await["balance"], 0);
}

#[tokio::test]
async fn parallel_requests_cannot_spend_credits_they_do_not_have() {
    let s = Stack::with(&[("APP_ENV", "staging"), ("MAX_IN_FLIGHT_PER_USER", "100")]).await;
    let user = Uuid::new_v4();
    s.grant(user, 25).await;
    let prompts: Vec<String> = (0..10)
        .map(|i| format!("rush {i} [sim:slow=100]"))
        .collect();
    let results =
        futures::future::join_all(prompts.iter().map(|p| s.generate(user, p, true))).await;
    let done: Vec<&Value> = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    let refused = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!(
        (done.len(), refused),
        (5, 5),
        "3 free + 2 paid of 25 credits: {results:?}"
    );
    assert_eq!(done.iter().filter(|g| g["charge"] == "credits").count(), 2);

    // The ledger agrees with the generations it charged.
    let db = s.state.db.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT (SELECT coalesce(sum(credits_used), 0)::bigint FROM generations WHERE user_id = $1),
                    (SELECT coalesce(sum(amount), 0)::bigint FROM credit_transactions WHERE user_id = $1 AND kind = 'capture'),
                    (SELECT total_spent FROM credit_accounts WHERE user_id = $1),
                    (SELECT balance FROM credit_accounts WHERE user_id = $1)",
            &[&user],
        )
        .await
        .unwrap();
    let (used, captured, spent, left): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((used, captured, spent, left), (20, 20, 20, 5));
}

#[tokio::test]
async fn duplicate_webhooks_and_polls_capture_credits_once() {
    let s = Stack::with(&[("APP_ENV", "staging"), ("FREE_GENERATIONS", "0")]).await;
    let user = Uuid::new_v4();
    s.grant(user, 30).await;
    let (status, g) = s.generate(user, "charged once [sim:slow=300]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = id_of(&g);
    let prediction = s.row(&id).await.prediction_id.unwrap();
    let redeliver = format!("/_sim/predictions/{prediction}/redeliver");
    let status_path = format!("/api/v1/generate/{id}/status");
    s.wait_terminal(&id).await;
    let redeliveries = futures::future::join_all((0..5).map(|_| s.sim(Method::POST, &redeliver)));
    let polls = futures::future::join_all(
        (0..5).map(|_| s.call(Method::GET, &status_path, Some(user), None)),
    );
    tokio::join!(redeliveries, polls);
    assert_eq!(s.count("SELECT count(*) FROM credit_transactions WHERE generation_id = $1 AND kind = 'capture'", &id).await, 1);
    assert_eq!(balance(&s, user).await["balance"], 20);
}

#[tokio::test]
async fn balance_and_history_are_the_callers_own() {
    let s = Stack::start().await;
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    s.generate(owner, "first [sim:slow=50]", true).await;
    s.generate(owner, "second [sim:fail]", true).await;
    let (_, pending) = s.generate(owner, "third [sim:hang]", false).await;

    let (status, h) = s
        .call(
            Method::GET,
            "/api/v1/generate/history?limit=2",
            Some(owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(
        (
            h["total"].as_i64(),
            h["page"].as_i64(),
            h["limit"].as_i64(),
            h["totalPages"].as_i64()
        ),
        (Some(3), Some(1), Some(2), Some(2))
    );
    let prompts: Vec<&str> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(
        prompts,
        ["third [sim:hang]", "second [sim:fail]"],
        "newest first"
    );
    let (_, p2) = s
        .call(
            Method::GET,
            "/api/v1/generate/history?limit=2&page=2",
            Some(owner),
            None,
        )
        .await;
    let first = &p2["data"][0];
    assert_eq!(
        (
            first["status"].as_str(),
            first["charge"].as_str(),
            first["creditsUsed"].as_i64()
        ),
        (Some("completed"), Some("free"), Some(0))
    );
    assert!(first["image"]["url"].is_string());
    let (_, queue) = s
        .call(
            Method::GET,
            "/api/v1/generate/history?status=processing",
            Some(owner),
            None,
        )
        .await;
    assert_eq!(queue["total"], 1);
    assert_eq!(queue["data"][0]["generationId"], pending["generationId"]);

    let (_, theirs) = s
        .call(Method::GET, "/api/v1/generate/history", Some(other), None)
        .await;
    assert_eq!(
        (theirs["total"].as_i64(), theirs["totalPages"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(balance(&s, other).await["freeGenerationsRemaining"], 3);
    assert_eq!(
        balance(&s, owner).await["freeGenerationsRemaining"],
        1,
        "the failed one was given back"
    );
    for bad in ["limit=0", "limit=101", "page=0", "status=done"] {
        let (status, p) = s
            .call(
                Method::GET,
                &format!("/api/v1/generate/history?{bad}"),
                Some(owner),
                None,
            )
            .await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
            "{bad}"
        );
    }
    s.call(
        Method::DELETE,
        &format!("/api/v1/generate/{}", id_of(&pending)),
        Some(owner),
        None,
    )
    .await;
}

async fn capture_state(s: &Stack, id: &str) -> (String, i32) {
    let db = s.state.db.get().await.unwrap();
    let r = db
        .query_one(
            "SELECT capture_state, capture_attempts FROM credit_holds WHERE generation_id = $1",
            &[&Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// A local stand-in for the credit service's internal API: records every
/// request, and answers as `mode` says.
#[derive(Clone, Default)]
struct FakeCredits {
    log: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
    /// "ok", "down" (503 on everything), "use-fails" (503 on use only),
    /// "use-rejects" (400 on use) or "use-slow" (use applied, answered after 6 s).
    mode: Arc<Mutex<&'static str>>,
    balance: Arc<Mutex<i64>>,
}

impl FakeCredits {
    async fn start() -> (FakeCredits, String) {
        let fake = FakeCredits {
            mode: Arc::new(Mutex::new("ok")),
            ..FakeCredits::default()
        };
        let answer = |fake: &FakeCredits,
                      what: &str,
                      headers: HeaderMap,
                      body: Value|
         -> (AxStatus, Json<Value>) {
            fake.log
                .lock()
                .unwrap()
                .push((what.to_string(), headers, body));
            let mode = *fake.mode.lock().unwrap();
            if mode == "down" || (mode == "use-fails" && what == "use") {
                return (
                    AxStatus::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "down"})),
                );
            }
            if mode == "use-rejects" && what == "use" {
                return (AxStatus::BAD_REQUEST, Json(json!({"error": "refused"})));
            }
            (
                AxStatus::OK,
                Json(json!({"success": true, "balance": *fake.balance.lock().unwrap()})),
            )
        };
        let app =
            Router::new()
                .route(
                    "/api/v1/internal/credits/balance/{user}",
                    get(
                        move |State(f): State<FakeCredits>,
                              Path(user): Path<String>,
                              h: HeaderMap| async move {
                            answer(&f, "balance", h, json!({"userId": user}))
                        },
                    ),
                )
                .route(
                    "/api/v1/internal/credits/{op}",
                    post(
                        move |State(f): State<FakeCredits>,
                              Path(op): Path<String>,
                              h: HeaderMap,
                              Json(b): Json<Value>| async move {
                            let slow = *f.mode.lock().unwrap() == "use-slow" && op == "use";
                            let answered = answer(&f, &op, h, b);
                            if slow {
                                // Applied, but the answer comes after the client gave up.
                                tokio::time::sleep(std::time::Duration::from_secs(6)).await;
                            }
                            answered
                        },
                    ),
                )
                .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }

    fn set(&self, mode: &'static str) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self, what: &str) -> Vec<(HeaderMap, Value)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, ..)| w == what)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

async fn manacore_stack(fake_url: &str, extra: &[(&str, &str)]) -> Stack {
    let mut settings = vec![
        ("APP_ENV", "production"),
        ("FREE_GENERATIONS", "0"),
        ("CREDITS_PROVIDER", "manacore"),
        ("MANA_CREDITS_URL", fake_url),
        ("MANA_CORE_SERVICE_KEY", "svc-key-123"),
        ("APP_ID", "picture-test"),
    ];
    settings.extend_from_slice(extra);
    Stack::with(&settings).await
}

#[tokio::test]
async fn manacore_is_asked_with_service_key_and_charged_after_success() {
    let (fake, url) = FakeCredits::start().await;
    *fake.balance.lock().unwrap() = 100;
    let s = manacore_stack(&url, &[]).await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(user, "paid by the service [sim:slow=50]", true)
        .await;
    assert_eq!(
        (status, g["creditsUsed"].as_i64()),
        (StatusCode::CREATED, Some(10)),
        "{g}"
    );
    let (headers, _) = &fake.calls("balance")[0];
    assert_eq!(
        (
            headers["x-service-key"].to_str().unwrap(),
            headers["x-app-id"].to_str().unwrap()
        ),
        ("svc-key-123", "picture-test")
    );
    let uses = fake.calls("use");
    assert_eq!(uses.len(), 1);
    let (headers, body) = &uses[0];
    assert_eq!(headers["x-service-key"], "svc-key-123");
    assert_eq!(
        (
            body["userId"].as_str(),
            body["amount"].as_i64(),
            body["appId"].as_str()
        ),
        (
            Some(user.to_string().as_str()),
            Some(10),
            Some("picture-test")
        )
    );
    assert_eq!(body["metadata"]["generationId"], g["generationId"]);
    let use_key = format!("picture:use:{}", id_of(&g));
    assert_eq!(
        (
            headers["idempotency-key"].to_str().unwrap(),
            body["idempotencyKey"].as_str()
        ),
        (use_key.as_str(), Some(use_key.as_str()))
    );

    // A failed generation sends nothing to the service.
    let (_, f) = s.generate(user, "doomed [sim:fail]", true).await;
    assert_eq!(f["status"], "failed");
    assert_eq!(fake.calls("use").len(), 1);

    // Support refund: once, with the same headers.
    let gen_id = Uuid::parse_str(&id_of(&g)).unwrap();
    let refund = || async {
        let mut db = s.state.db.get().await.unwrap();
        let tx = db.transaction().await.unwrap();
        let n = s.state.credits.refund(&*tx, gen_id).await.unwrap();
        tx.commit().await.unwrap();
        n
    };
    assert_eq!((refund().await, refund().await), (10, 0));
    let refunds = fake.calls("refund");
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        (
            refunds[0].0["x-app-id"].to_str().unwrap(),
            refunds[0].1["metadata"]["generationId"].clone()
        ),
        ("picture-test", g["generationId"].clone())
    );
    assert_eq!(
        refunds[0].0["idempotency-key"].to_str().unwrap(),
        format!("picture:refund:{}", id_of(&g))
    );
}

#[tokio::test]
async fn a_refused_capture_is_final_and_never_blocks_others() {
    let (fake, url) = FakeCredits::start().await;
    *fake.balance.lock().unwrap() = 100;
    fake.set("use-rejects");
    let s = manacore_stack(&url, &[]).await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "refused charge [sim:slow=50]", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    let id = id_of(&g);
    assert_eq!(capture_state(&s, &id).await, ("rejected".to_string(), 1));
    // Retries leave it alone: one call in all.
    let db = s.state.db.get().await.unwrap();
    s.state.credits.retry_captures(&**db, 1000).await.unwrap();
    assert!(
        !s.state
            .credits
            .settle_capture(&**db, Uuid::parse_str(&id).unwrap())
            .await
            .unwrap()
    );
    let mine = |calls: Vec<(HeaderMap, Value)>| {
        calls
            .into_iter()
            .filter(|(_, b)| b["metadata"]["generationId"] == g["generationId"])
            .count()
    };
    assert_eq!(mine(fake.calls("use")), 1);
    assert_eq!(capture_state(&s, &id).await, ("rejected".to_string(), 1));
}

#[tokio::test]
async fn a_capture_whose_answer_was_lost_is_resent_with_the_same_key() {
    let (fake, url) = FakeCredits::start().await;
    *fake.balance.lock().unwrap() = 100;
    fake.set("use-slow");
    let s = manacore_stack(&url, &[]).await;
    let (status, g) = s
        .generate(Uuid::new_v4(), "slow charge [sim:slow=50]", true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    let id = id_of(&g);
    // The path that completed it (the sync wait or the webhook) records the timeout; when
    // the webhook won, the answer came before it.
    let mut state = capture_state(&s, &id).await.0;
    for _ in 0..100 {
        if state != "in_flight" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state = capture_state(&s, &id).await.0;
    }
    assert_eq!(state, "failed", "timed out: unknown outcome");
    fake.set("ok");
    let db = s.state.db.get().await.unwrap();
    // The retry: ours, unless the late webhook's retry holds the hold's lease (then it is theirs).
    let generation = Uuid::parse_str(&id).unwrap();
    for _ in 0..50 {
        if s.state
            .credits
            .settle_capture(&**db, generation)
            .await
            .unwrap()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(capture_state(&s, &id).await.0, "done");
    let keys: Vec<String> = fake
        .calls("use")
        .into_iter()
        .filter(|(_, b)| b["metadata"]["generationId"] == g["generationId"])
        .map(|(h, _)| h["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    // The service saw the lost attempt and its retry (or retries) with one key, to apply once.
    assert!(keys.len() >= 2, "{keys:?}");
    assert!(
        keys.iter().all(|k| *k == format!("picture:use:{id}")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn manacore_outage_is_503_unless_configured_to_fail_open() {
    let (fake, url) = FakeCredits::start().await;
    fake.set("down");
    let closed = manacore_stack(&url, &[]).await;
    let (status, p) = closed.generate(Uuid::new_v4(), "blocked", true).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("CREDIT_SERVICE_UNAVAILABLE")
        ),
        "{p}"
    );
    let (status, p) = closed
        .call(
            Method::GET,
            "/api/v1/credits/balance",
            Some(Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("CREDIT_SERVICE_UNAVAILABLE")
        )
    );

    let open = manacore_stack(&url, &[("CREDIT_CHECK_FAILURE", "open")]).await;
    let (status, g) = open
        .generate(Uuid::new_v4(), "allowed [sim:slow=50]", true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
}

#[tokio::test]
async fn a_failed_capture_is_retried_and_lands_exactly_once() {
    let (fake, url) = FakeCredits::start().await;
    *fake.balance.lock().unwrap() = 100;
    fake.set("use-fails");
    let s = manacore_stack(&url, &[]).await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "capture later [sim:slow=50]", true).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the image is the user's even if the charge is late: {g}"
    );
    let id = id_of(&g);
    assert_eq!(capture_state(&s, &id).await, ("failed".to_string(), 1));

    // While the capture is open its credits stay reserved against the balance.
    *fake.balance.lock().unwrap() = 15;
    let (status, _) = s.generate(user, "over budget", true).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);

    fake.set("ok");
    let db = s.state.db.get().await.unwrap();
    let (a, b) = tokio::join!(s.state.credits.retry_captures(&**db, 1000), async {
        let db2 = s.state.db.get().await.unwrap();
        s.state
            .credits
            .settle_capture(&**db2, Uuid::parse_str(&id).unwrap())
            .await
            .unwrap()
    });
    a.unwrap();
    let _ = b;
    assert_eq!(capture_state(&s, &id).await.0, "done");
    s.state.credits.retry_captures(&**db, 1000).await.unwrap();
    let successful: Vec<_> = fake
        .calls("use")
        .into_iter()
        .filter(|(_, b)| b["metadata"]["generationId"] == g["generationId"])
        .collect();
    // One failed attempt, then exactly one more: concurrent retries do not both send it.
    assert_eq!(successful.len(), 2, "{successful:?}");
}

/// Capture retries against a credit service that hangs get a share of the
/// reconciler's time, not all of it: a lost webhook is still recovered in the
/// same run (before Replicate deletes the output).
#[tokio::test]
async fn a_hanging_credit_service_leaves_the_reconciler_time_for_lost_webhooks() {
    let (fake, url) = FakeCredits::start().await;
    *fake.balance.lock().unwrap() = 1000;
    fake.set("use-fails");
    let (db, name, server) = crate::common::own_database("captures").await;
    let settings = [
        ("DATABASE_URL", db.as_str()),
        ("RECONCILE_GRACE_SECONDS", "0"),
        // A budget of 8 s: less than three captures that each wait 5 s.
        ("FUNCTION_TIMEOUT_SECONDS", "13"),
    ];
    let s = manacore_stack(&url, &settings).await;
    let user = Uuid::new_v4();
    for i in 0..3 {
        let (status, g) = s
            .generate(user, &format!("charged later {i} [sim:slow=50]"), true)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
    }
    let (_, g) = s
        .generate(user, "lost webhook [sim:no-webhook] [sim:slow=50]", false)
        .await;
    let lost = id_of(&g);
    for _ in 0..100 {
        if let Some(pid) = s.row(&lost).await.prediction_id
            && s.state.replicate.get(&pid).await.unwrap().is_terminal()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fake.set("use-slow");
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled), (1, 1), "{report:?}");
    s.assert_completed_once(&lost).await;
    drop(s);
    crate::common::drop_database(&server, &name).await;
}
