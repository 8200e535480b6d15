//! Guard against server-side request forgery through `sourceImageUrl`, which
//! the provider fetches: it must be https, and its host must not be, or
//! resolve to, a loopback, private, link-local, CGNAT, multicast, reserved or
//! cloud-metadata address (IPv4-mapped and other IPv6 forms of those too).
//! [`check`] covers the URL as written (the handler's validation);
//! [`guard_source_image`] resolves host names before `POST /generate` runs.
//! The provider resolves the name again when it fetches; this check keeps
//! clients from pointing it at internal addresses by name or by number.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::Value;
use url::{Host, Url};

use crate::web::Problem;
use crate::web::problem::FieldError;

/// The field this module checks.
const FIELD: &str = "sourceImageUrl";
const NOT_HTTPS: &str = "must be an https URL";
const PRIVATE: &str =
    "must not point at a loopback, private, link-local, multicast or metadata address";
const UNRESOLVABLE: &str = "must have a host name that resolves";
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Azure's WireServer/metadata address: public, so no range below covers it.
const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// Whether a fetch from `ip` must be refused.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16, with the metadata service 169.254.169.254
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10 (Alibaba metadata 100.100.100.200)
        || (a, b, c) == (192, 0, 0) // IETF protocol assignments (Oracle metadata 192.0.0.192)
        || matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || ip.is_multicast() // 224/4
        || a >= 240 // reserved 240/4 and broadcast
        || ip == AZURE_WIRESERVER
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast() // ff00::/8
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254)
        || (seg[0], seg[1]) == (0x2001, 0x0db8) // documentation 2001:db8::/32
        || (seg[0], seg[1]) == (0x2001, 0) // Teredo 2001::/32, a tunnel to any IPv4 address
        || seg[..4] == [0x0100, 0, 0, 0] // discard-only 100::/64
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible
/// (`::/96`, with `::` and `::1`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match seg {
        [0, 0, 0, 0, 0, 0 | 0xffff, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            Some(pair(hi, lo))
        }
        [0x2002, hi, lo, ..] => Some(pair(hi, lo)),
        _ => None,
    }
}

/// Checks a URL as written: https, with a host that is not a forbidden address.
pub fn check(raw: &str) -> Result<Url, &'static str> {
    let url = Url::parse(raw).map_err(|_| NOT_HTTPS)?;
    if url.scheme() != "https" {
        return Err(NOT_HTTPS);
    }
    match url.host() {
        None => Err(NOT_HTTPS),
        Some(Host::Ipv4(ip)) if forbidden_v4(ip) => Err(PRIVATE),
        Some(Host::Ipv6(ip)) if forbidden_v6(ip) => Err(PRIVATE),
        Some(_) => Ok(url),
    }
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
    let Some(Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<_> =
        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| Refusal::Unavailable)?
            .map_err(|e| match lookup_is_temporary(&e) {
                true => Refusal::Unavailable,
                false => Refusal::Invalid(UNRESOLVABLE),
            })?
            .collect();
    if addrs.is_empty() {
        Err(Refusal::Invalid(UNRESOLVABLE))
    } else if addrs.iter().any(|a| forbidden(a.ip())) {
        Err(Refusal::Invalid(PRIVATE))
    } else {
        Ok(())
    }
}

/// Whether a failed lookup may succeed when tried again (`EAI_AGAIN`, a
/// failing resolver) rather than the name not existing (`EAI_NONAME`).
fn lookup_is_temporary(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("temporary failure") || text.contains("try again") || text.contains("timed out")
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

    #[test]
    fn a_failing_resolver_is_not_the_callers_error() {
        let again = std::io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        let nxdomain = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        assert!(lookup_is_temporary(&again));
        assert!(!lookup_is_temporary(&nxdomain));
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
