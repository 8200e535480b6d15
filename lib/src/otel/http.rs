//! Outbound HTTP calls (Replicate, output downloads, the key set, the credit
//! service, CloudFormation's response URL) as client spans that pass the trace on
//! in a `traceparent` header.

use std::future::Future;

use tracing::Instrument;

/// Sends a request in a client span.
pub trait SendTraced {
    /// Like `send`, in a client span named `{METHOD} {service}` whose
    /// `traceparent` goes with the request.
    fn send_traced(
        self,
        service: &'static str,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl SendTraced for reqwest::RequestBuilder {
    async fn send_traced(self, service: &'static str) -> reqwest::Result<reqwest::Response> {
        let (client, req) = self.build_split();
        let mut req = req?;
        let url = req.url();
        let span = tracing::info_span!(
            target: super::TARGET,
            "http",
            otel.name = format!("{} {service}", req.method()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            peer.service = service,
            http.request.method = %req.method(),
            server.address = url.host_str(),
            server.port = url.port_or_known_default(),
            // Without the query, which may carry more than a client span should keep.
            url.full = format!("{}://{}{}", url.scheme(), url.authority(), url.path()),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        super::inject(&span, req.headers_mut());
        let res = client.execute(req).instrument(span.clone()).await;
        match &res {
            Ok(r) => {
                span.record("http.response.status_code", r.status().as_u16());
                if r.status().is_server_error() {
                    span.record("otel.status_code", "error");
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                span.record("otel.status_code", "error");
                span.record("error.type", kind);
            }
        }
        res
    }
}
