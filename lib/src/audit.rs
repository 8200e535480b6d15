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
//! A completed generation has exactly one image row unless its user deleted
//! the image (`generations.image_deleted_at`, set with the row's deletion);
//! an object left behind by such a delete is an orphan.

use std::{collections::HashMap, fmt};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    AppState, Error,
    config::CreditsProvider,
    db::audit::{self as rows, Account, GenRow, Quota},
    storage::ImageKey,
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
    pub generations: usize,
    pub objects: usize,
    pub accounts: usize,
    pub quotas: usize,
    pub purchases: usize,
}

/// The outcome of a run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub checked: Checked,
    pub violations: Vec<Violation>,
}

/// One broken invariant. `kind` is stable (alerts and scripts match on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub kind: &'static str,
    pub user_id: Option<Uuid>,
    pub generation_id: Option<Uuid>,
    pub image_id: Option<Uuid>,
    pub key: Option<String>,
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

/// The scheduled audit: the users with generations since `since`, one at a
/// time in random order (their records, and only their prefix of the bucket:
/// never a listing of the whole bucket), until `until`. Returns what was
/// found and whether every such user was audited; a partial run still
/// reports, so the metric never goes silent.
pub async fn recent(
    st: &AppState,
    since: DateTime<Utc>,
    until: std::time::Instant,
) -> Result<(Report, bool), Error> {
    let users = rows::recent_users(&**st.db.get().await?, since).await?;
    let mut report = Report::default();
    for user in users {
        let filter = Filter {
            since: Some(since),
            user: Some(user),
        };
        let Ok(found) = tokio::time::timeout_at(until.into(), run(st, &filter)).await else {
            return Ok((report, false));
        };
        let found = found?;
        let (c, f) = (&mut report.checked, found.checked);
        c.generations += f.generations;
        c.objects += f.objects;
        c.accounts += f.accounts;
        c.quotas += f.quotas;
        c.purchases += f.purchases;
        report.violations.extend(found.violations);
    }
    Ok((report, true))
}

/// One audit run over the stores, narrowed by `filter`.
pub async fn run(st: &AppState, filter: &Filter) -> Result<Report, Error> {
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

/// Checks a generation's rows and the objects found under its id.
fn check_generation(g: &GenRow, keys: &[String], ledger: bool, out: &mut Vec<Violation>) {
    for img in &g.images {
        let of = |kind, msg: String, key: &str| Violation {
            image_id: Some(img.id),
            ..Violation::of(kind, g, msg).key(key)
        };
        if g.status != "completed" {
            let msg = format!("a {} generation has an image row", g.status);
            out.push(of("image_of_unfinished", msg, &img.key));
            continue;
        }
        let objects = [
            (Some(&img.key), "image"),
            (img.thumbnail.as_ref(), "thumbnail"),
        ];
        for (key, what) in objects {
            if let Some(key) = key.filter(|k| !keys.contains(k)) {
                let msg = format!("the {what}'s S3 object is missing");
                out.push(of("missing_object", msg, key));
            }
        }
        if img.thumbnail_pending == Some(true) {
            let msg = "its image has had no thumbnail for over an hour".to_string();
            out.push(of("thumbnail_overdue", msg, &img.key));
        }
    }
    if g.images.is_empty() && g.status == "completed" && !g.image_deleted {
        out.push(Violation::of(
            "image_missing",
            g,
            "a completed generation has no image row",
        ));
    }
    let delivered = g.hold.as_ref().and_then(|h| h.delivered);
    let rows = g.images.len();
    if let Some(d) = delivered
        .filter(|d| rows > 0 && rows < usize::try_from(*d).unwrap_or(0) && !g.image_deleted)
    {
        let msg = format!("{rows} image rows, {d} charged");
        out.push(Violation::of("image_missing", g, msg));
    }
    if let Some(delivered) = delivered.filter(|d| g.images.len() > usize::try_from(*d).unwrap_or(0))
    {
        let msg = format!("{} image rows, {delivered} charged", g.images.len());
        out.push(Violation::of("uncharged_image", g, msg));
    }
    if g.is_open() && g.batch_cancelled {
        let msg = format!("{}, its batch cancelled over an hour ago", g.status);
        out.push(Violation::of("open_in_cancelled_batch", g, msg));
    }
    if g.overdue {
        let msg = format!("{} past the deadline plus one reconciler run", g.status);
        out.push(Violation::of("overdue", g, msg));
    }
    check_hold(g, ledger, out);
    check_objects(g, keys, out);
}

/// Checks a generation's credit hold against its status.
fn check_hold(g: &GenRow, ledger: bool, out: &mut Vec<Violation>) {
    let Some(h) = &g.hold else {
        out.push(Violation::of("hold_missing", g, "no credit hold"));
        return;
    };
    let msg = |what: &str| {
        format!(
            "{} generation, {} {} hold: {what}",
            g.status, h.kind, h.state
        )
    };
    match (g.status.as_str(), h.state.as_str()) {
        ("queued" | "pending" | "processing", _) => {}
        (_, "held") => out.push(Violation::of("open_hold", g, msg("still held"))),
        ("completed", "captured") => {
            let once = match (h.kind.as_str(), ledger) {
                // All of it on free slots: nothing to capture.
                ("credits", _) if h.amount == 0 => g.ledger_capture.is_none(),
                ("credits", true) => g.ledger_capture == Some(i64::from(h.amount)),
                ("credits", false) => h.capture_state.is_some(),
                _ => g.ledger_capture.is_none(),
            };
            if !once {
                let what = format!("ledger capture {:?}", g.ledger_capture);
                out.push(Violation::of("capture", g, msg(&what)));
            }
        }
        ("completed", _) => out.push(Violation::of("hold_not_captured", g, msg("not captured"))),
        (_, "captured") => out.push(Violation::of("hold_not_released", g, msg("charged"))),
        _ => {}
    }
}

/// Objects under a generation's id: fine if open, or if it is one of the
/// completed generation's images or a thumbnail a row names (or is making); an
/// object of a failed or cancelled one is reported as such, anything else is an orphan.
fn check_objects(g: &GenRow, keys: &[String], out: &mut Vec<Violation>) {
    let prefix = format!("users/{}/images/{}.", g.user_id, g.id);
    for key in keys {
        let known = g.images.iter().any(|img| {
            // A thumbnail being made is stored before its row names it.
            let thumbnail_to_be = img.thumbnail_pending.is_some()
                && *key == crate::storage::Storage::thumbnail_key(&img.key);
            img.key == *key || img.thumbnail.as_ref() == Some(key) || thumbnail_to_be
        });
        let v = if !key.starts_with(&prefix) {
            orphan(key, "under another user's prefix")
        } else if g.is_open() || known {
            continue;
        } else if g.status == "completed" {
            orphan(key, "no image row has this key")
        } else {
            let msg = format!("an object of a {} generation", g.status);
            Violation::of("object_of_unfinished", g, msg).key(key)
        };
        out.push(Violation {
            generation_id: Some(g.id),
            ..v
        });
    }
}

fn orphan(key: &str, why: &str) -> Violation {
    let user = key
        .strip_prefix("users/")
        .and_then(|r| r.split('/').next())
        .and_then(|u| Uuid::parse_str(u).ok());
    Violation {
        user_id: user,
        ..Violation::new("orphan_object", format!("orphan object: {why}")).key(key)
    }
}

/// Whether a finding is about objects and image rows (which a deletion under
/// way removes in steps, so they are not checked for its user).
fn is_object_finding(kind: &str) -> bool {
    matches!(
        kind,
        "missing_object" | "orphan_object" | "object_of_unfinished"
    )
}

/// Drops object findings that no longer hold (the store moved on during the run).
async fn recheck_objects(st: &AppState, violations: &mut Vec<Violation>) -> Result<(), Error> {
    let mut kept = Vec::with_capacity(violations.len());
    for v in violations.drain(..) {
        let expect_present = match v.kind {
            "missing_object" => false,
            "orphan_object" | "object_of_unfinished" => true,
            _ => {
                kept.push(v);
                continue;
            }
        };
        let key = v.key.as_deref().unwrap_or_default();
        if st.storage.exists(key).await? == expect_present {
            kept.push(v);
        }
    }
    *violations = kept;
    Ok(())
}

/// Image objects in the bucket, by the generation id in their key.
#[derive(Debug, Default)]
struct Objects {
    by_generation: HashMap<Uuid, Vec<String>>,
    /// Keys under `users/*/images/` that are not `{userId}/images/{generationId}.{ext}`.
    unparsed: Vec<String>,
    count: usize,
}

async fn list_objects(st: &AppState, filter: &Filter) -> Result<Objects, Error> {
    let prefix = filter
        .user
        .map_or_else(|| "users/".to_string(), |u| format!("users/{u}/"));
    let since = filter.since.map_or(i64::MIN, |t| t.timestamp());
    let mut objects = Objects::default();
    st.storage
        .list(&prefix, |key, modified| {
            if modified < since {
                return;
            }
            match ImageKey::parse(key).map(|k| k.map(|k| k.generation_id)) {
                None => {}
                Some(Ok(id)) => objects
                    .by_generation
                    .entry(id)
                    .or_default()
                    .push(key.into()),
                Some(Err(())) => objects.unparsed.push(key.into()),
            }
            objects.count += 1;
        })
        .await?;
    Ok(objects)
}

fn check_account(a: &Account, out: &mut Vec<Violation>) {
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
fn check_purchase(p: &rows::PurchaseRow, out: &mut Vec<Violation>) {
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
fn count_violation(c: &rows::Counts) -> Violation {
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

fn check_quota(q: &Quota, limit: i64, out: &mut Vec<Violation>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::audit::{Hold, ImageRow};

    fn image(key: &str, thumbnail: Option<&str>) -> ImageRow {
        ImageRow {
            id: Uuid::new_v4(),
            key: key.into(),
            thumbnail: thumbnail.map(Into::into),
            thumbnail_pending: None,
        }
    }

    fn completed(user: Uuid, id: Uuid, key: &str) -> GenRow {
        GenRow {
            id,
            user_id: user,
            status: "completed".into(),
            images: vec![image(key, None)],
            hold: Some(Hold {
                kind: "credits".into(),
                state: "captured".into(),
                amount: 10,
                capture_state: Some("done".into()),
                delivered: Some(1),
            }),
            ledger_capture: Some(10),
            overdue: false,
            image_deleted: false,
            batch_cancelled: false,
        }
    }

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

    #[test]
    fn image_keys_are_recognised() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let key = |thumbnail| ImageKey {
            user_id: u,
            generation_id: g,
            thumbnail,
        };
        let parse = |k: String| ImageKey::parse(&k);
        assert_eq!(
            parse(format!("users/{u}/images/{g}.webp")),
            Some(Ok(key(false)))
        );
        assert_eq!(
            parse(format!("users/{u}/images/{g}.thumb.webp")),
            Some(Ok(key(true)))
        );
        assert_eq!(
            parse(format!("users/{u}/images/{g}.3.png")),
            Some(Ok(key(false)))
        );
        assert_eq!(
            parse(format!("users/{u}/images/{g}.3.thumb.webp")),
            Some(Ok(key(true)))
        );
        assert_eq!(parse(format!("users/{u}/images/junk.png")), Some(Err(())));
        assert_eq!(parse(format!("users/junk/images/{g}.png")), Some(Err(())));
        assert_eq!(parse(format!("users/{u}/uploads/{g}.png")), None);
    }

    #[test]
    fn a_completed_generation_needs_its_object_and_one_capture() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("users/{u}/images/{g}.png");
        let row = completed(u, g, &key);
        let mut out = Vec::new();
        check_generation(&row, std::slice::from_ref(&key), true, &mut out);
        assert_eq!(out, []);

        let stale = format!("users/{u}/images/{g}.jpg");
        check_generation(&row, std::slice::from_ref(&stale), true, &mut out);
        let kinds: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(
            kinds,
            [
                ("missing_object", Some(key.clone())),
                ("orphan_object", Some(stale))
            ]
        );

        out.clear();
        let uncharged = GenRow {
            ledger_capture: None,
            ..row.clone()
        };
        check_generation(&uncharged, std::slice::from_ref(&key), true, &mut out);
        assert_eq!(out.iter().map(|v| v.kind).collect::<Vec<_>>(), ["capture"]);
        assert!(
            out[0]
                .to_string()
                .starts_with(&format!("capture user={u} generation={g}"))
        );

        // No image row: a violation, unless the user deleted the image.
        out.clear();
        let lost = GenRow {
            images: Vec::new(),
            ..row.clone()
        };
        check_generation(&lost, &[], true, &mut out);
        assert_eq!(
            out.iter().map(|v| v.kind).collect::<Vec<_>>(),
            ["image_missing"]
        );
        out.clear();
        let deleted = GenRow {
            image_deleted: true,
            ..lost
        };
        check_generation(&deleted, &[], true, &mut out);
        assert_eq!(out, []);
    }

    #[test]
    fn a_thumbnail_its_row_names_is_expected_and_not_an_orphan() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("users/{u}/images/{g}.png");
        let thumb = format!("users/{u}/images/{g}.thumb.webp");
        let row = GenRow {
            images: vec![image(&key, Some(&thumb))],
            ..completed(u, g, &key)
        };
        let mut out = Vec::new();
        check_generation(&row, &[key.clone(), thumb.clone()], true, &mut out);
        assert_eq!(out, []);

        check_generation(&row, std::slice::from_ref(&key), true, &mut out);
        let found: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(found, [("missing_object", Some(thumb.clone()))]);

        // A thumbnail its row does not name (e.g. left by a backfill racing a delete) is an orphan.
        out.clear();
        check_generation(
            &completed(u, g, &key),
            &[key, thumb.clone()],
            true,
            &mut out,
        );
        let found: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(found, [("orphan_object", Some(thumb))]);
    }

    #[test]
    fn every_output_needs_its_object_and_a_charge() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let keys: Vec<String> = (0..3)
            .map(|i| crate::storage::Storage::key(u, g, i, "webp"))
            .collect();
        let thumb = crate::storage::Storage::thumbnail_key(&keys[2]);
        let mut row = completed(u, g, &keys[0]);
        row.images = vec![
            image(&keys[0], None),
            image(&keys[1], None),
            image(&keys[2], Some(&thumb)),
        ];
        row.hold.as_mut().unwrap().delivered = Some(3);
        let mut all = keys.clone();
        all.push(thumb.clone());
        let mut out = Vec::new();
        check_generation(&row, &all, true, &mut out);
        assert_eq!(out, []);

        check_generation(&row, &keys[..2], true, &mut out);
        let found: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(
            found,
            [
                ("missing_object", Some(keys[2].clone())),
                ("missing_object", Some(thumb))
            ]
        );

        out.clear();
        row.hold.as_mut().unwrap().delivered = Some(2);
        check_generation(&row, &all, true, &mut out);
        assert_eq!(
            out.iter().map(|v| v.kind).collect::<Vec<_>>(),
            ["uncharged_image"]
        );

        // Charged for four, three rows: one lost, unless the user deleted it.
        out.clear();
        row.hold.as_mut().unwrap().delivered = Some(4);
        check_generation(&row, &all, true, &mut out);
        assert_eq!(
            out.iter().map(|v| v.kind).collect::<Vec<_>>(),
            ["image_missing"]
        );
        out.clear();
        row.image_deleted = true;
        check_generation(&row, &all, true, &mut out);
        assert_eq!(out, []);
    }
}
