//! The one rule for fetching a URL someone else wrote: a [`UrlPolicy`] says
//! which schemes and hosts pass and whether the host's addresses must be
//! public. There are two: [`UrlPolicy::source_image`] (a caller's
//! `sourceImageUrl`, which the provider fetches; applied at the edge by
//! `web::ssrf`) and [`UrlPolicy::provider_outputs`] (a provider's output
//! URLs, which `storage` downloads). They differ in their lists, not in code.
//!
//! Imports nothing of this crate: the edge and the adapters both use it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use url::{Host, Url};

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Azure's WireServer/metadata address: public, so no range below covers it.
const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// Which URLs may be fetched: those a rule admits, and, when `public_only`,
/// only if their host is not, and does not resolve to, a forbidden address.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    rules: Vec<Rule>,
    public_only: bool,
}

/// One allowed kind of URL: any of `schemes`, to `hosts`.
#[derive(Debug, Clone)]
struct Rule {
    schemes: &'static [&'static str],
    hosts: Hosts,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// Any host.
    Any,
    /// A domain and its subdomains.
    Domain(&'static str),
    /// One `host` (any port) or `host:port`, as configured.
    Exact(String),
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It is not a URL.
    #[error("unparseable URL")]
    Unparseable,
    /// No rule admits its scheme and host (shown as its host, empty if none).
    #[error("{0}")]
    NotAllowed(String),
    /// Its host is, or resolves to, a forbidden address.
    #[error("forbidden address")]
    Private,
    /// Its host name resolves to nothing (or does not exist).
    #[error("host name does not resolve")]
    Unresolvable,
    /// The lookup failed for now (a timeout, a resolver that cannot answer).
    #[error("host name lookup failed")]
    LookupFailed,
}

impl UrlPolicy {
    /// A caller's `sourceImageUrl`: https to any host whose addresses are public.
    pub fn source_image() -> Self {
        UrlPolicy {
            rules: vec![Rule {
                schemes: &["https"],
                hosts: Hosts::Any,
            }],
            public_only: true,
        }
    }

    /// A provider's outputs: `replicate.delivery` and its subdomains over https,
    /// or a `configured` `host[:port]` (`OUTPUT_ALLOWED_HOSTS`) over http or
    /// https; their addresses are not checked (a configured host may be local).
    pub fn provider_outputs(configured: &[String]) -> Self {
        let replicate = Rule {
            schemes: &["https"],
            hosts: Hosts::Domain("replicate.delivery"),
        };
        let listed = configured.iter().map(|h| Rule {
            schemes: &["https", "http"],
            hosts: Hosts::Exact(h.clone()),
        });
        UrlPolicy {
            rules: std::iter::once(replicate).chain(listed).collect(),
            public_only: false,
        }
    }

    /// Checks a URL as written: a rule admits it and (when the policy wants
    /// public addresses) its host is not a forbidden address.
    pub fn check(&self, raw: &str) -> Result<Url, Refused> {
        let url = Url::parse(raw).map_err(|_| Refused::Unparseable)?;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() || !self.rules.iter().any(|r| r.admits(&url, host)) {
            return Err(Refused::NotAllowed(host.to_string()));
        }
        match url.host() {
            Some(Host::Ipv4(ip)) if self.public_only && forbidden_v4(ip) => Err(Refused::Private),
            Some(Host::Ipv6(ip)) if self.public_only && forbidden_v6(ip) => Err(Refused::Private),
            _ => Ok(url),
        }
    }

    /// When the policy wants public addresses: resolves the URL's host name
    /// (if it has one) and checks every address it resolves to.
    pub async fn check_resolved(&self, url: &Url) -> Result<(), Refused> {
        if !self.public_only {
            return Ok(());
        }
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<_> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| Refused::LookupFailed)?
                .map_err(|e| match lookup_is_temporary(&e) {
                    true => Refused::LookupFailed,
                    false => Refused::Unresolvable,
                })?
                .collect();
        if addrs.is_empty() {
            Err(Refused::Unresolvable)
        } else if addrs.iter().any(|a| forbidden(a.ip())) {
            Err(Refused::Private)
        } else {
            Ok(())
        }
    }
}

impl Rule {
    fn admits(&self, url: &Url, host: &str) -> bool {
        self.schemes.contains(&url.scheme())
            && match &self.hosts {
                Hosts::Any => true,
                Hosts::Domain(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.is_empty() || sub.ends_with('.')),
                Hosts::Exact(listed) => {
                    listed == host || url.port().is_some_and(|p| *listed == format!("{host}:{p}"))
                }
            }
    }
}

/// Whether a fetch from `ip` must be refused: a loopback, private, link-local,
/// CGNAT, multicast, reserved or cloud-metadata address (IPv4-mapped and other
/// IPv6 forms of those too).
fn forbidden(ip: IpAddr) -> bool {
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

/// Whether a failed lookup may succeed when tried again (`EAI_AGAIN`, a
/// failing resolver) rather than the name not existing (`EAI_NONAME`).
fn lookup_is_temporary(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("temporary failure") || text.contains("try again") || text.contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replicate_delivery_and_configured_hosts() {
        let s = UrlPolicy::provider_outputs(&["127.0.0.1:5100".into()]);
        let ok = |u: &str| s.check(u).is_ok();
        assert!(ok("https://replicate.delivery/x.png"));
        assert!(ok("https://pbxt.replicate.delivery/x.png"));
        assert!(!ok("http://pbxt.replicate.delivery/x.png"));
        assert!(!ok("https://evilreplicate.delivery/x.png"));
        assert!(ok("http://127.0.0.1:5100/files/a.png"));
        assert!(!ok("http://127.0.0.1:5101/files/a.png"));
        assert!(!ok("http://169.254.169.254/latest/meta-data"));
    }

    #[test]
    fn an_output_refusal_names_the_host() {
        let s = UrlPolicy::provider_outputs(&["cdn.example.com".into()]);
        assert!(s.check("https://cdn.example.com:8443/a.png").is_ok());
        assert_eq!(
            s.check("http://169.254.169.254/x").unwrap_err().to_string(),
            "169.254.169.254"
        );
        assert_eq!(s.check("not a url"), Err(Refused::Unparseable));
        assert_eq!(
            s.check("data:image/png;base64,AA"),
            Err(Refused::NotAllowed(String::new()))
        );
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
}
