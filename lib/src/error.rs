//! The domain's one error type. Every failure says whether trying again later
//! can succeed ([`Error::is_transient`]): a transient fault (a timeout, a
//! refused or dropped connection, a 5xx, throttling, an exhausted pool)
//! leaves the work open for a retry; a permanent one ends it. HTTP answers
//! are chosen once, at the edge (`web::problem`); scheduled and deploy-time
//! functions report errors as Lambda diagnostics.

use crate::{
    credits::ProviderError, db::generations::Status, error_code::ErrorCode,
    replicate::ReplicateError, storage::StorageError,
};

/// What went wrong in the domain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One more generation needs more credits than the user has available.
    #[error("insufficient credits: {required} needed, {balance} available")]
    InsufficientCredits {
        required: i64,
        balance: i64,
        free_remaining: i32,
    },
    /// No such thing of the caller's (unknown, another user's, deleted or expired).
    #[error("{}", .0.code().message())]
    NotFound(Resource),
    /// The user already has as many generations in flight as allowed.
    #[error("{open} generations in flight")]
    TooManyInFlight { open: i64, retry_after: u32 },
    /// A batch would leave the user more items queued than allowed.
    #[error("{queued} generations queued, at most {limit}")]
    TooManyQueued { queued: i64, limit: i64 },
    /// Replicate refused the model version or the input (422); the generation failed.
    #[error("the provider refused the input")]
    InputRefused,
    /// Replicate was throttling or unreachable, so nothing was created; the
    /// generation failed, its hold was released, and the request may be retried.
    #[error("the provider is busy")]
    ProviderBusy,
    /// Replicate could not start the generation; it failed and its hold was released.
    #[error("the provider could not start the generation: {0}")]
    ProviderRefused(ReplicateError),
    /// The generation has already ended.
    #[error("the generation is already {}", .0.as_str())]
    NotCancellable(Status),
    /// The upload URL was handed out but nothing was PUT with it yet.
    #[error("nothing was uploaded yet")]
    UploadNotReady,
    /// The uploaded object is not what an image-to-image source must be.
    #[error("the upload {0}")]
    UploadUnusable(String),
    /// The request's content is refused (by the blocklist or the moderation provider).
    #[error("content refused: {categories:?}")]
    ContentRefused {
        categories: Vec<String>,
        /// The blocklist term that matched, if that was the reason.
        term: Option<String>,
    },
    /// The moderation provider cannot answer, and requests are not allowed without it.
    #[error("moderation unavailable")]
    ModerationUnavailable,
    /// Credits are not sold here (another credit provider, or Stripe not configured).
    #[error("purchases are not available")]
    PurchaseNotAvailable,
    /// The request's `Idempotency-Key` came with another body before.
    #[error("the idempotency key was used with another request body")]
    IdempotencyKeyReused,
    /// Stripe failed (transient: unreachable, throttling, 5xx; else a refusal).
    #[error(transparent)]
    Stripe(#[from] crate::stripe::StripeError),
    /// A generation with this idempotency key was recorded meanwhile.
    #[error("the idempotency key was taken by a concurrent request")]
    IdempotencyKeyTaken,
    /// Another process is completing this generation right now.
    #[error("the generation is being completed elsewhere")]
    CompletionInProgress,
    /// The database (PostgreSQL) failed.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No database connection could be had from the pool.
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The credit provider failed.
    #[error(transparent)]
    Credits(#[from] ProviderError),
    /// Image storage (S3) failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Replicate (the image provider) failed.
    #[error(transparent)]
    Replicate(#[from] ReplicateError),
    /// The records table (DynamoDB) failed.
    #[error(transparent)]
    Records(#[from] crate::records::Unavailable),
    /// A timeout of our own: the work did not finish within its time budget.
    #[error("{0} did not finish in time")]
    TimedOut(&'static str),
    /// A bug or a misconfiguration: retrying does not help.
    #[error("{0}")]
    Internal(String),
}

/// What a [`Error::NotFound`] did not find; each has its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A generation.
    Generation,
    /// An image of a generation.
    Image,
    /// A model of the catalog.
    Model,
    /// An upload (a source image).
    Upload,
    /// A batch of generations.
    Batch,
    /// An account export.
    Export,
    /// A credit pack.
    Pack,
    /// A credit purchase.
    Purchase,
}

impl Resource {
    /// The code a client gets for it.
    pub fn code(self) -> ErrorCode {
        match self {
            Resource::Generation => ErrorCode::GenerationNotFound,
            Resource::Image => ErrorCode::ImageNotFound,
            Resource::Model => ErrorCode::ModelNotFound,
            Resource::Upload => ErrorCode::UploadNotFound,
            Resource::Batch => ErrorCode::BatchNotFound,
            Resource::Export => ErrorCode::ExportNotFound,
            Resource::Pack => ErrorCode::PackNotFound,
            Resource::Purchase => ErrorCode::PurchaseNotFound,
        }
    }
}

/// Result with the domain's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same work may succeed when tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::CompletionInProgress
            | Error::IdempotencyKeyTaken
            | Error::ProviderBusy
            | Error::ModerationUnavailable
            | Error::Records(_)
            | Error::TimedOut(_) => true,
            Error::Db(e) => db_transient(e),
            Error::Pool(e) => match e {
                deadpool_postgres::PoolError::Backend(e) => db_transient(e),
                deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed => {
                    true
                }
                _ => false,
            },
            Error::Credits(e) => e.is_transient(),
            Error::Storage(e) => e.is_transient(),
            Error::Replicate(e) => e.is_transient(),
            Error::Stripe(e) => e.is_transient(),
            Error::InsufficientCredits { .. }
            | Error::TooManyInFlight { .. }
            | Error::TooManyQueued { .. }
            | Error::NotFound(_)
            | Error::InputRefused
            | Error::ProviderRefused(_)
            | Error::UploadNotReady
            | Error::UploadUnusable(_)
            | Error::NotCancellable(_)
            | Error::ContentRefused { .. }
            | Error::PurchaseNotAvailable
            | Error::IdempotencyKeyReused
            | Error::Internal(_) => false,
        }
    }
}

/// Connection failures, server shutdowns and restarts, overload, serialization
/// conflicts and statement timeouts pass; anything else is a bug.
fn db_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources (too many connections)
                || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || matches!(code, "40001" | "40P01" | "57014" | "55P03" | "25006")
        }
        // No server error: the connection itself failed (I/O, closed, timed out).
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            e.to_string().contains("timed out")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_and_outages_transient() {
        assert!(!Error::InputRefused.is_transient());
        assert!(!Error::NotFound(Resource::Generation).is_transient());
        assert!(!Error::Internal("bug".into()).is_transient());
        assert!(Error::CompletionInProgress.is_transient());
        assert!(Error::TimedOut("copy").is_transient());
        assert!(Error::Replicate(ReplicateError::Timeout).is_transient());
        assert!(
            !Error::Replicate(ReplicateError::Status {
                status: 404,
                title: String::new()
            })
            .is_transient()
        );
        assert!(Error::Storage(StorageError::Upload("timeout".into())).is_transient());
        assert!(!Error::Storage(StorageError::Gone(410)).is_transient());
        assert!(Error::Credits(ProviderError::Unavailable("x".into())).is_transient());
        assert!(!Error::Credits(ProviderError::Rejected(400)).is_transient());
    }
}
