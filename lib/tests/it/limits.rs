//! Rate limits and idempotency keys against the DynamoDB emulator: exactly
//! the limit admitted under concurrency, 429s that say when to come back,
//! budgets per user and per route, fail-open reads and fail-closed generate,
//! and one generation per idempotency key however the retries arrive.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use picture::records::ratelimit;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack};

/// Waits out the last seconds of a minute, so that a burst falls into one window.
async fn fresh_window() {
    let second = chrono::Utc::now()
        .timestamp()
        .rem_euclid(ratelimit::WINDOW_SECS);
    if second >= ratelimit::WINDOW_SECS - 8 {
        tokio::time::sleep(Duration::from_secs(
            (ratelimit::WINDOW_SECS - second + 1) as u64,
        ))
        .await;
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// POST /generate as `user` with `body` and extra headers; status, headers and JSON body.
async fn post(
    s: &Stack,
    user: Uuid,
    body: &Value,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = s
        .http
        .post(format!("{}/api/v1/generate", s.base))
        .bearer_auth(s.token(user))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_limiter_admits_exactly_its_limit_under_concurrency() {
    let s = Stack::start().await;
    let (user, now) = (Uuid::new_v4(), chrono::Utc::now().timestamp());
    let decisions = futures::future::join_all(
        (0..40).map(|_| ratelimit::check(&s.state.records, user, "POST /test", 10, now)),
    )
    .await;
    let admitted: Vec<_> = decisions
        .iter()
        .map(|d| d.as_ref().unwrap())
        .filter(|d| d.allowed)
        .collect();
    assert_eq!(admitted.len(), 10);
    let mut remaining: Vec<_> = admitted.iter().map(|d| d.remaining).collect();
    remaining.sort();
    assert_eq!(remaining, (0..10).collect::<Vec<_>>());
    // The next window starts from zero.
    let next = ratelimit::check(&s.state.records, user, "POST /test", 10, now + 60)
        .await
        .unwrap();
    assert!(next.allowed && next.remaining == 9);
}

#[tokio::test]
async fn forty_concurrent_generates_admit_ten_and_429_the_rest() {
    let s = Stack::with(&[("MAX_IN_FLIGHT_PER_USER", "100")]).await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    fresh_window().await;
    let bodies: Vec<Value> = (0..40)
        .map(|i| json!({"prompt": format!("burst {i} [sim:hang]"), "modelId": FLUX}))
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| post(&s, user, b, &[]))).await;
    let accepted: Vec<_> = answers
        .iter()
        .filter(|(st, ..)| *st == StatusCode::ACCEPTED)
        .collect();
    let limited: Vec<_> = answers
        .iter()
        .filter(|(st, ..)| *st == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((accepted.len(), limited.len()), (10, 30));
    for (_, h, p) in &limited {
        assert_eq!(p["code"], "RATE_LIMITED");
        let retry = header(h, "retry-after").expect("Retry-After");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(header(h, "ratelimit-remaining"), Some(0));
        assert_eq!(header(h, "ratelimit-reset"), Some(retry));
    }
    for (_, h, _) in &accepted {
        assert_eq!(header(h, "ratelimit-limit"), Some(10));
        assert!(header(h, "ratelimit-remaining").is_some());
    }
    // Another user's budget is untouched.
    let (status, h, g) = post(&s, other, &bodies[0], &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    assert_eq!(header(&h, "ratelimit-remaining"), Some(9));
    let bodies: Vec<Value> = accepted.iter().map(|(_, _, b)| b.clone()).collect();
    s.cancel_all(user, &bodies).await;
    s.cancel_all(other, &[g]).await;
}

#[tokio::test]
async fn reads_have_a_budget_per_route() {
    let s = Stack::with(&[("RATE_LIMIT_READS_PER_MINUTE", "2")]).await;
    let user = Uuid::new_v4();
    fresh_window().await;
    let list = || s.call(Method::GET, "/api/v1/images", Some(user), None);
    assert_eq!(list().await.0, StatusCode::OK);
    assert_eq!(list().await.0, StatusCode::OK);
    let (status, p) = list().await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMITED"))
    );
    let (status, _) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK, "another route has its own window");
}

/// Reads are counted in DynamoDB after their answer: an instance refuses once
/// it admitted the limit itself, or once the table refused one of its counts
/// (the window was filled elsewhere). So a second instance admits at most the
/// reads it sent before it learnt, and the window's count is exact.
#[tokio::test]
async fn reads_counted_by_one_instance_limit_another_once_it_learns() {
    let env = [("RATE_LIMIT_READS_PER_MINUTE", "2")];
    let (a, b) = (Stack::with(&env).await, Stack::with(&env).await);
    let user = Uuid::new_v4();
    fresh_window().await;
    async fn list(s: &Stack, user: Uuid) -> (StatusCode, serde_json::Value) {
        s.call(Method::GET, "/api/v1/images", Some(user), None)
            .await
    }
    assert_eq!(list(&a, user).await.0, StatusCode::OK);
    assert_eq!(list(&a, user).await.0, StatusCode::OK);
    assert_eq!(
        list(&a, user).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the limit, in one instance"
    );
    picture::deferred::settle().await;
    // b has not heard of a's reads: it admits one, whose count the table refuses.
    assert_eq!(list(&b, user).await.0, StatusCode::OK);
    picture::deferred::settle().await;
    let (status, p) = list(&b, user).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMITED"))
    );
    let now = chrono::Utc::now().timestamp();
    let start = now - now.rem_euclid(60);
    let counted = a
        .state
        .records
        .client()
        .await
        .get_item()
        .table_name(a.state.records.name())
        .key(
            "pk",
            AttributeValue::S(format!("ratelimit#{user}#GET /api/v1/images")),
        )
        .key("sk", AttributeValue::S(start.to_string()))
        .send()
        .await
        .unwrap();
    let count = counted
        .item()
        .and_then(|i| i.get("count"))
        .and_then(|c| c.as_n().ok())
        .cloned();
    assert_eq!(
        count.as_deref(),
        Some("2"),
        "the table admitted exactly the limit"
    );
}

#[tokio::test]
async fn without_dynamodb_reads_fail_open_and_generate_fails_closed() {
    let dead = crate::common::dead_aws().await;
    let s = Stack::with_aws(
        &[],
        picture::state::AwsOverrides {
            dynamodb: Some(dead),
            ..Default::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let (status, list) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let (status, h, p) = post(&s, user, &json!({"prompt": "x", "modelId": FLUX}), &[]).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("RATE_LIMIT_UNAVAILABLE")
        )
    );
    assert!(h.get("ratelimit-limit").is_none());
    let db = s.state.db.get().await.unwrap();
    let started: i64 = db
        .query_one(
            "SELECT count(*) FROM generations WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(started, 0);
}

/// Rows of `table` that belong to `user`.
async fn rows(s: &Stack, table: &str, user: Uuid) -> i64 {
    let db = s.state.db.get().await.unwrap();
    db.query_one(
        &format!("SELECT count(*) FROM {table} WHERE user_id = $1"),
        &[&user],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_make_one_generation() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let key = format!("order-{}", Uuid::new_v4());
    let body = json!({"prompt": "once only [sim:hang]", "modelId": FLUX});
    let with_key = [("idempotency-key", key.as_str())];
    let answers = futures::future::join_all((0..4).map(|_| post(&s, user, &body, &with_key))).await;
    assert_eq!(rows(&s, "generations", user).await, 1);
    assert_eq!(rows(&s, "credit_holds", user).await, 1);
    let first: Vec<_> = answers
        .iter()
        .filter(|(_, h, _)| h.get("idempotency-replayed").is_none())
        .collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    let (status, _, original) = first[0];
    assert_eq!(*status, StatusCode::ACCEPTED);
    for (status, h, b) in &answers {
        match *status {
            StatusCode::ACCEPTED => assert_eq!(b, original),
            StatusCode::CONFLICT => assert_eq!(b["code"], "IDEMPOTENCY_IN_PROGRESS"),
            other => panic!("unexpected {other}: {b}"),
        }
        assert!(h.get("x-request-id").is_some());
    }

    // A later retry gets the same answer, marked as replayed.
    let (status, h, again) = post(&s, user, &body, &with_key).await;
    assert_eq!((status, &again), (StatusCode::ACCEPTED, original));
    assert_eq!(h["idempotency-replayed"], "true");
    // The same key with another body is refused; another user's key is their own.
    let other_body = json!({"prompt": "something else", "modelId": FLUX});
    let (status, _, p) = post(&s, user, &other_body, &with_key).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    let stranger = Uuid::new_v4();
    let (status, _, theirs) = post(&s, stranger, &body, &with_key).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(theirs["generationId"], original["generationId"]);
    assert_eq!(rows(&s, "generations", user).await, 1);

    let long = "k".repeat(256);
    let (status, _, p) = post(&s, user, &body, &[("idempotency-key", long.as_str())]).await;
    assert_eq!(
        (status, p["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Idempotency-Key"))
    );
    s.cancel_all(user, std::slice::from_ref(original)).await;
    s.cancel_all(stranger, &[theirs]).await;
}

/// A generation the provider refused to start frees its key: the retry runs again
/// (here: refused again, a second failed generation, nothing charged).
#[tokio::test]
async fn a_refused_start_frees_its_key() {
    let s = Stack::with(&[("REPLICATE_API_TOKEN", "r8_wrong")]).await;
    let user = Uuid::new_v4();
    let body = json!({"prompt": "provider refuses", "modelId": FLUX});
    let with_key = [("idempotency-key", "retry-me")];
    for tries in 1..=2 {
        let (status, h, p) = post(&s, user, &body, &with_key).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_GATEWAY, Some("PROVIDER_ERROR")),
            "{p}"
        );
        assert!(h.get("idempotency-replayed").is_none());
        assert_eq!(rows(&s, "generations", user).await, tries);
    }
    let (_, credits) = s
        .call(
            reqwest::Method::GET,
            "/api/v1/credits/balance",
            Some(user),
            None,
        )
        .await;
    assert_eq!(credits["freeGenerationsRemaining"], 3, "{credits}");
}

/// Answers that depend on the moment are not kept for the key: after 503
/// `PROVIDER_BUSY` (throttled until the budget ran out) and after 402 (until
/// credits are bought) the same key and body start the generation.
#[tokio::test]
async fn a_key_is_not_bound_to_an_answer_the_client_must_retry() {
    let s = Stack::with(&[
        ("FUNCTION_TIMEOUT_SECONDS", "7"),
        ("APP_ENV", "staging"),
        ("FREE_GENERATIONS", "0"),
    ])
    .await;
    let user = Uuid::new_v4();
    let db = s.state.db.get().await.unwrap();
    picture::db::ledger::grant(&**db, user, 10, "test")
        .await
        .unwrap();
    let prompt = format!("throttled {} [sim:create-429=3]", Uuid::new_v4());
    let busy = json!({"prompt": prompt, "modelId": FLUX});
    let with_key = [("idempotency-key", "busy-then-fine")];
    let (status, _, p) = post(&s, user, &busy, &with_key).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("PROVIDER_BUSY")),
        "{p}"
    );
    let (status, h, g) = post(&s, user, &busy, &with_key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    assert!(h.get("idempotency-replayed").is_none());

    // Now out of credits: 402, then the user buys some and retries with the same key.
    let body = json!({"prompt": "when I can pay", "modelId": FLUX});
    let with_key = [("idempotency-key", "pay-then-run")];
    let (status, _, p) = post(&s, user, &body, &with_key).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("INSUFFICIENT_CREDITS")),
        "{p}"
    );
    picture::db::ledger::grant(&**db, user, 10, "test")
        .await
        .unwrap();
    let (status, _, again) = post(&s, user, &body, &with_key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    s.cancel_all(user, &[g, again]).await;
}

#[tokio::test]
async fn a_lost_idempotency_record_still_leads_to_the_generation() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let body = json!({"prompt": "one of a kind [sim:slow=3000]", "modelId": FLUX});
    let with_key = [("idempotency-key", "lost-record")];
    let (status, _, first) = post(&s, user, &body, &with_key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // The runtime table loses the record (a failed COMPLETED write, a 5xx, an expiry).
    picture::records::answers::release(&s.state.records, user, "lost-record")
        .await
        .unwrap();
    let (status, h, again) = post(&s, user, &body, &with_key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert!(h.get("idempotency-replayed").is_none());
    assert_eq!(again["generationId"], first["generationId"]);
    assert_eq!(rows(&s, "generations", user).await, 1);
    // With another body the key is still refused.
    let other = json!({"prompt": "another", "modelId": FLUX});
    picture::records::answers::release(&s.state.records, user, "lost-record")
        .await
        .unwrap();
    let (status, _, p) = post(&s, user, &other, &with_key).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    s.cancel_all(user, &[first]).await;
}
