//! Every sample event in `events/` through its function's handler, the way
//! Lambda delivers it (API Gateway HTTP API v2 payload → `lambda_http`).

use serde::Deserialize;
use tower::ServiceExt;
use uuid::Uuid;

use crate::common::Stack;

#[derive(Deserialize)]
struct Entry {
    file: String,
    function: String,
    status: u16,
}

#[tokio::test]
async fn every_sample_event_gives_its_expected_status() {
    let s = Stack::start().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let manifest: Vec<Entry> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/manifest.json")).unwrap())
            .unwrap();
    let listed: std::collections::BTreeSet<_> = manifest.iter().map(|e| e.file.clone()).collect();
    let on_disk: std::collections::BTreeSet<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".json") && f != "manifest.json")
        .collect();
    assert_eq!(
        listed, on_disk,
        "events/manifest.json must list every event"
    );

    let user = Uuid::new_v4();
    let token = s.token(user);
    // A running generation of the token's user, for the samples that name one.
    let (_, running) = s.generate(user, "running sample [sim:hang]", false).await;
    let running_id = crate::common::id_of(&running);
    for e in &manifest {
        let raw = std::fs::read_to_string(format!("{dir}/{}", e.file))
            .unwrap()
            .replace("DEV_TOKEN", &token)
            .replace("RUNNING_GENERATION_ID", &running_id);
        if e.function == "reconcile" {
            // A scheduled event, not HTTP: the run itself must succeed.
            serde_json::from_str::<serde_json::Value>(&raw).unwrap();
            let report = picture::reconcile::sweep(&s.state).await;
            assert!(report.is_ok(), "{}: {:?}", e.file, report.err());
            continue;
        }
        if e.function == "thumbnails" {
            // The bucket's event through EventBridge: the key it names is handled.
            let event: serde_json::Value = serde_json::from_str(&raw).unwrap();
            let key = event["detail"]["object"]["key"].as_str().unwrap();
            let made = picture::thumbnail::for_object(&s.state, key).await;
            assert!(made.is_ok(), "{}: {:?}", e.file, made.err());
            continue;
        }
        let req =
            lambda_http::request::from_str(&raw).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        let routes = match e.function.as_str() {
            "generate" => picture::api::generate::routes,
            "status" => picture::api::status::routes,
            "cancel" => picture::api::cancel::routes,
            "webhook" => picture::api::webhook::routes,
            "models" => picture::api::models::routes,
            "images" => picture::api::images::routes,
            "history" => picture::api::history::routes,
            "credits" => picture::api::credits::routes,
            "uploads" => picture::api::uploads::routes,
            "payments" => picture::api::payments::routes,
            "account" => picture::api::account::routes,
            "batches" => picture::api::batches::routes,
            other => panic!("{}: unknown function {other}", e.file),
        };
        let res = routes().serve(s.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(
            res.status().as_u16(),
            e.status,
            "{} via {}",
            e.file,
            e.function
        );
        assert!(res.headers().contains_key("x-request-id"), "{}", e.file);
    }
    s.cancel_all(user, &[running]).await;
}
