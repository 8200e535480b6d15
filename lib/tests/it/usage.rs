//! Provider usage against the real stack, on a database of its own (the report
//! covers every generation in its window): what settle records, the usage
//! report (the library and `picture-dev usage --format json`), and that users
//! never see costs or provider timings.

use std::{process::Command, time::Duration};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use picture::usage::{self, ModelUsage, Window};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{FLUX, Stack, id_of, own_database};

/// A run-time billed stand-in for a community model (the simulator knows only
/// official models, so it runs FLUX Schnell's version), at $0.001 per second.
const COMMUNITY: &str = "6d7e0c1a-5b2f-4f3e-8a9d-0c1b2a3f4e5d";
const PER_SECOND_USD: f64 = 0.001;
const PER_IMAGE_USD: f64 = 0.003;

/// Each outcome for `user` on `model`: completed twice (free, then credits),
/// failed and cancelled while running (credits, released). Returns the generation ids.
async fn outcomes(s: &Stack, user: Uuid, model: &str) -> Vec<String> {
    let generate = |prompt: &'static str, wait: bool| {
        let body = json!({"prompt": prompt, "modelId": model, "waitForResult": wait});
        s.call(Method::POST, "/api/v1/generate", Some(user), Some(body))
    };
    let mut ids = Vec::new();
    for (prompt, outcome) in [
        ("usage [sim:slow=200]", "completed"),
        ("usage [sim:slow=300]", "completed"),
        ("usage [sim:fail] [sim:slow=200]", "failed"),
    ] {
        let (_, g) = generate(prompt, true).await;
        assert_eq!(g["status"].as_str(), Some(outcome), "{g}");
        ids.push(id_of(&g));
    }
    let (status, hung) = generate("usage [sim:hang]", false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{hung}");
    let hung = id_of(&hung);
    // Cancelled once it runs, so the provider has time to bill.
    for _ in 0..100 {
        if s.row(&hung).await.started_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/generate/{hung}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    ids.push(hung);
    ids
}

/// The provider's own `metrics.predict_time` of each generation's prediction.
async fn predict_times(s: &Stack, ids: &[String]) -> Vec<f64> {
    let mut times = Vec::new();
    for id in ids {
        let pid = s.row(id).await.prediction_id.expect("a prediction");
        let p = s.state.replicate.get(&pid).await.unwrap();
        times.push(
            p.predict_time()
                .expect("terminal predictions report predict_time"),
        );
    }
    times
}

/// The median as `percentile_cont(0.5)` computes it (the mean of the middle two of an even count).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    (xs[(n - 1) / 2] + xs[n / 2]) / 2.0
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

/// Every key of a JSON document, at any depth.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.to_lowercase());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Asserts that no key of `doc` names a cost, price or provider timing.
fn no_operator_data(doc: &Value) {
    let mut found = Vec::new();
    keys(doc, &mut found);
    for word in [
        "cost", "price", "billing", "predict", "provider", "queue", "metrics",
    ] {
        assert!(
            !found.iter().any(|k| k.contains(word)),
            "a user sees {word}: {doc}"
        );
    }
}

#[tokio::test]
async fn usage_reports_outcomes_predict_time_and_cost_per_pricing_kind() {
    let (db, name, server) = own_database("usage").await;
    let settings = [
        ("DATABASE_URL", db.as_str()),
        ("APP_ENV", "staging"),
        ("FREE_GENERATIONS", "1"),
    ];
    let s = Stack::with(&settings).await;
    add_community_model(&s).await;
    let since = Utc::now().trunc_subsecs(0) - TimeDelta::seconds(1);
    let (official_user, community_user) = (Uuid::new_v4(), Uuid::new_v4());
    for user in [official_user, community_user] {
        let conn = s.state.db.get().await.unwrap();
        picture::db::ledger::grant(&**conn, user, 100, "usage test")
            .await
            .unwrap();
    }
    let official = outcomes(&s, official_user, FLUX).await;
    let community = outcomes(&s, community_user, COMMUNITY).await;
    let until = Utc::now().trunc_subsecs(0) + TimeDelta::seconds(2);

    // Settle recorded the provider's timings on every generation.
    let conn = s.state.db.get().await.unwrap();
    for id in official.iter().chain(&community) {
        let row = conn
            .query_one(
                "SELECT provider_created_at IS NOT NULL AND provider_completed_at IS NOT NULL
                        AND predict_time IS NOT NULL AND provider_cost_usd IS NOT NULL
                   FROM generations WHERE id = $1",
                &[&Uuid::parse_str(id).unwrap()],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "usage of {id} not recorded");
    }
    drop(conn);

    let window = Window { since, until };
    let report = usage::report(&**s.state.db.get().await.unwrap(), window, 1.0)
        .await
        .unwrap();
    let of = |model: &str| -> &ModelUsage {
        report
            .models
            .iter()
            .find(|m| m.model == model)
            .expect(model)
    };
    for m in [of("flux-schnell"), of("community-test")] {
        let u = &m.usage;
        assert_eq!(
            (
                u.sums.generations,
                u.sums.completed,
                u.sums.failed,
                u.sums.cancelled
            ),
            (4, 2, 1, 1),
            "{m:?}"
        );
        assert_eq!(
            (
                u.sums.free,
                u.sums.credits,
                u.sums.waived,
                u.sums.credits_captured
            ),
            (1, 3, 0, 10),
            "{m:?}"
        );
    }

    // Predict time is the provider's; the p50 its median.
    let official_times = predict_times(&s, &official).await;
    let community_times = predict_times(&s, &community).await;
    for (m, times) in [
        (of("flux-schnell"), &official_times),
        (of("community-test"), &community_times),
    ] {
        let sum: f64 = times.iter().sum();
        assert!(
            close(m.usage.sums.predict_seconds, sum, 0.002),
            "{m:?} vs {times:?}"
        );
        let p50 = m.usage.sums.predict_seconds_p50.unwrap();
        assert!(
            close(p50, median(times.clone()), 0.002),
            "{m:?} vs {times:?}"
        );
    }
    assert!(
        community_times.iter().all(|t| *t > 0.0),
        "{community_times:?}"
    );

    // Per image: one output per completed generation. Per second: all the time used.
    let flux = &of("flux-schnell").usage;
    assert!(
        close(flux.sums.estimated_cost_usd, 2.0 * PER_IMAGE_USD, 1e-9),
        "{flux:?}"
    );
    assert_eq!(flux.cost_per_completed_usd, Some(PER_IMAGE_USD));
    let community_cost = PER_SECOND_USD * community_times.iter().sum::<f64>();
    let c = &of("community-test").usage;
    assert!(
        close(c.sums.estimated_cost_usd, community_cost, 2e-6),
        "{c:?} vs {community_cost}"
    );
    assert!(close(
        c.cost_per_completed_usd.unwrap(),
        community_cost / 2.0,
        2e-6
    ));

    // Totals are the sums; the other models had nothing.
    assert_eq!(report.models.len(), 2, "{report:?}");
    let t = &report.totals;
    assert_eq!(
        (
            t.sums.generations,
            t.sums.completed,
            t.sums.failed,
            t.sums.cancelled
        ),
        (8, 4, 2, 2)
    );
    assert_eq!(
        (t.sums.free, t.sums.credits, t.sums.credits_captured),
        (2, 6, 20)
    );
    let total = 2.0 * PER_IMAGE_USD + community_cost;
    assert!(close(t.sums.estimated_cost_usd, total, 2e-6), "{t:?}");
    assert!(close(t.cost_per_completed_usd.unwrap(), total / 4.0, 2e-6));

    // The tool prints the same report, numbers as JSON numbers.
    let out = Command::new(crate::audit::devtool())
        .args([
            "usage",
            "--format",
            "json",
            "--since",
            &since.to_rfc3339(),
            "--until",
            &until.to_rfc3339(),
        ])
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::to_value(&report).unwrap());
    assert!(printed["totals"]["estimatedCostUsd"].is_f64());
    assert_eq!(printed["models"][0]["model"], "community-test");
    assert_eq!(
        printed["since"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(since)
    );

    // Users see none of it: status, history, cancel answers and the catalog.
    for (user, ids) in [(official_user, &official), (community_user, &community)] {
        for id in ids {
            let (status, view) = s
                .call(
                    Method::GET,
                    &format!("/api/v1/generate/{id}/status"),
                    Some(user),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            no_operator_data(&view);
        }
        let (_, history) = s
            .call(Method::GET, "/api/v1/generate/history", Some(user), None)
            .await;
        assert_eq!(
            history["data"].as_array().map(Vec::len),
            Some(4),
            "{history}"
        );
        no_operator_data(&history);
    }
    let (_, models) = s.call(Method::GET, "/api/v1/models", None, None).await;
    assert!(models.as_array().is_some_and(|m| m.len() == 4), "{models}");
    no_operator_data(&models);

    drop(s);
    crate::common::drop_database(&server, &name).await;
}

/// Adds [`COMMUNITY`]: FLUX Schnell's version billed per second.
async fn add_community_model(s: &Stack) {
    let conn = s.state.db.get().await.unwrap();
    conn.execute(
        "INSERT INTO models (id, name, display_name, replicate_id, version, default_width, default_height,
                             default_steps, default_guidance_scale, min_width, min_height, max_width,
                             max_height, max_steps, sort_order, billing, price_usd)
         SELECT $1, 'community-test', 'Community (test)', replicate_id, version, default_width,
                default_height, default_steps, default_guidance_scale, min_width, min_height,
                max_width, max_height, max_steps, 9, 'per_second', $2::float8::numeric
           FROM models WHERE id = $3",
        &[&Uuid::parse_str(COMMUNITY).unwrap(), &PER_SECOND_USD, &Uuid::parse_str(FLUX).unwrap()],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn refused_generations_and_their_cost_are_counted_apart() {
    let (db, name, server) = own_database("usage_refused").await;
    let settings = [
        ("DATABASE_URL", db.as_str()),
        ("APP_ENV", "staging"),
        // The simulator's marker holds a blocked word: the provider's checker must see it.
        ("MODERATION_BLOCKLIST", "off"),
    ];
    let s = Stack::with(&settings).await;
    add_community_model(&s).await;
    let since = Utc::now().trunc_subsecs(0) - TimeDelta::seconds(1);
    let user = Uuid::new_v4();
    for (prompt, status) in [
        ("refused [sim:nsfw] [sim:slow=300]", "failed"),
        ("kept [sim:slow=300]", "completed"),
    ] {
        let body = json!({"prompt": prompt, "modelId": COMMUNITY, "waitForResult": true});
        let (_, g) = s
            .call(Method::POST, "/api/v1/generate", Some(user), Some(body))
            .await;
        assert_eq!(g["status"].as_str(), Some(status), "{g}");
    }
    let until = Utc::now().trunc_subsecs(0) + TimeDelta::seconds(2);
    let conn = s.state.db.get().await.unwrap();
    let refused_cost: f64 = conn
        .query_one(
            "SELECT provider_cost_usd::float8 FROM generations WHERE error_code = 'CONTENT_REFUSED'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        refused_cost > 0.0,
        "a per-second model bills a refused run too"
    );
    let report = usage::report(&**conn, Window { since, until }, 1.0)
        .await
        .unwrap();
    let t = &report.totals.sums;
    assert_eq!(
        (t.generations, t.completed, t.failed, t.refused),
        (2, 1, 1, 1),
        "{t:?}"
    );
    assert!((t.refused_cost_usd - refused_cost).abs() < 2e-6, "{t:?}");
    assert!(t.estimated_cost_usd > t.refused_cost_usd, "{t:?}");
    drop(conn);
    drop(s);
    crate::common::drop_database(&server, &name).await;
}
