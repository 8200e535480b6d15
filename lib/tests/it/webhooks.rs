//! Replicate webhooks with the published Standard Webhooks construction:
//! what is accepted, what any change to a signed delivery does, stale
//! deliveries, replays of a processed delivery, and the body limit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Stack, id_of};
use picture::db::generations::LeaseBy;
use picture::{records::replay, replicate::signature};

/// A delivery as sent: headers and body.
#[derive(Clone)]
struct Delivery {
    id: String,
    timestamp: i64,
    signature: String,
    body: String,
}

impl Delivery {
    /// A delivery of `body` signed now with the stack's secret.
    async fn signed(s: &Stack, body: &Value) -> Delivery {
        let secret = s.state.webhook_secret().await.unwrap();
        let (id, timestamp, body) = (
            format!("msg_{}", Uuid::new_v4().simple()),
            chrono::Utc::now().timestamp(),
            body.to_string(),
        );
        Delivery {
            signature: signature::sign(secret, &id, timestamp, body.as_bytes()).unwrap(),
            id,
            timestamp,
            body,
        }
    }

    async fn send(&self, s: &Stack) -> (StatusCode, Value) {
        let res = s
            .http
            .post(format!("{}/api/v1/generate/webhook", s.base))
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", self.timestamp.to_string())
            .header("webhook-signature", &self.signature)
            .body(self.body.clone())
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }
}

fn invalid_signature() -> (StatusCode, Value) {
    (StatusCode::UNAUTHORIZED, json!("INVALID_SIGNATURE"))
}

#[tokio::test]
async fn a_signed_delivery_is_accepted_and_any_change_is_401() {
    let s = Stack::start().await;
    let body =
        json!({"id": format!("p-{}", Uuid::new_v4()), "status": "succeeded", "output": null});
    let good = Delivery::signed(&s, &body).await;
    let changed = [
        Delivery {
            body: good.body.replace("succeeded", "failed"),
            ..good.clone()
        },
        Delivery {
            id: format!("{}x", good.id),
            ..good.clone()
        },
        Delivery {
            timestamp: good.timestamp + 1,
            ..good.clone()
        },
        Delivery {
            signature: good.signature.replace("v1,", "v2,"),
            ..good.clone()
        },
    ];
    for d in &changed {
        let (status, p) = d.send(&s).await;
        assert_eq!(
            (status, p["code"].clone()),
            invalid_signature(),
            "{}",
            d.body
        );
    }
    // Stale: correctly signed, but more than five minutes old (or ahead); from now, not from
    // the signing above (a loaded machine may have spent seconds since).
    let secret = s.state.webhook_secret().await.unwrap();
    for skew in [-310, 310] {
        let timestamp = chrono::Utc::now().timestamp() + skew;
        let stale = Delivery {
            timestamp,
            signature: signature::sign(secret, &good.id, timestamp, good.body.as_bytes()).unwrap(),
            ..good.clone()
        };
        let (status, p) = stale.send(&s).await;
        assert_eq!((status, p["code"].clone()), invalid_signature(), "{skew}");
    }
    assert_eq!(
        good.send(&s).await,
        (StatusCode::OK, json!({"received": true}))
    );
}

#[tokio::test]
async fn a_replayed_delivery_is_acknowledged_without_work() {
    let s = Stack::start().await;
    // An unknown prediction: processed (acknowledged) once, then remembered.
    let body =
        json!({"id": format!("p-{}", Uuid::new_v4()), "status": "succeeded", "output": null});
    let d = Delivery::signed(&s, &body).await;
    assert_eq!(
        d.send(&s).await,
        (StatusCode::OK, json!({"received": true}))
    );
    let now = chrono::Utc::now().timestamp();
    assert!(replay::seen(&s.state.records, &d.id, now).await.unwrap());
    assert_eq!(
        d.send(&s).await,
        (StatusCode::OK, json!({"received": true, "duplicate": true}))
    );

    // A delivery id already processed carries a result that would change a live generation:
    // the replay changes nothing, the same result under a new id does.
    let user = Uuid::new_v4();
    let (_, g) = s.generate(user, "replayed [sim:hang]", false).await;
    let id = id_of(&g);
    let prediction = s.row(&id).await.prediction_id.unwrap();
    let failed = json!({"id": prediction, "status": "failed", "error": "boom", "output": null});
    let replayed = Delivery::signed(&s, &failed).await;
    replay::remember(&s.state.records, &replayed.id, now)
        .await
        .unwrap();
    assert_eq!(replayed.send(&s).await.1["duplicate"], true);
    assert_eq!(s.row(&id).await.status.as_str(), "processing");
    assert_eq!(
        Delivery::signed(&s, &failed).await.send(&s).await,
        (StatusCode::OK, json!({"received": true}))
    );
    assert_eq!(s.row(&id).await.status.as_str(), "failed");
    s.sim(
        Method::POST,
        &format!("/v1/predictions/{prediction}/cancel"),
    )
    .await;
}

#[tokio::test]
async fn an_oversized_delivery_is_413_before_any_check() {
    let s = Stack::start().await;
    let res = s
        .http
        .post(format!("{}/api/v1/generate/webhook", s.base))
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "PAYLOAD_TOO_LARGE"
    );
}

#[tokio::test]
async fn a_delivery_is_acknowledged_only_once_its_generation_is_finished() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (_, g) = s
        .generate(
            user,
            "busy elsewhere [sim:no-webhook] [sim:slow=100]",
            false,
        )
        .await;
    let id = id_of(&g);
    let gen_id = Uuid::parse_str(&id).unwrap();
    let prediction_id = s.row(&id).await.prediction_id.unwrap();
    let prediction = loop {
        let (_, p) = s
            .sim(Method::GET, &format!("/v1/predictions/{prediction_id}"))
            .await;
        if p["status"] == "succeeded" {
            break p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Another completion holds the lease (and may have died holding it).
    let db = s.state.db.get().await.unwrap();
    let other = Uuid::new_v4();
    let leased = picture::db::generations::try_lease(
        &**db,
        gen_id,
        other,
        std::time::Duration::from_secs(60),
        LeaseBy::Other,
    )
    .await
    .unwrap();
    assert!(leased);
    let d = Delivery::signed(&s, &prediction).await;
    let (status, p) = d.send(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    let now = chrono::Utc::now().timestamp();
    assert!(
        !replay::seen(&s.state.records, &d.id, now).await.unwrap(),
        "work not done: Replicate must retry this delivery"
    );
    assert_eq!(s.row(&id).await.status.as_str(), "processing");

    // The holder gives up; Replicate's retry of the same delivery completes it.
    picture::db::generations::release_lease(&**db, gen_id, other)
        .await
        .unwrap();
    assert_eq!(
        d.send(&s).await,
        (StatusCode::OK, json!({"received": true}))
    );
    s.assert_completed_once(&id).await;
}

/// A status poll's completion lease yields to a webhook: Replicate's delivery
/// completes the generation at once instead of getting 503 while polls keep
/// taking the lease.
#[tokio::test]
async fn a_webhook_takes_over_a_polls_lease() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (_, g) = s
        .generate(
            user,
            "polled and delivered [sim:no-webhook] [sim:slow=100]",
            false,
        )
        .await;
    let id = id_of(&g);
    let gen_id = Uuid::parse_str(&id).unwrap();
    let prediction_id = s.row(&id).await.prediction_id.unwrap();
    let prediction = loop {
        let (_, p) = s
            .sim(Method::GET, &format!("/v1/predictions/{prediction_id}"))
            .await;
        if p["status"] == "succeeded" {
            break p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // A poll holds the lease (its copy is slow, or it died).
    let db = s.state.db.get().await.unwrap();
    let poll = Uuid::new_v4();
    let length = std::time::Duration::from_secs(60);
    assert!(
        picture::db::generations::try_lease(&**db, gen_id, poll, length, LeaseBy::Poll)
            .await
            .unwrap()
    );
    // Another poll does not take it; the webhook does.
    assert!(
        !picture::db::generations::try_lease(&**db, gen_id, Uuid::new_v4(), length, LeaseBy::Poll)
            .await
            .unwrap()
    );
    let d = Delivery::signed(&s, &prediction).await;
    assert_eq!(
        d.send(&s).await,
        (StatusCode::OK, json!({"received": true}))
    );
    s.assert_completed_once(&id).await;
}
