//! The audit of money and counters: ledger accounts against their entries,
//! purchases against their grants and take-backs, the history counters
//! against the rows, and free quotas against the free slots holds use.

use super::Violation;
use crate::db::audit::{self as rows, Account, Quota};

pub(super) fn check_account(a: &Account, out: &mut Vec<Violation>) {
    let user = |v: Violation| Violation {
        user_id: Some(a.user_id),
        ..v
    };
    // Only a take-back (of credits already spent) may leave a balance below zero.
    if a.balance < 0 && a.takebacks == 0 {
        out.push(user(Violation::new(
            "negative_balance",
            format!("balance {}", a.balance),
        )));
    }
    let expected = (
        a.earned - a.captures + a.refunds,
        a.earned,
        a.captures - a.refunds,
    );
    if (a.balance, a.total_earned, a.total_spent) != expected {
        let msg = format!(
            "balance/earned/spent {}/{}/{}, but the transactions give {}/{}/{} \
             (earned {}, captures {}, refunds {})",
            a.balance,
            a.total_earned,
            a.total_spent,
            expected.0,
            expected.1,
            expected.2,
            a.earned,
            a.captures,
            a.refunds
        );
        out.push(user(Violation::new("ledger", msg)));
    }
}

/// A granted purchase has exactly one grant of its pack's credits; no other
/// has any; take-backs never exceed what was granted (and reinstated).
pub(super) fn check_purchase(p: &rows::PurchaseRow, out: &mut Vec<Violation>) {
    let violation = |kind, msg: String| Violation {
        user_id: Some(p.user_id),
        key: Some(p.session_id.clone()),
        ..Violation::new(kind, msg)
    };
    let granted = p.status == "granted";
    if granted && (p.grants != 1 || p.granted != p.credits) {
        let msg = format!(
            "granted, with {} grant entries of {} credits in all (the pack has {})",
            p.grants, p.granted, p.credits
        );
        out.push(violation("purchase_grant", msg));
    }
    if !granted && p.grants > 0 {
        let msg = format!("{} but {} credits were granted", p.status, p.granted);
        out.push(violation("grant_without_payment", msg));
    }
    if p.takebacks > p.credits + p.reinstated {
        let msg = format!(
            "{} credits taken back of {} (+{} reinstated)",
            p.takebacks, p.credits, p.reinstated
        );
        out.push(violation("takeback_over_purchase", msg));
    }
}

/// A user's history counters (`generation_counts`) that differ from their rows.
pub(super) fn count_violation(c: &rows::Counts) -> Violation {
    let by_status = |n: &[i64]| {
        let parts: Vec<_> = rows::COUNTED_STATUSES
            .iter()
            .zip(n)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        parts.join(", ")
    };
    let msg = format!(
        "generation_counts says {}; the rows say {}",
        by_status(&c.kept),
        by_status(&c.counted)
    );
    Violation {
        user_id: Some(c.user_id),
        ..Violation::new("generation_count", msg)
    }
}

pub(super) fn check_quota(q: &Quota, limit: i64, out: &mut Vec<Violation>) {
    let user = |v: Violation| Violation {
        user_id: Some(q.user_id),
        ..v
    };
    if q.free_holds > limit {
        let msg = format!(
            "{} free holds held or captured, the limit is {limit}",
            q.free_holds
        );
        out.push(user(Violation::new("free_over_limit", msg)));
    }
    if i64::from(q.free_used.unwrap_or(0)) != q.free_holds {
        let msg = format!(
            "user_quotas.free_used is {:?}, but {} free holds are held or captured",
            q.free_used, q.free_holds
        );
        out.push(user(Violation::new("free_used", msg)));
    }
}
