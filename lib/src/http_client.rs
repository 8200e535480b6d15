//! The outbound HTTP client shared by everything that calls out (Replicate,
//! the JWKS, the credit service, output downloads). It is built on first use:
//! its TLS setup is the costliest step of a cold start, and some functions
//! (models) never call out at all.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

/// A cheap-to-clone handle to the one client of an instance.
#[derive(Debug, Clone, Default)]
pub struct HttpClient(Arc<OnceLock<reqwest::Client>>);

impl HttpClient {
    /// The client, built on first call.
    pub fn get(&self) -> &reqwest::Client {
        self.0.get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                // Building fails only when the TLS backend cannot initialise at all.
                .unwrap_or_else(|e| panic!("HTTP client: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_once_and_shared_by_clones() {
        let a = HttpClient::default();
        let b = a.clone();
        assert!(a.0.get().is_none(), "nothing is built before first use");
        assert!(std::ptr::eq(a.get(), b.get()));
    }
}
