//! Replicate: the HTTP client ([`client`]), the per-model input mapping
//! ([`inputs`]) and webhook signatures ([`signature`]).

pub mod client;
pub mod inputs;
pub mod signature;

pub use client::{Prediction, PredictionPage, Replicate, ReplicateError};
