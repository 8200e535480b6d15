//! Thumbnails and blurhash placeholders: made after a generation completes (a
//! task of the process that stored it, or the `thumbnails` function on the
//! bucket's event), served by every image view once made, deleted with the
//! image, absent for an output that cannot be decoded, filled in by the backfill
//! and the reconciler, and never a change to the generation when they fail.

use picture::{state::AwsOverrides, storage::Storage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{FLUX, Stack, id_of},
    private::PrivateS3,
};

const BASE83: &str =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

/// The component counts a blurhash's first character encodes: `(x − 1) + (y − 1) × 9`.
fn components(blurhash: &str) -> (usize, usize) {
    let flag = BASE83.find(&blurhash[..1]).expect("a base83 character");
    (flag % 9 + 1, flag / 9 + 1)
}

/// A synchronous FLUX generation of about `width`×`height` for a new image, with
/// its image's view once the thumbnail has been tried.
async fn generate(s: &Stack, user: Uuid, prompt: &str, width: i32, height: i32) -> Value {
    let body = json!({"prompt": prompt, "modelId": FLUX, "width": width, "height": height, "waitForResult": true});
    let (status, mut g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    g["image"] = image_view(s, user, g["image"]["id"].as_str().unwrap()).await;
    g
}

/// An image's view, once its thumbnail has been tried.
async fn image_view(s: &Stack, user: Uuid, image_id: &str) -> Value {
    s.thumbnails_tried(user).await;
    let path = format!("/api/v1/images/{image_id}");
    let (status, view) = s.call(Method::GET, &path, Some(user), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

/// The image row's object keys and thumbnail state.
async fn keys(s: &Stack, image_id: &str) -> (String, Option<String>, String) {
    let db = s.state.db.get().await.unwrap();
    let r = db
        .query_one(
            "SELECT storage_key, thumbnail_key, thumbnail_state FROM images WHERE id = $1",
            &[&Uuid::parse_str(image_id).unwrap()],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// Downloads the thumbnail an image view names and checks it against the image.
async fn check_thumbnail(image: &Value) {
    let url = image["thumbnailUrl"].as_str().expect("a thumbnailUrl");
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status(), 200, "GET {url}");
    let bytes = res.bytes().await.unwrap();
    assert_eq!((&bytes[..4], &bytes[8..12]), (&b"RIFF"[..], &b"WEBP"[..]));
    let thumb = webp::Decoder::new(&bytes)
        .decode()
        .expect("a decodable WebP");
    let (tw, th) = (i64::from(thumb.width()), i64::from(thumb.height()));
    let (w, h) = (
        image["width"].as_i64().unwrap(),
        image["height"].as_i64().unwrap(),
    );
    assert_eq!(tw.max(th), 384.min(w.max(h)), "{tw}×{th} of {w}×{h}");
    // Same aspect ratio, up to rounding to whole pixels.
    assert!((tw * h - th * w).abs() <= w.max(h), "{tw}×{th} of {w}×{h}");
    let hash = image["blurhash"].as_str().expect("a blurhash");
    assert_eq!(components(hash), (4, 3), "{hash}");
    assert_eq!(hash.len(), 4 + 2 * 4 * 3);
    assert!(blurhash::decode(hash, 32, 24, 1.0).is_ok());
}

#[tokio::test]
async fn completed_images_carry_a_webp_thumbnail_and_a_blurhash_in_every_view() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let g = generate(&s, user, "a wide harbour at dawn [sim:slow=50]", 1344, 768).await;
    let image = &g["image"];
    assert!(
        image["width"].as_i64() > image["height"].as_i64(),
        "{image}"
    );
    check_thumbnail(image).await;

    let id = image["id"].as_str().unwrap();
    let status = format!("/api/v1/generate/{}/status", id_of(&g));
    let views = [
        s.call(Method::GET, &status, Some(user), None).await.1["image"].clone(),
        s.call(
            Method::GET,
            &format!("/api/v1/images/{id}"),
            Some(user),
            None,
        )
        .await
        .1,
        s.call(Method::GET, "/api/v1/images", Some(user), None)
            .await
            .1["data"][0]
            .clone(),
        s.call(Method::GET, "/api/v1/generate/history", Some(user), None)
            .await
            .1["data"][0]["image"]
            .clone(),
    ];
    for view in &views {
        assert_eq!(view["id"], image["id"], "{view}");
        assert_eq!(view["blurhash"], image["blurhash"], "{view}");
        check_thumbnail(view).await;
    }
    let (key, thumb, state) = keys(&s, id).await;
    assert_eq!(
        key,
        Storage::key(user, Uuid::parse_str(&id_of(&g)).unwrap(), 0, "webp")
    );
    let expected = Storage::thumbnail_key(&key);
    assert_eq!(
        (thumb.as_deref(), state.as_str()),
        (Some(&*expected), "done")
    );
    s.assert_audit_clean(user).await; // the thumbnail is no orphan
}

#[tokio::test]
async fn deleting_an_image_deletes_its_thumbnail_too() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let g = generate(&s, user, "soon gone [sim:slow=50]", 1024, 1024).await;
    let id = g["image"]["id"].as_str().unwrap();
    let (key, thumb, _) = keys(&s, id).await;
    let thumb = thumb.expect("a thumbnail key");
    assert!(s.object_exists(&key).await && s.object_exists(&thumb).await);

    let path = format!("/api/v1/images/{id}");
    let (status, _) = s.call(Method::DELETE, &path, Some(user), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!s.object_exists(&key).await, "{key}");
    assert!(!s.object_exists(&thumb).await, "{thumb}");
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn an_svg_output_completes_without_a_thumbnail() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let g = generate(&s, user, "a vector fox [sim:svg] [sim:slow=50]", 1024, 1024).await;
    let image = &g["image"];
    assert_eq!(image["format"], "svg", "{image}");
    assert!(
        image["thumbnailUrl"].is_null() && image["blurhash"].is_null(),
        "{image}"
    );
    let (key, thumb, state) = keys(&s, image["id"].as_str().unwrap()).await;
    assert_eq!((thumb, state.as_str()), (None, "none"));
    assert!(
        key.ends_with(".svg") && s.object_exists(&key).await,
        "{key}"
    );
    let res = reqwest::get(image["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().starts_with("<svg"));
    s.assert_audit_clean(user).await;
}

#[tokio::test]
async fn the_backfill_fills_images_stored_before_twice_without_harm() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let mut images = Vec::new();
    for (prompt, w, h) in [
        ("old square [sim:slow=50]", 1024, 1024),
        ("old portrait [sim:slow=50]", 768, 1344),
        ("old vector [sim:svg] [sim:slow=50]", 1024, 1024),
    ] {
        images.push(generate(&s, user, prompt, w, h).await["image"].clone());
    }
    assert!(images.iter().all(Value::is_object));
    let hashes: Vec<Value> = images.iter().map(|i| i["blurhash"].clone()).collect();

    // As stored before thumbnails existed: no columns, no thumbnail objects.
    for i in &images[..2] {
        let (_, thumb, _) = keys(&s, i["id"].as_str().unwrap()).await;
        s.state.storage.delete(&thumb.unwrap()).await.unwrap();
    }
    let db = s.state.db.get().await.unwrap();
    let cleared = db
        .execute(
            "UPDATE images SET thumbnail_key = NULL, blurhash = NULL, thumbnail_state = 'pending'
              WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(cleared, 3);
    drop(db);
    let (_, listed) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["thumbnailUrl"].is_null())
    );

    // Two runs at once share the work (batches of one): each image is done once.
    let st = &s.state;
    let mine = picture::thumbnail::Selection {
        user: Some(user),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        picture::thumbnail::backfill(st, 1, mine),
        picture::thumbnail::backfill(st, 1, mine),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (
            a.made + b.made,
            a.undecodable + b.undecodable,
            a.left + b.left
        ),
        (2, 1, 0)
    );
    let again = picture::thumbnail::backfill(st, 1, mine).await.unwrap();
    assert_eq!((again.made, again.undecodable, again.left), (0, 0, 0));

    for (i, hash) in images.iter().zip(&hashes) {
        let id = i["id"].as_str().unwrap();
        let (_, view) = s
            .call(
                Method::GET,
                &format!("/api/v1/images/{id}"),
                Some(user),
                None,
            )
            .await;
        assert_eq!(&view["blurhash"], hash, "the same blurhash as at ingest");
        if i["format"] == "svg" {
            assert!(view["thumbnailUrl"].is_null(), "{view}");
            assert_eq!(keys(&s, id).await.2, "none");
        } else {
            check_thumbnail(&view).await;
        }
    }
    s.assert_audit_clean(user).await;
}

/// The generation's row as the client's money and status see it.
async fn generation_facts(s: &Stack, id: &str) -> (String, i32, String) {
    let db = s.state.db.get().await.unwrap();
    let r = db
        .query_one(
            "SELECT g.status, g.credits_used, h.state FROM generations g
               JOIN credit_holds h ON h.generation_id = g.id WHERE g.id = $1",
            &[&Uuid::parse_str(id).unwrap()],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test]
async fn a_generation_completed_by_its_webhook_gets_its_thumbnail_after() {
    let s = Stack::start().await;
    let user = Uuid::new_v4();
    let body = json!({"prompt": "completed by the webhook [sim:slow=300]", "modelId": FLUX});
    let (status, g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{g}");
    // No status poll: only the webhook can complete it.
    let id = id_of(&g);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while generation_facts(&s, &id).await.0 != "completed" {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook did not complete {id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, listed) = s
        .call(Method::GET, "/api/v1/images", Some(user), None)
        .await;
    let image_id = listed["data"][0]["id"].as_str().unwrap().to_string();
    check_thumbnail(&image_view(&s, user, &image_id).await).await;
    s.assert_audit_clean(user).await;
}

/// With `THUMBNAILS=event` nothing in the process makes thumbnails (the bucket's
/// event does): the answer never waits for one. A thumbnail that cannot be made
/// (S3 frozen) fails the event only: the generation, its charge and its image
/// stay as they were, the audit sees a thumbnail "not yet" made, and the retry
/// makes it.
#[tokio::test]
async fn a_thumbnail_that_fails_changes_nothing_about_its_generation() {
    let bucket = crate::common::env(&[])["IMAGES_BUCKET"].clone();
    let s3 = PrivateS3::start(&bucket).await;
    let s = Stack::with_aws(
        &[("THUMBNAILS", "event")],
        AwsOverrides {
            s3: Some(s3.sdk().await),
            ..Default::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let body = json!({"prompt": "a thumbnail in bad weather [sim:slow=50]", "modelId": FLUX, "waitForResult": true});
    let (status, g) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert!(
        g["image"]["thumbnailUrl"].is_null() && g["image"]["blurhash"].is_null(),
        "{g}"
    );
    let id = id_of(&g);
    let image_id = g["image"]["id"].as_str().unwrap().to_string();
    let before = generation_facts(&s, &id).await;
    assert_eq!(
        (before.0.as_str(), before.2.as_str()),
        ("completed", "captured")
    );
    let (key, _, state) = keys(&s, &image_id).await;
    assert_eq!(state, "pending");
    s.assert_audit_clean(user).await; // pending for a moment is no violation

    s3.process().freeze();
    let tried = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        picture::thumbnail::for_object(&s.state, &key),
    )
    .await
    .expect("the attempt ends within its time");
    s3.process().resume();
    let error = tried.expect_err("no thumbnail while S3 is frozen");
    assert!(error.is_transient(), "{error}");
    assert_eq!(generation_facts(&s, &id).await, before);
    assert_eq!(keys(&s, &image_id).await.2, "pending");
    let (_, view) = s
        .call(
            Method::GET,
            &format!("/api/v1/generate/{id}/status"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (view["status"].as_str(), &view["creditsUsed"]),
        (Some("completed"), &g["creditsUsed"])
    );

    // The event's retry makes it; a second delivery finds nothing to do.
    let made = picture::thumbnail::for_object(&s.state, &key)
        .await
        .unwrap();
    assert_eq!(made, picture::thumbnail::Made::Thumbnail);
    let again = picture::thumbnail::for_object(&s.state, &key)
        .await
        .unwrap();
    assert_eq!(again, picture::thumbnail::Made::Nothing);
    check_thumbnail(&image_view(&s, user, &image_id).await).await;
    assert_eq!(generation_facts(&s, &id).await, before);
    s.assert_audit_clean(user).await;
}

/// Thumbnails, uploads and keys that are not a generation's image are not made
/// into thumbnails; an image whose row is not committed yet is a retry.
#[tokio::test]
async fn only_committed_generation_images_get_a_thumbnail() {
    let s = Stack::with(&[("THUMBNAILS", "event")]).await;
    let user = Uuid::new_v4();
    let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
    for key in [
        format!("users/{u}/images/{g}.thumb.webp"),
        format!("users/{u}/uploads/{g}"),
        format!("users/{u}/images/{g}.webp"),
        "elsewhere.png".to_string(),
    ] {
        let made = picture::thumbnail::for_object(&s.state, &key)
            .await
            .unwrap();
        assert_eq!(made, picture::thumbnail::Made::Nothing, "{key}");
    }
    let (status, running) = s.generate(user, "not finished [sim:hang]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{running}");
    let id = Uuid::parse_str(&id_of(&running)).unwrap();
    let key = Storage::key(user, id, 0, "webp");
    let early = picture::thumbnail::for_object(&s.state, &key).await;
    assert!(
        early.as_ref().is_err_and(picture::Error::is_transient),
        "{early:?}"
    );
    s.cancel_all(user, &[running]).await;
    let late = picture::thumbnail::for_object(&s.state, &key)
        .await
        .unwrap();
    assert_eq!(late, picture::thumbnail::Made::Nothing);
}
