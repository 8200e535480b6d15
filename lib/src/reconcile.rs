//! The reconciler (DESIGN §3.5), run on a schedule: it finishes what the
//! request paths could not.
//!
//! - generations still open after a grace period are checked with Replicate
//!   and settled through the one completion path (a webhook lost after
//!   Replicate's last retry must not lose the image);
//! - generations whose create call had an unknown outcome are matched to
//!   their prediction (its webhook URL carries our generation id), or failed;
//! - generations open past the deadline are cancelled at Replicate and failed,
//!   releasing their holds;
//! - external credit captures that did not go through are retried.
//!
//! Work per run is bounded, and runs may overlap: each generation is claimed
//! with `FOR UPDATE SKIP LOCKED` and a one-minute claim, so two reconcilers
//! never work on the same one.

use crate::{
    AppState, Problem,
    db::generations::{self, Generation, Status},
    lifecycle,
    replicate::{Prediction, ReplicateError},
};
use serde::Serialize;

/// Most generations looked at per run.
const BATCH: i64 = 50;
/// Most prediction-list pages searched for an orphaned generation.
const SEARCH_PAGES: usize = 3;

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
    /// External credit captures sent now, and still open.
    pub captures_settled: usize,
    pub captures_open: usize,
}

/// One reconciler run.
pub async fn run(st: &AppState) -> Result<Report, Problem> {
    let mut report = Report::default();
    for g in claim(st).await? {
        report.checked += 1;
        let before = g.status;
        reconcile_one(st, &g, &mut report).await?;
        if lifecycle::load(st, g.id).await?.status != before {
            report.settled += 1;
        }
    }
    let db = st.db.get().await.map_err(crate::Error::from)?;
    (report.captures_settled, report.captures_open) =
        st.credits.retry_captures(&**db, BATCH).await?;
    tracing::info!(?report, "reconciler run");
    Ok(report)
}

/// Claims open generations older than the grace period that no other run is looking at.
async fn claim(st: &AppState) -> Result<Vec<Generation>, Problem> {
    let grace = st.cfg.reconcile_grace.as_secs_f64();
    let db = st.db.get().await.map_err(crate::Error::from)?;
    let rows = db
        .query(
            "UPDATE generations SET reconciled_at = now()
              WHERE id IN (SELECT id FROM generations
                            WHERE status IN ('pending', 'processing')
                              AND created_at < now() - make_interval(secs => $1)
                              AND (reconciled_at IS NULL OR reconciled_at < now() - interval '1 minute')
                            ORDER BY created_at LIMIT $2
                            FOR UPDATE SKIP LOCKED)
              RETURNING *",
            &[&grace, &BATCH],
        )
        .await
        .map_err(crate::Error::from)?;
    Ok(rows.iter().map(Generation::from).collect())
}

async fn reconcile_one(st: &AppState, g: &Generation, report: &mut Report) -> Result<(), Problem> {
    let age = (chrono::Utc::now() - g.created_at)
        .to_std()
        .unwrap_or_default();
    let prediction = match &g.prediction_id {
        Some(id) => st.replicate.get(id).await.ok(),
        None => match find_orphan(st, g).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(generation_id = %g.id, error = %e, "prediction search failed; retried next run");
                return Ok(());
            }
        },
    };
    if let Some(p) = &prediction {
        if g.prediction_id.is_none() {
            let db = st.db.get().await.map_err(crate::Error::from)?;
            generations::set_prediction(&**db, g.id, &p.id).await?;
            tracing::info!(generation_id = %g.id, prediction_id = %p.id, "orphaned prediction found");
        }
        lifecycle::settle(st, g.id, p).await?;
    }
    let still_open = !lifecycle::load(st, g.id).await?.status.is_terminal();
    let never_started = prediction.is_none() && g.prediction_id.is_none();
    if still_open && (age > st.cfg.generation_deadline || never_started) {
        if let Some(p) = prediction.as_ref().filter(|p| !p.is_terminal()) {
            if let Err(e) = st.replicate.cancel(&p.id).await {
                tracing::warn!(generation_id = %g.id, error = %e, "cancel of a timed-out prediction failed");
            }
        }
        let error = if never_started {
            lifecycle::PROVIDER_ERROR
        } else {
            ("TIMEOUT", "The generation took too long.")
        };
        lifecycle::close(st, g.id, Status::Failed, Some(error)).await?;
        report.timed_out += usize::from(!never_started);
        tracing::warn!(generation_id = %g.id, code = error.0, "open generation failed by the reconciler");
    }
    Ok(())
}

/// Searches the newest predictions for the one created for `g` (its webhook URL names it).
async fn find_orphan(st: &AppState, g: &Generation) -> Result<Option<Prediction>, ReplicateError> {
    let needle = format!("generationId={}", g.id);
    let mut next: Option<String> = None;
    for _ in 0..SEARCH_PAGES {
        let page = st.replicate.list(next.as_deref()).await?;
        let found = page
            .results
            .into_iter()
            .find(|p| p.webhook.as_deref().is_some_and(|w| w.contains(&needle)));
        if found.is_some() {
            return Ok(found);
        }
        match page.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    Ok(None)
}
