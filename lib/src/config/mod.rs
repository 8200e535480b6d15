//! Settings from the environment, read and validated once per cold start.
//!
//! Every other module takes what it needs from [`Config`]; nothing else reads
//! environment variables (the AWS SDK reads its own standard ones). Each
//! variable is declared once, in [`settings`].
//!
//! Platform: imports nothing of the crate (`secrets` reads its rows).

pub mod settings;

use std::{collections::HashMap, time::Duration};

use settings::Vars;

/// Whether this build can make thumbnails (picture's `thumbnails` feature: the
/// decoders and the encoder). Functions that only store outputs leave them
/// out, and their thumbnails to the `thumbnails` function.
pub const THUMBNAIL_DECODERS: bool = cfg!(feature = "thumbnails");

/// Where the service runs; decides whether credits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    /// Local stacks: credits not enforced; moderation fails open by default.
    Development,
    /// Credits enforced, as in production.
    Staging,
    /// Credits enforced.
    Production,
}

impl AppEnv {
    /// Staging and production enforce credits; development waives what free ones do not cover.
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
pub struct ConfigError(pub(crate) String);

/// All settings of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_ENV`: where the service runs.
    pub app_env: AppEnv,
    /// `DATABASE_URL`: PostgreSQL connection string (`sslmode=require` for TLS).
    pub database_url: String,
    /// `DATABASE_POOL_SIZE`: connections per instance.
    pub database_pool_size: usize,
    /// Extra CA certificates (PEM) for `sslmode=require` connections, e.g. the RDS bundle.
    pub database_ca_file: Option<String>,
    /// `IMAGES_BUCKET`: the bucket of images, thumbnails, uploads and exports.
    pub images_bucket: String,
    /// Path-style S3 addressing (`S3_FORCE_PATH_STYLE=true`), for S3-compatible endpoints by host name.
    pub s3_force_path_style: bool,
    /// CDN base for image URLs; presigned S3 URLs when unset.
    pub images_public_base_url: Option<String>,
    /// `IMAGE_URL_TTL_SECONDS`: how long a presigned image URL is valid.
    pub presign_ttl: Duration,
    /// `REPLICATE_API_BASE_URL`: Replicate's API, or the simulator.
    pub replicate_api_base_url: String,
    /// `REPLICATE_API_TOKEN`: Replicate's API token.
    pub replicate_api_token: String,
    /// `whsec_…`; fetched from Replicate's default-secret endpoint when unset.
    pub replicate_webhook_secret: Option<String>,
    /// Public base URL of this API; the webhook URL is derived from it.
    pub webhook_base_url: Option<String>,
    /// Hosts (with optional `:port`) outputs may be downloaded from, besides `replicate.delivery`.
    pub output_allowed_hosts: Vec<String>,
    /// `MAX_OUTPUT_BYTES`: largest output copied (and most bytes an object read takes).
    pub max_output_bytes: usize,
    /// Largest image a client may upload (`POST /uploads`).
    pub max_upload_bytes: usize,
    /// `SYNC_WAIT_SECONDS`: how long `waitForResult` waits before answering 202.
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
    /// `FREE_GENERATIONS`: free generations (outputs) per user.
    pub free_generations: i32,
    /// Most generations a user may have pending or processing at once.
    pub max_in_flight_per_user: i64,
    /// Most batch items a user may have waiting for a slot (`queued`).
    pub max_queued_per_user: i64,
    /// `CREDITS_PER_GENERATION`: credits one paid output costs.
    pub credits_per_generation: i32,
    /// `CREDITS_PROVIDER`: where balances live.
    pub credits_provider: CreditsProvider,
    /// Allow generations when an enforced balance check cannot reach the provider.
    pub credit_check_fail_open: bool,
    /// `JWKS_URL`, else `{MANA_CORE_AUTH_URL}/api/v1/auth/jwks`: the tokens' keys.
    pub jwks_url: String,
    /// `JWT_AUDIENCE`: the `aud` a token must carry.
    pub jwt_audience: String,
    /// `JWT_ISSUER` (a list) and `MANA_CORE_AUTH_URL`: the accepted `iss` values.
    pub jwt_issuers: Vec<String>,
    /// `CORS_ORIGINS`: origins allowed by CORS; empty, no CORS headers.
    pub cors_origins: Vec<String>,
    /// Shortest time between two fetches of the key set (an unknown `kid` triggers one).
    pub jwks_refetch_gap: Duration,
    /// DynamoDB table for rate-limit windows, idempotency records and seen webhook ids.
    pub runtime_table: String,
    /// Requests per user and minute to `POST /generate` and the other writes on its budget.
    pub rate_limit_generate_per_minute: u32,
    /// Requests per user and minute to each other authenticated route.
    pub rate_limit_reads_per_minute: u32,
    /// Stripe's API (or the simulator); purchases need `stripe_secret_key` too.
    pub stripe_api_base_url: String,
    /// `STRIPE_SECRET_KEY` (`sk_…`); unset, credits are not sold.
    pub stripe_secret_key: Option<String>,
    /// `whsec_…`: the payments webhook's signing secret.
    pub stripe_webhook_secret: Option<String>,
    /// Where Stripe sends the customer after paying (`{CHECKOUT_SESSION_ID}` is filled in)
    /// or cancelling; by default the API's own page.
    pub checkout_success_url: Option<String>,
    /// Where Stripe sends the customer after cancelling (`CHECKOUT_CANCEL_URL`).
    pub checkout_cancel_url: Option<String>,
    /// Thumbnail decodes at once per process (`THUMBNAIL_DECODES`, default 1: a Lambda
    /// instance serves one request at a time; the dev gateway serves every user).
    pub thumbnail_decodes: usize,
    /// Who makes a stored output's thumbnail (`THUMBNAILS`): `background` (the default where the
    /// build has the decoders, [`THUMBNAIL_DECODERS`]), a task
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
    /// `MODERATION_API_BASE_URL`: the endpoint's base URL (OpenAI's, or the simulator).
    pub base_url: String,
    /// `OPENAI_API_KEY`: the provider's key.
    pub api_key: String,
    /// `MODERATION_MODEL`: the moderation model asked.
    pub model: String,
}

impl Config {
    /// Reads settings from a map of variables (the environment, or a test's own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Config::read(&Vars::new(vars))
    }

    /// Reads every `Config` row of [`settings::ALL`].
    fn read(v: &Vars) -> Result<Self, ConfigError> {
        use settings::*;
        let secs = |s| v.number(s).map(Duration::from_secs);
        // `open` (true) or `closed`; `default` when unset.
        let open_or_closed = |s, default: bool| {
            Ok::<_, ConfigError>(
                v.choice(s, &[("closed", false), ("open", true)])?
                    .unwrap_or(default),
            )
        };

        let app_env = v
            .choice(
                APP_ENV,
                &[
                    ("development", AppEnv::Development),
                    ("staging", AppEnv::Staging),
                    ("production", AppEnv::Production),
                ],
            )?
            .unwrap_or(AppEnv::Development);
        let auth_url = v.url(MANA_CORE_AUTH_URL);
        let jwks_url = v
            .get(JWKS_URL)
            .or_else(|| auth_url.as_ref().map(|u| format!("{u}/api/v1/auth/jwks")))
            .ok_or_else(|| ConfigError("JWKS_URL or MANA_CORE_AUTH_URL is required".into()))?;
        let mut jwt_issuers = v.list(JWT_ISSUER);
        jwt_issuers.extend(auth_url);
        if jwt_issuers.is_empty() {
            return Err(ConfigError(
                "JWT_ISSUER or MANA_CORE_AUTH_URL is required".into(),
            ));
        }
        let replicate_webhook_secret = v.get(REPLICATE_WEBHOOK_SECRET);
        if replicate_webhook_secret
            .as_ref()
            .is_some_and(|s| !s.starts_with("whsec_"))
        {
            return Err(ConfigError(
                "REPLICATE_WEBHOOK_SECRET must start with whsec_".into(),
            ));
        }
        let manacore = v.choice(CREDITS_PROVIDER, &[("ledger", false), ("manacore", true)])?;
        let credits_provider = match manacore.unwrap_or(false) {
            true => CreditsProvider::Manacore {
                url: v
                    .url(MANA_CREDITS_URL)
                    .ok_or_else(|| ConfigError("MANA_CREDITS_URL is required".into()))?,
                service_key: v.required(MANA_CORE_SERVICE_KEY)?,
                app_id: v.required(APP_ID)?,
            },
            false => CreditsProvider::Ledger,
        };
        let openai = v.choice(MODERATION_PROVIDER, &[("none", false), ("openai", true)])?;
        let moderation_provider = match openai.unwrap_or(false) {
            true => Some(ModerationProvider {
                base_url: v.required(MODERATION_API_BASE_URL)?,
                api_key: v.required(OPENAI_API_KEY)?,
                model: v.required(MODERATION_MODEL)?,
            }),
            false => None,
        };

        Ok(Config {
            app_env,
            database_url: v.required(DATABASE_URL)?,
            database_ca_file: v.get(DATABASE_CA_FILE),
            database_pool_size: v.number(DATABASE_POOL_SIZE)?,
            images_bucket: v.required(IMAGES_BUCKET)?,
            s3_force_path_style: v
                .choice(
                    S3_FORCE_PATH_STYLE,
                    &[("false", false), ("0", false), ("true", true), ("1", true)],
                )?
                .unwrap_or(false),
            images_public_base_url: v.url(IMAGES_PUBLIC_BASE_URL),
            presign_ttl: secs(IMAGE_URL_TTL_SECONDS)?,
            replicate_api_base_url: v.url(REPLICATE_API_BASE_URL).unwrap_or_default(),
            replicate_api_token: v.required(REPLICATE_API_TOKEN)?,
            replicate_webhook_secret,
            webhook_base_url: v.url(WEBHOOK_BASE_URL),
            output_allowed_hosts: v.list(OUTPUT_ALLOWED_HOSTS),
            max_output_bytes: v.number(MAX_OUTPUT_BYTES)?,
            max_upload_bytes: v.number(MAX_UPLOAD_BYTES)?,
            thumbnails_by_event: match v
                .choice(THUMBNAILS, &[("background", false), ("event", true)])?
            {
                None => !THUMBNAIL_DECODERS,
                Some(false) if !THUMBNAIL_DECODERS => {
                    return Err(ConfigError(
                        "THUMBNAILS=background needs a build with the thumbnail decoders (feature `thumbnails`)".into(),
                    ));
                }
                Some(by_event) => by_event,
            },
            thumbnail_decodes: v.number::<usize>(THUMBNAIL_DECODES)?.max(1),
            sync_wait: secs(SYNC_WAIT_SECONDS)?,
            function_timeout: secs(FUNCTION_TIMEOUT_SECONDS)?,
            reconcile_grace: secs(RECONCILE_GRACE_SECONDS)?,
            generation_deadline: secs(GENERATION_DEADLINE_SECONDS)?,
            reconcile_interval: secs(RECONCILE_INTERVAL_SECONDS)?,
            free_generations: v.number(FREE_GENERATIONS)?,
            credits_per_generation: v.number(CREDITS_PER_GENERATION)?,
            max_in_flight_per_user: v.number(MAX_IN_FLIGHT_PER_USER)?,
            max_queued_per_user: v.number(MAX_QUEUED_PER_USER)?,
            credits_provider,
            credit_check_fail_open: open_or_closed(CREDIT_CHECK_FAILURE, false)?,
            stripe_api_base_url: v.url(STRIPE_API_BASE_URL).unwrap_or_default(),
            stripe_secret_key: v.get(STRIPE_SECRET_KEY),
            moderation_provider,
            moderation_fail_open: open_or_closed(
                MODERATION_FAILURE,
                app_env == AppEnv::Development,
            )?,
            moderation_blocklist: v
                .choice(MODERATION_BLOCKLIST, &[("on", true), ("off", false)])?
                .unwrap_or(true),
            stripe_webhook_secret: v.get(STRIPE_WEBHOOK_SECRET),
            checkout_success_url: v.get(CHECKOUT_SUCCESS_URL),
            checkout_cancel_url: v.get(CHECKOUT_CANCEL_URL),
            jwks_url,
            jwt_issuers,
            jwt_audience: v.required(JWT_AUDIENCE)?,
            jwks_refetch_gap: secs(JWKS_REFETCH_SECONDS)?,
            cors_origins: v.list(CORS_ORIGINS),
            runtime_table: v.required(RUNTIME_TABLE)?,
            rate_limit_generate_per_minute: v.number(RATE_LIMIT_GENERATE_PER_MINUTE)?,
            rate_limit_reads_per_minute: v.number(RATE_LIMIT_READS_PER_MINUTE)?,
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

    /// Every setting asked for by any path of `from_map` (each provider's too).
    fn read_by_config() -> std::collections::BTreeSet<&'static str> {
        let mut all = base();
        all.extend(
            [
                ("CREDITS_PROVIDER", "manacore"),
                ("MANA_CREDITS_URL", "http://c"),
                ("MANA_CORE_SERVICE_KEY", "k"),
                ("MODERATION_PROVIDER", "openai"),
                ("OPENAI_API_KEY", "sk"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut read = std::collections::BTreeSet::new();
        for map in [base(), all] {
            let vars = Vars::new(&map);
            Config::read(&vars).unwrap();
            read.extend(vars.read());
        }
        read
    }

    #[test]
    fn the_settings_table_is_what_the_code_reads() {
        let declared: std::collections::BTreeSet<_> = settings::ALL
            .iter()
            .filter(|s| s.reader == settings::Reader::Config)
            .map(|s| s.name)
            .collect();
        assert_eq!(read_by_config(), declared);
    }

    #[test]
    fn the_docs_show_the_settings_table() {
        let doc = include_str!("../../../docs/configuration.md");
        let start = doc.find("<!-- settings:begin -->\n").expect("begin marker") + 24;
        let end = doc.find("<!-- settings:end -->").expect("end marker");
        let table = settings::table();
        if doc[start..end] != table {
            eprintln!("The table for docs/configuration.md:\n{table}");
            panic!(
                "docs/configuration.md's settings table differs from lib/src/config/settings.rs"
            );
        }
    }

    #[test]
    fn defaults_of_numbers_parse() {
        let c = Config::from_map(&base()).unwrap();
        assert_eq!(c.max_output_bytes, 25 * 1024 * 1024);
        assert_eq!(c.max_upload_bytes, 10 * 1024 * 1024);
        assert_eq!(c.database_pool_size, 4);
        assert_eq!(c.replicate_api_base_url, "https://api.replicate.com");
        assert!(!c.thumbnails_by_event && c.moderation_blocklist);
        assert!(c.moderation_fail_open, "open in development");
        assert_eq!(
            (c.checkout_success_url, c.checkout_cancel_url),
            (None, None)
        );
        assert!(c.webhook_base_url.is_none() && c.database_ca_file.is_none());
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
