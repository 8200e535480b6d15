//! `docs/openapi.yaml` against the code: the document lists exactly the
//! routes of `api::routes()`, every one of them is served (and no other method
//! on their paths), and a route missing from the table is refused.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use crate::common::Stack;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("docs/openapi.yaml")
}

/// Every `$ref` in `v` (they must all point into the document).
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_lists_exactly_the_routes_of_the_code() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| methods.contains(&k.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = picture::api::routes()
        .table()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, served);

    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[tokio::test]
async fn every_declared_route_is_served_and_no_other_method() {
    let s = Stack::start().await;
    let routes = picture::api::routes();
    let paths: BTreeSet<&str> = routes.table().iter().map(|r| r.path).collect();
    for path in paths {
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{id}", &Uuid::new_v4().to_string())
        );
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let declared = routes
                .table()
                .iter()
                .any(|r| r.path == path && r.method == method);
            let res = s.http.request(method.clone(), &url).send().await.unwrap();
            let status = res.status();
            let code = res.json::<Value>().await.unwrap_or(Value::Null)["code"].clone();
            if declared {
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && code != "NOT_FOUND",
                    "{method} {path} is not served: {status} {code}"
                );
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn a_route_missing_from_the_table_is_refused() {
    let s = Stack::start().await;
    let undeclared = axum::Router::new().route(
        "/api/v1/undeclared",
        axum::routing::get(|| async { "unprotected" }),
    );
    let res = picture::web::serve(undeclared, Vec::new().into(), s.state.clone())
        .oneshot(
            http::Request::get("/api/v1/undeclared")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

/// The property names of schema `name` in the document.
fn properties(doc: &Value, name: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name}"))
        .keys()
        .cloned()
        .collect()
}

/// The model and pack rows serialise themselves as their views: a column
/// added to a row must not reach clients unless the contract shows it.
#[tokio::test]
async fn catalog_answers_have_exactly_the_documented_fields() {
    let s = Stack::start().await;
    let doc = document();
    for (path, schema) in [
        ("/api/v1/models", "Model"),
        ("/api/v1/credits/packs", "CreditPack"),
    ] {
        let res = s
            .http
            .get(format!("{}{path}", s.base))
            .bearer_auth(s.token(Uuid::new_v4()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let body: Value = res.json().await.unwrap();
        let list = body.as_array().unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(!list.is_empty(), "{path}: nothing to compare");
        for item in list {
            let keys: BTreeSet<String> = item.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys, properties(&doc, schema), "{path}");
        }
    }
}
