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
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
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
    picture::reconcile::sweep(&s.state).await.unwrap();
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
        picture::reconcile::sweep(&s.state),
        picture::reconcile::sweep(&other.state)
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
    let report = picture::reconcile::sweep(&strict.state).await.unwrap();
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
    crate::common::drop_database(&server, &name).await;
}

/// A database of the test's own, a simulator of its own and a stack on both; `extra` settings.
async fn private_stack(
    sim: &crate::private::PrivateSim,
    db: &str,
    extra: &[(&'static str, &str)],
) -> Stack {
    let mut settings: Vec<(&str, String)> = sim.settings();
    settings.extend([
        ("DATABASE_URL", db.to_string()),
        ("RECONCILE_GRACE_SECONDS", "0".into()),
    ]);
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Stack::with(&crate::common::borrowed(&settings)).await
}

/// Creates a prediction at the simulator as another client of the account would.
async fn foreign_prediction(s: &Stack, sim: &str, prompt: &str) -> String {
    let body = serde_json::json!({"input": {"prompt": prompt}});
    let res = reqwest::Client::new()
        .post(format!(
            "{sim}/v1/models/black-forest-labs/flux-schnell/predictions"
        ))
        .bearer_auth(&s.state.cfg.replicate_api_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    res.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn drop_database(server: &tokio_postgres::Client, name: &str) {
    crate::common::drop_database(server, name).await;
}

#[tokio::test]
async fn the_orphan_search_reaches_past_three_pages() {
    let (db, name, server) = own_database("reconcile").await;
    let sim = crate::private::PrivateSim::start().await;
    let s = private_stack(&sim, &db, &[]).await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(
            user,
            "the needle [sim:create-500] [sim:no-webhook] [sim:slow=50]",
            false,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    let orphan = id_of(&g);
    // More than three pages of newer predictions by others.
    for batch in (0..350).collect::<Vec<_>>().chunks(5) {
        let made = futures::future::join_all(batch.iter().map(|i| {
            let prompt = format!("hay {i} [sim:slow=0]");
            let (s, url) = (&s, &sim.url);
            async move { foreign_prediction(s, url, &prompt).await }
        }))
        .await;
        assert!(made.iter().all(|id| !id.is_empty()));
    }
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled, report.errors), (1, 1, 0));
    assert!(s.row(&orphan).await.prediction_id.is_some());
    s.assert_completed_once(&orphan).await;
    drop(s);
    drop_database(&server, &name).await;
}

/// Without a webhook URL nothing the provider echoes names the generation: a
/// prediction with the same prompt (another user's) is never taken for it, and it
/// is failed as never started once past its deadline, its hold released.
#[tokio::test]
async fn without_a_webhook_url_an_orphan_is_never_matched_by_its_prompt() {
    let (db, name, server) = own_database("reconcile").await;
    let sim = crate::private::PrivateSim::start().await;
    let s = private_stack(&sim, &db, &[("WEBHOOK_BASE_URL", "")]).await;
    let user = Uuid::new_v4();
    let prompt = "the same words [sim:create-500] [sim:slow=50]";
    let (status, g) = s.generate(user, prompt, false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    let orphan = id_of(&g);
    foreign_prediction(&s, &sim.url, prompt).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled), (1, 0), "{report:?}");
    let row = s.row(&orphan).await;
    assert!(
        !row.status.is_terminal() && row.prediction_id.is_none(),
        "{row:?}"
    );

    let late = private_stack(
        &sim,
        &db,
        &[
            ("WEBHOOK_BASE_URL", ""),
            ("GENERATION_DEADLINE_SECONDS", "0"),
        ],
    )
    .await;
    let db_conn = s.state.db.get().await.unwrap();
    db_conn
        .execute("UPDATE generations SET reconciled_at = NULL", &[])
        .await
        .unwrap();
    let report = picture::reconcile::sweep(&late.state).await.unwrap();
    assert_eq!(report.timed_out, 1, "{report:?}");
    let row = s.row(&orphan).await;
    assert_eq!(
        (
            row.status.as_str(),
            row.error_code.as_deref(),
            row.prediction_id
        ),
        ("failed", Some("PROVIDER_ERROR"), None)
    );
    let released =
        "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'released'";
    assert_eq!(s.count(released, &orphan).await, 1);
    drop((db_conn, s, late));
    drop_database(&server, &name).await;
}

/// A prediction that names the generation but is already recorded for another
/// one is not its own: the generation is failed, not left open for ever.
#[tokio::test]
async fn a_prediction_recorded_for_another_generation_is_not_taken() {
    let (db, name, server) = own_database("reconcile").await;
    let sim = crate::private::PrivateSim::start().await;
    let s = private_stack(&sim, &db, &[]).await;
    let user = Uuid::new_v4();
    let (_, g) = s
        .generate(
            user,
            "orphan [sim:create-500] [sim:no-webhook] [sim:slow=50]",
            false,
        )
        .await;
    let orphan = id_of(&g);
    let (_, other) = s.generate(user, "done elsewhere [sim:slow=50]", true).await;
    let other = id_of(&other);
    // The other generation claims the orphan's prediction (as a buggy writer might have).
    let db_conn = s.state.db.get().await.unwrap();
    let (_, list) = s.sim(reqwest::Method::GET, "/v1/predictions").await;
    let mine = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["webhook"].as_str().is_some_and(|w| w.contains(&orphan)))
        .expect("the orphan's prediction exists")["id"]
        .as_str()
        .unwrap()
        .to_string();
    db_conn
        .execute(
            "UPDATE generations SET prediction_id = $1 WHERE id = $2",
            &[&mine, &Uuid::parse_str(&other).unwrap()],
        )
        .await
        .unwrap();
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!((report.settled, report.errors), (1, 0), "{report:?}");
    let row = s.row(&orphan).await;
    assert_eq!(
        (
            row.status.as_str(),
            row.error_code.as_deref(),
            row.prediction_id
        ),
        ("failed", Some("PROVIDER_ERROR"), None)
    );
    drop((db_conn, s));
    drop_database(&server, &name).await;
}

/// When the search for an orphan cannot finish (listing fails), the generation
/// still fails once past its deadline.
#[tokio::test]
async fn an_orphan_whose_search_fails_is_failed_past_its_deadline() {
    let (db, name, server) = own_database("reconcile").await;
    let sim = crate::private::PrivateSim::start().await;
    let s = private_stack(&sim, &db, &[]).await;
    let user = Uuid::new_v4();
    let (_, g) = s
        .generate(user, "unfindable [sim:create-500] [sim:hang]", false)
        .await;
    let orphan = id_of(&g);
    sim.inject(&["list"], 500, 1000).await;
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!((report.checked, report.errors), (1, 1), "{report:?}");
    assert!(!s.row(&orphan).await.status.is_terminal());

    let late = private_stack(&sim, &db, &[("GENERATION_DEADLINE_SECONDS", "0")]).await;
    s.state
        .db
        .get()
        .await
        .unwrap()
        .execute("UPDATE generations SET reconciled_at = NULL", &[])
        .await
        .unwrap();
    let report = picture::reconcile::sweep(&late.state).await.unwrap();
    assert_eq!((report.timed_out, report.errors), (1, 0), "{report:?}");
    let row = s.row(&orphan).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("PROVIDER_ERROR"))
    );
    sim.clear().await;
    drop((s, late));
    drop_database(&server, &name).await;
}

/// The provider forgets a prediction (a restart of the simulator): status reads
/// answer the stored state (never 500), the first reconciler run leaves the
/// generation open, the second fails it with `PROVIDER_ERROR` and releases the
/// hold. A refused token fails nothing.
#[tokio::test]
async fn a_prediction_the_provider_no_longer_knows_fails_after_two_runs() {
    let (db, name, server) = own_database("reconcile").await;
    let mut sim = crate::private::PrivateSim::start().await;
    let s = private_stack(&sim, &db, &[]).await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "forgotten [sim:hang]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    let id = id_of(&g);
    sim.restart().await;
    let path = format!("/api/v1/generate/{id}/status");
    for _ in 0..2 {
        let (status, v) = s.call(reqwest::Method::GET, &path, Some(user), None).await;
        assert_eq!(
            (status, v["status"].as_str()),
            (StatusCode::OK, Some("processing")),
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // A token the provider refuses: an alarm, not a failure.
    let refused = private_stack(&sim, &db, &[("REPLICATE_API_TOKEN", "r8_wrong")]).await;
    let (status, v) = refused
        .call(reqwest::Method::GET, &path, Some(user), None)
        .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("processing")),
        "{v}"
    );
    let report = picture::reconcile::sweep(&refused.state).await.unwrap();
    assert_eq!(report.settled, 0, "{report:?}");
    assert_eq!(s.row(&id).await.status.as_str(), "processing");

    let unclaim = "UPDATE generations SET reconciled_at = NULL";
    let db_conn = s.state.db.get().await.unwrap();
    db_conn.execute(unclaim, &[]).await.unwrap();
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.settled, 0, "one run is not proof: {report:?}");
    assert_eq!(s.row(&id).await.status.as_str(), "processing");
    db_conn.execute(unclaim, &[]).await.unwrap();
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.settled, 1, "{report:?}");
    let row = s.row(&id).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("PROVIDER_ERROR"))
    );
    let released =
        "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'released'";
    assert_eq!(s.count(released, &id).await, 1);
    let mine = picture::audit::Filter {
        since: None,
        user: Some(user),
    };
    let audit = picture::audit::inspect(&s.state, &mine).await.unwrap();
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
    drop((db_conn, s, refused));
    drop_database(&server, &name).await;
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
        picture::db::generations::try_lease(
            &**db_conn,
            busy,
            holder,
            Duration::from_secs(60),
            picture::db::generations::LeaseBy::Other,
        )
        .await
        .unwrap()
    );
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
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
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!((report.checked, report.settled), (1, 1));
    s.assert_completed_once(&ids[0]).await;
    drop((db_conn, s));
    crate::common::drop_database(&server, &name).await;
}
