//! `POST /me/export` against the real stores: a user with 200 images gets one
//! zip holding every image byte for byte and `export.json` with their
//! generations, prompts and ledger; an export whose request was cut short is
//! finished by the reconciler; a ready one expires after its day; deleting
//! the account leaves nothing of it.

use std::{collections::HashMap, io::Read, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack};

/// Asks for an export and waits until it is ready; returns its view.
async fn exported(s: &Stack, user: Uuid) -> Value {
    let (status, e) = s
        .call(Method::POST, "/api/v1/me/export", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{e}");
    let path = format!("/api/v1/me/export/{}", e["id"].as_str().unwrap());
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, e) = s.call(Method::GET, &path, Some(user), None).await;
        assert_eq!(status, StatusCode::OK, "{e}");
        if e["status"] == "ready" {
            return e;
        }
        last = e;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("export not ready: {last}");
}

/// The zip behind a ready export's URL: its files by name.
async fn files(s: &Stack, e: &Value) -> HashMap<String, Vec<u8>> {
    let bytes = s.bytes(e["url"].as_str().unwrap()).await;
    assert_eq!(bytes.len() as i64, e["sizeBytes"].as_i64().unwrap());
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        out.insert(f.name().unwrap().to_string(), data);
    }
    out
}

#[tokio::test]
async fn an_export_of_200_images_holds_every_image_and_the_json() {
    let s = Stack::with(&[
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "1000"),
        ("MAX_IN_FLIGHT_PER_USER", "8"),
    ])
    .await;
    let user = Uuid::new_v4();
    // 50 generations of 4 outputs, 5 at a time.
    for round in 0..10 {
        let calls = (0..5).map(|i| {
            let body = json!({"prompt": format!("memory {round}-{i} [sim:slow=1]"), "modelId": FLUX,
                              "numOutputs": 4, "waitForResult": true});
            s.call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        });
        for (status, g) in futures::future::join_all(calls).await {
            assert_eq!(status, StatusCode::CREATED, "{g}");
        }
    }
    s.thumbnails_tried(user).await;
    let e = exported(&s, user).await;
    assert_eq!(e["images"], 200, "{e}");
    let zip = files(&s, &e).await;
    assert_eq!(zip.len(), 201, "200 images and export.json");
    let doc: Value = serde_json::from_slice(&zip["export.json"]).unwrap();
    assert_eq!(doc["userId"], json!(user));
    let generations = doc["generations"].as_array().unwrap();
    assert_eq!(generations.len(), 50);
    assert!(
        generations
            .iter()
            .all(|g| g["prompt"].as_str().unwrap().starts_with("memory "))
    );
    let images = doc["images"].as_array().unwrap();
    assert_eq!(images.len(), 200);
    // Every image byte for byte as stored.
    let db = s.state.db.get().await.unwrap();
    let rows = db
        .query(
            "SELECT id, storage_key, format FROM images WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    drop(db);
    assert_eq!(rows.len(), 200);
    for r in &rows {
        let (id, key, format): (Uuid, String, String) = (r.get(0), r.get(1), r.get(2));
        let stored = s.state.storage.read(&key).await.unwrap().unwrap();
        let name = format!("images/{id}.{format}");
        assert_eq!(
            zip.get(&name).map(Vec::as_slice),
            Some(&stored[..]),
            "{name}"
        );
        assert!(images.iter().any(|i| i["file"] == json!(name)));
    }
    s.assert_audit_clean(user).await;

    // Deleting the account leaves no object (the zip included) and no prompt.
    let (status, d) = s
        .call(
            Method::DELETE,
            "/api/v1/me",
            Some(user),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(
        (status, &d["status"]),
        (StatusCode::ACCEPTED, &json!("deleted")),
        "{d}"
    );
    let mut left = Vec::new();
    s.state
        .storage
        .list(&format!("users/{user}/"), |k, _| left.push(k.to_string()))
        .await
        .unwrap();
    assert_eq!(left, Vec::<String>::new());
    let path = format!("/api/v1/me/export/{}", e["id"].as_str().unwrap());
    let (_, after) = s.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(
        (&after["status"], &after["url"]),
        (&json!("expired"), &Value::Null),
        "{after}"
    );
    s.assert_audit_clean(user).await;

    // The account lives on: what is made after the deletion can be exported again.
    let (status, g) = s.generate(user, "a new start [sim:slow=1]", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    let e = exported(&s, user).await;
    assert_eq!(e["images"], 1, "{e}");
    let doc: Value = serde_json::from_slice(&files(&s, &e).await["export.json"]).unwrap();
    let prompts: Vec<_> = doc["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["prompt"] != "")
        .map(|g| g["prompt"].clone())
        .collect();
    assert_eq!(prompts, [json!("a new start [sim:slow=1]")]);
}

#[tokio::test]
async fn a_cut_short_export_is_finished_by_the_reconciler_and_expires_after_its_day() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let (status, g) = s.generate(user, "kept [sim:slow=1]", true).await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    // Recorded, then the request's process died before any work.
    let db = s.state.db.get().await.unwrap();
    let export = picture::db::exports::pending_or_new(&**db, user)
        .await
        .unwrap();
    drop(db);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let done = picture::export::reconcile(&s.state, until).await.unwrap();
    assert!(done.finished >= 1, "{done:?}");
    let path = format!("/api/v1/me/export/{}", export.id);
    let (_, e) = s.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(
        (&e["status"], &e["images"]),
        (&json!("ready"), &json!(1)),
        "{e}"
    );
    let zip = files(&s, &e).await;
    assert!(zip.contains_key("export.json"));
    // Asking again starts a new export: the ready one stays.
    let (status, again) = s
        .call(Method::POST, "/api/v1/me/export", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], e["id"]);

    // A day later its object is deleted.
    let key = picture::export::key(user, export.id);
    let db = s.state.db.get().await.unwrap();
    db.execute(
        "UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = $1",
        &[&export.id],
    )
    .await
    .unwrap();
    drop(db);
    let done = picture::export::reconcile(&s.state, until).await.unwrap();
    assert!(done.expired >= 1, "{done:?}");
    assert!(!s.object_exists(&key).await);
    let (_, e) = s.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(
        (&e["status"], &e["url"]),
        (&json!("expired"), &Value::Null),
        "{e}"
    );

    // Another user's export and an unknown one are 404.
    for (who, p) in [
        (Uuid::new_v4(), path.clone()),
        (user, format!("/api/v1/me/export/{}", Uuid::new_v4())),
        (user, "/api/v1/me/export/x".into()),
    ] {
        let (status, body) = s.call(Method::GET, &p, Some(who), None).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::NOT_FOUND, &json!("EXPORT_NOT_FOUND")),
            "{p}"
        );
    }
    s.assert_audit_clean(user).await;
}
