//! `bench-history [RUNS]` (`make bench-history`): history cost against the
//! user's size. In the database `DATABASE_URL` names (made and migrated by
//! infra/scripts/bench-history.sh), seeds a user with 50,000 generations and
//! one with 20, then times `GET /api/v1/generate/history` through the API's
//! router (`picture::api::all`, tower `oneshot`, a dev-key token, the stack's
//! rate limiter and S3 presigning included) RUNS times per case (30) after
//! warming up, and prints each case's median and its ratio to the small
//! user's page 1 (the target: at most 1.5).

mod seed;

use std::{collections::HashMap, time::Instant};

use anyhow::{Context, Result, ensure};
use axum::body::Body;
use http::{Request, StatusCode};
use picture::{AppState, Config, auth::devkey::DevKey, state::AwsOverrides};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

const ISSUER: &str = "picture-bench-history";
const BIG: i64 = 50_000;
const SMALL: i64 = 20;
/// The page (of 20) the deep case asks for, by cursor.
const DEEP_PAGE: i64 = 1_000;
const TARGET: f64 = 1.5;

/// The API's routes, a token per user, and how to call them.
struct Api {
    app: axum::Router,
    key: DevKey,
}

impl Api {
    /// One call as `user`; its time in milliseconds and its JSON answer.
    async fn get(&self, user: Uuid, query: &str) -> Result<(f64, Value)> {
        let token = self.key.token(user, ISSUER, "manacore", 600);
        let req = Request::get(format!("/api/v1/generate/history?{query}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())?;
        let start = Instant::now();
        let res = self.app.clone().oneshot(req).await?;
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            status == StatusCode::OK,
            "{query}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok((ms, serde_json::from_slice(&body)?))
    }

    /// The median of `runs` calls (after 3 to warm up).
    async fn median(&self, user: Uuid, query: &str, runs: usize) -> Result<f64> {
        for _ in 0..3 {
            self.get(user, query).await?;
        }
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            ms.push(self.get(user, query).await?.0);
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    }
}

/// Serves the key set the API verifies tokens with; returns its URL.
async fn serve_jwks(jwks: Value) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/jwks.json", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || async move { axum::Json(jwks) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().context("usage: bench-history [RUNS]")?,
        None => 30,
    };
    let key = DevKey::generate("bench-history");
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.insert("JWKS_URL".into(), serve_jwks(key.jwks()).await?);
    vars.insert("JWT_ISSUER".into(), ISSUER.into());
    vars.insert("RATE_LIMIT_READS_PER_MINUTE".into(), "1000000".into());
    let st = AppState::new(Config::from_map(&vars)?, AwsOverrides::default())?;

    let (big, small) = (Uuid::new_v4(), Uuid::new_v4());
    let db = st.db.get().await?;
    let seeding = Instant::now();
    db.batch_execute(&seed::user(big, BIG)).await?;
    db.batch_execute(&seed::user(small, SMALL)).await?;
    // The cursor of page DEEP_PAGE: the last generation of the page before it.
    let last = db
        .query_one(
            "SELECT created_at, id FROM generations WHERE user_id = $1
              ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
            &[&big, &((DEEP_PAGE - 1) * 20 - 1)],
        )
        .await?;
    let deep = picture::web::cursor::encode((last.get(0), last.get(1)));
    drop(db);
    eprintln!(
        "seeded {BIG} + {SMALL} generations in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let api = Api {
        app: picture::api::all(st),
        key,
    };
    let (_, page) = api.get(big, &format!("cursor={deep}")).await?;
    ensure!(page["total"] == BIG && page["data"].as_array().map(Vec::len) == Some(20));
    let cases = [
        ("20 generations, page 1", small, String::new()),
        ("50,000 generations, page 1", big, String::new()),
        (
            "50,000, page 1,000 by cursor",
            big,
            format!("cursor={deep}"),
        ),
        ("50,000, status=failed, page 1", big, "status=failed".into()),
        ("50,000, page 501 (the page bound)", big, "page=501".into()),
    ];
    let mut base = None;
    let mut within = true;
    println!("history, median of {runs} runs, through the router");
    for (name, user, query) in &cases {
        let ms = api.median(*user, query, runs).await?;
        let ratio = ms / *base.get_or_insert(ms);
        // Only the keyset cases are held to the target; the page bound shows OFFSET's cost.
        if !query.starts_with("page=") {
            within &= ratio <= TARGET;
        }
        println!("  {name:<36} {ms:>7.2} ms  {ratio:>5.2}x");
    }
    println!(
        "target: cursor pages within {TARGET}x of the small user's page 1: {}",
        if within { "met" } else { "NOT met" }
    );
    Ok(())
}
