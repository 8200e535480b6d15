//! Stripe's webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`,
//! HMAC-SHA256 over `{t}.{raw body}` keyed with the whole `whsec_…` secret as
//! UTF-8 bytes (not base64-decoded, unlike Standard Webhooks). Any `v1` may
//! match (secret rotation); compared in constant time; 300 s tolerance.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::signing;

/// How far a signature's timestamp may be from now (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or no `t=` and `v1=` in it.
    #[error("no Stripe-Signature header, or no t= and v1= in it")]
    Missing,
    /// The timestamp is more than `TOLERANCE_SECS` from now.
    #[error("timestamp outside tolerance")]
    Stale,
    /// No `v1` signature matches the body.
    #[error("no matching signature")]
    Mismatch,
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Stripe-Signature` header value for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex(&mac(secret, &timestamp.to_string(), body))
    )
}

/// Checks a delivery's `Stripe-Signature` header against its raw body at `now` (unix seconds).
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => candidates.push(sig),
            _ => {}
        }
    }
    let ts = timestamp.ok_or(SignatureError::Missing)?;
    if candidates.is_empty() {
        return Err(SignatureError::Missing);
    }
    if !signing::fresh(ts, now, TOLERANCE_SECS) {
        return Err(SignatureError::Stale);
    }
    let expected = hex(&mac(secret, ts, body));
    if signing::any_matches(candidates, expected.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_picture_local_stripe_simulator";

    #[test]
    fn a_signed_body_verifies_within_tolerance_only() {
        let body = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
        let header = sign(SECRET, 1_700_000_000, body);
        assert_eq!(verify(SECRET, Some(&header), body, 1_700_000_100), Ok(()));
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(&header), b"{}", 1_700_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", Some(&header), body, 1_700_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(SECRET, None, body, 0), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, Some("t=1700000000"), body, 1_700_000_000),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn the_key_is_the_whole_secret_not_its_base64_and_any_v1_may_match() {
        // Known answer (Python: hmac.new(b"whsec_test", b"1.{}", sha256).hexdigest()).
        assert_eq!(
            hex(&mac("whsec_test", "1", b"{}")),
            "7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094"
        );
        let body = b"{}";
        let good = sign(SECRET, 50, body);
        let rotated = format!(
            "t=50,v1={},{}",
            "0".repeat(64),
            good.split_once(',').unwrap().1
        );
        assert_eq!(verify(SECRET, Some(&rotated), body, 60), Ok(()));
    }
}
