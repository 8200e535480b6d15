//! The reconciler, run on a schedule: it finishes what the request paths could
//! not (docs/architecture.md, "Reconciler").
//!
//! - external credit captures that did not go through are retried first;
//! - paid Checkout Sessions without a grant (a lost payments webhook) are
//!   granted, and purchases Stripe expired are recorded so
//!   ([`crate::purchases::reconcile`]);
//! - generations still open after a grace period are checked with Replicate
//!   and settled through the one completion path (a webhook lost after
//!   Replicate's last retry must not lose the image);
//! - generations whose create call had an unknown outcome are matched to
//!   their prediction (searched among those created since, by the
//!   generation id in its webhook URL), or failed;
//! - a prediction the provider no longer knows (404 in two runs in a row)
//!   fails its generation; a refused token (401/403) is an alarm only;
//! - generations open past the deadline are cancelled at Replicate and
//!   failed, releasing their holds;
//! - account deletions left unfinished are carried on ([`crate::account`]);
//! - upload records older than two days (their objects expired after one)
//!   are forgotten;
//! - about once an hour (the run in the first reconcile interval of the hour)
//!   the users active over the last day are audited ([`crate::audit::recent`]:
//!   their records and bucket prefixes, in random order, as far as the time
//!   left allows), each violation logged and their number sent as the
//!   `AuditViolations` metric, even when only some users were audited.
//!
//! Work per run is bounded in count and time, items run a few at a time and
//! are isolated (one failure is logged and left for the next run), and runs
//! may overlap: each generation is claimed with `FOR UPDATE SKIP LOCKED` and
//! a one-minute claim, so two reconcilers never work on the same one.

use std::{sync::Arc, time::Instant};

use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    AppState, Error, Result, audit,
    db::{
        generations::{self, Generation, Status},
        uploads,
    },
    lifecycle, purchases,
    replicate::Prediction,
    telemetry::{self, metric},
    thumbnail,
};

/// Most generations looked at per run.
const BATCH: i64 = 50;
/// Generations worked on at the same time.
const PARALLEL: usize = 8;
/// Most prediction-list pages searched for an orphaned generation.
const SEARCH_PAGES: usize = 20;
/// How far back the hourly audit looks (a day, and the hour since the last one).
const AUDIT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(25);
/// How long upload records are kept: a day past their objects' expiry.
const UPLOADS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(2);
/// Capture retries get 1/CAPTURE_SHARE of a run's budget.
const CAPTURE_SHARE: u32 = 4;
/// Purchases, account deletions and late thumbnails get 1/SMALL_SHARE each: with the
/// captures' share, 5/8 of the budget at most, so generations are always claimed.
const SMALL_SHARE: u32 = 8;
/// Generations are claimed only with at least 1/CLAIM_SHARE of the run's budget left.
const CLAIM_SHARE: u32 = 4;
/// Images without a thumbnail this long after they were stored lost their event (or its
/// retries failed): the reconciler makes it.
const THUMBNAIL_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(2);
/// Thumbnails the reconciler makes per transaction.
const THUMBNAIL_BATCH: i64 = 4;
/// Runs in a row that must find a prediction unknown to the provider before its generation fails.
const MISSING_RUNS: i32 = 2;
/// Predictions created this long before a generation are searched too (clock skew).
const SEARCH_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Open generations looked at.
    pub checked: usize,
    /// Of those, how many ended in this run (completed, failed or cancelled).
    pub settled: usize,
    /// Of those, how many were failed for running past the deadline.
    pub timed_out: usize,
    /// Of those, how many could not be worked on now (left for the next run).
    pub errors: usize,
    /// External credit captures sent now, and still open.
    pub captures_settled: usize,
    /// External credit captures still open after this run (retried next run).
    pub captures_open: usize,
    /// Purchases granted (lost webhooks) and expired now.
    pub purchases: purchases::Reconciled,
    /// Account deletions finished now (their request did not finish them).
    pub deletions_finished: usize,
    /// Queued batch items started now (slots freed without anyone starting them).
    pub queued_started: usize,
    /// Items of cancelled batches cancelled now (their batch's cancel was cut short).
    pub batch_items_cancelled: usize,
    /// Exports finished now (their request ran out of time) and expired ones deleted.
    pub exports: crate::export::Reconciled,
    /// Upload records forgotten (older than [`UPLOADS_KEPT`]).
    pub uploads_forgotten: u64,
    /// Thumbnails made for images whose own attempt was lost (stored over [`THUMBNAIL_GRACE`] ago).
    pub thumbnails: thumbnail::Backfilled,
    /// Broken invariants found, when this run audited the stores.
    pub audit_violations: Option<usize>,
}

/// What happened to one generation.
enum Outcome {
    Open,
    Settled,
    TimedOut,
}

/// One reconciler run, within the function's time budget.
pub async fn sweep(st: &AppState) -> Result<Report> {
    let budget = st.cfg.request_budget();
    let deadline = Instant::now() + budget;
    let mut report = Report::default();
    // Captures first: they are money already earned, and usually quick; but a hanging
    // credit service must not take the time that lost webhooks need (Replicate deletes
    // outputs after an hour), so they get a share of the budget.
    let retried = async {
        let db = st.db.get().await?;
        st.credits.retry_captures(&**db, BATCH).await
    };
    let captures_until = Instant::now() + budget / CAPTURE_SHARE;
    match tokio::time::timeout_at(captures_until.into(), retried).await {
        Ok(Ok((settled, open))) => {
            (report.captures_settled, report.captures_open) = (settled, open)
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "capture retries failed; next run"),
        Err(_) => tracing::warn!("capture retries ran out of their time; next run"),
    }

    // Paid sessions whose webhook was lost, and expired ones (a small share of the budget).
    let purchases_until = Instant::now() + budget / SMALL_SHARE;
    match tokio::time::timeout_at(purchases_until.into(), purchases::reconcile(st)).await {
        Ok(Ok(done)) => report.purchases = done,
        Ok(Err(e)) => tracing::warn!(error = %e, "purchases not reconciled; next run"),
        Err(_) => tracing::warn!("purchases ran out of their time; next run"),
    }

    // Account deletions whose request ran out of time or died mid-way.
    let deletions_until = Instant::now() + budget / SMALL_SHARE;
    match tokio::time::timeout_at(deletions_until.into(), crate::account::reconcile(st)).await {
        Ok(Ok(n)) => report.deletions_finished = n,
        Ok(Err(e)) => tracing::warn!(error = %e, "account deletions not finished; next run"),
        Err(_) => tracing::warn!("account deletions ran out of their time; next run"),
    }

    // Exports their request did not finish, and those past their day (a small share).
    let exports_until = Instant::now() + budget / SMALL_SHARE;
    match crate::export::reconcile(st, exports_until).await {
        Ok(done) => report.exports = done,
        Err(e) => tracing::warn!(error = %e, "exports not reconciled; next run"),
    }

    // Thumbnails whose event was lost: a small share (a batch cut short is rolled back,
    // its images stay pending for the next run).
    let thumbnails_until = Instant::now() + budget / SMALL_SHARE;
    let selection = thumbnail::Selection {
        stored_before: Some(chrono::Utc::now() - THUMBNAIL_GRACE),
        ..Default::default()
    };
    let made = thumbnail::backfill(st, THUMBNAIL_BATCH, selection);
    match tokio::time::timeout_at(thumbnails_until.into(), made).await {
        Ok(Ok(done)) => report.thumbnails = done,
        Ok(Err(e)) => tracing::warn!(error = %e, "thumbnails not made; next run"),
        Err(_) => tracing::warn!("thumbnails ran out of time; next run"),
    }

    let forgotten = async {
        let before = chrono::Utc::now() - UPLOADS_KEPT;
        uploads::delete_before(&**st.db.get().await?, before).await
    };
    match tokio::time::timeout_at(deadline.into(), forgotten).await {
        Ok(Ok(n)) => report.uploads_forgotten = n,
        Ok(Err(e)) => tracing::warn!(error = %e, "old uploads not forgotten; next run"),
        Err(_) => tracing::warn!("forgetting old uploads ran out of time; next run"),
    }

    let mut tasks = JoinSet::new();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    // A claim keeps other runs away for a minute: claim only what this run has time for.
    let claimed = if deadline.saturating_duration_since(Instant::now()) >= budget / CLAIM_SHARE {
        claim(st).await?
    } else {
        tracing::warn!("no time left to reconcile generations; next run");
        Vec::new()
    };
    for g in claimed {
        let (st, slots) = (st.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let id = g.id;
            let worked = tokio::time::timeout_at(deadline.into(), reconcile_one(&st, &g, deadline));
            let outcome = worked.await.unwrap_or(Err(Error::TimedOut("reconciler item")));
            if let Err(e) = &outcome {
                tracing::warn!(generation_id = %id, error = %e, "generation not reconciled; next run");
            }
            outcome
        });
    }
    while let Some(done) = tasks.join_next().await {
        report.checked += 1;
        match done {
            Ok(Ok(Outcome::Open)) => {}
            Ok(Ok(Outcome::Settled)) => report.settled += 1,
            Ok(Ok(Outcome::TimedOut)) => {
                report.settled += 1;
                report.timed_out += 1;
            }
            Ok(Err(_)) | Err(_) => report.errors += 1,
        }
    }
    // Items of batches whose cancel was cut short, then batch items left waiting while
    // their user has free slots (after the generations above ended), each within a small share.
    let cancel_until = deadline.min(Instant::now() + budget / SMALL_SHARE);
    let cancelled = tokio::time::timeout_at(cancel_until.into(), cancel_batch_items(st));
    match cancelled.await {
        Ok(Ok(n)) => report.batch_items_cancelled = n,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "items of cancelled batches not cancelled; next run")
        }
        Err(_) => tracing::warn!("cancelling items of cancelled batches ran out of time; next run"),
    }
    let queued_until = deadline.min(Instant::now() + budget / SMALL_SHARE);
    match start_queued(st, queued_until).await {
        Ok(n) => report.queued_started = n,
        Err(e) => tracing::warn!(error = %e, "queued items not started; next run"),
    }
    if audit_due(st.cfg.reconcile_interval, chrono::Utc::now()) {
        let since = chrono::Utc::now() - AUDIT_WINDOW;
        match audit::recent(st, since, deadline).await {
            Ok((found, complete)) => {
                for v in &found.violations {
                    tracing::error!(violation = %v, "audit violation");
                }
                let n = found.violations.len();
                telemetry::count(metric::AUDIT_VIOLATIONS, n as u64);
                report.audit_violations = Some(n);
                if !complete {
                    tracing::warn!(checked = ?found.checked, "audit ran out of time: a random part of the users was audited");
                }
            }
            Err(e) => tracing::warn!(error = %e, "audit failed; next hour"),
        }
    }
    tracing::info!(?report, "reconciler run");
    Ok(report)
}

/// Whether the run at `now` audits: the first of each hour's runs, `interval` apart.
fn audit_due(interval: std::time::Duration, now: chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Timelike;
    u64::from(now.minute()) * 60 + u64::from(now.second()) < interval.as_secs()
}

/// Cancels the open items of batches cancelled over a minute ago (a cancel
/// cut short); returns how many. One that fails is left for the next run.
async fn cancel_batch_items(st: &AppState) -> Result<usize> {
    let db = st.db.get().await?;
    let open = generations::open_in_cancelled_batches(&**db, 60.0, BATCH).await?;
    drop(db);
    let mut cancelled = 0;
    for g in &open {
        match crate::lifecycle::cancel(st, g).await {
            Ok(()) => cancelled += 1,
            Err(Error::NotCancellable(_)) => {}
            Err(e) => {
                tracing::warn!(generation_id = %g.id, error = %e, "item of a cancelled batch not cancelled; next run")
            }
        }
    }
    Ok(cancelled)
}

/// Starts queued items of users with free slots (up to [`BATCH`] users, the
/// longest waiting first), until `until`; a user whose start fails is left
/// for the next run.
async fn start_queued(st: &AppState, until: Instant) -> Result<usize> {
    let cap = st.cfg.max_in_flight_per_user;
    let users = generations::users_with_queued(&**st.db.get().await?, cap, BATCH).await?;
    let mut started = 0;
    for user in users {
        if Instant::now() >= until {
            break;
        }
        match crate::lifecycle::queue::start_next(st, user, until).await {
            Ok(n) => started += n,
            Err(e) => tracing::warn!(%user, error = %e, "queued items not started; next run"),
        }
    }
    Ok(started)
}

/// Claims open generations older than the grace period that no other run is looking at.
async fn claim(st: &AppState) -> Result<Vec<Generation>> {
    let grace = st.cfg.reconcile_grace.as_secs_f64();
    let db = st.db.get().await?;
    generations::claim_for_reconcile(&**db, grace, BATCH).await
}

async fn reconcile_one(st: &AppState, g: &Generation, deadline: Instant) -> Result<Outcome> {
    let age = (chrono::Utc::now() - g.created_at)
        .to_std()
        .unwrap_or_default();
    let past_deadline = age > st.cfg.generation_deadline;
    let db = || async { Ok::<_, Error>(st.db.get().await?) };
    // `searched`: the provider was asked and has no prediction for a generation without one.
    let (prediction, searched) = match &g.prediction_id {
        Some(id) => match st.replicate.get(id).await {
            Ok(p) => (Some(p), false),
            Err(e) if e.is_not_found() => {
                let runs = generations::note_prediction_missing(&**db().await?, g.id).await?;
                telemetry::count(metric::PREDICTION_MISSING, 1);
                tracing::warn!(generation_id = %g.id, prediction_id = %id, runs, "the provider does not know this prediction");
                if runs >= MISSING_RUNS {
                    lifecycle::close(
                        st,
                        g.id,
                        Status::Failed,
                        Some(crate::ErrorCode::ProviderError),
                    )
                    .await?;
                    return Ok(Outcome::Settled);
                }
                (None, false)
            }
            Err(e) if e.is_transient() && !past_deadline => return Err(e.into()),
            Err(e) => {
                lifecycle::provider_unreadable(g.id, &e);
                (None, false)
            }
        },
        None => match find_orphan(st, g).await {
            Ok(found) => {
                // Without a webhook URL of its own the prediction may exist unfound.
                let searched = found.is_none() && st.cfg.webhook_url(g.id, None).is_some();
                (found, searched)
            }
            // Past the deadline an inconclusive search does not keep the generation open.
            Err(e) if past_deadline => {
                tracing::warn!(generation_id = %g.id, error = %e, "prediction search inconclusive past the deadline");
                (None, false)
            }
            Err(e) => return Err(e),
        },
    };
    if let Some(p) = &prediction {
        lifecycle::settle(st, g.id, p, deadline, generations::LeaseBy::Other).await?;
    }
    if lifecycle::load(st, g.id).await?.status.is_terminal() {
        return Ok(Outcome::Settled);
    }
    if !(past_deadline || searched) {
        return Ok(Outcome::Open);
    }
    if let Some(p) = prediction.as_ref().filter(|p| !p.is_terminal()) {
        // Stop it (and its bill) before we stop listening; if that fails, try again next run.
        st.replicate.cancel(&p.id).await?;
    }
    // Without a prediction it never started (as far as anyone can tell); with one, it ran too long.
    let never_started = g.prediction_id.is_none() && prediction.is_none();
    let error = if never_started {
        crate::ErrorCode::ProviderError
    } else {
        crate::ErrorCode::Timeout
    };
    lifecycle::close(st, g.id, Status::Failed, Some(error)).await?;
    tracing::warn!(generation_id = %g.id, code = %error, "open generation failed by the reconciler");
    Ok(if past_deadline {
        Outcome::TimedOut
    } else {
        Outcome::Settled
    })
}

/// Searches the predictions created since `g` for the one created for it,
/// and records it. Only the webhook URL the provider echoes back names a
/// generation (`generationId=`); a prediction without one is never matched
/// (its generation is failed once past its deadline), and one already
/// recorded for another generation is not this one's.
async fn find_orphan(st: &AppState, g: &Generation) -> Result<Option<Prediction>> {
    let needle = format!("generationId={}", g.id);
    let mine = |p: &Prediction| p.webhook.as_deref().is_some_and(|w| w.contains(&needle));
    let since = g.created_at - SEARCH_SKEW;
    let mut next: Option<String> = None;
    for _ in 0..SEARCH_PAGES {
        let page = st.replicate.list(since, next.as_deref()).await?;
        if let Some(found) = page.results.into_iter().find(|p| mine(p)) {
            let db = st.db.get().await?;
            return match generations::set_prediction(&**db, g.id, &found.id).await? {
                Some(_) => {
                    tracing::info!(generation_id = %g.id, prediction_id = %found.id, "orphaned prediction found");
                    Ok(Some(found))
                }
                None => {
                    tracing::error!(generation_id = %g.id, prediction_id = %found.id, "a prediction naming this generation belongs to another");
                    Ok(None)
                }
            };
        }
        match page.next {
            Some(n) => next = Some(n),
            None => return Ok(None),
        }
    }
    // More predictions than we searched: not proof that it does not exist.
    Err(Error::TimedOut("prediction search"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_run_of_each_hour_audits() {
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
        let five = std::time::Duration::from_secs(300);
        assert!(audit_due(five, at("2026-11-29T10:00:07Z")));
        assert!(audit_due(five, at("2026-11-29T10:04:59Z")));
        assert!(!audit_due(five, at("2026-11-29T10:05:00Z")));
        assert!(!audit_due(five, at("2026-11-29T10:55:00Z")));
    }
}
