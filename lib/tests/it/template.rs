//! `template.yaml` against the code: every function's HTTP events are exactly
//! the routes it declares (`api::routes()`), so a route cannot be added to the
//! code without its API Gateway event, nor an event without its route.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

/// (method, path) pairs per function (binary name).
type ByFunction = BTreeMap<String, BTreeSet<(String, String)>>;

/// The HTTP API events of each function resource in `template.yaml`.
fn template_events() -> ByFunction {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("template.yaml");
    let mut found = ByFunction::new();
    for resource in doc["Resources"].as_mapping().unwrap().values() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("every function names its binary");
        let events = found.entry(binary.to_string()).or_default();
        let Some(declared) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for event in declared.values().filter(|e| e["Type"] == "HttpApi") {
            let props = &event["Properties"];
            events.insert((
                props["Method"].as_str().unwrap().to_uppercase(),
                props["Path"].as_str().unwrap().to_string(),
            ));
        }
    }
    found
}

/// What the code declares, per function, for the functions in `functions`.
fn declared(functions: impl Iterator<Item = String>) -> ByFunction {
    let routes = picture::api::routes();
    functions
        .map(|f| {
            let mine = routes
                .table()
                .iter()
                .filter(|r| r.function == f)
                .map(|r| (r.method.to_string(), r.path.to_string()))
                .collect();
            (f, mine)
        })
        .collect()
}

#[test]
fn every_functions_http_events_are_exactly_its_declared_routes() {
    let events = template_events();
    assert_eq!(declared(events.keys().cloned()), events);
    // And no route belongs to a function the template does not deploy.
    for route in picture::api::routes().table() {
        assert!(
            events.contains_key(route.function),
            "{} {} is served by {}, which template.yaml does not deploy",
            route.method,
            route.path,
            route.function
        );
    }
}

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("template.yaml")
}

/// The value an `!If [condition, then, else]` gives when its condition holds.
fn when_set(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) if t.tag == "If" => &t.value[1],
        other => other,
    }
}

/// Every statement of a function's inline policies, by binary name.
fn statements(doc: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut found = BTreeMap::new();
    for resource in doc["Resources"].as_mapping().unwrap().values() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap();
        let mine: &mut Vec<Value> = found.entry(binary.to_string()).or_default();
        for policy in resource["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            assert!(
                policy.get("DynamoDBCrudPolicy").is_none(),
                "{binary}: a full CRUD policy (scans, batches) where a few actions do"
            );
            for st in policy["Statement"].as_sequence().into_iter().flatten() {
                mine.push(st.clone());
            }
        }
    }
    found
}

fn actions(st: &Value) -> Vec<String> {
    match &st["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Sequence(all) => all
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// The functions that read objects which may be missing (generate: an upload
/// not PUT yet; reconcile: the audit's recheck) can list the bucket, and no
/// ListBucket has a prefix condition (a GET has no prefix: S3 would answer 403
/// for a missing key, not 404). The functions that answer with images' presigned
/// GET URLs may get those images (a URL signed by a role without GetObject
/// answers 403); `status` and the webhook read nothing else.
#[test]
fn s3_answers_404_for_missing_keys_and_presigned_urls_can_be_read() {
    for (function, sts) in statements(&template()) {
        let lists: Vec<&Value> = sts
            .iter()
            .filter(|st| actions(st).contains(&"s3:ListBucket".to_string()))
            .collect();
        if ["generate", "reconcile"].contains(&function.as_str()) {
            assert!(!lists.is_empty(), "{function} cannot list the bucket");
        }
        for list in lists {
            assert!(list.get("Condition").is_none(), "{function}: {list:?}");
        }
        let gets: Vec<String> = sts
            .iter()
            .filter(|st| actions(st).contains(&"s3:GetObject".to_string()))
            .map(|st| format!("{:?}", st["Resource"]))
            .collect();
        if ["generate", "status", "images", "history", "batches"].contains(&function.as_str()) {
            assert!(
                gets.iter().any(|r| r.contains("/users/*")),
                "{function} signs image URLs it may not GET"
            );
        }
        if ["webhook", "status"].contains(&function.as_str()) {
            assert!(
                gets.iter().all(|r| r.contains("/users/*/images/*")),
                "{function} reads more than images: {gets:?}"
            );
            for st in sts
                .iter()
                .filter(|st| actions(st).contains(&"s3:PutObject".to_string()))
            {
                let resource = format!("{:?}", st["Resource"]);
                assert!(
                    resource.contains("/users/*/images/*"),
                    "{function}: {resource}"
                );
            }
        }
    }
}

/// With `CorsOrigins`, API Gateway answers the API's preflights and the bucket
/// the upload PUT's, for the same origins the functions allow.
#[test]
fn cors_is_configured_for_the_api_and_the_bucket() {
    let doc = template();
    let split = |v: &Value| match v {
        Value::Tagged(t) if t.tag == "Split" => format!("{:?}", t.value),
        other => panic!("origins from CorsOrigins, not {other:?}"),
    };
    let api = when_set(&doc["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]);
    assert!(split(&api["AllowOrigins"]).contains("CorsOrigins"));
    let methods = format!("{:?}", api["AllowMethods"]);
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = format!("{:?}", api["AllowHeaders"]);
    for h in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(h), "{headers}");
    }
    let bucket = when_set(&doc["Resources"]["ImagesBucket"]["Properties"]["CorsConfiguration"]);
    let rule = &bucket["CorsRules"][0];
    assert!(split(&rule["AllowedOrigins"]).contains("CorsOrigins"));
    assert!(format!("{:?}", rule["AllowedMethods"]).contains("PUT"));
    // The presigned PUT's signed headers (`storage::presign_put`).
    let allowed = format!("{:?}", rule["AllowedHeaders"]);
    for h in ["content-type", "x-amz-tagging"] {
        assert!(allowed.contains(h), "{allowed}");
    }
}
