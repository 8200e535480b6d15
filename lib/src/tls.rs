//! What every outbound TLS connection trusts: the Mozilla root certificates
//! compiled into the binary (`webpki-roots`, and the same set as whole
//! certificates from `webpki-root-certs` for the AWS SDK). No certificate file
//! is read: loading the system's roots (a bundle and, on Debian, ~300 files)
//! cost milliseconds twice per cold start, once for reqwest and once for the
//! AWS SDK. Certificates are verified as before (chain to one of these roots,
//! name, validity); only where the roots come from changed. They cover the
//! AWS endpoints (Amazon Root CA 1–4, Starfield), RDS Proxy's ACM
//! certificates and the public services called (Replicate, the key set).

use std::sync::Arc;

use aws_smithy_http_client::{
    Builder, ConnectorBuilder,
    proxy::ProxyConfig,
    tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode},
};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use base64::Engine as _;
use rustls::RootCertStore;

/// The compiled-in roots, as rustls trust anchors (nothing to parse).
pub fn roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A rustls client configuration (aws-lc, TLS 1.2 and 1.3) trusting `roots`.
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The compiled-in roots as one PEM bundle: the AWS SDK's trust store takes
/// PEM only. Encoding them takes a few hundred microseconds, once per client.
fn pem_bundle() -> Vec<u8> {
    let mut pem = Vec::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2048);
    let b64 = base64::engine::general_purpose::STANDARD;
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let text = b64.encode(cert.as_ref());
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// The AWS SDK's HTTPS client: the SDK's default (hyper 1, rustls with
/// aws-lc, proxy settings from the environment), trusting the compiled-in
/// roots instead of the system's. Shared by the S3 and DynamoDB clients and
/// the credential providers; its connectors are built on first request.
pub fn aws_http_client() -> SharedHttpClient {
    aws_http_client_trusting(
        TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(pem_bundle()),
    )
}

fn aws_http_client_trusting(trust: TrustStore) -> SharedHttpClient {
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        // Building only moves the settings; the certificates are parsed with the first connector.
        .unwrap_or_else(|e| panic!("AWS TLS context: {e}"));
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut conn = ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context.clone());
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TEST_CA: &[u8] = include_bytes!("../tests/fixtures/tls/ca.crt");
    const LEAF: &[u8] = include_bytes!("../tests/fixtures/tls/leaf.crt");
    const LEAF_KEY: &[u8] = include_bytes!("../tests/fixtures/tls/leaf.key");

    #[test]
    fn every_compiled_in_root_reaches_the_aws_trust_store() {
        // The SDK parses the bundle with the first connector and panics on a certificate
        // it cannot use, so every one must parse, and all of them must arrive.
        let pem = pem_bundle();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(certs.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(certs.len() > 100, "{} roots", certs.len());
        let mut store = RootCertStore::empty();
        for cert in certs {
            store.add(cert).expect("a usable root");
        }
        assert_eq!(store.len(), roots().len(), "the same roots as reqwest's");
    }

    #[test]
    fn the_roots_include_those_of_aws_endpoints() {
        // Amazon Trust Services' roots sign the certificates of S3, DynamoDB and RDS Proxy.
        let names: Vec<String> = roots()
            .roots
            .iter()
            .map(|r| String::from_utf8_lossy(r.subject.as_ref()).into_owned())
            .collect();
        for root in [
            "Amazon Root CA 1",
            "Amazon Root CA 3",
            "Starfield Services Root",
        ] {
            assert!(names.iter().any(|n| n.contains(root)), "{root} missing");
        }
    }

    /// A TLS server for `localhost` (HTTP/1.1, answers 200 "ok" to anything)
    /// whose certificate chains to a test CA that nothing trusts by default;
    /// counts the handshakes that succeeded.
    async fn untrusted_server() -> (u16, Arc<AtomicUsize>) {
        let certs = CertificateDer::pem_slice_iter(LEAF)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(LEAF_KEY).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, handshakes)
    }

    #[tokio::test]
    async fn the_http_client_refuses_a_certificate_no_compiled_in_root_signed() {
        let (port, handshakes) = untrusted_server().await;
        let url = format!("https://localhost:{port}/");
        let err = crate::http_client::HttpClient::default()
            .get()
            .get(&url)
            .send()
            .await
            .expect_err("an untrusted certificate is refused");
        let chain = error_chain(&err);
        assert!(chain.contains("UnknownIssuer"), "{chain}");
        assert_eq!(handshakes.load(Ordering::SeqCst), 0);
        // The server itself is fine: a client that trusts the test CA gets its answer.
        let trusting = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(TEST_CA).unwrap()])
            .build()
            .unwrap();
        let res = trusting.get(&url).send().await.expect("trusted");
        assert_eq!(res.text().await.unwrap(), "ok");
        assert_eq!(handshakes.load(Ordering::SeqCst), 1);
    }

    /// A DynamoDB call through `http` to the server on `port`; the error's full context.
    async fn dynamodb_call(http: SharedHttpClient, port: u16) -> String {
        use aws_sdk_dynamodb::config::{Credentials, Region, retry::RetryConfig};
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .http_client(http)
            .endpoint_url(format!("https://localhost:{port}"))
            .region(Region::new("eu-central-1"))
            .credentials_provider(Credentials::new("AKID", "secret", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .build();
        let err = aws_sdk_dynamodb::Client::from_conf(conf)
            .list_tables()
            .send()
            .await
            .expect_err("the server is no DynamoDB");
        aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string()
    }

    #[tokio::test]
    async fn the_aws_sdk_refuses_a_certificate_no_compiled_in_root_signed() {
        let (port, handshakes) = untrusted_server().await;
        let refused = dynamodb_call(aws_http_client(), port).await;
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        assert_eq!(handshakes.load(Ordering::SeqCst), 0);
        // Trusting the test CA, the same client gets through (and finds no DynamoDB there).
        let trusting = aws_http_client_trusting(TrustStore::empty().with_pem_certificate(TEST_CA));
        let answered = dynamodb_call(trusting, port).await;
        assert!(!answered.contains("UnknownIssuer"), "{answered}");
        assert_eq!(handshakes.load(Ordering::SeqCst), 1, "{answered}");
    }

    fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
        let mut out = err.to_string();
        let mut source = err.source();
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }
}
