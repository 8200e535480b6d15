//! Guard against server-side request forgery through `sourceImageUrl`, which
//! the provider fetches: the edge's side of [`UrlPolicy::source_image`] (https,
//! and a host that is not, and does not resolve to, a loopback, private,
//! link-local, CGNAT, multicast, reserved or cloud-metadata address), its
//! refusals worded for the field. [`check`] covers the URL as written (the
//! handler's validation); [`guard_source_image`] resolves host names before
//! `POST /generate` runs. The provider resolves the name again when it
//! fetches; this check keeps clients from pointing it at internal addresses by
//! name or by number.

use std::sync::LazyLock;

use axum::{
    body::Body,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::Value;
use url::Url;

use crate::url_policy::{Refused, UrlPolicy};
use crate::web::Problem;
use crate::web::problem::FieldError;

/// The field this module checks.
const FIELD: &str = "sourceImageUrl";
const NOT_HTTPS: &str = "must be an https URL";
const PRIVATE: &str =
    "must not point at a loopback, private, link-local, multicast or metadata address";
const UNRESOLVABLE: &str = "must have a host name that resolves";

static POLICY: LazyLock<UrlPolicy> = LazyLock::new(UrlPolicy::source_image);

/// The field's wording of a refusal.
fn reason(refused: Refused) -> &'static str {
    match refused {
        Refused::Unparseable | Refused::NotAllowed(_) => NOT_HTTPS,
        Refused::Private => PRIVATE,
        Refused::Unresolvable | Refused::LookupFailed => UNRESOLVABLE,
    }
}

/// Checks a URL as written: https, with a host that is not a forbidden address.
pub fn check(raw: &str) -> Result<Url, &'static str> {
    POLICY.check(raw).map_err(reason)
}

/// Why a resolved `sourceImageUrl` is not accepted now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's error (400): the reason, for the field.
    Invalid(&'static str),
    /// The lookup itself failed for now (a timeout, a resolver that cannot
    /// answer): not the caller's error (503).
    Unavailable,
}

/// Resolves the URL's host name (if it has one) and checks every address it resolves to.
pub async fn check_resolved(url: &Url) -> Result<(), Refusal> {
    POLICY.check_resolved(url).await.map_err(|r| match r {
        Refused::LookupFailed => Refusal::Unavailable,
        r => Refusal::Invalid(reason(r)),
    })
}

/// Middleware for `POST /generate`: a well-formed https `sourceImageUrl` whose
/// host name resolves to a forbidden address is refused (400
/// `VALIDATION_FAILED`); anything else goes on to the handler's validation.
pub async fn guard_source_image(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match super::read_body(body).await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let url = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get(FIELD)?.as_str().and_then(|u| check(u).ok()));
    if let Some(url) = url {
        let host = url.host_str().unwrap_or_default();
        match check_resolved(&url).await {
            Ok(()) => {}
            Err(Refusal::Invalid(message)) => {
                tracing::warn!(host, reason = message, "sourceImageUrl refused");
                return Problem::validation(vec![FieldError::new(FIELD, message)]).into_response();
            }
            Err(Refusal::Unavailable) => {
                tracing::warn!(host, "sourceImageUrl lookup failed for now: answered 503");
                return Problem::unavailable().into_response();
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> bool {
        check(raw).is_err()
    }

    #[test]
    fn only_https_urls_with_a_host() {
        assert!(!refused("https://images.example.com/cat.png"));
        assert!(!refused("https://93.184.216.34:8443/cat.png"));
        assert!(!refused(
            "https://[2606:2800:220:1:248:1893:25c8:1946]/cat.png"
        ));
        for raw in [
            "http://images.example.com/cat.png",
            "ftp://images.example.com/cat.png",
            "file:///etc/passwd",
            "data:image/png;base64,AAAA",
            "https://",
            "not a url",
        ] {
            assert_eq!(check(raw).unwrap_err(), NOT_HTTPS, "{raw}");
        }
    }

    #[test]
    fn ipv4_special_ranges_are_refused() {
        for raw in [
            "https://127.0.0.1/",       // loopback
            "https://127.255.0.9/",     // loopback /8
            "https://0x7f.1/",          // loopback, written in hex
            "https://2130706433/",      // loopback, as one number
            "https://0.0.0.0/",         // unspecified
            "https://10.0.0.1/",        // private 10/8
            "https://10.255.255.255/",  //
            "https://172.16.0.1/",      // private 172.16/12
            "https://172.31.255.254/",  //
            "https://192.168.1.1/",     // private 192.168/16
            "https://169.254.169.254/", // link-local, AWS/GCP/Azure metadata
            "https://169.254.0.1/",     //
            "https://100.64.0.1/",      // CGNAT 100.64/10
            "https://100.127.255.255/", //
            "https://100.100.100.200/", // Alibaba metadata (CGNAT)
            "https://192.0.0.192/",     // Oracle metadata (IETF protocol assignments)
            "https://168.63.129.16/",   // Azure WireServer
            "https://224.0.0.1/",       // multicast
            "https://239.255.255.250/", //
            "https://240.0.0.1/",       // reserved
            "https://255.255.255.255/", // broadcast
            "https://198.18.0.1/",      // benchmarking
            "https://192.0.2.1/",       // documentation
        ] {
            assert_eq!(check(raw).unwrap_err(), PRIVATE, "{raw}");
        }
        for ok in [
            "https://172.15.255.255/",
            "https://172.32.0.1/",
            "https://100.63.255.255/",
            "https://100.128.0.1/",
            "https://11.0.0.1/",
            "https://8.8.8.8/",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn ipv6_special_ranges_and_embedded_ipv4_are_refused() {
        for raw in [
            "https://[::1]/",                    // loopback
            "https://[::]/",                     // unspecified
            "https://[fe80::1]/",                // link-local
            "https://[febf:ffff::1]/",           // link-local, end of fe80::/10
            "https://[fc00::1]/",                // unique local fc00::/7
            "https://[fd12:3456:789a::1]/",      //
            "https://[fd00:ec2::254]/",          // AWS metadata over IPv6
            "https://[ff02::1]/",                // multicast
            "https://[fec0::1]/",                // site-local
            "https://[2001:db8::1]/",            // documentation
            "https://[::ffff:127.0.0.1]/",       // IPv4-mapped loopback
            "https://[::ffff:10.0.0.1]/",        // IPv4-mapped private
            "https://[::ffff:169.254.169.254]/", // IPv4-mapped metadata
            "https://[::ffff:a9fe:a9fe]/",       // the same, in hex
            "https://[::192.168.0.1]/",          // IPv4-compatible private
            "https://[64:ff9b::10.0.0.1]/",      // NAT64 of a private address
            "https://[2002:7f00:1::]/",          // 6to4 of loopback
            "https://[2001::1]/",                // Teredo
        ] {
            assert_eq!(check(raw).unwrap_err(), PRIVATE, "{raw}");
        }
        assert!(check("https://[::ffff:8.8.8.8]/").is_ok());
        assert!(check("https://[2002:808:808::]/").is_ok());
    }

    #[tokio::test]
    async fn host_names_resolving_to_forbidden_addresses_are_refused() {
        let url = check("https://localhost/cat.png").expect("a name passes as written");
        assert_eq!(check_resolved(&url).await, Err(Refusal::Invalid(PRIVATE)));
        let url = check("https://no-such-host.invalid/cat.png").unwrap();
        assert_eq!(
            check_resolved(&url).await,
            Err(Refusal::Invalid(UNRESOLVABLE))
        );
        let literal = check("https://8.8.8.8/cat.png").unwrap();
        assert_eq!(check_resolved(&literal).await, Ok(()));
    }
}
