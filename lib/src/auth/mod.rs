//! User authentication: `Authorization: Bearer <JWT>` verified in-process
//! against the auth service's JWKS ([`jwks`]). [`devkey`] makes the local
//! signing key that `make token` and the tests use.
//!
//! Platform: may import `http_client`, `otel` and `config`; nothing above.

pub mod devkey;
pub mod jwks;

pub use jwks::{AuthError, Verifier};
