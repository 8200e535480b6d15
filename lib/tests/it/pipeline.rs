//! The generation pipeline end to end: models, sync and async generation,
//! webhooks, status, images, cancel.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::common::{FLUX, Stack, id_of};

#[tokio::test]
async fn models_are_public_default_first_and_404_when_unknown() {
    let s = Stack::start().await;
    let (status, list) = s.call(Method::GET, "/api/v1/models", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flux-schnell", "seedream-3", "nano-banana"]);
    assert_eq!(list[0]["isDefault"], true);
    assert_eq!(list[0]["replicateId"], "black-forest-labs/flux-schnell");

    let (status, one) = s
        .call(Method::GET, &format!("/api/v1/models/{FLUX}"), None, None)
        .await;
    assert_eq!(
        (status, one["maxSteps"].as_i64()),
        (StatusCode::OK, Some(4))
    );
    let res = s
        .http
        .get(format!("{}/api/v1/models", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    assert!(res.headers().contains_key("x-request-id"));

    for id in [Uuid::new_v4().to_string(), "not-a-uuid".to_string()] {
        let (status, body) = s
            .call(Method::GET, &format!("/api/v1/models/{id}"), None, None)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("MODEL_NOT_FOUND"))
        );
    }
}

/// A large output (~0.5 MB of noise) is stored as the provider's file, byte
/// for byte, with its size and pixel size.
#[tokio::test]
async fn a_large_output_is_stored_byte_for_byte() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "grain [sim:noise]", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(g["status"], "completed", "{g}");
    let id = id_of(&g);
    let prediction = s.row(&id).await.prediction_id.unwrap();
    let (_, p) = s
        .sim(Method::GET, &format!("/v1/predictions/{prediction}"))
        .await;
    let source = p["output"][0].as_str().unwrap();
    let original = s.bytes(source).await;
    assert!(
        original.len() > 256 * 1024,
        "{} bytes: not a large output",
        original.len()
    );

    let image = &g["image"];
    let stored = s.bytes(image["url"].as_str().unwrap()).await;
    assert!(
        stored == original,
        "stored {} bytes, the provider's file {}",
        stored.len(),
        original.len()
    );
    assert_eq!(image["fileSize"].as_i64(), Some(original.len() as i64));
    assert_eq!(
        picture::media::dimensions(&original),
        Some((
            image["width"].as_i64().unwrap() as i32,
            image["height"].as_i64().unwrap() as i32
        ))
    );
}

#[tokio::test]
async fn sync_generation_is_stored_listed_and_deleted() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let body = json!({"prompt": "a lighthouse at dawn", "modelId": FLUX, "width": 1440, "height": 810, "waitForResult": true});
    let (status, g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(g["status"], "completed");
    assert_eq!(
        (g["charge"].as_str(), g["freeGenerationsRemaining"].as_i64()),
        (Some("free"), Some(2))
    );
    let id = id_of(&g);
    let image = &g["image"];
    // flux-schnell renders 16:9 with a 1024 px short side, as webp.
    assert_eq!(
        (
            image["width"].as_i64(),
            image["height"].as_i64(),
            image["format"].as_str()
        ),
        (Some(1820), Some(1024), Some("webp"))
    );

    let url = image["url"].as_str().unwrap();
    let bytes = s.bytes(url).await;
    assert_eq!(picture::media::sniff(&bytes).map(|f| f.0), Some("webp"));
    assert_eq!(bytes.len() as i64, image["fileSize"].as_i64().unwrap());
    let key = format!("users/{user}/images/{id}.webp");
    assert!(s.object_exists(&key).await);

    let (status, st) = s
        .call(
            Method::GET,
            &format!("/api/v1/generate/{id}/status"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (status, st["status"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
    assert_eq!(st["image"]["id"], image["id"]);

    let image_id = image["id"].as_str().unwrap();
    let (status, list) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], image_id);
    assert_eq!(list["data"][0]["prompt"], "a lighthouse at dawn");
    let (status, one) = s
        .call(
            Method::GET,
            &format!("/api/v1/images/{image_id}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (status, one["generationId"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );

    let (status, fav) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/images/{image_id}"),
            Some(user),
            Some(json!({"isFavorite": true})),
        )
        .await;
    assert_eq!(
        (status, fav["isFavorite"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (_, favs) = s
        .call(
            Method::GET,
            "/api/v1/images?favorites=true",
            Some(user),
            None,
        )
        .await;
    assert_eq!(favs["data"].as_array().unwrap().len(), 1);

    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/images/{image_id}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!s.object_exists(&key).await);
    assert_eq!(
        s.http.get(url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = s
        .call(
            Method::GET,
            &format!("/api/v1/images/{image_id}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn images_paginate_newest_first_with_cursors() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, g) = s
            .generate(user, &format!("page test {i} [sim:slow=50]"), true)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(g["image"]["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let (_, p1) = s
        .call(Method::GET, "/api/v1/images?limit=2", Some(user), None)
        .await;
    let got: Vec<&str> = p1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, &ids[..2]);
    let cursor = p1["nextCursor"].as_str().unwrap();
    let (_, p2) = s
        .call(
            Method::GET,
            &format!("/api/v1/images?limit=2&cursor={cursor}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(p2["data"][0]["id"], ids[2]);
    assert!(p2["nextCursor"].is_null());
    let (status, bad) = s
        .call(Method::GET, "/api/v1/images?limit=0", Some(user), None)
        .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED"))
    );
}

#[tokio::test]
async fn data_uri_outputs_are_stored_too() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "inline output [sim:data-uri]", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert!(
        s.object_exists(&format!("users/{user}/images/{}.webp", id_of(&g)))
            .await
    );
}

#[tokio::test]
async fn async_generation_completes_by_signed_webhook_once() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "a quiet harbour", false).await;
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::ACCEPTED, Some("processing"))
    );
    assert_eq!(g["freeGenerationsRemaining"], 2);
    let id = id_of(&g);
    // No status poll here: only the webhook can complete it.
    let row = s.wait_terminal(&id).await;
    assert_eq!(row.status.as_str(), "completed");
    let prediction = row.prediction_id.unwrap();
    // The simulator records a delivery once our answer is back: wait for the record.
    let delivered = |d: &serde_json::Value| d["event"] == "completed" && d["status"] == 200;
    let mut deliveries = json!([]);
    for _ in 0..40 {
        deliveries = s
            .sim(
                Method::GET,
                &format!("/_sim/predictions/{prediction}/deliveries"),
            )
            .await
            .1;
        if deliveries
            .as_array()
            .is_some_and(|all| all.iter().any(delivered))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        deliveries.as_array().unwrap().iter().any(delivered),
        "{deliveries}"
    );

    // The same webhook again, many times, while the client polls status.
    let redeliver = format!("/_sim/predictions/{prediction}/redeliver");
    let status_path = format!("/api/v1/generate/{id}/status");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(async { s.sim(Method::POST, &redeliver).await.1["status"].as_i64() });
    }
    let polls = futures::future::join_all(
        (0..6).map(|_| s.call(Method::GET, &status_path, Some(user), None)),
    );
    let (redelivered, polled) = tokio::join!(futures::future::join_all(tasks), polls);
    assert!(
        redelivered.iter().all(|r| *r == Some(200)),
        "{redelivered:?}"
    );
    assert!(
        polled
            .iter()
            .all(|(st, b)| *st == StatusCode::OK && b["status"] == "completed")
    );

    s.assert_completed_once(&id).await;
}

#[tokio::test]
async fn status_polling_completes_a_generation_without_webhook() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s
        .generate(
            user,
            "no webhook here [sim:no-webhook] [sim:slow=200]",
            false,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = id_of(&g);
    let mut last = json!(null);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = s
            .call(
                Method::GET,
                &format!("/api/v1/generate/{id}/status"),
                Some(user),
                None,
            )
            .await
            .1;
        if last["status"] == "completed" {
            break;
        }
    }
    assert_eq!(last["status"], "completed", "{last}");
    assert!(last["image"]["url"].is_string());
}

#[tokio::test]
async fn cancel_stops_a_hanging_generation_for_good() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "forever [sim:hang]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(g["freeGenerationsRemaining"], 2);
    let id = id_of(&g);
    let (status, c) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{id}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (status, c["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{c}"
    );
    assert_eq!(
        c["freeGenerationsRemaining"], 3,
        "a released free hold gives the generation back"
    );

    let prediction = s.row(&id).await.prediction_id.unwrap();
    let (_, p) = s
        .sim(Method::GET, &format!("/v1/predictions/{prediction}"))
        .await;
    assert_eq!(p["status"], "canceled");

    // The provider's own "canceled" webhook, delivered again later, changes nothing.
    s.sim(
        Method::POST,
        &format!("/_sim/predictions/{prediction}/redeliver"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, after) = s
        .call(
            Method::GET,
            &format!("/api/v1/generate/{id}/status"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(
        s.count(
            "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'released'",
            &id
        )
        .await,
        1
    );

    let (status, again) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{id}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (status, again["code"].as_str()),
        (StatusCode::CONFLICT, Some("GENERATION_NOT_CANCELLABLE"))
    );
}

/// A cancel that lands while the create call is still waiting (`Prefer: wait`)
/// stops the prediction at Replicate once it is known: it does not run on,
/// billed, with its free generation already given back.
#[tokio::test]
async fn a_cancel_during_the_create_call_cancels_at_replicate() {
    let s = Stack::with(&[("SYNC_WAIT_SECONDS", "5")]).await;
    let user = Uuid::new_v4();
    let generate = s.generate(user, "cancelled while created [sim:hang]", true);
    let cancel = async {
        // The generation is recorded before the create call begins.
        let id = loop {
            let db = s.state.db.get().await.unwrap();
            let row = db
                .query_opt(
                    "SELECT id::text, prediction_id FROM generations WHERE user_id = $1",
                    &[&user],
                )
                .await
                .unwrap();
            if let Some(r) = row {
                assert!(
                    r.get::<_, Option<String>>(1).is_none(),
                    "create answered too soon"
                );
                break r.get::<_, String>(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let path = format!("/api/v1/generate/{id}");
        let (status, v) = s.call(Method::DELETE, &path, Some(user), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        id
    };
    let ((status, g), id) = tokio::join!(generate, cancel);
    assert_eq!(
        (status, g["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{g}"
    );
    let row = s.row(&id).await;
    assert_eq!(row.status.as_str(), "cancelled");
    let pid = row.prediction_id.expect("the prediction is recorded");
    let (_, p) = s.sim(Method::GET, &format!("/v1/predictions/{pid}")).await;
    assert_eq!(p["status"], "canceled", "{p}");
    let (_, balance) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(balance["freeGenerationsRemaining"], 3);
}
