//! What the webhook signature schemes we accept (Replicate's Standard
//! Webhooks, Stripe's) check alike: a timestamp close to now, and any one of
//! the signatures sent equal to ours, compared in constant time. Each scheme
//! keeps its own header format and MAC input (`replicate::signature`,
//! `stripe::signature`).

use subtle::ConstantTimeEq;

/// Whether `sent` (unix seconds, as the header gives it) is within `tolerance` seconds of `now`.
pub fn fresh(sent: &str, now: i64, tolerance: i64) -> bool {
    sent.parse::<i64>()
        .is_ok_and(|sent| (now - sent).abs() <= tolerance)
}

/// Whether any of `candidates` equals `expected`, each compared in constant time.
pub fn any_matches<C: AsRef<[u8]>>(
    candidates: impl IntoIterator<Item = C>,
    expected: &[u8],
) -> bool {
    candidates
        .into_iter()
        .any(|c| bool::from(c.as_ref().ct_eq(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_within_tolerance_only() {
        assert!(fresh("1000", 1300, 300));
        assert!(fresh("1300", 1000, 300));
        assert!(!fresh("1000", 1301, 300));
        assert!(!fresh("soon", 1000, 300));
    }

    #[test]
    fn any_candidate_may_match() {
        assert!(any_matches(["a", "b"], b"b"));
        assert!(!any_matches(["a", "bb"], b"b"));
        assert!(!any_matches(Vec::<&str>::new(), b"b"));
    }
}
