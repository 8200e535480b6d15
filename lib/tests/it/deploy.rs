//! The deploy-time migration custom resource: it migrates (idempotently) and
//! always answers CloudFormation, with FAILED when the migration fails.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, http::HeaderMap, routing::put};
use picture::deploy::{CustomResourceEvent, handle};
use serde_json::Value;

/// A stand-in for CloudFormation's pre-signed response URL; returns its URL and what it received.
async fn response_url() -> (String, Arc<Mutex<Vec<(HeaderMap, Value)>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = Router::new().route(
        "/cfn-response",
        put(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push((headers, serde_json::from_slice(&body).unwrap()))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cfn-response", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn event(request_type: &str, url: &str) -> CustomResourceEvent {
    serde_json::from_value(serde_json::json!({
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:eu-central-1:123456789012:stack/picture/1",
        "RequestId": "req-1",
        "ResourceType": "Custom::Migrations",
        "LogicalResourceId": "SchemaMigrations",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:eu-central-1:123456789012:function:migrate"}
    }))
    .unwrap()
}

#[tokio::test]
async fn migrations_run_on_create_and_update_and_report_to_cloudformation() {
    let db = std::env::var("DATABASE_URL").expect("run with `make test`");
    let (url, got) = response_url().await;
    let http = reqwest::Client::new();
    for kind in ["Create", "Update", "Delete"] {
        handle(&http, &db, None, &event(kind, &url)).await.unwrap();
    }
    handle(
        &http,
        "postgres://nobody@127.0.0.1:9/none",
        None,
        &event("Update", &url),
    )
    .await
    .unwrap();

    let got = got.lock().unwrap();
    let statuses: Vec<&str> = got
        .iter()
        .map(|(_, b)| b["Status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["SUCCESS", "SUCCESS", "SUCCESS", "FAILED"]);
    // Already migrated by `make test`: applying again changes nothing.
    assert_eq!(got[0].1["Reason"], "0 migrations applied");
    assert!(
        got[3].1["Reason"]
            .as_str()
            .unwrap()
            .starts_with("migration failed")
    );
    let first = &got[0].1;
    assert_eq!(
        (
            first["RequestId"].as_str(),
            first["LogicalResourceId"].as_str()
        ),
        (Some("req-1"), Some("SchemaMigrations"))
    );
    assert!(
        !got[0].0.contains_key("content-type"),
        "the pre-signed URL is signed without a content type"
    );
}
