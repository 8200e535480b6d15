//! Settings from the environment, read and validated once per cold start.
//!
//! Every other module takes what it needs from [`Config`]; nothing else reads
//! environment variables (the AWS SDK reads its own standard ones).

use std::{collections::HashMap, time::Duration};

/// Where the service runs; decides whether credits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Staging,
    Production,
}

impl AppEnv {
    /// Staging and production enforce credits; development fails open.
    pub fn enforces_credits(self) -> bool {
        !matches!(self, AppEnv::Development)
    }
}

/// Where credit balances live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditsProvider {
    /// The built-in ledger in PostgreSQL.
    Ledger,
    /// The external credit service's internal API.
    Manacore {
        url: String,
        service_key: String,
        app_id: String,
    },
}

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// All settings of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub database_url: String,
    pub database_pool_size: usize,
    /// Extra CA certificates (PEM) for `sslmode=require` connections, e.g. the RDS bundle.
    pub database_ca_file: Option<String>,
    pub images_bucket: String,
    /// Path-style S3 addressing (`S3_FORCE_PATH_STYLE=true`), for S3-compatible endpoints by host name.
    pub s3_force_path_style: bool,
    /// CDN base for image URLs; presigned S3 URLs when unset.
    pub images_public_base_url: Option<String>,
    pub presign_ttl: Duration,
    pub replicate_api_base_url: String,
    pub replicate_api_token: String,
    /// `whsec_…`; fetched from Replicate's default-secret endpoint when unset.
    pub replicate_webhook_secret: Option<String>,
    /// Public base URL of this API; the webhook URL is derived from it.
    pub webhook_base_url: Option<String>,
    /// Hosts (with optional `:port`) outputs may be downloaded from, besides `replicate.delivery`.
    pub output_allowed_hosts: Vec<String>,
    pub max_output_bytes: usize,
    /// Largest image a client may upload (`POST /uploads`).
    pub max_upload_bytes: usize,
    pub sync_wait: Duration,
    /// The function's own timeout (`FUNCTION_TIMEOUT_SECONDS`, the template's `Timeout`):
    /// every time budget, and so every completion lease, is sized from it.
    pub function_timeout: Duration,
    /// How long a generation may stay open before the reconciler asks Replicate about it.
    pub reconcile_grace: Duration,
    /// How long a generation may stay open at all; older ones are failed (and cancelled at Replicate).
    pub generation_deadline: Duration,
    /// How often the reconciler runs (the template's schedule); the audit allows one run of slack.
    pub reconcile_interval: Duration,
    pub free_generations: i32,
    /// Most generations a user may have pending or processing at once.
    pub max_in_flight_per_user: i64,
    /// Most batch items a user may have waiting for a slot (`queued`).
    pub max_queued_per_user: i64,
    pub credits_per_generation: i32,
    pub credits_provider: CreditsProvider,
    /// Allow generations when an enforced balance check cannot reach the provider.
    pub credit_check_fail_open: bool,
    pub jwks_url: String,
    pub jwt_audience: String,
    pub jwt_issuers: Vec<String>,
    pub cors_origins: Vec<String>,
    /// Shortest time between two fetches of the key set (an unknown `kid` triggers one).
    pub jwks_refetch_gap: Duration,
    /// DynamoDB table for rate-limit windows, idempotency records and seen webhook ids.
    pub runtime_table: String,
    pub rate_limit_generate_per_minute: u32,
    pub rate_limit_reads_per_minute: u32,
    /// Stripe's API (or the simulator); purchases need `stripe_secret_key` too.
    pub stripe_api_base_url: String,
    pub stripe_secret_key: Option<String>,
    /// `whsec_…`: the payments webhook's signing secret.
    pub stripe_webhook_secret: Option<String>,
    /// Where Stripe sends the customer after paying (`{CHECKOUT_SESSION_ID}` is filled in)
    /// or cancelling; by default the API's own page.
    pub checkout_success_url: Option<String>,
    pub checkout_cancel_url: Option<String>,
    /// Thumbnail decodes at once per process (`THUMBNAIL_DECODES`, default 1: a Lambda
    /// instance serves one request at a time; the dev gateway serves every user).
    pub thumbnail_decodes: usize,
    /// Who makes a stored output's thumbnail (`THUMBNAILS`): `background` (default), a task
    /// of the process that stored it, started after the answer's commit; `event`, the
    /// `thumbnails` function on the bucket's `ObjectCreated` notification (the template).
    pub thumbnails_by_event: bool,
    /// `MODERATION_BLOCKLIST=off` leaves only the terms refused whatever the settings.
    pub moderation_blocklist: bool,
    /// `MODERATION_PROVIDER=openai`: OpenAI's moderation endpoint (or the simulator).
    pub moderation_provider: Option<ModerationProvider>,
    /// Allow requests when the moderation provider cannot answer (`MODERATION_FAILURE=open`;
    /// by default only in development).
    pub moderation_fail_open: bool,
}

/// Where prompts are sent for moderation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationProvider {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
}

impl Config {
    /// Reads settings from a map of variables (the environment, or a test's own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let required = |k: &str| get(k).ok_or_else(|| ConfigError(format!("{k} is required")));
        let list = |k: &str| -> Vec<String> {
            get(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        fn number<T: std::str::FromStr>(
            k: &str,
            v: Option<String>,
            default: T,
        ) -> Result<T, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| ConfigError(format!("{k} must be a number, got {v:?}"))),
            }
        }

        let app_env = match get("APP_ENV").as_deref().unwrap_or("development") {
            "development" => AppEnv::Development,
            "staging" => AppEnv::Staging,
            "production" => AppEnv::Production,
            other => {
                return Err(ConfigError(format!(
                    "APP_ENV must be development, staging or production, got {other:?}"
                )));
            }
        };
        let auth_url = get("MANA_CORE_AUTH_URL").map(|u| u.trim_end_matches('/').to_string());
        let jwks_url = get("JWKS_URL")
            .or_else(|| auth_url.as_ref().map(|u| format!("{u}/api/v1/auth/jwks")))
            .ok_or_else(|| ConfigError("JWKS_URL or MANA_CORE_AUTH_URL is required".into()))?;
        let mut jwt_issuers = list("JWT_ISSUER");
        jwt_issuers.extend(auth_url);
        if jwt_issuers.is_empty() {
            return Err(ConfigError(
                "JWT_ISSUER or MANA_CORE_AUTH_URL is required".into(),
            ));
        }
        let webhook_base_url = get("WEBHOOK_BASE_URL").map(|u| u.trim_end_matches('/').to_string());
        let webhook_secret = get("REPLICATE_WEBHOOK_SECRET");
        if let Some(s) = &webhook_secret
            && !s.starts_with("whsec_")
        {
            return Err(ConfigError(
                "REPLICATE_WEBHOOK_SECRET must start with whsec_".into(),
            ));
        }

        let credits_provider = match get("CREDITS_PROVIDER").as_deref().unwrap_or("ledger") {
            "ledger" => CreditsProvider::Ledger,
            "manacore" => CreditsProvider::Manacore {
                url: required("MANA_CREDITS_URL")?
                    .trim_end_matches('/')
                    .to_string(),
                service_key: required("MANA_CORE_SERVICE_KEY")?,
                app_id: get("APP_ID").unwrap_or_else(|| "picture".into()),
            },
            other => {
                return Err(ConfigError(format!(
                    "CREDITS_PROVIDER must be ledger or manacore, got {other:?}"
                )));
            }
        };
        let credit_check_fail_open =
            match get("CREDIT_CHECK_FAILURE").as_deref().unwrap_or("closed") {
                "closed" => false,
                "open" => true,
                other => {
                    return Err(ConfigError(format!(
                        "CREDIT_CHECK_FAILURE must be open or closed, got {other:?}"
                    )));
                }
            };

        let moderation_provider = match get("MODERATION_PROVIDER").as_deref().unwrap_or("none") {
            "none" => None,
            "openai" => Some(ModerationProvider {
                base_url: get("MODERATION_API_BASE_URL")
                    .unwrap_or_else(|| "https://api.openai.com".into()),
                api_key: required("OPENAI_API_KEY")?,
                model: get("MODERATION_MODEL").unwrap_or_else(|| "omni-moderation-latest".into()),
            }),
            other => {
                return Err(ConfigError(format!(
                    "MODERATION_PROVIDER must be none or openai, got {other:?}"
                )));
            }
        };
        let moderation_fail_open = match get("MODERATION_FAILURE").as_deref() {
            None => app_env == AppEnv::Development,
            Some("open") => true,
            Some("closed") => false,
            Some(other) => {
                return Err(ConfigError(format!(
                    "MODERATION_FAILURE must be open or closed, got {other:?}"
                )));
            }
        };

        Ok(Config {
            app_env,
            database_url: required("DATABASE_URL")?,
            database_ca_file: get("DATABASE_CA_FILE"),
            database_pool_size: number("DATABASE_POOL_SIZE", get("DATABASE_POOL_SIZE"), 4)?,
            images_bucket: required("IMAGES_BUCKET")?,
            s3_force_path_style: get("S3_FORCE_PATH_STYLE")
                .is_some_and(|v| v == "true" || v == "1"),
            images_public_base_url: get("IMAGES_PUBLIC_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            presign_ttl: Duration::from_secs(number(
                "IMAGE_URL_TTL_SECONDS",
                get("IMAGE_URL_TTL_SECONDS"),
                3600,
            )?),
            replicate_api_base_url: get("REPLICATE_API_BASE_URL")
                .unwrap_or_else(|| "https://api.replicate.com".into())
                .trim_end_matches('/')
                .to_string(),
            replicate_api_token: required("REPLICATE_API_TOKEN")?,
            replicate_webhook_secret: webhook_secret,
            webhook_base_url,
            output_allowed_hosts: list("OUTPUT_ALLOWED_HOSTS"),
            max_output_bytes: number(
                "MAX_OUTPUT_BYTES",
                get("MAX_OUTPUT_BYTES"),
                25 * 1024 * 1024,
            )?,
            max_upload_bytes: number(
                "MAX_UPLOAD_BYTES",
                get("MAX_UPLOAD_BYTES"),
                10 * 1024 * 1024,
            )?,
            sync_wait: Duration::from_secs(number(
                "SYNC_WAIT_SECONDS",
                get("SYNC_WAIT_SECONDS"),
                25,
            )?),
            function_timeout: Duration::from_secs(number(
                "FUNCTION_TIMEOUT_SECONDS",
                get("FUNCTION_TIMEOUT_SECONDS"),
                30,
            )?),
            reconcile_grace: Duration::from_secs(number(
                "RECONCILE_GRACE_SECONDS",
                get("RECONCILE_GRACE_SECONDS"),
                120,
            )?),
            generation_deadline: Duration::from_secs(number(
                "GENERATION_DEADLINE_SECONDS",
                get("GENERATION_DEADLINE_SECONDS"),
                1800,
            )?),
            reconcile_interval: Duration::from_secs(number(
                "RECONCILE_INTERVAL_SECONDS",
                get("RECONCILE_INTERVAL_SECONDS"),
                300,
            )?),
            free_generations: number("FREE_GENERATIONS", get("FREE_GENERATIONS"), 3)?,
            max_in_flight_per_user: number(
                "MAX_IN_FLIGHT_PER_USER",
                get("MAX_IN_FLIGHT_PER_USER"),
                4,
            )?,
            max_queued_per_user: number("MAX_QUEUED_PER_USER", get("MAX_QUEUED_PER_USER"), 20)?,
            credits_per_generation: number(
                "CREDITS_PER_GENERATION",
                get("CREDITS_PER_GENERATION"),
                10,
            )?,
            credits_provider,
            credit_check_fail_open,
            jwks_url,
            jwt_audience: get("JWT_AUDIENCE").unwrap_or_else(|| "manacore".into()),
            jwt_issuers,
            cors_origins: list("CORS_ORIGINS"),
            jwks_refetch_gap: Duration::from_secs(number(
                "JWKS_REFETCH_SECONDS",
                get("JWKS_REFETCH_SECONDS"),
                60,
            )?),
            runtime_table: get("RUNTIME_TABLE").unwrap_or_else(|| "picture-runtime".into()),
            rate_limit_generate_per_minute: number(
                "RATE_LIMIT_GENERATE_PER_MINUTE",
                get("RATE_LIMIT_GENERATE_PER_MINUTE"),
                10,
            )?,
            stripe_api_base_url: get("STRIPE_API_BASE_URL")
                .unwrap_or_else(|| "https://api.stripe.com".into())
                .trim_end_matches('/')
                .to_string(),
            stripe_secret_key: get("STRIPE_SECRET_KEY"),
            stripe_webhook_secret: get("STRIPE_WEBHOOK_SECRET"),
            thumbnail_decodes: number("THUMBNAIL_DECODES", get("THUMBNAIL_DECODES"), 1usize)?
                .max(1),
            thumbnails_by_event: match get("THUMBNAILS").as_deref() {
                None | Some("background") => false,
                Some("event") => true,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "THUMBNAILS={other:?}: expected background or event"
                    )));
                }
            },
            moderation_blocklist: get("MODERATION_BLOCKLIST").as_deref() != Some("off"),
            moderation_provider,
            moderation_fail_open,
            checkout_success_url: get("CHECKOUT_SUCCESS_URL"),
            checkout_cancel_url: get("CHECKOUT_CANCEL_URL"),
            rate_limit_reads_per_minute: number(
                "RATE_LIMIT_READS_PER_MINUTE",
                get("RATE_LIMIT_READS_PER_MINUTE"),
                120,
            )?,
        })
    }

    /// Where Stripe sends a customer after paying and after cancelling: the
    /// settings, else pages of the API's own URL (`WEBHOOK_BASE_URL`, else
    /// `request_base`, as for [`Config::webhook_url`]); `None` when none is known.
    pub fn checkout_urls(&self, request_base: Option<&str>) -> Option<(String, String)> {
        let base = self.webhook_base_url.as_deref().or(request_base);
        let success = self
            .checkout_success_url
            .clone()
            .or_else(|| base.map(|b| format!("{b}/?checkout={{CHECKOUT_SESSION_ID}}")))?;
        let cancel = self
            .checkout_cancel_url
            .clone()
            .or_else(|| base.map(|b| format!("{b}/?checkout=cancelled")))?;
        Some((success, cancel))
    }

    /// How long a request may work before it must answer: its function's
    /// timeout minus a margin for answering (and never less than a second).
    pub fn request_budget(&self) -> Duration {
        self.function_timeout
            .saturating_sub(Duration::from_secs(5))
            .max(Duration::from_secs(1))
    }

    /// The URL Replicate should call when a prediction finishes, if it can be given one:
    /// `WEBHOOK_BASE_URL`, else `request_base` (the API's own URL, from the request that
    /// starts the generation). Replicate only accepts https, while a simulator (any other
    /// API base) takes http too.
    pub fn webhook_url(
        &self,
        generation_id: uuid::Uuid,
        request_base: Option<&str>,
    ) -> Option<String> {
        let base = self.webhook_base_url.as_deref().or(request_base)?;
        let talks_to_replicate = self.replicate_api_base_url == "https://api.replicate.com";
        if talks_to_replicate && !base.starts_with("https://") {
            return None;
        }
        Some(format!(
            "{base}/api/v1/generate/webhook?generationId={generation_id}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("DATABASE_URL", "postgres://localhost/x"),
            ("IMAGES_BUCKET", "b"),
            ("REPLICATE_API_TOKEN", "t"),
            ("JWKS_URL", "http://127.0.0.1/jwks"),
            ("JWT_ISSUER", "dev"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = Config::from_map(&base()).unwrap();
        assert_eq!(c.app_env, AppEnv::Development);
        assert!(!c.app_env.enforces_credits());
        assert_eq!((c.free_generations, c.credits_per_generation), (3, 10));
        assert_eq!(c.sync_wait, Duration::from_secs(25));
        assert_eq!(c.reconcile_interval, Duration::from_secs(300));
        assert_eq!(c.jwt_audience, "manacore");
        assert_eq!(
            (
                c.rate_limit_generate_per_minute,
                c.rate_limit_reads_per_minute
            ),
            (10, 120)
        );
        assert_eq!(c.jwks_refetch_gap, Duration::from_secs(60));
        assert_eq!(c.credits_provider, CreditsProvider::Ledger);
        assert!(!c.credit_check_fail_open);
    }

    #[test]
    fn rejects_bad_values() {
        let mut m = base();
        m.insert("APP_ENV".into(), "prod".into());
        assert!(Config::from_map(&m).is_err());
        let mut m = base();
        m.insert("FREE_GENERATIONS".into(), "three".into());
        assert!(Config::from_map(&m).is_err());
        let mut m = base();
        m.remove("DATABASE_URL");
        assert!(
            Config::from_map(&m)
                .unwrap_err()
                .to_string()
                .contains("DATABASE_URL")
        );
    }

    #[test]
    fn webhook_url_needs_https_for_real_replicate_only() {
        let mut m = base();
        m.insert("WEBHOOK_BASE_URL".into(), "http://127.0.0.1:3006/".into());
        let id = uuid::Uuid::nil();
        assert_eq!(Config::from_map(&m).unwrap().webhook_url(id, None), None);
        let gateway = "https://abc.execute-api.eu-central-1.amazonaws.com";
        assert_eq!(
            Config::from_map(&base())
                .unwrap()
                .webhook_url(id, Some(gateway))
                .unwrap(),
            format!("{gateway}/api/v1/generate/webhook?generationId={id}")
        );
        m.insert(
            "REPLICATE_API_BASE_URL".into(),
            "http://127.0.0.1:5100".into(),
        );
        assert_eq!(
            Config::from_map(&m).unwrap().webhook_url(id, None).unwrap(),
            format!("http://127.0.0.1:3006/api/v1/generate/webhook?generationId={id}")
        );
    }
}
