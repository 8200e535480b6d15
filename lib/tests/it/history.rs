//! `GET /generate/history` by cursor and by page: a cursor walk returns every
//! generation once, newest first (ties on `createdAt` broken by id), with or
//! without a status; `total` comes from the counters a trigger keeps (V14)
//! and stays right through completion, failure, cancellation and account
//! deletion; the audit finds a counter that was tampered with; bad cursors,
//! pages past the bound and both at once are 400 `VALIDATION_FAILED`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Stack, id_of};

const LIFTED: [(&str, &str); 2] = [
    ("RATE_LIMIT_GENERATE_PER_MINUTE", "1000"),
    ("RATE_LIMIT_READS_PER_MINUTE", "1000000"),
];

async fn history(s: &Stack, user: Uuid, query: &str) -> Value {
    let (status, h) = s
        .call(
            Method::GET,
            &format!("/api/v1/generate/history?{query}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {h}");
    h
}

fn ids(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(id_of).collect()
}

/// Follows `nextCursor` from the first page of `query` to the end; returns the
/// ids in the order seen and the `total`s the pages answered.
async fn walk(s: &Stack, user: Uuid, query: &str) -> (Vec<String>, Vec<i64>) {
    let (mut seen, mut totals) = (Vec::new(), Vec::new());
    let mut page = history(s, user, query).await;
    loop {
        seen.extend(ids(&page));
        totals.push(page["total"].as_i64().unwrap());
        let Some(next) = page["nextCursor"].as_str() else {
            return (seen, totals);
        };
        page = history(s, user, &format!("{query}&cursor={next}")).await;
        assert_eq!(page["page"], Value::Null, "a page by cursor has no number");
    }
}

/// The user's generation ids of `status` (all if `None`), newest first, as the rows order them.
async fn rows_in_order(s: &Stack, user: Uuid, status: Option<&str>) -> Vec<String> {
    let db = s.state.db.get().await.unwrap();
    db.query(
        "SELECT id FROM generations WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
          ORDER BY created_at DESC, id DESC",
        &[&user, &status],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, Uuid>(0).to_string())
    .collect()
}

async fn generation_count_findings(s: &Stack, user: Uuid) -> Vec<picture::audit::Violation> {
    let filter = picture::audit::Filter {
        since: None,
        user: Some(user),
    };
    let report = picture::audit::inspect(&s.state, &filter).await.unwrap();
    report
        .violations
        .into_iter()
        .filter(|v| v.kind == "generation_count")
        .collect()
}

#[tokio::test]
async fn a_cursor_walk_returns_every_generation_once_newest_first() {
    let s = Stack::with(&LIFTED).await;
    let user = Uuid::new_v4();
    for i in 0..7 {
        let prompt = if i % 3 == 1 {
            format!("walk {i} [sim:fail]")
        } else {
            format!("walk {i}")
        };
        let (status, g) = s.generate(user, &prompt, true).await;
        assert!(status.is_success(), "{g}");
    }
    // Three of them at the same instant: the id orders them.
    let db = s.state.db.get().await.unwrap();
    db.execute(
        "UPDATE generations SET created_at = '2026-01-02T03:04:05.123456Z'
          WHERE id IN (SELECT id FROM generations WHERE user_id = $1 ORDER BY created_at LIMIT 3 OFFSET 2)",
        &[&user],
    )
    .await
    .unwrap();
    drop(db);
    let all = rows_in_order(&s, user, None).await;
    assert_eq!(all.len(), 7);

    let (seen, totals) = walk(&s, user, "limit=3").await;
    assert_eq!(seen, all, "every generation once, in order");
    assert_eq!(totals, [7, 7, 7]);

    // By page, the same order; a page's nextCursor goes on where it ends.
    let first = history(&s, user, "limit=3&page=1").await;
    assert_eq!(
        (first["page"].as_i64(), first["totalPages"].as_i64()),
        (Some(1), Some(3))
    );
    let second = history(&s, user, "limit=3&page=2").await;
    let next = first["nextCursor"].as_str().unwrap();
    let by_cursor = history(&s, user, &format!("limit=3&cursor={next}")).await;
    assert_eq!(ids(&by_cursor), ids(&second));
    assert_eq!(ids(&second), all[3..6]);
    let last = history(&s, user, "limit=3&page=3").await;
    assert_eq!(
        (ids(&last), &last["nextCursor"]),
        (all[6..].to_vec(), &Value::Null)
    );

    // One status, by cursor.
    for status in ["completed", "failed"] {
        let want = rows_in_order(&s, user, Some(status)).await;
        let (seen, totals) = walk(&s, user, &format!("limit=2&status={status}")).await;
        assert_eq!(seen, want, "{status}");
        assert!(
            totals.iter().all(|&t| t == want.len() as i64),
            "{status}: {totals:?}"
        );
    }
    assert_eq!(rows_in_order(&s, user, Some("failed")).await.len(), 2);
}

#[tokio::test]
async fn totals_follow_completion_failure_cancellation_and_deletion() {
    let s = Stack::with(&LIFTED).await;
    let user = Uuid::new_v4();
    let total = |h: Value| h["total"].as_i64().unwrap();
    assert_eq!(total(history(&s, user, "").await), 0, "no counter row yet");
    for prompt in ["done 1", "done 2", "lost [sim:fail]"] {
        s.generate(user, prompt, true).await;
    }
    let (_, cancelled) = s.generate(user, "cancelled [sim:hang]", false).await;
    let (_, running) = s.generate(user, "running [sim:hang]", false).await;
    assert!(running["generationId"].is_string(), "{running}");
    let by_status = async |s: &Stack| {
        let mut n = Vec::new();
        for status in ["pending", "processing", "completed", "failed", "cancelled"] {
            n.push(total(history(s, user, &format!("status={status}")).await));
        }
        n.push(total(history(s, user, "").await));
        n
    };
    let open = by_status(&s).await;
    assert_eq!(open[0] + open[1], 2, "{open:?}");
    assert_eq!(open[2..], [2, 1, 0, 5]);

    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{}", id_of(&cancelled)),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let now = by_status(&s).await;
    assert_eq!(now[0] + now[1], 1, "{now:?}");
    assert_eq!(now[2..], [2, 1, 1, 5]);

    // Deleting the account cancels what runs and keeps the rows (without their texts).
    let (status, v) = s
        .call(
            Method::DELETE,
            "/api/v1/me",
            Some(user),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(by_status(&s).await, [0, 0, 2, 1, 2, 5]);
    assert_eq!(generation_count_findings(&s, user).await, []);
}

#[tokio::test]
async fn the_audit_finds_a_counter_that_disagrees_with_the_rows() {
    let s = Stack::with(&LIFTED).await;
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    s.generate(user, "counted", true).await;
    s.generate(other, "counted too", true).await;
    assert_eq!(generation_count_findings(&s, user).await, []);

    let db = s.state.db.get().await.unwrap();
    let tamper = "UPDATE generation_counts SET completed = completed + 1 WHERE user_id = $1";
    db.execute(tamper, &[&user]).await.unwrap();
    let found = generation_count_findings(&s, user).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].user_id, Some(user));
    assert!(
        found[0].message.contains("completed 2") && found[0].message.contains("completed 1"),
        "{}",
        found[0].message
    );
    assert_eq!(
        generation_count_findings(&s, other).await,
        [],
        "the user filter holds"
    );
    // A lost counter row is as wrong.
    db.execute("DELETE FROM generation_counts WHERE user_id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!(generation_count_findings(&s, user).await.len(), 1);
    db.execute(
        "INSERT INTO generation_counts (user_id, completed) VALUES ($1, 1)",
        &[&user],
    )
    .await
    .unwrap();
    assert_eq!(generation_count_findings(&s, user).await, []);
}

#[tokio::test]
async fn bad_cursors_deep_pages_and_both_at_once_are_refused() {
    let s = Stack::with(&LIFTED).await;
    let user = Uuid::new_v4();
    s.generate(user, "one", true).await;
    let next = history(&s, user, "limit=1&page=1").await;
    assert_eq!(next["nextCursor"], Value::Null, "one generation: one page");
    // The bound itself is served: (501 - 1) * 20 = 10,000.
    let deepest = history(&s, user, "page=501&limit=20").await;
    assert_eq!(deepest["data"], json!([]));
    let cursor = picture::web::cursor::encode((chrono::Utc::now(), Uuid::new_v4()));
    let cases = [
        ("cursor=not-a-cursor".to_string(), "cursor", "previous page"),
        ("page=502&limit=20".into(), "page", "10000"),
        ("page=102&limit=100".into(), "page", "cursor"),
        (format!("page=1&cursor={cursor}"), "cursor", "page"),
    ];
    for (query, field, says) in cases {
        let (status, p) = s
            .call(
                Method::GET,
                &format!("/api/v1/generate/history?{query}"),
                Some(user),
                None,
            )
            .await;
        assert_eq!(
            (status, p["code"].as_str(), p["errors"][0]["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("VALIDATION_FAILED"),
                Some(field)
            ),
            "{query}: {p}"
        );
        assert!(
            p["errors"][0]["message"].as_str().unwrap().contains(says),
            "{query}: {p}"
        );
    }
    // A cursor alone (from anywhere in time) is fine.
    let h = history(&s, user, &format!("cursor={cursor}")).await;
    assert_eq!(ids(&h).len(), 1);
}
