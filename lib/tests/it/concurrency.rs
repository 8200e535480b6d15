//! Money paths under concurrency: parallel starts never exceed the free
//! allowance, and parallel completions create one image and one capture.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::common::{Stack, id_of};
use picture::db::generations::LeaseBy;

async fn parallel_generates(
    s: &Stack,
    user: Uuid,
    n: usize,
) -> Vec<(StatusCode, serde_json::Value)> {
    let prompts: Vec<String> = (0..n).map(|i| format!("parallel {i} [sim:hang]")).collect();
    futures::future::join_all(prompts.iter().map(|p| s.generate(user, p, false))).await
}

#[tokio::test]
async fn parallel_requests_never_take_more_than_the_free_allowance() {
    let s = Stack::with(&[("MAX_IN_FLIGHT_PER_USER", "100")]).await;
    let user = Uuid::new_v4();
    let results = parallel_generates(&s, user, 8).await;
    assert!(
        results.iter().all(|(st, _)| *st == StatusCode::ACCEPTED),
        "{results:?}"
    );
    let free: Vec<_> = results
        .iter()
        .filter(|(_, b)| b["charge"] == "free")
        .collect();
    let waived = results
        .iter()
        .filter(|(_, b)| b["charge"] == "waived")
        .count();
    assert_eq!(
        (free.len(), waived),
        (3, 5),
        "development: beyond the free ones is waived"
    );
    let mut remaining: Vec<i64> = free
        .iter()
        .map(|(_, b)| b["freeGenerationsRemaining"].as_i64().unwrap())
        .collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2]);

    // Cancelling a free one gives exactly one back.
    let first_free = id_of(&free[0].1);
    let (_, c) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{first_free}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(c["freeGenerationsRemaining"], 1);
    let answers: Vec<_> = results.into_iter().map(|(_, b)| b).collect();
    s.cancel_all(user, &answers).await;
}

#[tokio::test]
async fn enforced_environments_refuse_beyond_the_free_allowance() {
    let s = Stack::with(&[("APP_ENV", "staging")]).await;
    let user = Uuid::new_v4();
    let results = parallel_generates(&s, user, 6).await;
    let accepted = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::ACCEPTED)
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::PAYMENT_REQUIRED)
        .collect();
    assert_eq!((accepted, refused.len()), (3, 3), "{results:?}");
    let p = &refused[0].1;
    assert_eq!(
        (
            p["code"].as_str(),
            p["required"].as_i64(),
            p["balance"].as_i64()
        ),
        (Some("INSUFFICIENT_CREDITS"), Some(10), Some(0))
    );
    assert_eq!(p["freeGenerationsRemaining"], 0);
    let answers: Vec<_> = results.into_iter().map(|(_, b)| b).collect();
    s.cancel_all(user, &answers).await;
}

/// The generation's prediction once the provider has finished it.
async fn finished_prediction(s: &Stack, id: &str) -> picture::replicate::Prediction {
    let prediction_id = s.row(id).await.prediction_id.unwrap();
    loop {
        let p = s.state.replicate.get(&prediction_id).await.unwrap();
        if p.is_terminal() {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_completions_create_one_image_and_one_capture() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (_, g) = s
        .generate(user, "race [sim:no-webhook] [sim:slow=100]", false)
        .await;
    let id = id_of(&g);
    let prediction = finished_prediction(&s, &id).await;
    let gen_id = Uuid::parse_str(&id).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let settles = futures::future::join_all((0..10).map(|_| {
        picture::lifecycle::settle(&s.state, gen_id, &prediction, deadline, LeaseBy::Other)
    }));
    let status_path = format!("/api/v1/generate/{id}/status");
    let polls = futures::future::join_all(
        (0..5).map(|_| s.call(Method::GET, &status_path, Some(user), None)),
    );
    let (settled, polled) = tokio::join!(settles, polls);
    // One completes; the others either found it done or saw it in progress (and would be retried).
    assert!(settled.iter().any(Result::is_ok));
    assert!(
        settled
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(picture::Error::CompletionInProgress)))
    );
    assert!(polled.iter().all(|(st, _)| *st == StatusCode::OK));

    s.wait_terminal(&id).await;
    s.assert_completed_once(&id).await;
    let failed = picture::replicate::Prediction {
        status: "failed".into(),
        ..prediction
    };
    picture::lifecycle::settle(&s.state, gen_id, &failed, deadline, LeaseBy::Other)
        .await
        .unwrap();
    assert_eq!(
        s.row(&id).await.status.as_str(),
        "completed",
        "terminal states are final"
    );
}

#[tokio::test]
async fn parallel_requests_beyond_the_in_flight_cap_are_429_and_hold_nothing() {
    let s = Stack::with(&[("MAX_IN_FLIGHT_PER_USER", "2")]).await;
    let user = Uuid::new_v4();
    let send = |i: usize| {
        s.http
            .post(format!("{}/api/v1/generate", s.base))
            .bearer_auth(s.token(user))
            .json(&serde_json::json!({"prompt": format!("in flight {i} [sim:slow=1500]"), "modelId": crate::common::FLUX}))
            .send()
    };
    let answers = futures::future::join_all((0..5).map(send)).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for res in answers {
        let res = res.unwrap();
        let status = res.status();
        let retry_after = res.headers().get("retry-after").cloned();
        let body: serde_json::Value = res.json().await.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted.push(body),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["code"], "TOO_MANY_IN_FLIGHT", "{body}");
                let secs: u32 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
                assert!(secs >= 1);
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!((accepted.len(), refused), (2, 3));
    let db = s.state.db.get().await.unwrap();
    let holds: i64 = db
        .query_one(
            "SELECT count(*) FROM credit_holds WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holds, 2, "a refused request holds nothing");
    drop(db);
    for g in &accepted {
        s.wait_terminal(&id_of(g)).await;
    }
    let (status, g) = s.generate(user, "after the two [sim:slow=50]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    s.wait_terminal(&id_of(&g)).await;
}

/// Several outputs: concurrent completions store each output once and capture
/// the hold once, for the outputs delivered (2 of 4: 20 credits, 20 released).
#[tokio::test]
async fn concurrent_completions_of_several_outputs_capture_the_delivered_once() {
    let s = Stack::with(&[("APP_ENV", "staging")]).await;
    let user = Uuid::new_v4();
    // The free generations used first, so that every output costs credits.
    let body = |prompt: &str, wait: bool| serde_json::json!({"prompt": prompt, "modelId": crate::common::FLUX, "numOutputs": 3, "waitForResult": wait});
    let (status, _) = s
        .call(
            Method::POST,
            "/api/v1/generate",
            Some(user),
            Some(body("free ones [sim:slow=20]", true)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    s.grant(user, 40).await;
    let prompt = "race of four [sim:outputs=2] [sim:no-webhook] [sim:slow=100]";
    let mut four = body(prompt, false);
    four["numOutputs"] = 4.into();
    let (status, g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(four))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    let id = id_of(&g);
    let prediction = finished_prediction(&s, &id).await;
    let gen_id = Uuid::parse_str(&id).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let settled = futures::future::join_all((0..10).map(|_| {
        picture::lifecycle::settle(&s.state, gen_id, &prediction, deadline, LeaseBy::Other)
    }))
    .await;
    assert!(
        settled
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(picture::Error::CompletionInProgress)))
    );
    s.wait_terminal(&id).await;
    let images = "SELECT count(*) FROM images WHERE generation_id = $1";
    assert_eq!(s.count(images, &id).await, 2);
    let hold = "SELECT count(*) FROM credit_holds
                 WHERE generation_id = $1 AND state = 'captured' AND delivered = 2 AND amount = 20";
    assert_eq!(s.count(hold, &id).await, 1);
    let captures =
        "SELECT count(*) FROM credit_transactions WHERE generation_id = $1 AND kind = 'capture'";
    assert_eq!(s.count(captures, &id).await, 1);
    let (_, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(b["balance"], 20, "{b}");
    s.thumbnails_tried(user).await;
    s.assert_audit_clean(user).await;
}
