//! Integration tests against the real local stack: PostgreSQL, the AWS
//! emulator (moto) and the Replicate simulator, each over real connections.
//! `make test` starts them and exports their settings (.dev/local.env).

mod auth;
mod boundary;
mod common;
mod concurrency;
mod credits;
mod deploy;
mod errors;
mod events;
mod input;
mod limits;
mod openapi;
mod pipeline;
mod reconcile;
mod webhooks;
