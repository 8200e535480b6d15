//! Picture: the domain logic behind every Lambda function.
//!
//! Functions are thin: each builds an [`AppState`] once per cold start and
//! serves one of the routers in [`api`]. Everything else lives here: settings
//! ([`config`]), errors ([`error`]; rendered for HTTP in [`web::problem`]), authentication ([`auth`]), the stores
//! ([`db`], [`storage`]), the Replicate client ([`replicate`]), the credit
//! hold rules ([`credits`]) and the generation state machine ([`lifecycle`]).

pub mod account;
pub mod api;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod batches;
pub mod config;
pub mod credits;
pub mod db;
pub mod deploy;
pub mod error;
pub mod export;
pub mod http_client;
pub mod images;
pub mod lifecycle;
pub mod limits;
pub mod moderation;
pub mod otel;
pub mod purchases;
pub mod reconcile;
pub mod replicate;
pub mod runtime;
pub mod secrets;
pub mod state;
pub mod storage;
pub mod stripe;
pub mod telemetry;
pub mod thumbnail;
pub mod tls;
pub mod uploads;
pub mod usage;
pub mod web;

pub use config::Config;
pub use error::{Error, Result};
pub use state::AppState;
pub use web::problem::Problem;
