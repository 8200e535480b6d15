//! Everything a handler needs, built once per cold start and shared by all
//! invocations of an instance. Building it opens no connection: the pool,
//! the S3 and DynamoDB clients, the JWKS and the webhook secret are fetched
//! on first use; the first request starts the ones it will need together
//! ([`AppState::open_early`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{OnceCell, RwLock};

use crate::records::RecordsTable;

use crate::{
    Config, Result, auth::Verifier, credits::Credits, db, http_client::HttpClient,
    replicate::Replicate, storage::Storage,
};

const MODELS_TTL: Duration = Duration::from_secs(60);

/// AWS settings that replace the environment's for one service (tests point
/// one service at a dead endpoint while the other keeps working).
#[derive(Debug, Clone, Default)]
pub struct AwsOverrides {
    /// The settings for S3 (image storage); `None`: the environment's.
    pub s3: Option<aws_config::SdkConfig>,
    /// The settings for DynamoDB (the records table); `None`: the environment's.
    pub dynamodb: Option<aws_config::SdkConfig>,
}

/// What the first request of an instance starts preparing in the background
/// while it does its own first steps (see [`AppState::open_early`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Early {
    /// A database connection.
    pub db: bool,
    /// The AWS settings and the records table's client (rate limits,
    /// idempotency, webhook replays).
    pub runtime_table: bool,
}

/// A value cached per instance, with the time it was read.
pub(crate) type Cached<T> = RwLock<Option<(Instant, Arc<T>)>>;

/// Shared state; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// The configuration read at start.
    pub cfg: Config,
    /// The database pool.
    pub db: db::Db,
    /// Image storage (S3).
    pub storage: Storage,
    /// The Replicate client.
    pub replicate: Replicate,
    /// The Stripe client (purchases).
    pub stripe: crate::stripe::Stripe,
    /// Thumbnail decodes running at once in this process (`THUMBNAIL_DECODES`): each
    /// holds its image's pixels (memory), and a Lambda has a share of one core.
    pub decodes: tokio::sync::Semaphore,
    /// The moderation provider, when `MODERATION_PROVIDER` names one.
    pub moderation: Option<crate::moderation::openai::OpenAiModeration>,
    /// Verifies users' bearer tokens.
    pub auth: Verifier,
    /// The freemium rules and the balance provider.
    pub credits: Credits,
    /// The records table (rate limits, idempotency, webhook replays).
    pub records: RecordsTable,
    /// This instance's view of its users' read windows (reads never wait for the table).
    pub reads: crate::records::ratelimit::ReadWindows,
    webhook_secret: OnceCell<String>,
    models: Cached<Vec<db::models::Model>>,
    moderation_terms: Cached<Vec<crate::moderation::blocklist::Term>>,
    opened_early: std::sync::Once,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// State from the process environment (and the secrets it points to, see [`crate::secrets`]).
    pub async fn from_env() -> Result<Self> {
        let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
        let http = HttpClient::default();
        crate::secrets::resolve(&mut vars, &http)
            .await
            .map_err(|e| crate::Error::Internal(e.to_string()))?;
        let cfg = Config::from_map(&vars).map_err(|e| crate::Error::Internal(e.to_string()))?;
        Self::build(cfg, AwsOverrides::default(), http)
    }

    /// State from settings; `aws` replaces the environment's AWS settings per service.
    pub fn new(cfg: Config, aws: AwsOverrides) -> Result<Self> {
        Self::build(cfg, aws, HttpClient::default())
    }

    fn build(cfg: Config, aws: AwsOverrides, http: HttpClient) -> Result<Self> {
        let shared_aws = crate::aws::AwsConfig::default();
        Ok(AppState(Arc::new(Inner {
            db: db::Db::new(db::pool(
                &cfg.database_url,
                cfg.database_pool_size,
                cfg.database_ca_file.as_deref(),
                cfg.app_env != crate::config::AppEnv::Development,
            )?),
            storage: Storage::new(&cfg, http.clone(), shared_aws.or(aws.s3)),
            records: RecordsTable::new(&cfg, shared_aws.or(aws.dynamodb)),
            reads: Default::default(),
            replicate: Replicate::new(
                http.clone(),
                &cfg.replicate_api_base_url,
                &cfg.replicate_api_token,
            ),
            decodes: tokio::sync::Semaphore::new(cfg.thumbnail_decodes),
            moderation: cfg.moderation_provider.as_ref().map(|m| {
                crate::moderation::openai::OpenAiModeration::new(
                    http.clone(),
                    &m.base_url,
                    &m.api_key,
                    &m.model,
                )
            }),
            stripe: crate::stripe::Stripe::new(
                http.clone(),
                &cfg.stripe_api_base_url,
                cfg.stripe_secret_key.as_deref(),
            ),
            auth: Verifier::new(
                http.clone(),
                &cfg.jwks_url,
                &cfg.jwt_audience,
                &cfg.jwt_issuers,
                cfg.jwks_refetch_gap,
            ),
            credits: Credits::new(&cfg, http),
            webhook_secret: OnceCell::new(),
            models: RwLock::new(None),
            moderation_terms: RwLock::new(None),
            opened_early: std::sync::Once::new(),
            cfg,
        })))
    }

    /// Starts opening the `early` parts in the background, once per
    /// instance (later calls do nothing). The first request calls it
    /// ([`crate::web::policy::enforce`]) before its own first step (the key
    /// set, for a user's token), so that the database connection and the
    /// records table's client are opened alongside rather than one after
    /// another. Not at init: that work would compete with init for the CPU
    /// and delay the first `next`. Nothing here can fail the instance: the
    /// request that needs a part gets the outcome of the attempt in flight,
    /// and a failed part is tried again by the next request.
    pub fn open_early(&self, early: Early) {
        self.opened_early.call_once(|| {
            if early.db {
                self.db.open_early();
            }
            if early.runtime_table {
                let st = self.clone();
                tokio::spawn(async move {
                    st.records.client().await;
                });
            }
        });
    }

    /// The instance's cache of the moderation blocklist (`crate::moderation`).
    pub(crate) fn moderation_terms(&self) -> &Cached<Vec<crate::moderation::blocklist::Term>> {
        &self.moderation_terms
    }

    /// Active models, cached for a minute per instance.
    pub async fn models(&self) -> Result<Arc<Vec<db::models::Model>>> {
        if let Some((at, models)) = &*self.models.read().await
            && at.elapsed() < MODELS_TTL
        {
            return Ok(models.clone());
        }
        let models = Arc::new(db::models::list_active(&**self.db.get().await?).await?);
        *self.models.write().await = Some((Instant::now(), models.clone()));
        Ok(models)
    }

    /// The webhook signing secret: from settings, else asked of Replicate once.
    pub async fn webhook_secret(&self) -> Result<&str> {
        self.webhook_secret
            .get_or_try_init(|| async {
                match &self.cfg.replicate_webhook_secret {
                    Some(s) => Ok(s.clone()),
                    None => self
                        .replicate
                        .webhook_secret()
                        .await
                        .map_err(|e| crate::Error::Internal(format!("webhook secret: {e}"))),
                }
            })
            .await
            .map(String::as_str)
    }
}
