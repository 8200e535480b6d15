//! Picture: the domain logic behind every Lambda function.
//!
//! Functions are thin: each builds an [`AppState`] once per cold start and
//! serves one of the routers in [`api`] (or handles scheduled and deploy-time
//! events through [`runtime`]). The crate is in four groups: the edge uses the
//! domain, the domain uses the adapters (never the edge), and the platform is
//! shared by all:
//!
//! - **The HTTP edge:** [`api`] (one module per function: routes, requests,
//!   answers) and [`web`] (routing, policies, problem documents, input checks).
//! - **The domain:** the generation state machine [`lifecycle`] (and its queue
//!   of batch items), [`batches`], the credit rules [`credits`], credit
//!   [`purchases`], [`moderation`], [`uploads`], [`thumbnail`]s, deleting an
//!   [`images`] entry, a user's [`account`] deletion and [`export`], provider
//!   [`usage`], the [`reconcile`]r and the [`audit`].
//! - **Adapters to the outside:** PostgreSQL rows in [`db`] (SQL lives only
//!   there), S3 in [`storage`], Replicate in [`replicate`], Stripe in
//!   [`stripe`], DynamoDB records (rate limits, idempotency, seen webhooks) in
//!   [`records`], shared AWS settings in [`aws`], [`secrets`], [`tls`], the
//!   outbound [`http_client`], the [`url_policy`] of what it may fetch and the
//!   webhook [`signing`] checks both providers share.
//! - **The platform:** settings ([`config`]), errors ([`error`] and their stable
//!   [`error_code`]s; rendered for HTTP once, in [`web::problem`]), authentication ([`auth`]: JWTs and the
//!   development key), the shared [`state`], the Lambda loop
//!   ([`runtime`]) and the work it settles after an answer ([`deferred`]),
//!   CloudFormation hooks ([`deploy`]), logs and metrics
//!   ([`telemetry`]), traces ([`otel`]) and image formats ([`media`]).

// The HTTP edge.
pub mod api;
pub mod web;

// The domain.
pub mod account;
pub mod audit;
pub mod batches;
pub mod credits;
pub mod export;
pub mod images;
pub mod lifecycle;
pub mod moderation;
pub mod purchases;
pub mod reconcile;
pub mod thumbnail;
pub mod uploads;
pub mod usage;

// Adapters to the outside.
pub mod aws;
pub mod db;
pub mod http_client;
pub mod records;
pub mod replicate;
pub mod secrets;
pub mod signing;
pub mod storage;
pub mod stripe;
pub mod tls;
pub mod url_policy;

// The platform.
pub mod auth;
pub mod config;
pub mod deferred;
pub mod deploy;
pub mod error;
pub mod error_code;
pub mod media;
pub mod otel;
pub mod runtime;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Resource, Result};
pub use error_code::ErrorCode;
pub use state::AppState;
