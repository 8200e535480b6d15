//! Fixed one-minute windows per user and route, counted in the records table.
//! Each request is one atomic conditional update (`ADD count 1` only while
//! `count < max`), so however many arrive at once, exactly `max` per window
//! are admitted. A window's item expires shortly after the window ends.
//!
//! Reads are admitted by [`ReadWindows`], this instance's view of their
//! windows, and counted in the table after their answer: a read never waits
//! for DynamoDB, at the price of a little slack across instances.

use std::{collections::HashMap, sync::Mutex};

use aws_sdk_dynamodb::types::ReturnValue;
use uuid::Uuid;

use super::{RecordsTable, Unavailable, n, number, s};

/// Length of a window in seconds.
pub const WINDOW_SECS: i64 = 60;

/// The outcome of one request against its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (false once `limit` were admitted this window).
    pub allowed: bool,
    /// Requests admitted per window.
    pub limit: u32,
    /// Requests still admitted in this window after this one.
    pub remaining: u32,
    /// Seconds until the window ends (1–60).
    pub reset_secs: i64,
}

/// The start of the window holding `now` (epoch seconds).
fn window_start(now: i64) -> i64 {
    now - now.rem_euclid(WINDOW_SECS)
}

/// Counts a request of `user` on `route` at `now` (epoch seconds) against `max` per window.
pub async fn check(
    table: &RecordsTable,
    user: Uuid,
    route: &str,
    max: u32,
    now: i64,
) -> Result<Decision, Unavailable> {
    let start = window_start(now);
    let mut decision = Decision {
        allowed: false,
        limit: max,
        remaining: 0,
        reset_secs: start + WINDOW_SECS - now,
    };
    if max == 0 {
        return Ok(decision);
    }
    let res = table
        .client()
        .await
        .update_item()
        .table_name(table.name())
        .key("pk", s(format!("ratelimit#{user}#{route}")))
        .key("sk", s(start.to_string()))
        .update_expression("ADD #count :one SET expiresAt = :expires")
        .condition_expression("attribute_not_exists(#count) OR #count < :max")
        .expression_attribute_names("#count", "count")
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":max", n(max))
        .expression_attribute_values(":expires", n(start + 2 * WINDOW_SECS))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await;
    match res {
        Ok(out) => {
            let count = out
                .attributes()
                .and_then(|a| number(a, "count"))
                .unwrap_or(i64::from(max));
            decision.allowed = true;
            decision.remaining = u32::try_from(i64::from(max) - count).unwrap_or(0);
            Ok(decision)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(decision)
        }
        Err(e) => Err(Unavailable::from_sdk(e)),
    }
}

/// This instance's reads per user and route in the current window: how many
/// it admitted, and the least `remaining` the table answered for them (none
/// left: the window is full across instances). A read is refused when either
/// leaves nothing; one that is admitted is then counted in the table
/// ([`check`]) and its answer learnt ([`ReadWindows::learn`]). In one instance the limit is exact; with
/// several, each may admit a few more (those still being counted when the
/// window filled) before it learns.
#[derive(Debug, Default)]
pub struct ReadWindows(Mutex<HashMap<(Uuid, String), Seen>>);

/// What an instance knows of one window.
#[derive(Debug, Clone, Copy)]
struct Seen {
    start: i64,
    /// Reads admitted here.
    admitted: u32,
    /// Of them, those whose count the table has answered.
    learned: u32,
    /// The least `remaining` the table has answered (`None`: no answer yet).
    remaining: Option<u32>,
}

/// Windows kept before those of past windows are dropped.
const KEPT_WINDOWS: usize = 10_000;

impl ReadWindows {
    /// Admits (and counts here) a read of `user` on `route` at `now`, unless this
    /// instance admitted `max` in the window or the table said it is full.
    pub fn admit(&self, user: Uuid, route: &str, max: u32, now: i64) -> Decision {
        let start = window_start(now);
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= KEPT_WINDOWS {
            windows.retain(|_, seen| seen.start == start);
        }
        let fresh = Seen {
            start,
            admitted: 0,
            learned: 0,
            remaining: None,
        };
        let seen = windows.entry((user, route.to_string())).or_insert(fresh);
        if seen.start != start {
            *seen = fresh;
        }
        // The table's last word, less the reads admitted here that it has not counted yet.
        let unlearned = seen.admitted - seen.learned;
        let table_left = seen
            .remaining
            .map_or(u32::MAX, |r| r.saturating_sub(unlearned));
        let left = max.saturating_sub(seen.admitted).min(table_left);
        let allowed = left > 0;
        if allowed {
            seen.admitted += 1;
        }
        Decision {
            allowed,
            limit: max,
            remaining: left.saturating_sub(u32::from(allowed)),
            reset_secs: start + WINDOW_SECS - now,
        }
    }

    /// Learns the table's count of a read admitted at `now`: a refusal fills the window here.
    pub fn learn(&self, user: Uuid, route: &str, now: i64, counted: &Decision) {
        let start = window_start(now);
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = windows.get_mut(&(user, route.to_string()))
            && seen.start == start
        {
            let remaining = if counted.allowed {
                counted.remaining
            } else {
                0
            };
            seen.remaining = Some(seen.remaining.map_or(remaining, |r| r.min(remaining)));
            seen.learned = (seen.learned + 1).min(seen.admitted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(allowed: bool, remaining: u32) -> Decision {
        Decision {
            allowed,
            limit: 3,
            remaining,
            reset_secs: 1,
        }
    }

    #[test]
    fn an_instance_admits_at_most_the_limit_per_window_and_route() {
        let (w, user) = (ReadWindows::default(), Uuid::new_v4());
        let admitted: Vec<bool> = (0..4)
            .map(|_| w.admit(user, "GET /a", 3, 120).allowed)
            .collect();
        assert_eq!(admitted, [true, true, true, false]);
        assert!(w.admit(user, "GET /b", 3, 120).allowed, "another route");
        assert!(
            w.admit(Uuid::new_v4(), "GET /a", 3, 120).allowed,
            "another user"
        );
        assert!(w.admit(user, "GET /a", 3, 180).allowed, "the next window");
        assert_eq!(w.admit(user, "GET /a", 3, 181).remaining, 1);
    }

    #[test]
    fn a_refusal_from_the_table_fills_the_window_until_it_ends() {
        let (w, user) = (ReadWindows::default(), Uuid::new_v4());
        assert!(w.admit(user, "GET /a", 3, 60).allowed);
        // Other instances used the rest: the table refuses this one's count.
        w.learn(user, "GET /a", 61, &counted(false, 0));
        assert!(!w.admit(user, "GET /a", 3, 62).allowed);
        assert!(
            w.admit(user, "GET /a", 3, 120).allowed,
            "a new window starts afresh"
        );
        // A late answer about the past window changes nothing now.
        w.learn(user, "GET /a", 119, &counted(false, 0));
        assert!(w.admit(user, "GET /a", 3, 121).allowed);
    }

    #[test]
    fn the_table_s_remaining_bounds_what_is_left_here() {
        let (w, user) = (ReadWindows::default(), Uuid::new_v4());
        assert_eq!(w.admit(user, "GET /a", 3, 0).remaining, 2);
        w.learn(user, "GET /a", 0, &counted(true, 1));
        let d = w.admit(user, "GET /a", 3, 1);
        assert_eq!((d.allowed, d.remaining), (true, 0));
        assert!(!w.admit(user, "GET /a", 3, 2).allowed);
    }
}
