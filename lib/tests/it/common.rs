//! A test stack: the API (every function's routes) served on a random
//! loopback port with its own signing key, wired to the shared local services.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use picture::{AppState, Config, auth::devkey::DevKey, state::AwsOverrides};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

pub const ISSUER: &str = "picture-test";
pub const FLUX: &str = "3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e01";
/// nano-banana: the seeded model that takes a source image.
pub const IMG2IMG: &str = "3f1c0b6e-7a55-4c1e-9d2a-5b0c1f6a9e03";

/// The environment `make test` exports, with what this test overrides.
pub fn env(overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    assert!(
        vars.contains_key("DATABASE_URL") && vars.contains_key("REPLICATE_API_BASE_URL"),
        "integration tests need the local stack's settings: run them with `make test`"
    );
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

/// A running API plus the handles tests inspect it with.
pub struct Stack {
    pub base: String,
    pub state: AppState,
    pub key: DevKey,
    /// The key set the API fetches (the stack's key at first; tests may replace it).
    pub jwks: Arc<RwLock<Value>>,
    pub http: reqwest::Client,
}

impl Stack {
    /// The API with the stack's settings (development, webhooks to this server).
    pub async fn start() -> Stack {
        Stack::with(&[]).await
    }

    /// The API with extra settings.
    pub async fn with(overrides: &[(&str, &str)]) -> Stack {
        Stack::with_aws(overrides, AwsOverrides::default()).await
    }

    /// The API with extra settings and other AWS settings for some services.
    pub async fn with_aws(overrides: &[(&str, &str)], aws: AwsOverrides) -> Stack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let jwks = format!("{base}/test/jwks.json");
        let mut all = vec![
            ("WEBHOOK_BASE_URL", base.as_str()),
            ("JWKS_URL", jwks.as_str()),
            ("JWT_ISSUER", ISSUER),
        ];
        all.extend_from_slice(overrides);
        let cfg = Config::from_map(&env(&all)).expect("test settings");
        let state = AppState::new(cfg, aws).unwrap();
        let key = DevKey::generate(&format!("test-{}", Uuid::new_v4()));
        let jwks_doc = Arc::new(RwLock::new(key.jwks()));
        let served = jwks_doc.clone();
        let app = picture::api::all(state.clone()).route(
            "/test/jwks.json",
            axum::routing::get(move || async move { axum::Json(served.read().unwrap().clone()) }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stack {
            base,
            state,
            key,
            jwks: jwks_doc,
            http: reqwest::Client::new(),
        }
    }

    pub fn token(&self, user: Uuid) -> String {
        self.key.token(user, ISSUER, "manacore", 600)
    }

    /// Sends a request as `user` (or anonymously) and returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<Uuid>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(u) = user {
            req = req.bearer_auth(self.token(u));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn generate(&self, user: Uuid, prompt: &str, wait: bool) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/generate",
            Some(user),
            Some(json!({"prompt": prompt, "modelId": FLUX, "waitForResult": wait})),
        )
        .await
    }

    /// The body of a GET of `url` (an image, a zip, a provider's file).
    pub async fn bytes(&self, url: &str) -> bytes::Bytes {
        let res = self.http.get(url).send().await.unwrap();
        assert!(res.status().is_success(), "GET {url}: {}", res.status());
        res.bytes().await.unwrap()
    }

    /// Cancels the generations that `answers` (generate responses of `user`) started, so that
    /// hanging ones do not stay open.
    pub async fn cancel_all(&self, user: Uuid, answers: &[Value]) {
        for b in answers.iter().filter(|b| b["generationId"].is_string()) {
            self.call(
                Method::DELETE,
                &format!("/api/v1/generate/{}", id_of(b)),
                Some(user),
                None,
            )
            .await;
        }
    }

    /// Grants `amount` credits to `user` on the ledger.
    pub async fn grant(&self, user: Uuid, amount: i64) {
        let db = self.state.db.get().await.unwrap();
        picture::db::ledger::grant(&**db, user, amount, "test")
            .await
            .unwrap();
    }

    /// Reads a generation's row straight from the database (no provider poll).
    pub async fn row(&self, id: &str) -> picture::db::generations::Generation {
        let db = self.state.db.get().await.unwrap();
        picture::db::generations::get(&**db, Uuid::parse_str(id).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until the database shows the generation in a terminal status.
    pub async fn wait_terminal(&self, id: &str) -> picture::db::generations::Generation {
        for _ in 0..100 {
            let g = self.row(id).await;
            if g.status.is_terminal() {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("generation {id} did not finish");
    }

    /// One number from the database.
    pub async fn count(&self, sql: &str, id: &str) -> i64 {
        let db = self.state.db.get().await.unwrap();
        db.query_one(sql, &[&Uuid::parse_str(id).unwrap()])
            .await
            .unwrap()
            .get(0)
    }

    /// Asserts a completed generation with exactly one image and one captured hold.
    pub async fn assert_completed_once(&self, id: &str) {
        assert_eq!(self.row(id).await.status.as_str(), "completed");
        assert_eq!(
            self.count("SELECT count(*) FROM images WHERE generation_id = $1", id)
                .await,
            1
        );
        let captured =
            "SELECT count(*) FROM credit_holds WHERE generation_id = $1 AND state = 'captured'";
        assert_eq!(self.count(captured, id).await, 1);
    }

    /// The audit of `user`'s records and objects finds nothing wrong.
    pub async fn assert_audit_clean(&self, user: Uuid) {
        let filter = picture::audit::Filter {
            since: None,
            user: Some(user),
        };
        let report = picture::audit::inspect(&self.state, &filter).await.unwrap();
        let lines: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert!(lines.is_empty(), "audit violations:\n{}", lines.join("\n"));
        assert!(report.checked.generations > 0);
    }

    /// Waits until every image of `user` has had its thumbnail tried (made, or found
    /// impossible): thumbnails are made after the answer.
    pub async fn thumbnails_tried(&self, user: Uuid) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let pending =
            "SELECT count(*) FROM images WHERE user_id = $1 AND thumbnail_state = 'pending'";
        loop {
            let db = self.state.db.get().await.unwrap();
            let n: i64 = db.query_one(pending, &[&user]).await.unwrap().get(0);
            if n == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} images of {user} still without a thumbnail after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Nothing was recorded for `user`: no generation, no hold, three free generations left.
    pub async fn assert_nothing_held(&self, user: Uuid) {
        let db = self.state.db.get().await.unwrap();
        let held: i64 = db
            .query_one(
                "SELECT (SELECT count(*) FROM generations WHERE user_id = $1)
                      + (SELECT count(*) FROM credit_holds WHERE user_id = $1)",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 0);
        let (_, credits) = self
            .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
            .await;
        assert_eq!(credits["freeGenerationsRemaining"], 3, "{credits}");
    }

    /// The keys under the user's prefix in the bucket.
    pub async fn objects(&self, user: Uuid) -> Vec<String> {
        let mut keys = Vec::new();
        self.state
            .storage
            .list(&format!("users/{user}/"), |k, _| keys.push(k.to_string()))
            .await
            .unwrap();
        keys
    }

    /// Whether the images bucket holds `key`.
    pub async fn object_exists(&self, key: &str) -> bool {
        let s3 = self.state.storage.client().await;
        s3.head_object()
            .bucket(&self.state.cfg.images_bucket)
            .key(key)
            .send()
            .await
            .is_ok()
    }

    /// A call to the simulator itself (its API or its `/_sim` controls).
    pub async fn sim(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .request(
                method,
                format!("{}{path}", self.state.cfg.replicate_api_base_url),
            )
            .bearer_auth(&self.state.cfg.replicate_api_token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

/// A migrated database only this test run uses (`picture_<prefix>_<uuid>`, so parallel
/// runs do not collide); returns its URL and name, and a client of the server to drop it with.
pub async fn own_database(prefix: &str) -> (String, String, tokio_postgres::Client) {
    let shared = std::env::var("DATABASE_URL").expect("run with `make test`");
    let (server, _) = shared.rsplit_once('/').unwrap();
    let (client, conn) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let name = format!("picture_{prefix}_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{server}/{name}");
    picture::db::migrate(&url, None).await.unwrap();
    (url, name, client)
}

/// Drops a database made by [`own_database`] (its connections closed first).
pub async fn drop_database(server: &tokio_postgres::Client, name: &str) {
    server
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

/// AWS settings pointing at a closed loopback port: that service is unavailable.
pub async fn dead_aws() -> aws_config::SdkConfig {
    aws_config::from_env()
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

/// Settings with owned values, as `Stack::with` takes them.
pub fn borrowed<'a>(settings: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

pub fn id_of(v: &Value) -> String {
    v["generationId"]
        .as_str()
        .unwrap_or_else(|| panic!("no generationId in {v}"))
        .to_string()
}
