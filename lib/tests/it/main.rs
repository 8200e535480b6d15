//! Integration tests against the real local stack: PostgreSQL, S3 (s3s-fs),
//! DynamoDB (moto) and the Replicate simulator, each over real connections.
//! `make test` starts them and exports their settings (.dev/local.env).

mod account;
mod audit;
mod auth;
mod batches;
mod boundary;
mod coldstart;
mod common;
mod concurrency;
mod copies;
mod credits;
mod deploy;
mod errors;
mod events;
mod export;
mod faults;
mod history;
mod input;
mod limits;
mod moderation;
mod objectstore;
mod openapi;
mod outputs;
mod payments;
mod pipeline;
mod private;
mod progress;
mod reconcile;
mod template;
mod thumbnails;
mod uploads;
mod usage;
mod webhooks;
