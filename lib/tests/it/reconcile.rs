//! The reconciler against the real stack, on a database of its own (it acts
//! on every open generation, so it must not see other tests' ones).

use std::time::Duration;

use reqwest::StatusCode;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::common::{Stack, id_of};

/// A migrated database only this test run uses (unique, so parallel runs do not collide);
/// returns its URL and a client of the server to drop it with.
async fn own_database() -> (String, String, tokio_postgres::Client) {
    let shared = std::env::var("DATABASE_URL").expect("run with `make test`");
    let (server, _) = shared.rsplit_once('/').unwrap();
    let (client, conn) = tokio_postgres::connect(&format!("{server}/postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let name = format!("picture_reconcile_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{server}/{name}");
    picture::db::migrate(&url, None).await.unwrap();
    (url, name, client)
}

/// Waits until the simulator has finished the generation's prediction.
async fn prediction_done(s: &Stack, id: &str) {
    for _ in 0..100 {
        if let Some(pid) = s.row(id).await.prediction_id {
            if s.state.replicate.get(&pid).await.unwrap().is_terminal() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("prediction of {id} did not finish");
}

#[tokio::test]
async fn the_reconciler_finishes_lost_orphaned_and_stuck_generations_once() {
    let (db, name, server) = own_database().await;
    let settings = [
        ("DATABASE_URL", db.as_str()),
        ("RECONCILE_GRACE_SECONDS", "0"),
    ];
    let s = Stack::with(&settings).await;
    let user = Uuid::new_v4();

    // A webhook that never came: the reconciler asks Replicate and completes it.
    let (status, g) = s
        .generate(user, "lost webhook [sim:no-webhook] [sim:slow=100]", false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let lost = id_of(&g);
    prediction_done(&s, &lost).await;
    assert_eq!(s.row(&lost).await.status.as_str(), "processing");
    let report = picture::reconcile::run(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled), (1, 1));
    s.assert_completed_once(&lost).await;

    // A create whose answer was lost: the prediction is found by the generation id in its webhook URL.
    let (status, g) = s
        .generate(
            user,
            "ambiguous create [sim:create-500] [sim:no-webhook] [sim:slow=50]",
            false,
        )
        .await;
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing")),
        "{g}"
    );
    let orphan = id_of(&g);
    assert!(s.row(&orphan).await.prediction_id.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    picture::reconcile::run(&s.state).await.unwrap();
    assert!(s.row(&orphan).await.prediction_id.is_some());
    s.assert_completed_once(&orphan).await;

    // Two reconcilers at once do the work once.
    let prompts: Vec<String> = (0..4)
        .map(|i| format!("batch {i} [sim:no-webhook] [sim:slow=50]"))
        .collect();
    let mut ids = Vec::new();
    for p in &prompts {
        ids.push(id_of(&s.generate(Uuid::new_v4(), p, false).await.1));
    }
    for id in &ids {
        prediction_done(&s, id).await;
    }
    let other = Stack::with(&settings).await;
    let (a, b) = tokio::join!(
        picture::reconcile::run(&s.state),
        picture::reconcile::run(&other.state)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.checked + b.checked, a.settled + b.settled),
        (4, 4),
        "{a:?} {b:?}"
    );
    for id in &ids {
        s.assert_completed_once(id).await;
    }

    // Past the deadline: cancelled at Replicate, failed, hold released.
    let strict = Stack::with(&[
        ("DATABASE_URL", db.as_str()),
        ("RECONCILE_GRACE_SECONDS", "0"),
        ("GENERATION_DEADLINE_SECONDS", "0"),
    ])
    .await;
    let (_, g) = strict.generate(user, "stuck [sim:hang]", false).await;
    let stuck = id_of(&g);
    let free_before = strict
        .state
        .credits
        .free_remaining(&**strict.state.db.get().await.unwrap(), user)
        .await
        .unwrap();
    let report = picture::reconcile::run(&strict.state).await.unwrap();
    assert_eq!(report.timed_out, 1);
    let row = strict.row(&stuck).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("TIMEOUT"))
    );
    let p = strict
        .state
        .replicate
        .get(row.prediction_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(p.status, "canceled");
    assert_eq!(
        strict
            .count(
                "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'released'",
                &stuck
            )
            .await,
        1
    );
    let free_after = strict
        .state
        .credits
        .free_remaining(&**strict.state.db.get().await.unwrap(), user)
        .await
        .unwrap();
    assert_eq!(free_after, free_before + 1);
    drop((s, other, strict));
    server
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}
