//! Every environment variable the service reads, declared once: its name,
//! the value used when it is unset, how the docs show that default, what it
//! means and who reads it. [`Config::from_map`](super::Config::from_map) reads
//! the `Config` rows through [`Vars`]; `docs/configuration.md`'s settings table
//! is [`table`]'s output (a test keeps the two equal).

#[cfg(test)]
use std::cell::RefCell;
use std::{collections::HashMap, str::FromStr};

use super::ConfigError;

/// Who reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// [`super::Config`], once per cold start.
    Config,
    /// [`crate::secrets`], before the settings are read.
    Secrets,
    /// The log filter ([`crate::telemetry`]).
    Logs,
    /// The OpenTelemetry SDK ([`crate::otel`]).
    Traces,
    /// The AWS SDK itself.
    AwsSdk,
}

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// The value used when it is unset or blank (empty: none).
    pub default: &'static str,
    /// How the docs show the default when it is not simply `default` (e.g. "required").
    pub shown: &'static str,
    /// What it does, as the docs say it.
    pub meaning: &'static str,
    /// Who reads it.
    pub reader: Reader,
}

/// Declares one `pub const` per setting and [`ALL`], in the docs' order.
macro_rules! settings {
    ($($name:ident: $reader:ident, $default:literal, $shown:literal, $meaning:literal;)*) => {
        $(
            #[doc = $meaning]
            pub const $name: Setting = Setting {
                name: stringify!($name),
                default: $default,
                shown: $shown,
                meaning: $meaning,
                reader: Reader::$reader,
            };
        )*
        /// Every setting, in the order the docs list them.
        pub const ALL: &[Setting] = &[$($name),*];
    };
}

settings! {
    APP_ENV: Config, "development", "",
        "`development`, `staging` or `production`; staging and production enforce credits";
    DATABASE_URL: Config, "", "required",
        "PostgreSQL connection string; `sslmode=require` for TLS";
    DATABASE_CA_FILE: Config, "", "unset",
        "PEM file of extra CA certificates for TLS (e.g. the RDS bundle)";
    DATABASE_POOL_SIZE: Config, "4", "",
        "connections per instance";
    IMAGES_BUCKET: Config, "", "required",
        "S3 bucket for image objects";
    S3_FORCE_PATH_STYLE: Config, "false", "",
        "`true`/`1`: path-style S3 addressing (S3-compatible endpoints by host name); `false`/`0`: virtual-hosted";
    IMAGES_PUBLIC_BASE_URL: Config, "", "unset",
        "CDN base for image URLs (unset: presigned S3 GET URLs)";
    IMAGE_URL_TTL_SECONDS: Config, "3600", "",
        "lifetime of presigned URLs";
    REPLICATE_API_BASE_URL: Config, "https://api.replicate.com", "",
        "Replicate API (the simulator locally)";
    REPLICATE_API_TOKEN: Config, "", "required",
        "Replicate token";
    REPLICATE_WEBHOOK_SECRET: Config, "", "unset",
        "`whsec_…`; unset means it is fetched from Replicate's `GET /v1/webhooks/default/secret` on first use";
    WEBHOOK_BASE_URL: Config, "", "unset",
        "public base URL of this API; the webhook URL is built from it";
    OUTPUT_ALLOWED_HOSTS: Config, "", "empty",
        "extra `host[:port]` list outputs may be downloaded from (`replicate.delivery` over https is always allowed)";
    MAX_OUTPUT_BYTES: Config, "26214400", "",
        "largest output copied (25 MiB)";
    MAX_UPLOAD_BYTES: Config, "10485760", "",
        "largest image a client may upload (`POST /uploads`, 10 MiB)";
    THUMBNAILS: Config, "", "`background` (`event` where the build has no decoders)",
        "who makes a stored output's thumbnail: `background`, a task of the process that stored it (only a build with the `thumbnails` feature: the dev gateway, tests); `event`, the `thumbnails` function on the bucket's `Object Created` event (the template sets it)";
    THUMBNAIL_DECODES: Config, "1", "",
        "thumbnail decodes at once per process (`make dev`: 2)";
    SYNC_WAIT_SECONDS: Config, "25", "",
        "how long `waitForResult` waits before answering 202";
    FUNCTION_TIMEOUT_SECONDS: Config, "30", "",
        "the function's own timeout (the template's `Timeout`); time budgets (the timeout less 5 s; status polls 4 s) and completion leases are sized from it";
    RECONCILE_GRACE_SECONDS: Config, "120", "",
        "age at which the reconciler looks at an open generation";
    GENERATION_DEADLINE_SECONDS: Config, "1800", "",
        "age at which the reconciler fails an open generation (`TIMEOUT`)";
    RECONCILE_INTERVAL_SECONDS: Config, "300", "",
        "how often the reconciler runs (the schedule's rate; `make dev` runs it at this rate, `0` turns that off); the audit reports generations open past the deadline plus one interval";
    FREE_GENERATIONS: Config, "3", "",
        "free generations per user";
    CREDITS_PER_GENERATION: Config, "10", "",
        "price of a paid generation";
    MAX_IN_FLIGHT_PER_USER: Config, "4", "",
        "generations a user may have pending or processing at once; beyond, 429 `TOO_MANY_IN_FLIGHT` with `Retry-After` (batch items wait `queued` instead)";
    MAX_QUEUED_PER_USER: Config, "20", "",
        "batch items a user may have waiting (`queued`) at once; a batch (or retry) that would exceed it is refused whole: 429 `TOO_MANY_IN_FLIGHT` with `limit`";
    CREDITS_PROVIDER: Config, "ledger", "",
        "`ledger` (PostgreSQL) or `manacore` (the credit service)";
    MANA_CREDITS_URL: Config, "", "required for `manacore`",
        "the credit service's base URL";
    MANA_CORE_SERVICE_KEY: Config, "", "required for `manacore`",
        "the credit service's key, sent as `X-Service-Key`";
    APP_ID: Config, "picture", "",
        "sent as `X-App-Id` and `appId`";
    CREDIT_CHECK_FAILURE: Config, "closed", "",
        "`closed`: 503 when an enforced check cannot reach the provider; `open`: allow";
    STRIPE_API_BASE_URL: Config, "https://api.stripe.com", "",
        "Stripe API (the simulator locally, `http://127.0.0.1:5110`)";
    STRIPE_SECRET_KEY: Config, "", "unset",
        "`sk_…`; unset, credits are not sold (checkout answers 409 `PURCHASE_NOT_AVAILABLE`)";
    MODERATION_PROVIDER: Config, "none", "`none` (`openai` in the local stack)",
        "`openai`: prompts, source images and the outputs of models with `moderate_outputs` also go to OpenAI's moderation endpoint";
    MODERATION_API_BASE_URL: Config, "https://api.openai.com", "",
        "the moderation endpoint's base URL (the simulator locally)";
    OPENAI_API_KEY: Config, "", "required for `openai`",
        "the moderation provider's key";
    MODERATION_MODEL: Config, "omni-moderation-latest", "",
        "the moderation model asked";
    MODERATION_FAILURE: Config, "", "`closed`, `open` in development",
        "what a request does when the moderation provider cannot answer (`closed`: 503 `MODERATION_UNAVAILABLE`)";
    MODERATION_BLOCKLIST: Config, "on", "",
        "`on`, or `off`: only the terms refused whatever the settings (minors in a sexual context)";
    STRIPE_WEBHOOK_SECRET: Config, "", "unset",
        "`whsec_…` of the Stripe webhook endpoint (`/api/v1/payments/webhook`); unset, deliveries answer 409";
    CHECKOUT_SUCCESS_URL: Config, "", "`{API URL}/?checkout={CHECKOUT_SESSION_ID}`",
        "where Stripe sends the customer after paying; the API URL is `WEBHOOK_BASE_URL`, else the one API Gateway was called at";
    CHECKOUT_CANCEL_URL: Config, "", "`{API URL}/?checkout=cancelled`",
        "where Stripe sends the customer after cancelling";
    MANA_CORE_AUTH_URL: Config, "", "unset",
        "auth service; JWKS at `{url}/api/v1/auth/jwks`, and the URL is an accepted issuer";
    JWKS_URL: Config, "", "derived",
        "explicit JWKS URL; `JWKS_URL` or `MANA_CORE_AUTH_URL` is required";
    JWT_ISSUER: Config, "", "unset",
        "comma-separated accepted issuers; `JWT_ISSUER` or `MANA_CORE_AUTH_URL` is required";
    JWT_AUDIENCE: Config, "manacore", "",
        "expected `aud`";
    JWKS_REFETCH_SECONDS: Config, "60", "",
        "shortest time between two fetches of the key set (an unknown `kid` triggers one)";
    CORS_ORIGINS: Config, "", "empty",
        "comma-separated allowed origins; empty means no CORS headers";
    RUNTIME_TABLE: Config, "picture-runtime", "",
        "DynamoDB table for rate-limit windows, idempotency records and seen webhook ids";
    RATE_LIMIT_GENERATE_PER_MINUTE: Config, "10", "",
        "requests per user per minute to `POST /generate` and the other writes on its budget: `POST /batches`, `POST /batches/{id}/retry`, `POST /credits/checkout`, `POST /uploads`, `DELETE /me`, `POST /me/export`";
    RATE_LIMIT_READS_PER_MINUTE: Config, "120", "",
        "requests per user per minute to each other authenticated route";
    SECRETS_SSM_PATH: Secrets, "", "unset",
        "SSM path of the secrets, e.g. `/picture/prod`; unset: nothing is fetched";
    PARAMETERS_SECRETS_EXTENSION_HTTP_PORT: Secrets, "2773", "",
        "the Parameters and Secrets extension's port";
    AWS_SESSION_TOKEN: Secrets, "", "set by Lambda",
        "the token sent to the extension (`X-Aws-Parameters-Secrets-Token`)";
    RUST_LOG: Logs, "info", "",
        "log filter (logs are JSON)";
    OTEL_EXPORTER_OTLP_ENDPOINT: Traces, "", "unset",
        "where spans go over OTLP/HTTP, e.g. `http://localhost:4318`; unset, nothing is traced (`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off too)";
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Traces, "", "unset",
        "the same for traces alone; either one turns tracing on";
    OTEL_EXPORTER_OTLP_PROTOCOL: Traces, "http/protobuf", "",
        "or `http/json` (no gRPC)";
    OTEL_SERVICE_NAME: Traces, "", "the function's name",
        "`service.name` of the spans";
    OTEL_TRACES_SAMPLER: Traces, "parentbased_always_on", "",
        "sampler (follows the caller's or X-Ray's decision by default); the SDK also reads `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_BSP_*`";
    OTEL_TRACES_SAMPLER_ARG: Traces, "", "unset",
        "the sampler's argument";
    AWS_ENDPOINT_URL: AwsSdk, "", "AWS defaults",
        "read by the AWS SDK itself; locally moto (`http://127.0.0.1:5000`) for any AWS API without an endpoint of its own";
    AWS_ENDPOINT_URL_S3: AwsSdk, "", "AWS defaults",
        "read by the AWS SDK itself; locally s3s-fs (`http://127.0.0.1:5002`)";
    AWS_ENDPOINT_URL_DYNAMODB: AwsSdk, "", "AWS defaults",
        "read by the AWS SDK itself; locally moto's DynamoDB (`:5001`)";
    AWS_REGION: AwsSdk, "", "AWS defaults",
        "read by the AWS SDK itself; locally `eu-central-1`";
    AWS_ACCESS_KEY_ID: AwsSdk, "", "AWS defaults",
        "read by the AWS SDK itself; locally `test`";
    AWS_SECRET_ACCESS_KEY: AwsSdk, "", "AWS defaults",
        "read by the AWS SDK itself; locally `test`";
}

/// The markdown table of [`ALL`] (`docs/configuration.md`, between its settings markers).
pub fn table() -> String {
    let mut out = String::from("| name | default | meaning |\n|---|---|---|\n");
    for s in ALL {
        let default = match (s.shown, s.default) {
            ("", d) => format!("`{d}`"),
            (shown, _) => shown.to_string(),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", s.name, s.meaning));
    }
    out
}

/// The variables a [`super::Config`] is read from, each taken by its [`Setting`]:
/// trimmed, blank as unset, the setting's default when unset.
pub struct Vars<'a> {
    map: &'a HashMap<String, String>,
    /// The settings asked for (the test that keeps the table honest reads it).
    #[cfg(test)]
    read: RefCell<Vec<&'static str>>,
}

impl<'a> Vars<'a> {
    /// Reads from `map` (the environment, or a test's own).
    pub fn new(map: &'a HashMap<String, String>) -> Self {
        Vars {
            map,
            #[cfg(test)]
            read: RefCell::default(),
        }
    }

    /// The names asked for so far.
    #[cfg(test)]
    pub fn read(&self) -> Vec<&'static str> {
        self.read.borrow().clone()
    }

    /// The value given, else the default; `None` when neither.
    pub fn get(&self, s: Setting) -> Option<String> {
        #[cfg(test)]
        self.read.borrow_mut().push(s.name);
        self.map
            .get(s.name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| (!s.default.is_empty()).then(|| s.default.to_string()))
    }

    /// [`Vars::get`] without trailing slashes (base URLs).
    pub fn url(&self, s: Setting) -> Option<String> {
        self.get(s).map(|u| u.trim_end_matches('/').to_string())
    }

    /// The value, or an error naming the setting.
    pub fn required(&self, s: Setting) -> Result<String, ConfigError> {
        self.get(s)
            .ok_or_else(|| ConfigError(format!("{} is required", s.name)))
    }

    /// A comma-separated list, without blanks.
    pub fn list(&self, s: Setting) -> Vec<String> {
        self.get(s)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A number (the default's when unset).
    pub fn number<T: FromStr>(&self, s: Setting) -> Result<T, ConfigError> {
        let v = self.required(s)?;
        v.parse()
            .map_err(|_| ConfigError(format!("{} must be a number, got {v:?}", s.name)))
    }

    /// The value named by one of `choices` (the default's when unset); `None`
    /// when neither is set.
    pub fn choice<T: Copy>(
        &self,
        s: Setting,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = self.get(s) else {
            return Ok(None);
        };
        match choices.iter().find(|(name, _)| *name == v) {
            Some((_, value)) => Ok(Some(*value)),
            None => {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                Err(ConfigError(format!(
                    "{} must be one of {}, got {v:?}",
                    s.name,
                    names.join(", ")
                )))
            }
        }
    }
}
