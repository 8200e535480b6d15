//! Replicate: the HTTP client ([`client`]), the per-model input mapping
//! ([`inputs`]), progress read from logs ([`progress`]) and webhook
//! signatures ([`signature`]).

pub mod client;
pub mod inputs;
pub mod progress;
pub mod signature;

pub use client::{NewPrediction, Prediction, PredictionPage, Replicate, ReplicateError};
