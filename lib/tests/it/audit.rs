//! `audit::inspect` and `picture-dev audit` against the real stores, each scoped
//! to a fresh user (the test database and bucket are shared with other tests).

use std::{path::PathBuf, process::Command};

use picture::audit::{self, Filter};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::{Stack, drop_database, id_of};

/// `picture-dev`, built by `make test` (`build-dev`) into the workspace's target dir.
pub fn devtool() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/picture-dev");
    assert!(
        bin.exists(),
        "{} is missing: run `make build-dev`",
        bin.display()
    );
    bin
}

/// Runs `picture-dev audit --user <user>` against the test database; exit code and stdout.
fn audit_cli(user: Uuid) -> (i32, String) {
    let out = Command::new(devtool())
        .args(["audit", "--user", &user.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap(), stdout)
}

fn for_user(user: Uuid) -> Filter {
    Filter {
        user: Some(user),
        ..Filter::default()
    }
}

#[tokio::test]
async fn audit_is_clean_until_an_image_object_disappears() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, done) = s.generate(user, "a quiet harbour", true).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    let (status, failed) = s.generate(user, "a broken harbour [sim:fail]", true).await;
    assert_eq!(
        (status, failed["status"].as_str()),
        (StatusCode::OK, Some("failed"))
    );

    s.thumbnails_tried(user).await;
    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    assert_eq!(report.violations, [], "a healthy user has no violations");
    assert_eq!(
        (
            report.checked.generations,
            report.checked.objects,
            report.checked.quotas
        ),
        (2, 2, 1),
        "the image and its thumbnail"
    );
    let (code, out) = audit_cli(user);
    assert_eq!(code, 0, "{out}");

    let generation_id = Uuid::parse_str(&id_of(&done)).unwrap();
    let image_id = Uuid::parse_str(done["image"]["id"].as_str().unwrap()).unwrap();
    let db = s.state.db.get().await.unwrap();
    let key: String = db
        .query_one("SELECT storage_key FROM images WHERE id = $1", &[&image_id])
        .await
        .unwrap()
        .get(0);
    assert!(s.object_exists(&key).await, "{key}");
    s.state.storage.delete(&key).await.unwrap();

    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    let v = &report.violations[0];
    assert_eq!(
        (v.kind, v.image_id, v.generation_id, v.key.as_deref()),
        (
            "missing_object",
            Some(image_id),
            Some(generation_id),
            Some(key.as_str())
        )
    );
    let (code, out) = audit_cli(user);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("image={image_id}")) && out.contains(&key),
        "{out}"
    );
    assert!(out.contains("1 violations"), "{out}");
}

#[tokio::test]
async fn a_missing_thumbnail_object_is_reported_like_a_missing_image_object() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, done) = s.generate(user, "a thumbnail to lose", true).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    s.thumbnails_tried(user).await;
    let image_id = Uuid::parse_str(done["image"]["id"].as_str().unwrap()).unwrap();
    let db = s.state.db.get().await.unwrap();
    let thumb: String = db
        .query_one(
            "SELECT thumbnail_key FROM images WHERE id = $1",
            &[&image_id],
        )
        .await
        .unwrap()
        .get(0);
    s.state.storage.delete(&thumb).await.unwrap();

    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    let found: Vec<_> = report
        .violations
        .iter()
        .map(|v| (v.kind, v.image_id, v.key.as_deref()))
        .collect();
    assert_eq!(
        found,
        [("missing_object", Some(image_id), Some(thumb.as_str()))]
    );
}

#[tokio::test]
async fn audit_finds_a_ledger_balance_its_transactions_do_not_explain() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let db = s.state.db.get().await.unwrap();
    picture::db::ledger::grant(&**db, user, 30, "audit test")
        .await
        .unwrap();
    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    assert_eq!((report.checked.accounts, report.violations.len()), (1, 0));

    db.execute(
        "UPDATE credit_accounts SET balance = balance + 5 WHERE user_id = $1",
        &[&user],
    )
    .await
    .unwrap();
    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    let found: Vec<_> = report
        .violations
        .iter()
        .map(|v| (v.kind, v.user_id))
        .collect();
    assert_eq!(found, [("ledger", Some(user))], "{:?}", report.violations);
    assert!(
        report.violations[0].message.contains("35/30/0"),
        "{}",
        report.violations[0]
    );
}

#[tokio::test]
async fn objects_of_open_generations_are_not_orphans_but_others_are() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (_, open) = s.generate(user, "never ends [sim:hang]", false).await;
    let open_id = id_of(&open);
    put_png(&s, &format!("users/{user}/images/{open_id}.png")).await;
    let stray = format!("users/{user}/images/{}.png", Uuid::new_v4());
    put_png(&s, &stray).await;

    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    let found: Vec<_> = report
        .violations
        .iter()
        .map(|v| (v.kind, v.key.clone()))
        .collect();
    assert_eq!(found, [("orphan_object", Some(stray))]);

    s.cancel_all(user, &[open]).await;
    let report = audit::inspect(&s.state, &for_user(user)).await.unwrap();
    let kinds: Vec<_> = report.violations.iter().map(|v| v.kind).collect();
    assert_eq!(
        kinds,
        ["object_of_unfinished", "orphan_object"],
        "{:?}",
        report.violations
    );
}

/// The hourly audit works on several users at once: each active user's stray
/// object is found once, and the counts add up over all of them.
#[tokio::test]
async fn the_hourly_audit_covers_every_active_user_when_run_in_parallel() {
    let (db, name, server) = crate::common::own_database("auditpar").await;
    let s = Stack::with(&[("DATABASE_URL", db.as_str())]).await;
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut strays = Vec::new();
    for &user in &users {
        let (status, g) = s.generate(user, "one of several active users", true).await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
        s.thumbnails_tried(user).await;
        let key = format!("users/{user}/images/{}.png", Uuid::new_v4());
        put_png(&s, &key).await;
        strays.push(key);
    }
    let since = chrono::Utc::now() - chrono::TimeDelta::hours(25);
    let later = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (report, complete) = audit::recent(&s.state, since, later).await.unwrap();
    assert!(complete);
    let mut found: Vec<_> = report
        .violations
        .iter()
        .filter_map(|v| v.key.clone())
        .collect();
    found.sort();
    strays.sort();
    assert_eq!(found, strays, "{:?}", report.violations);
    assert_eq!(report.violations.len(), users.len());
    // Each user's image, thumbnail and stray.
    assert_eq!(report.checked.objects, 3 * users.len());
    assert_eq!(report.checked.generations, users.len());
    for key in strays {
        let _ = s.state.storage.delete(&key).await;
    }
    drop(s);
    drop_database(&server, &name).await;
}

/// A user whose audit fails (here S3 is out of reach) is skipped: the hourly
/// audit still answers, partial, instead of failing the run.
#[tokio::test]
async fn the_hourly_audit_skips_users_it_cannot_audit_and_reports_partial() {
    let (db, name, server) = crate::common::own_database("auditerr").await;
    let s = Stack::with(&[("DATABASE_URL", db.as_str())]).await;
    for user in [Uuid::new_v4(), Uuid::new_v4()] {
        let (status, g) = s.generate(user, "an active user", true).await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
    }
    let blind = Stack::with_aws(
        &[("DATABASE_URL", db.as_str())],
        picture::state::AwsOverrides {
            s3: Some(crate::common::dead_aws().await),
            ..Default::default()
        },
    )
    .await;
    let since = chrono::Utc::now() - chrono::TimeDelta::hours(25);
    let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (report, complete) = audit::recent(&blind.state, since, later).await.unwrap();
    assert!(!complete);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.checked.generations, 0);
    // With S3 back, the same users are audited in full.
    let (report, complete) = audit::recent(&s.state, since, later).await.unwrap();
    assert!(
        complete && report.checked.generations == 2,
        "{:?}",
        report.checked
    );
    drop((s, blind));
    drop_database(&server, &name).await;
}

/// The hourly audit looks at the users active in its window, one bucket prefix
/// each, never the whole bucket: an object under an inactive user's prefix is
/// not listed; an orphan of an active user is found. Out of time, it reports
/// what it did.
#[tokio::test]
async fn the_hourly_audit_lists_only_active_users_prefixes() {
    let (db, name, server) = crate::common::own_database("audit").await;
    let s = Stack::with(&[("DATABASE_URL", db.as_str())]).await;
    let (active, idle) = (Uuid::new_v4(), Uuid::new_v4());
    let (status, g) = s.generate(active, "an active user", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    s.thumbnails_tried(active).await;
    let stray = |user: Uuid| format!("users/{user}/images/{}.png", Uuid::new_v4());
    let (active_stray, idle_stray) = (stray(active), stray(idle));
    for key in [&active_stray, &idle_stray] {
        put_png(&s, key).await;
    }
    let since = chrono::Utc::now() - chrono::TimeDelta::hours(25);
    let later = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (report, complete) = audit::recent(&s.state, since, later).await.unwrap();
    assert!(complete);
    let keys: Vec<_> = report.violations.iter().map(|v| v.key.clone()).collect();
    assert_eq!(
        keys,
        [Some(active_stray.clone())],
        "{:?}",
        report.violations
    );
    // The active user's image, thumbnail and stray; nothing of the idle user's.
    assert_eq!(report.checked.objects, 3);
    let (report, complete) = audit::recent(&s.state, since, std::time::Instant::now())
        .await
        .unwrap();
    assert!(!complete && report.violations.is_empty());
    for key in [active_stray, idle_stray] {
        let _ = s.state.storage.delete(&key).await;
    }
    drop(s);
    drop_database(&server, &name).await;
}

/// Stores a PNG signature at `key` in the images bucket: an object no generation made.
async fn put_png(s: &Stack, key: &str) {
    let png = bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n");
    s.state.storage.put(key, "image/png", png).await.unwrap();
}
