//! The reconciler, run on a schedule: it finishes what the request paths could
//! not (docs/architecture.md, "Reconciler").
//!
//! - external credit captures that did not go through are retried first;
//! - generations still open after a grace period are checked with Replicate
//!   and settled through the one completion path (a webhook lost after
//!   Replicate's last retry must not lose the image);
//! - generations whose create call had an unknown outcome are matched to
//!   their prediction (searched among those created since), or failed;
//! - generations open past the deadline are cancelled at Replicate and
//!   failed, releasing their holds;
//! - upload records older than two days (their objects expired after one)
//!   are forgotten;
//! - about once an hour (the run in the first reconcile interval of the hour)
//!   the stores are audited ([`crate::audit`]) over the last day, each
//!   violation logged and their number sent as the `AuditViolations` metric.
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
    lifecycle,
    replicate::Prediction,
    telemetry::{self, metric},
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
    pub captures_open: usize,
    /// Upload records forgotten (older than [`UPLOADS_KEPT`]).
    pub uploads_forgotten: u64,
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
pub async fn run(st: &AppState) -> Result<Report> {
    let deadline = Instant::now() + st.cfg.request_budget();
    let mut report = Report::default();
    // Captures first: they are money already earned, and quick.
    let retried = async {
        let db = st.db.get().await?;
        st.credits.retry_captures(&**db, BATCH).await
    };
    match tokio::time::timeout_at(deadline.into(), retried).await {
        Ok(Ok((settled, open))) => {
            (report.captures_settled, report.captures_open) = (settled, open)
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "capture retries failed; next run"),
        Err(_) => tracing::warn!("capture retries ran out of time; next run"),
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
    for g in claim(st).await? {
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
    if audit_due(st.cfg.reconcile_interval, chrono::Utc::now()) {
        let filter = audit::Filter {
            since: Some(chrono::Utc::now() - AUDIT_WINDOW),
            user: None,
        };
        match tokio::time::timeout_at(deadline.into(), audit::run(st, &filter)).await {
            Ok(Ok(found)) => {
                for v in &found.violations {
                    tracing::error!(violation = %v, "audit violation");
                }
                let n = found.violations.len();
                telemetry::count(metric::AUDIT_VIOLATIONS, n as u64);
                report.audit_violations = Some(n);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "audit failed; next hour"),
            Err(_) => tracing::warn!("audit ran out of time; next hour"),
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
    let prediction = match &g.prediction_id {
        Some(id) => match st.replicate.get(id).await {
            Ok(p) => Some(p),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(generation_id = %g.id, error = %e, "prediction not readable");
                None
            }
        },
        None => find_orphan(st, g).await?,
    };
    if let Some(p) = &prediction {
        if g.prediction_id.is_none() {
            generations::set_prediction(&**st.db.get().await?, g.id, &p.id).await?;
            tracing::info!(generation_id = %g.id, prediction_id = %p.id, "orphaned prediction found");
        }
        lifecycle::settle(st, g.id, p, deadline).await?;
    }
    if lifecycle::load(st, g.id).await?.status.is_terminal() {
        return Ok(Outcome::Settled);
    }
    let never_started = prediction.is_none() && g.prediction_id.is_none();
    let past_deadline = age > st.cfg.generation_deadline;
    if !(past_deadline || never_started) {
        return Ok(Outcome::Open);
    }
    if let Some(p) = prediction.as_ref().filter(|p| !p.is_terminal()) {
        // Stop it (and its bill) before we stop listening; if that fails, try again next run.
        st.replicate.cancel(&p.id).await?;
    }
    let error = if never_started {
        lifecycle::PROVIDER_ERROR
    } else {
        lifecycle::TIMED_OUT
    };
    lifecycle::close(st, g.id, Status::Failed, Some(error)).await?;
    tracing::warn!(generation_id = %g.id, code = error.0, "open generation failed by the reconciler");
    Ok(if never_started {
        Outcome::Settled
    } else {
        Outcome::TimedOut
    })
}

/// Searches the predictions created since `g` for the one created for it: its
/// webhook URL names the generation; without a webhook URL, the same prompt
/// created within a minute of it.
async fn find_orphan(st: &AppState, g: &Generation) -> Result<Option<Prediction>> {
    let needle = format!("generationId={}", g.id);
    let mine = |p: &Prediction| match &p.webhook {
        Some(w) => w.contains(&needle),
        None => {
            p.prompt() == Some(g.request.prompt.as_str())
                && p.created_at
                    .is_some_and(|at| (at - g.created_at).abs() < SEARCH_SKEW)
        }
    };
    let since = g.created_at - SEARCH_SKEW;
    let mut next: Option<String> = None;
    for _ in 0..SEARCH_PAGES {
        let page = st.replicate.list(since, next.as_deref()).await?;
        if let Some(found) = page.results.into_iter().find(|p| mine(p)) {
            return Ok(Some(found));
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
