//! Batches against the real stores and the simulator: admission all or
//! nothing, at most `MAX_IN_FLIGHT_PER_USER` items running (sampled while the
//! batch runs), every item charged once, failed items retried alone, a cancel
//! that releases every unfinished hold, one batch per Idempotency-Key under
//! concurrency; the audit proves the money.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack, own_database};

async fn post(s: &Stack, user: Uuid, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    s.call(Method::POST, path, Some(user), body).await
}

fn batch(prompts: &[&str]) -> Value {
    let prompts: Vec<Value> = prompts.iter().map(|p| json!({"prompt": p})).collect();
    json!({"name": "a batch", "prompts": prompts, "settings": {"modelId": FLUX, "steps": 4}})
}

/// Posts a batch of `prompts`, which must be admitted (201): its id and view.
async fn create(s: &Stack, user: Uuid, prompts: &[&str]) -> (String, Value) {
    let (status, b) = post(s, user, "/api/v1/batches", Some(batch(prompts))).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    (b["id"].as_str().unwrap().to_string(), b)
}

async fn get(s: &Stack, user: Uuid, id: &str) -> Value {
    let (status, b) = s
        .call(
            Method::GET,
            &format!("/api/v1/batches/{id}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b
}

/// Waits until the batch has ended (any status but queued and processing); returns it.
async fn ended(s: &Stack, user: Uuid, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = get(s, user, id).await;
        if !matches!(b["status"].as_str(), Some("queued" | "processing")) {
            return b;
        }
        assert!(Instant::now() < deadline, "batch still running: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn one(s: &Stack, sql: &str, user: Uuid) -> i64 {
    let db = s.state.db.get().await.unwrap();
    db.query_one(sql, &[&user]).await.unwrap().get(0)
}

const RUNNING: &str =
    "SELECT count(*) FROM generations WHERE user_id = $1 AND status IN ('pending', 'processing')";

async fn balance(s: &Stack, user: Uuid) -> i64 {
    let (_, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    b["balance"].as_i64().unwrap()
}

#[tokio::test]
async fn a_batch_runs_at_most_the_cap_at_once_and_charges_each_item_once() {
    // A database of its own: another test's reconciler run (with its own cap) must not
    // start this batch's items.
    let (db, name, server) = own_database("batches").await;
    let s = Stack::with(&[
        ("DATABASE_URL", db.as_str()),
        ("APP_ENV", "staging"),
        ("MAX_IN_FLIGHT_PER_USER", "3"),
    ])
    .await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let prompts: Vec<String> = (0..10)
        .map(|i| format!("item {i} [sim:slow=400]"))
        .collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (id, b) = create(&s, user, &prompts).await;
    assert_eq!(b["counts"]["total"], 10, "{b}");
    let indexes: Vec<_> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].clone())
        .collect();
    assert_eq!(indexes, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
    // All ten held at admission: 3 free slots, then 7 × 10 credits.
    let held = "SELECT count(*) FROM credit_holds WHERE user_id = $1";
    assert_eq!(one(&s, held, user).await, 10);

    // Sampled while it runs: never more than 3 running, and 3 at some point.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = one(&s, RUNNING, user).await;
        assert!(running <= 3, "{running} items running at once");
        most = most.max(running);
        let b = get(&s, user, &id).await;
        if b["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "batch still running: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, 3, "the batch ran three at a time");
    let b = get(&s, user, &id).await;
    assert_eq!(b["counts"]["completed"], 10, "{b}");
    for item in b["items"].as_array().unwrap() {
        assert_eq!(
            item["generation"]["images"].as_array().map(Vec::len),
            Some(1),
            "{item}"
        );
        assert_eq!(item["generation"]["batchId"], json!(id));
    }
    let captured = "SELECT count(*) FROM credit_holds WHERE user_id = $1 AND state = 'captured'";
    assert_eq!(one(&s, captured, user).await, 10);
    assert_eq!(balance(&s, user).await, 30);
    // The items are generations like any other: in the history, with their batch.
    let (_, history) = s
        .call(
            Method::GET,
            "/api/v1/generate/history?limit=100",
            Some(user),
            None,
        )
        .await;
    assert_eq!(history["total"], 10, "{history}");
    assert!(
        history["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["batchId"] == json!(id))
    );
    let (_, list) = s
        .call(Method::GET, "/api/v1/batches", Some(user), None)
        .await;
    assert_eq!(list["data"][0]["id"], json!(id), "{list}");
    assert_eq!(list["data"][0]["status"], "completed");
    assert!(list["data"][0].get("items").is_none());
    s.thumbnails_tried(user).await;
    s.assert_audit_clean(user).await;

    // Deleting the batch deletes its images; the batch is gone.
    let path = format!("/api/v1/batches/{id}");
    let (status, _) = s.call(Method::DELETE, &path, Some(user), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let images = "SELECT count(*) FROM images WHERE user_id = $1";
    assert_eq!(one(&s, images, user).await, 0);
    let (status, p) = s.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(
        (status, &p["code"]),
        (StatusCode::NOT_FOUND, &json!("BATCH_NOT_FOUND"))
    );
    s.assert_audit_clean(user).await;
    drop(s);
    drop_database(&server, &name).await;
}

async fn drop_database(server: &tokio_postgres::Client, name: &str) {
    crate::common::drop_database(server, name).await;
}

#[tokio::test]
async fn failed_items_end_partial_with_holds_released_and_retry_runs_only_them() {
    let s = Stack::with(&[("APP_ENV", "staging")]).await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let prompts = [
        "fine 0 [sim:slow=50]",
        "broken 1 [sim:fail] [sim:slow=50]",
        "fine 2 [sim:slow=50]",
        "broken 3 [sim:fail] [sim:slow=50]",
    ];
    let (id, _) = create(&s, user, &prompts).await;
    let b = ended(&s, user, &id).await;
    assert_eq!(b["status"], "partial", "{b}");
    assert_eq!(
        (&b["counts"]["completed"], &b["counts"]["failed"]),
        (&json!(2), &json!(2))
    );
    let failed_before: Vec<Value> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "failed")
        .map(|i| i["generationId"].clone())
        .collect();
    // 3 free slots: fine 0, broken 1 (given back), fine 2 → fine 0 and fine 2 used 2 of them.
    let released = "SELECT count(*) FROM credit_holds WHERE user_id = $1 AND state = 'released'";
    assert_eq!(one(&s, released, user).await, 2);
    assert_eq!(balance(&s, user).await, 100);

    let (status, r) = post(&s, user, &format!("/api/v1/batches/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let b = ended(&s, user, &id).await;
    let runs = "SELECT count(*) FROM generations WHERE user_id = $1";
    assert_eq!(
        one(&s, runs, user).await,
        6,
        "only the two failed items ran again"
    );
    let items = b["items"].as_array().unwrap();
    for (item, was) in items
        .iter()
        .filter(|i| i["index"] == 1 || i["index"] == 3)
        .zip(&failed_before)
    {
        assert_ne!(&item["generationId"], was, "a new run: {item}");
        assert_eq!(item["status"], "failed");
    }
    assert_eq!(b["status"], "partial");
    assert_eq!(one(&s, released, user).await, 4);
    // A retry with nothing failed is a no-op.
    let completed_ids: Vec<_> = items.iter().map(|i| i["generationId"].clone()).collect();
    let (status, _) = post(&s, user, &format!("/api/v1/batches/{id}/retry"), None).await;
    assert_eq!(status, StatusCode::OK);
    let again: Vec<_> = ended(&s, user, &id).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["generationId"].clone())
        .collect();
    assert_ne!(again, completed_ids, "failed ones re-run each time");
    assert_eq!(balance(&s, user).await, 100);
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn cancelling_mid_way_releases_every_unfinished_hold() {
    // Its own database: no other test's reconciler starts its queued items.
    let (db, name, server) = own_database("batches").await;
    let s = Stack::with(&[
        ("DATABASE_URL", db.as_str()),
        ("APP_ENV", "staging"),
        ("MAX_IN_FLIGHT_PER_USER", "2"),
    ])
    .await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let prompts = [
        "quick [sim:slow=50]",
        "endless 1 [sim:hang]",
        "endless 2 [sim:hang]",
        "endless 3 [sim:hang]",
        "endless 4 [sim:hang]",
    ];
    let (id, _) = create(&s, user, &prompts).await;
    // Wait for the quick one to complete and two hanging ones to run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = get(&s, user, &id).await;
        if b["counts"]["completed"] == 1 && b["counts"]["processing"] == 2 {
            assert_eq!(b["counts"]["queued"], 2, "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, b) = post(&s, user, &format!("/api/v1/batches/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["status"], "partial",
        "one completed before the cancel: {b}"
    );
    assert_eq!(
        (&b["counts"]["completed"], &b["counts"]["cancelled"]),
        (&json!(1), &json!(4)),
        "{b}"
    );
    let open = "SELECT count(*) FROM credit_holds WHERE user_id = $1 AND state = 'held'";
    assert_eq!(one(&s, open, user).await, 0);
    let charged = "SELECT count(*) FROM credit_holds WHERE user_id = $1 AND state = 'captured'";
    assert_eq!(one(&s, charged, user).await, 1);
    // The quick one used a free slot; the four cancelled gave theirs back.
    assert_eq!(balance(&s, user).await, 100);
    let (_, bal) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(bal["freeGenerationsRemaining"], 2, "{bal}");
    // The running ones were stopped at the provider too.
    for item in b["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "cancelled")
    {
        let g = s.row(item["generationId"].as_str().unwrap()).await;
        if let Some(pid) = g.prediction_id {
            let (_, p) = s.sim(Method::GET, &format!("/v1/predictions/{pid}")).await;
            assert_eq!(p["status"], "canceled", "{p}");
        }
    }
    // Nothing starts later: the reconciler finds nothing queued to run.
    let open = "SELECT count(*) FROM generations WHERE user_id = $1
                 AND status IN ('queued', 'pending', 'processing')";
    assert_eq!(one(&s, open, user).await, 0);
    s.assert_audit_clean(user).await;
    drop(s);
    drop_database(&server, &name).await;
}

#[tokio::test]
async fn concurrent_posts_with_one_key_make_one_batch() {
    let s = Stack::with(&[
        ("APP_ENV", "staging"),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "100"),
    ])
    .await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let body = batch(&["twin a [sim:slow=50]", "twin b [sim:slow=50]"]);
    let key = Uuid::new_v4().to_string();
    let calls = (0..10).map(|_| {
        let req = s
            .http
            .post(format!("{}/api/v1/batches", s.base))
            .bearer_auth(s.token(user))
            .header("idempotency-key", &key)
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut ids = std::collections::HashSet::new();
    for (status, b) in &answers {
        match *status {
            StatusCode::CREATED => {
                ids.insert(b["id"].clone());
            }
            StatusCode::CONFLICT => assert_eq!(b["code"], "IDEMPOTENCY_IN_PROGRESS", "{b}"),
            other => panic!("{other}: {b}"),
        }
    }
    assert_eq!(ids.len(), 1, "{answers:?}");
    let batches = "SELECT count(*) FROM batches WHERE user_id = $1";
    assert_eq!(one(&s, batches, user).await, 1);
    let holds = "SELECT count(*) FROM credit_holds WHERE user_id = $1";
    assert_eq!(one(&s, holds, user).await, 2);
    let id = ids.into_iter().next().unwrap();
    ended(&s, user, id.as_str().unwrap()).await;
    // The same key with another body is refused.
    let (status, p) = {
        let res = s
            .http
            .post(format!("{}/api/v1/batches", s.base))
            .bearer_auth(s.token(user))
            .header("idempotency-key", &key)
            .json(&batch(&["another"]))
            .send()
            .await
            .unwrap();
        (res.status(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, &p["code"]),
        (StatusCode::CONFLICT, &json!("IDEMPOTENCY_KEY_REUSED"))
    );
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn refused_batches_leave_nothing_behind() {
    let s = Stack::with(&[
        ("APP_ENV", "staging"),
        ("MAX_QUEUED_PER_USER", "5"),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "100"),
    ])
    .await;
    let user = Uuid::new_v4();
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"prompt": format!("p{i}")}))
        .collect();
    let cases = [
        (json!({"prompts": []}), "prompts"),
        (json!({"prompts": eleven}), "prompts"),
        (json!({"prompts": [{"prompt": "a"}], "extra": 1}), "extra"),
        (
            json!({"prompts": [{"prompt": "a"}, {"prompt": "  "}]}),
            "prompts[1].prompt",
        ),
        (
            json!({"prompts": [{"prompt": "a", "width": 512}]}),
            "prompts[0].width",
        ),
        (
            json!({"prompts": [{"prompt": "a"}], "settings": {"width": 99999}}),
            "settings.width",
        ),
        (
            json!({"prompts": [{"prompt": "a"}], "settings": {"sourceImageUrl": "https://x/y.png"}}),
            "settings.sourceImageUrl",
        ),
        (
            json!({"prompts": [{"prompt": "a"}], "settings": {"numOutputs": 9}}),
            "settings.numOutputs",
        ),
        (
            json!({"prompts": [{"prompt": "a\u{0}b"}]}),
            "prompts[0].prompt",
        ),
        (json!({"prompts": "a"}), "prompts"),
    ];
    for (body, field) in cases {
        let (status, p) = post(&s, user, "/api/v1/batches", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {p}");
        let fields: Vec<_> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].clone())
            .collect();
        assert!(fields.contains(&json!(field)), "{body} → {p}");
    }
    // 4 items with 3 free slots and no credits: 402 for the whole batch.
    let (status, p) = post(
        &s,
        user,
        "/api/v1/batches",
        Some(batch(&["a", "b", "c", "d"])),
    )
    .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{p}");
    assert_eq!(
        (&p["required"], &p["freeGenerationsRemaining"]),
        (&json!(10), &json!(3)),
        "{p}"
    );
    // More than may wait: 429 with the limit.
    s.grant(user, 1000).await;
    let six = ["a", "b", "c", "d", "e", "f"];
    let (status, p) = post(&s, user, "/api/v1/batches", Some(batch(&six))).await;
    assert_eq!(
        (status, &p["code"], &p["limit"]),
        (
            StatusCode::TOO_MANY_REQUESTS,
            &json!("TOO_MANY_IN_FLIGHT"),
            &json!(5)
        ),
        "{p}"
    );
    let nothing = "SELECT (SELECT count(*) FROM batches WHERE user_id = $1)
                        + (SELECT count(*) FROM generations WHERE user_id = $1)
                        + (SELECT count(*) FROM credit_holds WHERE user_id = $1)";
    assert_eq!(one(&s, nothing, user).await, 0);
    let (_, bal) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(bal["freeGenerationsRemaining"], 3);

    // Another user's batch, an unknown one and a malformed id are all 404.
    let (status, b) = post(
        &s,
        user,
        "/api/v1/batches",
        Some(batch(&["mine [sim:slow=50]"])),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap();
    let other = Uuid::new_v4();
    let unknown = Uuid::new_v4().to_string();
    for path in [
        format!("/api/v1/batches/{id}"),
        format!("/api/v1/batches/{unknown}"),
        "/api/v1/batches/nope".into(),
    ] {
        for (method, p) in [
            (Method::GET, path.clone()),
            (Method::DELETE, path.clone()),
            (Method::POST, format!("{path}/cancel")),
            (Method::POST, format!("{path}/retry")),
        ] {
            let (status, body) = s.call(method.clone(), &p, Some(other), None).await;
            assert_eq!(
                (status, &body["code"]),
                (StatusCode::NOT_FOUND, &json!("BATCH_NOT_FOUND")),
                "{method} {p}"
            );
        }
    }
    ended(&s, user, id).await;
    s.assert_audit_clean(user).await;
}

/// Faults: a cancel cut short after marking the batch (its items still open)
/// and an item whose end nobody reported (no webhook, no poll) leave work that
/// the reconciler finishes; the audit sees the first meanwhile.
#[tokio::test]
async fn the_reconciler_finishes_an_interrupted_cancel_and_starts_what_was_left_waiting() {
    let (db, name, server) = own_database("batches").await;
    let s = Stack::with(&[
        ("DATABASE_URL", db.as_str()),
        ("APP_ENV", "staging"),
        ("MAX_IN_FLIGHT_PER_USER", "1"),
        ("RECONCILE_GRACE_SECONDS", "0"),
    ])
    .await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let body = batch(&["endless [sim:hang]", "waiting 1", "waiting 2"]);
    let (status, b) = post(&s, user, "/api/v1/batches", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&b["counts"]["processing"], &b["counts"]["queued"]),
        (&json!(1), &json!(2)),
        "{b}"
    );
    // The cancel marked the batch, then its process died: nothing was cancelled.
    let db = s.state.db.get().await.unwrap();
    db.execute(
        "UPDATE batches SET cancelled_at = now() - interval '2 hours' WHERE id = $1",
        &[&Uuid::parse_str(&id).unwrap()],
    )
    .await
    .unwrap();
    drop(db);
    let filter = picture::audit::Filter {
        since: None,
        user: Some(user),
    };
    let found = picture::audit::inspect(&s.state, &filter).await.unwrap();
    let kinds: Vec<_> = found.violations.iter().map(|v| v.kind).collect();
    assert_eq!(kinds, ["open_in_cancelled_batch"; 3], "{kinds:?}");
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.batch_items_cancelled, 3, "{report:?}");
    let b = get(&s, user, &id).await;
    assert_eq!(
        (&b["status"], &b["counts"]["cancelled"]),
        (&json!("cancelled"), &json!(3)),
        "{b}"
    );
    assert_eq!(balance(&s, user).await, 100);
    s.assert_audit_clean(user).await;

    // An item whose end no webhook reports: the reconciler settles it and starts the next.
    let body = batch(&[
        "unheard [sim:no-webhook] [sim:slow=50]",
        "next [sim:slow=50]",
    ]);
    let (status, b) = post(&s, user, "/api/v1/batches", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = get(&s, user, &id).await;
    assert_eq!(
        (&b["counts"]["processing"], &b["counts"]["queued"]),
        (&json!(1), &json!(1)),
        "nothing heard yet: {b}"
    );
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.queued_started, 1, "{report:?}");
    let b = ended(&s, user, &id).await;
    assert_eq!(b["status"], "completed", "{b}");
    s.thumbnails_tried(user).await;
    s.assert_audit_clean(user).await;
    drop(s);
    drop_database(&server, &name).await;
}

/// Batches admitted at once compete for one balance under the user's lock:
/// each is held whole or refused whole, never more than the balance.
#[tokio::test]
async fn concurrent_batches_never_hold_more_than_the_balance() {
    let s = Stack::with(&[
        ("APP_ENV", "staging"),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "100"),
    ])
    .await;
    let user = Uuid::new_v4();
    // The free generations used first: every item costs 10 credits.
    let (status, b) = post(
        &s,
        user,
        "/api/v1/batches",
        Some(batch(&[
            "a [sim:slow=20]",
            "b [sim:slow=20]",
            "c [sim:slow=20]",
        ])),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    ended(&s, user, b["id"].as_str().unwrap()).await;
    s.grant(user, 50).await;
    // Five batches of two items (20 credits each) against 50 credits: two fit.
    let bodies: Vec<Value> = (0..5)
        .map(|i| {
            batch(&[
                &format!("pair {i} a [sim:slow=20]"),
                &format!("pair {i} b [sim:slow=20]"),
            ])
        })
        .collect();
    let answers = futures::future::join_all(
        bodies
            .into_iter()
            .map(|b| post(&s, user, "/api/v1/batches", Some(b))),
    )
    .await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    let refused = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!((created.len(), refused), (2, 3), "{answers:?}");
    for b in &created {
        ended(&s, user, b["id"].as_str().unwrap()).await;
    }
    assert_eq!(balance(&s, user).await, 10);
    let items = "SELECT count(*) FROM generations WHERE user_id = $1";
    assert_eq!(one(&s, items, user).await, 3 + 4);
    s.assert_audit_clean(user).await;
}

/// Concurrent retries of one batch re-run each failed item once.
#[tokio::test]
async fn concurrent_retries_rerun_each_failed_item_once() {
    let s = Stack::with(&[
        ("APP_ENV", "staging"),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "100"),
    ])
    .await;
    let user = Uuid::new_v4();
    s.grant(user, 100).await;
    let prompts = [
        "fine [sim:slow=20]",
        "broken 1 [sim:fail] [sim:slow=20]",
        "broken 2 [sim:fail] [sim:slow=20]",
    ];
    let (id, _) = create(&s, user, &prompts).await;
    assert_eq!(ended(&s, user, &id).await["status"], "partial");
    let path = format!("/api/v1/batches/{id}/retry");
    let answers = futures::future::join_all((0..5).map(|_| post(&s, user, &path, None))).await;
    assert!(
        answers.iter().all(|(st, _)| *st == StatusCode::OK),
        "{answers:?}"
    );
    ended(&s, user, &id).await;
    let runs = "SELECT count(*) FROM generations WHERE user_id = $1";
    assert_eq!(
        one(&s, runs, user).await,
        3 + 2,
        "each failed item re-ran once"
    );
    let holds = "SELECT count(*) FROM credit_holds WHERE user_id = $1";
    assert_eq!(one(&s, holds, user).await, 5);
    assert_eq!(
        balance(&s, user).await,
        100,
        "the fine one used a free slot; failures cost nothing"
    );
    s.assert_audit_clean(user).await;
}
