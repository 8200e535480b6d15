//! Stripe: the HTTP client for Checkout Sessions ([`client`]), the objects we
//! read from it and from its events ([`objects`]) and webhook signatures
//! ([`signature`]). A small typed client over our `reqwest` client rather than
//! `async-stripe` (docs/architecture.md, "Purchases").
//!
//! An adapter: may import `http_client`, `signing` and `otel`; nothing of the
//! domain or the edge.

pub mod client;
pub mod objects;
pub mod signature;

pub use client::{NewSession, Stripe, StripeError};
pub use objects::{Charge, Dispute, Event, Session};
