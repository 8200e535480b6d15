//! Bad weather, against real services: each test freezes, kills, restarts or
//! throttles a private instance of one service (so the tests beside it are
//! not disturbed), checks that nothing is lost or charged twice, and ends
//! with a clean audit of what it touched.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use picture::state::AwsOverrides;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{FLUX, Stack, borrowed, id_of},
    private::{PrivatePostgres, PrivateS3, PrivateSim, Process, free_port, root, wait_for_port},
};

/// A status poll answers within its budget (well before the function's timeout),
/// with the generation still `processing`.
async fn assert_prompt_and_processing(s: &Stack, user: Uuid, path: &str) {
    let began = Instant::now();
    let (status, v) = s.call(Method::GET, path, Some(user), None).await;
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("processing")),
        "{v}"
    );
}

/// Polls the status route until the generation ends (or `limit` passes); returns the last view.
async fn poll_until_terminal(s: &Stack, user: Uuid, id: &str, limit: Duration) -> Value {
    let path = format!("/api/v1/generate/{id}/status");
    let end = Instant::now() + limit;
    loop {
        let (status, v) = s.call(Method::GET, &path, Some(user), None).await;
        assert!(!status.is_server_error(), "{status} {v}");
        let done =
            ["completed", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""));
        if done || Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the simulator reports the prediction finished.
async fn prediction_finished(s: &Stack, id: &str) -> Value {
    for _ in 0..200 {
        if let Some(pid) = s.row(id).await.prediction_id {
            let (_, p) = s.sim(Method::GET, &format!("/v1/predictions/{pid}")).await;
            if p["status"] == "succeeded" {
                return p;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("prediction of {id} did not finish");
}

/// The HTTP statuses the simulator got for a prediction's webhook deliveries.
async fn delivery_statuses(s: &Stack, prediction_id: &str) -> Vec<Value> {
    let (_, d) = s
        .sim(
            Method::GET,
            &format!("/_sim/predictions/{prediction_id}/deliveries"),
        )
        .await;
    d.as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].clone())
        .collect()
}

#[tokio::test]
async fn s3_frozen_while_a_webhook_completes_then_resumed_completes_once() {
    let bucket = crate::common::env(&[])["IMAGES_BUCKET"].clone();
    let s3 = PrivateS3::start(&bucket).await;
    let s = Stack::with_aws(
        &[("FUNCTION_TIMEOUT_SECONDS", "8")],
        AwsOverrides {
            s3: Some(s3.sdk().await),
            ..Default::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(user, "copied in bad weather [sim:slow=300]", false)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    s3.process().freeze();
    let id = id_of(&g);
    prediction_finished(&s, &id).await;
    let pid = s.row(&id).await.prediction_id.unwrap();
    // The webhook's copy cannot finish: it answers 5xx within its budget, and nothing ends.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !delivery_statuses(&s, &pid).await.contains(&json!(503)) {
        assert!(Instant::now() < deadline, "no delivery was refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = s.row(&id).await;
    assert_eq!(row.status.as_str(), "processing");
    let held = "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'held'";
    assert_eq!(s.count(held, &id).await, 1);

    s3.process().resume();
    // Replicate's next retry of the same delivery completes it.
    let end = Instant::now() + Duration::from_secs(40);
    while !s.row(&id).await.status.is_terminal() {
        assert!(Instant::now() < end, "not completed after S3 came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.assert_completed_once(&id).await;
    assert!(delivery_statuses(&s, &pid).await.contains(&json!(200)));
    s.assert_audit_clean(user).await;
}

/// A dev gateway (`picture-dev serve`) in a process of its own, on `port`, with
/// time budgets sized for a short function timeout, no reconciler unless
/// `extra` asks for one, and `extra` settings.
async fn serve(port: u16, dev_dir: &std::path::Path, extra: &[(&str, String)]) -> Process {
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(root().join("target/debug/picture-dev"))
        .arg("serve")
        .env("PORT", port.to_string())
        .env("DEV_DIR", dev_dir)
        .env("WEBHOOK_BASE_URL", &base)
        .env("JWKS_URL", format!("{base}/dev/jwks.json"))
        .env("JWT_ISSUER", "picture-dev")
        .env("FUNCTION_TIMEOUT_SECONDS", "8")
        // Its reconciler would act on the shared test database's generations.
        .env("RECONCILE_INTERVAL_SECONDS", "0")
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("picture-dev is built (`make test` builds it)");
    let process = Process(child);
    wait_for_port(port).await;
    process
}

/// A token for `user` signed by the dev key in `dev_dir`.
fn dev_token(dev_dir: &std::path::Path, user: Uuid) -> String {
    let out = Command::new(root().join("target/debug/picture-dev"))
        .args(["token", &user.to_string()])
        .env("DEV_DIR", dev_dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().trim().to_string()
}

#[tokio::test]
async fn the_serving_process_killed_mid_completion_is_finished_after_a_restart() {
    let bucket = crate::common::env(&[])["IMAGES_BUCKET"].clone();
    let s3 = PrivateS3::start(&bucket).await;
    let dev_dir = std::env::temp_dir().join(format!("picture-dev-{}", Uuid::new_v4().simple()));
    let port = free_port();
    let s3_url = [(
        "AWS_ENDPOINT_URL_S3",
        format!("http://127.0.0.1:{}", s3.port),
    )];
    let server = serve(port, &dev_dir, &s3_url).await;
    let user = Uuid::new_v4();
    let token = dev_token(&dev_dir, user);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let answer = http
        .post(format!("{base}/generate"))
        .bearer_auth(&token)
        .json(&json!({"prompt": "outlives its server [sim:slow=300]", "modelId": FLUX}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let g: Value = answer.json().await.unwrap();
    let id = id_of(&g);

    // The webhook's copy hangs on a frozen S3; the process dies holding the completion lease.
    s3.process().freeze();
    let inspector = Stack::with_aws(
        &[],
        AwsOverrides {
            s3: Some(s3.sdk().await),
            ..Default::default()
        },
    )
    .await;
    let leased = "SELECT count(*) FROM generations WHERE id = $1 AND lease_until > now()";
    let end = Instant::now() + Duration::from_secs(10);
    while inspector.count(leased, &id).await == 0 {
        assert!(Instant::now() < end, "no completion started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server); // SIGKILL, mid-copy
    s3.process().resume();
    assert_eq!(inspector.row(&id).await.status.as_str(), "processing");

    // Restarted, it finishes the generation: the client's polls (or Replicate's retries) do it.
    let _server = serve(port, &dev_dir, &s3_url).await;
    let end = Instant::now() + Duration::from_secs(45);
    let last = loop {
        let res = http
            .get(format!("{base}/generate/{id}/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(!res.status().is_server_error());
        let v: Value = res.json().await.unwrap();
        if v["status"] == "completed" || Instant::now() > end {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(last["status"], "completed", "{last}");
    inspector.assert_completed_once(&id).await;
    inspector.assert_audit_clean(user).await;
    let _ = std::fs::remove_dir_all(&dev_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_traffic_answers_no_5xx_once_back() {
    let pg = PrivatePostgres::start().await;
    let s = Stack::with(&[
        ("DATABASE_URL", pg.url.as_str()),
        ("RECONCILE_GRACE_SECONDS", "0"),
    ])
    .await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let traffic = |round: usize| {
        let s = &s;
        let users = &users;
        async move {
            let mut answers = Vec::new();
            for (i, user) in users.iter().enumerate() {
                let prompt = format!("round {round} user {i} [sim:slow=50]");
                answers.push(s.generate(*user, &prompt, true).await);
                answers.push(
                    s.call(Method::GET, "/api/v1/credits/balance", Some(*user), None)
                        .await,
                );
            }
            answers
        }
    };
    assert!(traffic(0).await.iter().all(|(st, _)| st.is_success()));

    // Restart while requests run; answers meanwhile may be 503, never anything else of 5xx.
    let (during, ()) = tokio::join!(traffic(1), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::block_in_place(|| pg.restart());
    });
    for (status, body) in &during {
        assert!(
            !status.is_server_error() || *status == StatusCode::SERVICE_UNAVAILABLE,
            "{status} {body}"
        );
    }
    // Back: every request succeeds, on fresh connections.
    for round in 2..4 {
        for (status, body) in traffic(round).await {
            assert!(status.is_success(), "after the restart: {status} {body}");
        }
    }
    // Whatever the restart interrupted is finished by the webhook retries, the completions
    // already under way, or the reconciler (run here every few seconds, as its schedule would
    // over a longer time: the claim of a run that found a completion under way is reset).
    let open_sql = "SELECT id::text, status, prediction_id FROM generations
                     WHERE status IN ('pending', 'processing')";
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let db = s.state.db.get().await.unwrap();
        let open = db.query(open_sql, &[]).await.unwrap();
        if open.is_empty() {
            break;
        }
        let rows: Vec<(String, String, Option<String>)> = open
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert!(Instant::now() < end, "still open: {rows:?}");
        db.execute("UPDATE generations SET reconciled_at = NULL", &[])
            .await
            .unwrap();
        drop(db);
        picture::reconcile::sweep(&s.state).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for user in &users {
        s.assert_audit_clean(*user).await;
    }
}

#[tokio::test]
async fn replicate_errors_and_throttling_end_correctly_and_charge_only_completions() {
    let sim = PrivateSim::start().await;
    let pg = PrivatePostgres::start().await;
    let mut settings: Vec<(&str, String)> = sim.settings();
    settings.extend([
        ("DATABASE_URL", pg.url.clone()),
        ("APP_ENV", "staging".into()),
        ("FREE_GENERATIONS", "0".into()),
        ("RECONCILE_GRACE_SECONDS", "0".into()),
        ("SYNC_WAIT_SECONDS", "3".into()),
    ]);
    let s = Stack::with(&borrowed(&settings)).await;
    let user = Uuid::new_v4();
    picture::db::ledger::grant(&**s.state.db.get().await.unwrap(), user, 100, "test")
        .await
        .unwrap();
    let balance = || async {
        s.call(Method::GET, "/api/v1/credits/balance", Some(user), None)
            .await
            .1["balance"]
            .as_i64()
            .unwrap()
    };

    // Throttled creates (429 on every attempt within the request's budget): nothing made,
    // nothing held: 503 PROVIDER_BUSY.
    sim.inject(&["create"], 429, 50).await;
    let (status, p) = s.generate(user, "throttled", true).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("PROVIDER_BUSY")),
        "{p}"
    );
    sim.clear().await;
    // A 5xx on create: maybe made, maybe not; here not: the reconciler fails it, hold released.
    sim.inject(&["create"], 500, 1).await;
    let (status, lost) = s.generate(user, "lost create", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{lost}");
    // Made although its answer was lost: the reconciler finds and completes it.
    let (status, orphan) = s
        .generate(
            user,
            "orphan [sim:create-500] [sim:no-webhook] [sim:slow=50]",
            false,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{orphan}");
    // Polls failing (500) while it runs: status answers 200 with what it has, then completes.
    let (_, polled) = s
        .generate(
            user,
            "polled in a storm [sim:no-webhook] [sim:slow=50]",
            false,
        )
        .await;
    let polled_id = id_of(&polled);
    sim.inject(&["get"], 500, 12).await;
    let path = format!("/api/v1/generate/{polled_id}/status");
    for _ in 0..3 {
        let (status, v) = s.call(Method::GET, &path, Some(user), None).await;
        assert_eq!(
            (status, v["status"].as_str()),
            (StatusCode::OK, Some("processing")),
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    sim.clear().await;
    let v = poll_until_terminal(&s, user, &polled_id, Duration::from_secs(20)).await;
    assert_eq!(v["status"], "completed", "{v}");
    // Cancel while Replicate's cancel fails: cancelled here all the same, hold released.
    let (_, hung) = s
        .generate(user, "cancel in a storm [sim:hang]", false)
        .await;
    sim.inject(&["cancel"], 500, 3).await;
    let (status, c) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{}", id_of(&hung)),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (status, c["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{c}"
    );
    sim.clear().await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    picture::reconcile::sweep(&s.state).await.unwrap();
    let lost_row = s.row(&id_of(&lost)).await;
    assert_eq!(
        (lost_row.status.as_str(), lost_row.error_code.as_deref()),
        ("failed", Some("PROVIDER_ERROR"))
    );
    s.assert_completed_once(&id_of(&orphan)).await;
    s.assert_completed_once(&polled_id).await;
    // Two completions charged, nothing else.
    assert_eq!(balance().await, 80);
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn answers_come_before_the_function_timeout_when_s3_or_replicate_hang() {
    let bucket = crate::common::env(&[])["IMAGES_BUCKET"].clone();
    let s3 = PrivateS3::start(&bucket).await;
    let sim = PrivateSim::start().await;
    let mut settings: Vec<(&str, String)> = sim.settings();
    settings.push(("FUNCTION_TIMEOUT_SECONDS", "8".into()));
    let s = Stack::with_aws(
        &borrowed(&settings),
        AwsOverrides {
            s3: Some(s3.sdk().await),
            ..Default::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let timeout = Duration::from_secs(8);

    // A sync generate whose copy hangs answers 202 within its budget, never a Lambda timeout.
    s3.process().freeze();
    let began = Instant::now();
    let (status, g) = s
        .generate(user, "sync into a frozen bucket [sim:slow=50]", true)
        .await;
    assert!(began.elapsed() < timeout, "took {:?}", began.elapsed());
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing")),
        "{g}"
    );
    let id = id_of(&g);

    // Status polls answer with the state they have while S3, then Replicate, do not answer.
    let path = format!("/api/v1/generate/{id}/status");
    assert_prompt_and_processing(&s, user, &path).await;
    s3.process().resume();
    sim.process.freeze();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A webhook's copy that waited on the frozen bucket may have completed it by now: the
    // answer is prompt and says what is stored, whichever it is.
    let before = s.row(&id).await.status.as_str();
    let began = Instant::now();
    let (status, v) = s.call(Method::GET, &path, Some(user), None).await;
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "took {:?}",
        began.elapsed()
    );
    let after = s.row(&id).await.status.as_str();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        [before, after].contains(&v["status"].as_str().unwrap()),
        "{before}/{after}: {v}"
    );
    sim.process.resume();

    // Both back: the next polls complete it, once.
    let v = poll_until_terminal(&s, user, &id, Duration::from_secs(20)).await;
    assert_eq!(v["status"], "completed", "{v}");
    s.assert_completed_once(&id).await;
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn the_dev_gateway_runs_the_reconciler_on_its_schedule() {
    let pg = PrivatePostgres::start().await;
    let dev_dir = std::env::temp_dir().join(format!("picture-dev-{}", Uuid::new_v4().simple()));
    let port = free_port();
    let extra = [
        ("DATABASE_URL", pg.url.clone()),
        ("RECONCILE_INTERVAL_SECONDS", "1".into()),
        ("RECONCILE_GRACE_SECONDS", "0".into()),
    ];
    let _server = serve(port, &dev_dir, &extra).await;
    let user = Uuid::new_v4();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/generate"))
        .bearer_auth(dev_token(&dev_dir, user))
        .json(&json!({"prompt": "nobody asks [sim:no-webhook] [sim:slow=50]", "modelId": FLUX}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let id = id_of(&answer.json().await.unwrap());
    // No webhook, no poll: only the scheduled reconciler can finish it.
    let inspector = Stack::with(&[("DATABASE_URL", pg.url.as_str())]).await;
    let end = Instant::now() + Duration::from_secs(20);
    while !inspector.row(&id).await.status.is_terminal() {
        assert!(
            Instant::now() < end,
            "the scheduled reconciler did not finish it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    inspector.assert_completed_once(&id).await;
    inspector.assert_audit_clean(user).await;
    let _ = std::fs::remove_dir_all(&dev_dir);
}
