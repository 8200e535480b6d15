//! User authentication: `Authorization: Bearer <JWT>` verified in-process
//! against the auth service's JWKS ([`jwks`]). [`devkey`] makes the local
//! signing key that `make token` and the tests use.

pub mod devkey;
pub mod jwks;

pub use jwks::{AuthError, Verifier};
