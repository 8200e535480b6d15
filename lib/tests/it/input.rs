//! Bad input: control characters in any text field, query parameter or
//! `Idempotency-Key` are 400 `VALIDATION_FAILED` naming the field; cursors
//! out of range, repeated or mis-encoded query parameters are 4xx problems;
//! a signed webhook for a prediction id with NUL is acknowledged as unknown.
//! And a property over every route of `api::routes()`: whatever the bytes, the
//! answer is never a 5xx, and every 4xx is a problem document.

use std::time::Instant;

use axum::body::Body;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderValue, Request, header};
use picture::{
    replicate::signature,
    web::policy::{Access, Route},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

use crate::common::{FLUX, Stack};

const GENERATE: &str = "/api/v1/generate";

/// Overrides that keep a run of many requests from one user under the rate limits.
const UNLIMITED: [(&str, &str); 2] = [
    ("RATE_LIMIT_GENERATE_PER_MINUTE", "1000000"),
    ("RATE_LIMIT_READS_PER_MINUTE", "1000000"),
];

/// The `(field, message)` pairs of a `VALIDATION_FAILED` answer.
fn invalid_fields(status: StatusCode, p: &Value) -> Vec<(String, String)> {
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("VALIDATION_FAILED")),
        "{p}"
    );
    p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().into(),
                e["message"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Fields refused for control characters.
fn control_fields(status: StatusCode, p: &Value) -> Vec<String> {
    invalid_fields(status, p)
        .into_iter()
        .filter(|(_, m)| m == picture::web::text::CONTROL)
        .map(|(f, _)| f)
        .collect()
}

#[tokio::test]
async fn control_characters_in_generate_bodies_are_400_naming_the_field() {
    let s = Stack::with(&UNLIMITED).await;
    let user = Uuid::new_v4();
    let cases = [
        (json!({"prompt": "a\u{0}b"}), "prompt"),
        (
            json!({"prompt": "a cat", "negativePrompt": "dogs\u{1b}[0m"}),
            "negativePrompt",
        ),
        (json!({"prompt": "a cat", "style": "oil\u{7f}"}), "style"),
        (
            json!({"prompt": "a cat", "modelId": format!("{FLUX}\u{0}")}),
            "modelId",
        ),
        (
            json!({"prompt": "a cat", "modelVersion": "abc\n"}),
            "modelVersion",
        ),
        (
            json!({"prompt": "a cat", "sourceImageUrl": "https://93.184.216.34/\u{0}.png"}),
            "sourceImageUrl",
        ),
    ];
    for (body, field) in cases {
        let (status, p) = s
            .call(
                Method::POST,
                "/api/v1/generate",
                Some(user),
                Some(body.clone()),
            )
            .await;
        assert_eq!(control_fields(status, &p), [field], "{body}: {p}");
    }
    // Free text keeps its tabs and line breaks (refused here only for the unknown field).
    let body = json!({"prompt": "a\tcat\r\non a mat", "negativePrompt": "dogs\n", "style": "oil\t", "x": 1});
    let (status, p) = s
        .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
        .await;
    assert_eq!(
        invalid_fields(status, &p),
        [("x".into(), "is not a known field".into())]
    );
}

#[tokio::test]
async fn control_characters_in_query_parameters_are_400_naming_the_parameter() {
    let s = Stack::with(&UNLIMITED).await;
    let user = Uuid::new_v4();
    let cases = [
        ("/api/v1/images?limit=1%00", "limit"),
        ("/api/v1/images?cursor=%00", "cursor"),
        ("/api/v1/images?favorites=true%07", "favorites"),
        ("/api/v1/generate/history?page=1%0A", "page"),
        ("/api/v1/generate/history?limit=%1F", "limit"),
        ("/api/v1/generate/history?status=processing%00", "status"),
        ("/api/v1/generate/history?status=%C2%85", "status"), // U+0085, a C1 control
    ];
    for (path, field) in cases {
        let (status, p) = s.call(Method::GET, path, Some(user), None).await;
        assert_eq!(control_fields(status, &p), [field], "{path}: {p}");
    }
}

#[tokio::test]
async fn idempotency_keys_with_control_characters_are_400_naming_the_header() {
    let s = Stack::with(&UNLIMITED).await;
    let token = s.token(Uuid::new_v4());
    for key in [&b"a\tb"[..], b"key\x80", b"a b", b""] {
        let res = s
            .http
            .post(format!("{}/api/v1/generate", s.base))
            .bearer_auth(&token)
            .header("idempotency-key", HeaderValue::from_bytes(key).unwrap())
            .json(&json!({"prompt": "a cat", "x": 1}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let p: Value = res.json().await.unwrap();
        let fields = invalid_fields(status, &p);
        assert_eq!(fields.len(), 1, "{key:?}: {p}");
        assert_eq!(fields[0].0, "Idempotency-Key", "{key:?}");
    }
}

#[tokio::test]
async fn cursors_out_of_range_and_odd_query_strings_are_4xx_problems() {
    let s = Stack::with(&UNLIMITED).await;
    let user = Uuid::new_v4();
    let id = Uuid::new_v4();
    for micros in [
        i64::MAX,
        -62_135_596_800_000_001,
        253_402_300_800_000_000,
        -1,
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(format!("{micros}|{id}"));
        let (status, p) = s
            .call(
                Method::GET,
                &format!("/api/v1/images?cursor={cursor}"),
                Some(user),
                None,
            )
            .await;
        assert_eq!(invalid_fields(status, &p)[0].0, "cursor", "{micros}: {p}");
    }
    let cursor = URL_SAFE_NO_PAD.encode(format!("1700000000000000|{id}"));
    let (status, p) = s
        .call(
            Method::GET,
            &format!("/api/v1/images?cursor={cursor}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!((status, p["data"].clone()), (StatusCode::OK, json!([])));

    for (path, code) in [
        ("/api/v1/images?limit=1&limit=2", "MALFORMED_REQUEST"),
        (
            "/api/v1/generate/history?page=1&page=1",
            "MALFORMED_REQUEST",
        ),
        ("/api/v1/images?limit=%zz", "VALIDATION_FAILED"),
        ("/api/v1/images?cursor=%FF%FE", "VALIDATION_FAILED"),
        (
            "/api/v1/generate/history?status=%E9t%E9",
            "VALIDATION_FAILED",
        ),
        ("/api/v1/generate/history?page=%", "VALIDATION_FAILED"),
    ] {
        let (status, p) = s.call(Method::GET, path, Some(user), None).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{path}: {p}"
        );
    }
}

#[tokio::test]
async fn a_signed_webhook_for_a_prediction_id_with_nul_is_acknowledged_as_unknown() {
    let s = Stack::start().await;
    let secret = s.state.webhook_secret().await.unwrap();
    let body = json!({"id": "p\u{0}1", "status": "succeeded", "output": null}).to_string();
    let (id, at) = (
        format!("msg_{}", Uuid::new_v4().simple()),
        chrono::Utc::now().timestamp(),
    );
    let res = s
        .http
        .post(format!(
            "{}/api/v1/generate/webhook?generationId={}",
            s.base,
            Uuid::new_v4()
        ))
        .header("webhook-id", &id)
        .header("webhook-timestamp", at.to_string())
        .header(
            "webhook-signature",
            signature::sign(secret, &id, at, body.as_bytes()).unwrap(),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"received": true})
    );
}

// ---- The property: any request to any route is answered without a 5xx. ----

/// Every field name and query parameter some route reads, so that values reach the checks.
const NAMES: &[&str] = &[
    "prompt",
    "modelId",
    "modelVersion",
    "negativePrompt",
    "width",
    "height",
    "steps",
    "guidanceScale",
    "seed",
    "sourceImageUrl",
    "generationStrength",
    "style",
    "waitForResult",
    "isFavorite",
    "id",
    "status",
    "output",
    "error",
    "limit",
    "cursor",
    "favorites",
    "page",
    "generationId",
];

/// Characters that break things: NUL and the other controls, quotes, escapes, non-ASCII.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        1 => Just('\u{0}'),
        3 => prop::char::range('\u{0}', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{9f}'),
        2 => prop::sample::select(vec!['"', '\\', '/', '|', '%', '&', '=', '+', '?', '#', ' ', 'é',
                                       '\u{200b}', '\u{2028}', '\u{fffd}', '\u{10ffff}']),
        2 => any::<char>(),
        4 => prop::char::range('a', 'z'),
    ]
}

/// Up to 24 [`nasty_char`]s.
fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..24).prop_map(String::from_iter)
}

/// JSON-ish text: valid JSON mostly, with huge numbers, raw control characters and odd nesting.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        1 => Just("null".to_string()),
        1 => Just("true".to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => "-?[0-9]{1,40}(\\.[0-9]{1,8})?([eE][+-]?[0-9]{1,4})?",
        3 => nasty_string().prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => nasty_string().prop_map(|s| format!("\"{s}\"")),
        1 => Just("\"\\ud800\"".to_string()),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| object(&kv)),
        ]
    })
}

/// A JSON member name (encoded), mostly one that some route reads.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NAMES).prop_map(String::from),
        1 => nasty_string(),
    ]
    .prop_map(|k| serde_json::to_string(&k).unwrap())
}

/// A JSON object of encoded members, duplicates kept.
fn object(members: &[(String, String)]) -> String {
    let members: Vec<_> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", members.join(","))
}

/// A prompt: clean, nasty, or clean but for one character that free text may or may not hold.
fn prompt() -> impl Strategy<Value = String> {
    let odd = prop::sample::select(vec!['\0', '\0', '\0', '\t', '\n', '\r', '\u{1b}', '\u{85}']);
    prop_oneof![
        1 => nasty_string(),
        1 => "[a-zA-Z ,.]{1,20}",
        2 => ("[a-z ]{0,10}", odd, "[a-z]{1,10}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

/// The simulator's markers for a prediction that fails at once (infra/replicate-sim).
const FAIL_AT_ONCE: &str = " [sim:fail] [sim:slow=0]";

/// A request body: mostly objects of known fields with nasty values, else anything. For
/// `POST /generate` (`generate`), every object ends with a prompt carrying [`FAIL_AT_ONCE`]
/// (of duplicate keys the last counts), so a body that passes validation starts a
/// generation that fails, free and without an image; no other body is an object.
fn body(generate: bool) -> BoxedStrategy<Vec<u8>> {
    let value = prop_oneof![
        3 => nasty_string().prop_map(|s| serde_json::to_string(&s).unwrap()),
        2 => json_text(),
    ];
    let members = prop::collection::vec((key(), value), 0..4);
    let objects = if generate {
        (members, prompt())
            .prop_map(|(mut kv, prompt)| {
                let prompt = serde_json::to_string(&(prompt + FAIL_AT_ONCE)).unwrap();
                kv.push(("\"prompt\"".into(), prompt));
                object(&kv)
            })
            .boxed()
    } else {
        members.prop_map(|kv| object(&kv)).boxed()
    };
    let text = json_text().prop_map(move |t| {
        if generate && t.starts_with('{') {
            format!("[{t}]")
        } else {
            t
        }
    });
    prop_oneof![
        6 => objects.prop_map(String::into_bytes),
        2 => text.prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (1..400usize).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => (1..400usize).prop_map(|n| format!("{}1{}", "{\"prompt\":".repeat(n), "}".repeat(n)).into_bytes()),
    ]
    .boxed()
}

/// Percent-encodes every byte but ASCII letters and digits.
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query string: known and unknown names, values of arbitrary bytes, broken escapes, repeats.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(|n| n.as_bytes().to_vec()),
        1 => nasty_string().prop_map(String::into_bytes),
    ];
    let value = prop_oneof![
        3 => nasty_string().prop_map(|s| encode(s.as_bytes())),
        2 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| encode(&b)),
        2 => prop::sample::select(vec!["1", "20", "100", "0", "-1", "99999999999999999999", "true",
                                       "false", "processing", "%", "%zz", "%e9", "%C0%80", "a%00b"])
            .prop_map(String::from),
    ];
    prop::collection::vec((name, value), 0..5).prop_map(|pairs| {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(n, v)| format!("{}={v}", encode(n)))
            .collect();
        pairs.join("&")
    })
}

/// One request's varying parts.
#[derive(Debug, Clone)]
struct Case {
    id: String,
    query: String,
    body: Vec<u8>,
    idempotency_key: Option<Vec<u8>>,
    json_type: bool,
    authenticated: bool,
}

fn case(route: &Route) -> impl Strategy<Value = Case> {
    let id = prop_oneof![
        2 => Just(()).prop_map(|_| Uuid::new_v4().to_string()),
        1 => Just(Uuid::nil().to_string()),
        3 => prop::collection::vec(any::<u8>(), 1..40).prop_map(|b| encode(&b)),
    ];
    let key = prop::option::of(prop_oneof![
        nasty_string().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..300),
    ]);
    (
        id,
        query(),
        body(route.path == GENERATE),
        key,
        any::<bool>(),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(id, query, body, idempotency_key, json_type, authenticated)| Case {
                id,
                query,
                body,
                idempotency_key,
                json_type,
                authenticated,
            },
        )
}

/// The request for `route`, signed or authenticated as `user` where `case` says so.
async fn request(s: &Stack, route: &Route, user: Uuid, case: &Case) -> Request<Body> {
    let path = route.path.replace("{id}", &case.id);
    let uri = match case.query.as_str() {
        "" => path,
        q => format!("{path}?{q}"),
    };
    let body = case.body.clone();
    let mut req = Request::builder().method(route.method.clone()).uri(&uri);
    if case.json_type {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(v) = case
        .idempotency_key
        .as_deref()
        .and_then(|k| HeaderValue::from_bytes(k).ok())
    {
        req = req.header("idempotency-key", v);
    }
    match route.access {
        Access::User { .. } if case.authenticated => {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", s.token(user)));
        }
        Access::Signed if case.authenticated => {
            let secret = s.state.webhook_secret().await.unwrap();
            let (id, at) = (
                format!("msg_{}", Uuid::new_v4().simple()),
                chrono::Utc::now().timestamp(),
            );
            req = req
                .header("webhook-id", &id)
                .header("webhook-timestamp", at.to_string())
                .header(
                    "webhook-signature",
                    signature::sign(secret, &id, at, &body).unwrap(),
                );
        }
        _ => {}
    }
    req.body(Body::from(body)).unwrap()
}

/// Sends `case` to `route` in-process; fails on a 5xx or a 4xx that is no problem document.
async fn check(
    s: &Stack,
    app: &axum::Router,
    route: &Route,
    user: Uuid,
    case: &Case,
) -> Result<(), TestCaseError> {
    let req = request(s, route, user, case).await;
    let uri = req.uri().clone();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(
        !status.is_server_error(),
        "{} {uri}: {status} {text}",
        route.method
    );
    if status.is_client_error() {
        prop_assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{} {}: {} {}",
            route.method,
            uri,
            status,
            text
        );
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert!(
            doc["code"].is_string(),
            "{} {uri}: {status} {text}",
            route.method
        );
    }
    Ok(())
}

/// Cases per route: enough to cover the checks, few enough to stay within seconds.
const CASES: u32 = 48;

#[test]
fn no_request_to_any_route_is_answered_with_a_5xx_or_without_a_problem_document() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(Stack::with(&UNLIMITED));
    let app = picture::api::all(s.state.clone());
    let user = Uuid::new_v4();
    let began = Instant::now();
    let routes = picture::api::routes();
    for route in routes.table() {
        let config = Config {
            failure_persistence: None,
            ..Config::with_cases(CASES)
        };
        let mut runner = TestRunner::new(config);
        let outcome = runner.run(&case(route), |case| {
            rt.block_on(check(&s, &app, route, user, &case))
        });
        if let Err(e) = outcome {
            panic!("{} {}: {e}", route.method, route.path);
        }
    }
    eprintln!(
        "{} routes × {CASES} cases in {:?}",
        routes.table().len(),
        began.elapsed()
    );
    // What valid bodies started has failed (the simulator's marker), without an image.
    let user = user.to_string();
    let started =
        rt.block_on(s.count("SELECT count(*) FROM generations WHERE user_id = $1", &user));
    let open = "SELECT count(*) FROM generations WHERE user_id = $1 AND status <> 'failed'";
    let mut still_open = 0;
    for _ in 0..50 {
        still_open = rt.block_on(s.count(open, &user));
        if still_open == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(still_open, 0, "of {started} generations started");
    let images = "SELECT count(*) FROM images WHERE user_id = $1";
    assert_eq!(rt.block_on(s.count(images, &user)), 0);
    eprintln!("{started} generations started (and failed)");
}
