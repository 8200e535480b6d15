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
