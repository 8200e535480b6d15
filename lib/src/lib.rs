//! Picture: the domain logic behind every Lambda function.
//!
//! Functions are thin: each builds an [`AppState`] once per cold start and
//! serves one of the routers in [`api`]. Everything else lives here: settings
//! ([`config`]), errors ([`problem`]), authentication ([`auth`]), the stores
//! ([`db`], [`storage`]), the Replicate client ([`replicate`]), the credit
//! hold rules ([`credits`]) and the generation state machine ([`lifecycle`]).

pub mod api;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod config;
pub mod credits;
pub mod db;
pub mod deploy;
pub mod http_client;
pub mod lifecycle;
pub mod limits;
pub mod problem;
pub mod reconcile;
pub mod replicate;
pub mod runtime;
pub mod secrets;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod web;

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
pub use config::Config;
pub use problem::Problem;
pub use state::AppState;

/// Failures of the infrastructure underneath a request (database, S3, HTTP).
/// Handlers turn these into a generic `INTERNAL` problem after logging them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Internal(String),
}

impl<R: std::fmt::Debug> From<aws_sdk_s3::error::SdkError<ListObjectsV2Error, R>> for Error {
    fn from(e: aws_sdk_s3::error::SdkError<ListObjectsV2Error, R>) -> Self {
        Error::Internal(format!(
            "s3 list: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ))
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
