//! The reconciler against the real stack, on a database of its own (it acts
//! on every open generation, so it must not see other tests' ones).

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::{Stack, id_of, own_database};

/// Waits until the simulator has finished the generation's prediction.
async fn prediction_done(s: &Stack, id: &str) {
    for _ in 0..100 {
        if let Some(pid) = s.row(id).await.prediction_id
            && s.state.replicate.get(&pid).await.unwrap().is_terminal()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("prediction of {id} did not finish");
}

#[tokio::test]
async fn the_reconciler_finishes_lost_orphaned_and_stuck_generations_once() {
    let (db, name, server) = own_database("reconcile").await;
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
    // Upload records: one three days old (its object long expired), one fresh.
    let pg = s.state.db.get().await.unwrap();
    let (old, fresh) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, age) in [(old, "3 days"), (fresh, "1 hour")] {
        pg.execute(
            "INSERT INTO uploads (id, user_id, content_type, content_length, created_at)
             VALUES ($1, $2, 'image/png', 10, now() - $3::text::interval)",
            &[&id, &user, &age],
        )
        .await
        .unwrap();
    }
    let report = picture::reconcile::run(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled), (1, 1));
    s.assert_completed_once(&lost).await;
    assert_eq!(report.uploads_forgotten, 1);
    let left = picture::db::uploads::get(&**pg, fresh, user).await.unwrap();
    assert!(left.is_some());
    assert!(
        picture::db::uploads::get(&**pg, old, user)
            .await
            .unwrap()
            .is_none()
    );

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

#[tokio::test]
async fn the_orphan_search_reaches_past_three_pages_and_matches_without_a_webhook() {
    let (db, name, server) = own_database("reconcile").await;
    let sim = crate::private::PrivateSim::start().await;
    let mut settings: Vec<(&str, String)> = sim.settings();
    settings.extend([
        ("DATABASE_URL", db.clone()),
        ("RECONCILE_GRACE_SECONDS", "0".into()),
        ("WEBHOOK_BASE_URL", String::new()),
    ]);
    let s = Stack::with(&crate::common::borrowed(&settings)).await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(user, "the needle [sim:create-500] [sim:slow=50]", false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    let orphan = id_of(&g);
    // More than three pages of newer predictions by others.
    let http = reqwest::Client::new();
    let create = |i: usize| {
        http.post(format!(
            "{}/v1/models/black-forest-labs/flux-schnell/predictions",
            sim.url
        ))
        .bearer_auth(&s.state.cfg.replicate_api_token)
        .json(&serde_json::json!({"input": {"prompt": format!("hay {i} [sim:slow=0]")}}))
        .send()
    };
    for batch in (0..350).collect::<Vec<_>>().chunks(5) {
        let sent = futures::future::join_all(batch.iter().map(|i| create(*i))).await;
        assert!(
            sent.iter()
                .all(|r| r.as_ref().is_ok_and(|r| r.status().is_success()))
        );
    }
    let report = picture::reconcile::run(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled, report.errors), (1, 1, 0));
    assert!(s.row(&orphan).await.prediction_id.is_some());
    s.assert_completed_once(&orphan).await;
    drop(s);
    server
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_generation_that_cannot_be_finished_does_not_stop_the_run() {
    let (db, name, server) = own_database("reconcile").await;
    let settings = [
        ("DATABASE_URL", db.as_str()),
        ("RECONCILE_GRACE_SECONDS", "0"),
    ];
    let s = Stack::with(&settings).await;
    let user = Uuid::new_v4();
    let mut ids = Vec::new();
    for i in 0..2 {
        let prompt = format!("lost webhook {i} [sim:no-webhook] [sim:slow=50]");
        ids.push(id_of(&s.generate(user, &prompt, false).await.1));
    }
    for id in &ids {
        prediction_done(&s, id).await;
    }
    // Another completion holds the first one's lease (a process that died, say).
    let busy = Uuid::parse_str(&ids[0]).unwrap();
    let holder = Uuid::new_v4();
    let db_conn = s.state.db.get().await.unwrap();
    assert!(
        picture::db::generations::try_lease(&**db_conn, busy, holder, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let report = picture::reconcile::run(&s.state).await.unwrap();
    assert_eq!(
        (report.checked, report.settled, report.errors),
        (2, 1, 1),
        "{report:?}"
    );
    s.assert_completed_once(&ids[1]).await;
    assert_eq!(s.row(&ids[0]).await.status.as_str(), "processing");
    // Once the lease is gone, a later run (after the one-minute claim) finishes it.
    picture::db::generations::release_lease(&**db_conn, busy, holder)
        .await
        .unwrap();
    db_conn
        .execute(
            "UPDATE generations SET reconciled_at = NULL WHERE id = $1",
            &[&busy],
        )
        .await
        .unwrap();
    let report = picture::reconcile::run(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled), (1, 1));
    s.assert_completed_once(&ids[0]).await;
    drop((db_conn, s));
    server
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}
