//! The stores' invariants, checked against what is really there (`make audit`):
//! generations, images, credit holds and the ledger in PostgreSQL, image
//! objects in S3.
//!
//! It scales with the stores: rows are streamed (never a whole table in
//! memory), the bucket is listed by prefix (no HEAD per image), and the two are
//! joined in memory by key. Objects that look wrong are checked once more at
//! the end (one HEAD each), so a generation that completes or an image deleted
//! while the audit runs is not reported.
//!
//! A completed generation has an image row per output charged unless its user
//! deleted one (`generations.image_deleted_at`, set with the row's deletion);
//! an object left behind by such a delete is an orphan. The checks of
//! generations and their objects are in [`generations`], those of money and
//! counters (ledger accounts, purchases, quotas, history counts) in [`accounts`].
//!
//! Domain: may import the adapters (`db`, `storage`) and the platform; never
//! the edge (`api`, `web`).

mod accounts;
mod generations;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    AppState, Error,
    config::CreditsProvider,
    db::audit::{self as rows, GenRow},
};
use accounts::{check_account, check_purchase, check_quota, count_violation};
use generations::{
    check_generation, check_objects, is_object_finding, list_objects, orphan, recheck_objects,
};

/// What to audit: everything by default.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only generations created, and objects written, at or after this time
    /// (per-user checks of the ledger and free quota always cover all history).
    pub since: Option<DateTime<Utc>>,
    /// Only this user's records and the objects under `users/{user}/`.
    pub user: Option<Uuid>,
}

/// Parses `--since`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    crate::usage::parse_time(s, chrono::TimeDelta::zero()).map_err(|e| format!("--since: {e}"))
}

/// How much was looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// Generation rows checked.
    pub generations: usize,
    /// Objects listed under the audited prefix (of any kind).
    pub objects: usize,
    /// Ledger accounts checked.
    pub accounts: usize,
    /// Free-generation quotas checked.
    pub quotas: usize,
    /// Purchases checked.
    pub purchases: usize,
}

/// The outcome of a run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// How much was looked at.
    pub checked: Checked,
    /// Every broken invariant found (objects checked once more first).
    pub violations: Vec<Violation>,
}

/// One broken invariant. `kind` is stable (alerts and scripts match on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Which invariant (`orphan_object`, `hold_not_captured`, `overdue`, …).
    pub kind: &'static str,
    /// The user it concerns, if known.
    pub user_id: Option<Uuid>,
    /// The generation it concerns, if any.
    pub generation_id: Option<Uuid>,
    /// The image row it concerns, if any.
    pub image_id: Option<Uuid>,
    /// The object key it concerns, if any.
    pub key: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        let ids = [
            ("user", self.user_id),
            ("generation", self.generation_id),
            ("image", self.image_id),
        ];
        for (name, id) in ids {
            if let Some(id) = id {
                write!(f, " {name}={id}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, " key={key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Violation {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Violation {
            kind,
            user_id: None,
            generation_id: None,
            image_id: None,
            key: None,
            message: message.into(),
        }
    }

    fn of(kind: &'static str, g: &GenRow, message: impl Into<String>) -> Self {
        Violation {
            user_id: Some(g.user_id),
            generation_id: Some(g.id),
            ..Violation::new(kind, message)
        }
    }

    fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }
}

/// Most users audited at the same time by [`recent`] (their bucket listings run
/// side by side); never more than the instance's database pool holds.
const RECENT_PARALLEL: usize = 4;

/// The scheduled audit: the users with generations since `since`, a few at a
/// time in random order (their records, and only their prefix of the bucket:
/// never a listing of the whole bucket), until `until`. Returns what was
/// found and whether every such user was audited; a partial run still
/// reports, so the metric never goes silent: a user whose audit fails is
/// logged and left out (the run is then partial), the others still count.
pub async fn recent(
    st: &AppState,
    since: DateTime<Utc>,
    until: std::time::Instant,
) -> Result<(Report, bool), Error> {
    use futures_util::StreamExt;
    let users = rows::recent_users(&**st.db.get().await?, since).await?;
    let audit = |user| async move {
        let filter = Filter {
            since: Some(since),
            user: Some(user),
        };
        (user, inspect(st, &filter).await)
    };
    let parallel = RECENT_PARALLEL.min(st.cfg.database_pool_size).max(1);
    let mut audits = futures_util::stream::iter(users)
        .map(audit)
        .buffer_unordered(parallel);
    let (mut report, mut complete) = (Report::default(), true);
    loop {
        let found = match tokio::time::timeout_at(until.into(), audits.next()).await {
            Err(_) => return Ok((report, false)),
            Ok(None) => return Ok((report, complete)),
            Ok(Some((_, Ok(found)))) => found,
            Ok(Some((user, Err(e)))) => {
                tracing::warn!(user_id = %user, error = %e, "user not audited; next hour");
                complete = false;
                continue;
            }
        };
        let (c, f) = (&mut report.checked, found.checked);
        c.generations += f.generations;
        c.objects += f.objects;
        c.accounts += f.accounts;
        c.quotas += f.quotas;
        c.purchases += f.purchases;
        report.violations.extend(found.violations);
    }
}

/// One audit run over the stores, narrowed by `filter`.
pub async fn inspect(st: &AppState, filter: &Filter) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut objects = list_objects(st, filter).await?;
    report.checked.objects = objects.count;
    let slack = (st.cfg.generation_deadline + st.cfg.reconcile_interval).as_secs_f64();
    let ledger = st.cfg.credits_provider == CreditsProvider::Ledger;
    let out = &mut report.violations;
    let db = st.db.get().await?;
    report.checked.generations = rows::generations(&**db, filter.since, filter.user, slack, |g| {
        let keys = objects.by_generation.remove(&g.id).unwrap_or_default();
        check_generation(&g, &keys, ledger, out);
    })
    .await?;
    let rest: Vec<Uuid> = objects.by_generation.keys().copied().collect();
    let known = rows::generations_by_id(&**db, &rest).await?;
    for (id, keys) in &objects.by_generation {
        match known.get(id) {
            Some(g) => check_objects(g, keys, out),
            None => out.extend(
                keys.iter()
                    .map(|k| orphan(k, "its generation does not exist")),
            ),
        }
    }
    out.extend(
        objects
            .unparsed
            .iter()
            .map(|k| orphan(k, "not a generation's key")),
    );
    report.checked.accounts =
        rows::accounts(&**db, filter.user, |a| check_account(&a, out)).await?;
    report.checked.purchases = rows::purchases(&**db, filter.user, filter.since, |p| {
        check_purchase(&p, out)
    })
    .await?;
    for (user_id, texts, images, uploads) in
        rows::deleted_users_leftovers(&**db, filter.user).await?
    {
        if texts + images + uploads > 0 {
            let msg = format!(
                "deleted, yet {texts} generations or batches keep their texts, {images} image rows, {uploads} uploads"
            );
            out.push(Violation {
                user_id: Some(user_id),
                ..Violation::new("deleted_user_data", msg)
            });
        }
    }
    let deleting = rows::users_being_deleted(&**db, filter.user).await?;
    out.retain(|v| {
        !(is_object_finding(v.kind) && v.user_id.is_some_and(|u| deleting.contains(&u)))
    });
    for (entry, user_id, session) in rows::stray_purchase_entries(&**db, filter.user).await? {
        let msg = format!("ledger entry {entry} names no purchase ({session:?})");
        out.push(Violation {
            user_id: Some(user_id),
            ..Violation::new("purchase_entry_without_purchase", msg)
        });
    }
    for c in rows::count_mismatches(&**db, filter.user).await? {
        out.push(count_violation(&c));
    }
    let limit = i64::from(st.cfg.free_generations);
    report.checked.quotas =
        rows::quotas(&**db, filter.user, |q| check_quota(&q, limit, out)).await?;
    drop(db);
    recheck_objects(st, &mut report.violations).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_a_time() {
        assert_eq!(
            parse_since("2026-03-01").unwrap().to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-03-01T12:30:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-03-01T10:30:00+00:00"
        );
        assert!(parse_since("yesterday").is_err());
    }
}
