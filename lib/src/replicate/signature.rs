//! Replicate's webhook signatures (the Standard Webhooks scheme):
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the
//! base64 key after `whsec_`, sent as space-separated `v1,<base64>` entries.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::signing;

/// How far a webhook timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `webhook-id`, `webhook-timestamp` or `webhook-signature` header is absent.
    #[error("missing webhook header")]
    MissingHeader,
    /// The secret is not `whsec_` and base64.
    #[error("malformed secret")]
    BadSecret,
    /// The timestamp is unreadable or more than `TOLERANCE_SECS` from now.
    #[error("timestamp outside tolerance")]
    Stale,
    /// No `v1` signature matches the body.
    #[error("no matching signature")]
    Mismatch,
}

fn mac(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or(SignatureError::BadSecret)?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::BadSecret)?;
    let mut m = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SignatureError::BadSecret)?;
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    Ok(m.finalize().into_bytes().to_vec())
}

/// The `webhook-signature` header value for a delivery.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac(secret, id, &timestamp.to_string(), body)?)
    ))
}

/// Checks a delivery's headers against the body at time `now` (unix seconds).
pub fn verify(
    secret: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(id), Some(ts), Some(sigs)) = (id, timestamp, signatures) else {
        return Err(SignatureError::MissingHeader);
    };
    if !signing::fresh(ts, now, TOLERANCE_SECS) {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, id, ts, body)?;
    let candidates = sigs
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok());
    if signing::any_matches(candidates, &expected) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn matches_the_published_example() {
        assert_eq!(
            sign(SECRET, ID, TS, BODY).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let header = "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            verify(
                SECRET,
                Some(ID),
                Some(&TS.to_string()),
                Some(header),
                BODY,
                TS + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn any_change_is_refused() {
        let sig = sign(SECRET, ID, TS, BODY).unwrap();
        let ts = TS.to_string();
        let check = |id, ts: &str, body: &[u8], now| {
            verify(SECRET, Some(id), Some(ts), Some(&sig), body, now)
        };
        assert_eq!(
            check(ID, &ts, br#"{"test": 2432232315}"#, TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("msg_other", &ts, BODY, TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(ID, &(TS + 1).to_string(), BODY, TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(ID, &ts, BODY, TS + TOLERANCE_SECS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(ID, &ts, BODY, TS - TOLERANCE_SECS - 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(ID), None, Some(&sig), BODY, TS),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verify("nope", Some(ID), Some(&ts), Some(&sig), BODY, TS),
            Err(SignatureError::BadSecret)
        );
    }
}
