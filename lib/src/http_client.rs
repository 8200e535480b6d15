//! The outbound HTTP client shared by everything that calls out (Replicate,
//! the JWKS, the credit service, output downloads). It is built on first use,
//! as some functions (models) never call out at all; its TLS configuration
//! trusts the compiled-in roots ([`crate::tls`]), so building it reads no
//! certificate file.

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
            // Building fails only when the TLS backend cannot initialise at all.
            let mut tls = crate::tls::client_config(crate::tls::roots())
                .unwrap_or_else(|e| panic!("HTTP client TLS: {e}"));
            tls.alpn_protocols = vec![b"http/1.1".to_vec()]; // reqwest is built without HTTP/2
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .tls_backend_preconfigured(tls)
                .build()
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
