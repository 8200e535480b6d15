//! Replicate: the HTTP client ([`client`]), the per-model input mapping
//! ([`inputs`]), progress read from logs ([`progress`]) and webhook
//! signatures ([`signature`]).
//!
//! An adapter: may import `http_client`, `signing`, `otel` and `telemetry`;
//! nothing of the domain or the edge.

pub mod client;
pub mod inputs;
pub mod progress;
pub mod signature;

pub use client::{NewPrediction, Prediction, PredictionPage, Replicate, ReplicateError};
