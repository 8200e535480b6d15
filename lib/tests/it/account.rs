//! `DELETE /me` against the real stores: the caller's images, thumbnails,
//! uploads and prompts are gone (S3 and PostgreSQL), running generations are
//! cancelled with their holds released, the ledger stays; an interrupted
//! deletion is finished by the reconciler; the audit proves it.

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::common::{Stack, own_database};

async fn texts_left(s: &Stack, user: Uuid) -> i64 {
    let db = s.state.db.get().await.unwrap();
    db.query_one(
        "SELECT (SELECT count(*) FROM generations WHERE user_id = $1 AND prompt <> '')
              + (SELECT count(*) FROM images WHERE user_id = $1)
              + (SELECT count(*) FROM uploads WHERE user_id = $1)",
        &[&user],
    )
    .await
    .unwrap()
    .get(0)
}

async fn audit(s: &Stack, user: Uuid) -> Vec<&'static str> {
    let filter = picture::audit::Filter {
        since: None,
        user: Some(user),
    };
    let report = picture::audit::inspect(&s.state, &filter).await.unwrap();
    report.violations.iter().map(|v| v.kind).collect()
}

#[tokio::test]
async fn deleting_an_account_leaves_no_object_and_no_prompt() {
    let s = Stack::with(&[("RATE_LIMIT_GENERATE_PER_MINUTE", "100")]).await;
    let user = Uuid::new_v4();
    for i in 0..2 {
        let (status, g) = s
            .generate(user, &format!("kept a moment {i} [sim:slow=50]"), true)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
    }
    s.thumbnails_tried(user).await;
    let (status, running) = s.generate(user, "still running [sim:hang]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{running}");
    let (status, _) = s
        .call(
            Method::POST,
            "/api/v1/uploads",
            Some(user),
            Some(json!({"contentType": "image/png", "contentLength": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        s.objects(user).await.len() >= 4,
        "images and thumbnails stored"
    );

    // Without the confirmation nothing happens.
    for body in [
        json!({}),
        json!({"confirm": false}),
        json!({"confirm": "yes"}),
    ] {
        let (status, p) = s
            .call(Method::DELETE, "/api/v1/me", Some(user), Some(body))
            .await;
        assert_eq!(
            (status, p["errors"][0]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("confirm"))
        );
    }
    assert!(texts_left(&s, user).await > 0);

    let (status, v) = s
        .call(
            Method::DELETE,
            "/api/v1/me",
            Some(user),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("deleted")),
        "{v}"
    );
    assert_eq!(s.objects(user).await, Vec::<String>::new());
    assert_eq!(texts_left(&s, user).await, 0);
    // The running one was cancelled and its free generation given back; the ledger stays.
    let row = s.row(running["generationId"].as_str().unwrap()).await;
    assert_eq!(row.status.as_str(), "cancelled");
    let (_, credits) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(credits["freeGenerationsRemaining"], 1, "{credits}");
    let (_, images) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    assert_eq!(images["data"], json!([]));
    assert_eq!(audit(&s, user).await, Vec::<&str>::new());

    // Again: nothing left to do, the same answer.
    let (status, v) = s
        .call(
            Method::DELETE,
            "/api/v1/me",
            Some(user),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("deleted"))
    );
}

#[tokio::test]
async fn an_interrupted_deletion_is_finished_by_the_reconciler_and_the_audit_sees_leftovers() {
    let (db, name, server) = own_database("account").await;
    let s = Stack::with(&[("DATABASE_URL", db.as_str())]).await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(user, "a deleted memory [sim:slow=50]", true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    // The request was recorded, then its process died before any step.
    let conn = s.state.db.get().await.unwrap();
    picture::db::accounts::request_deletion(&**conn, user)
        .await
        .unwrap();
    assert!(texts_left(&s, user).await > 0);
    // A deletion that claims to be finished while data is left is a violation.
    conn.execute(
        "UPDATE account_deletions SET finished_at = now() WHERE user_id = $1",
        &[&user],
    )
    .await
    .unwrap();
    assert!(audit(&s, user).await.contains(&"deleted_user_data"));
    conn.execute(
        "UPDATE account_deletions SET finished_at = NULL WHERE user_id = $1",
        &[&user],
    )
    .await
    .unwrap();

    // Its rows step ran, then the process died: objects without rows are a
    // deletion under way, not orphans.
    picture::db::accounts::scrub(&**conn, user).await.unwrap();
    assert_eq!(texts_left(&s, user).await, 0);
    assert!(!s.objects(user).await.is_empty());
    assert_eq!(audit(&s, user).await, Vec::<&str>::new());

    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.deletions_finished, 1, "{report:?}");
    assert_eq!(s.objects(user).await, Vec::<String>::new());
    assert_eq!(texts_left(&s, user).await, 0);
    assert_eq!(audit(&s, user).await, Vec::<&str>::new());
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.deletions_finished, 0, "{report:?}");
    drop((conn, s));
    crate::common::drop_database(&server, &name).await;
}

/// A thumbnail task holds its image row while it stores the thumbnail; the
/// deletion removes rows before listing objects, so a thumbnail made during
/// the deletion is deleted with the rest (it was left behind when objects went
/// first).
#[tokio::test]
async fn a_thumbnail_made_during_the_deletion_is_deleted_too() {
    let s = Stack::with(&[("RATE_LIMIT_GENERATE_PER_MINUTE", "100")]).await;
    let user = Uuid::new_v4();
    for i in 0..3 {
        let (status, g) = s
            .generate(user, &format!("short-lived {i} [sim:slow=20]"), true)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
    }
    // No wait for the thumbnails: their tasks run while the account goes.
    let (status, body) = s
        .call(
            Method::DELETE,
            "/api/v1/me",
            Some(user),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "deleted");
    // A task that had not claimed its row by then finds none and stores nothing.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(s.objects(user).await, Vec::<String>::new());
    assert_eq!(audit(&s, user).await, Vec::<&str>::new());
}
