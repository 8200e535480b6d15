//! Batch items waiting for a slot (`queued → pending`): a user runs at most
//! `MAX_IN_FLIGHT_PER_USER` generations at a time, batch items and single
//! ones counted together. [`start_next`] fills the free slots with the
//! user's oldest queued items; it runs after a batch is admitted or retried,
//! after a generation of the user ends (webhook, status poll, cancel) and in
//! every reconciler run, which starts whatever was left waiting.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{
    AppState, Result,
    db::{
        generations::{self, Generation, NewGeneration, Status},
        holds,
    },
};

/// Time a create at Replicate is given: an item is promoted only while this
/// much is left, so that one promoted is also sent.
const CREATE_TIME: Duration = Duration::from_secs(3);

/// Starts the user's queued items while slots are free, oldest first, one at
/// a time and each without waiting for its result, while a create still fits
/// before `deadline`; returns how many were sent to the provider. An item the
/// provider refuses at once ends failed (hold released) and its slot goes to
/// the next.
pub async fn start_next(st: &AppState, user: Uuid, deadline: Instant) -> Result<usize> {
    let mut started = 0;
    while deadline.saturating_duration_since(Instant::now()) >= CREATE_TIME {
        let Some((g, api_base)) = promote_one(st, user).await? else {
            break;
        };
        let models = st.models().await?;
        let Some(model) = models.iter().find(|m| m.id == g.model_id) else {
            super::close(
                st,
                g.id,
                Status::Failed,
                Some(crate::ErrorCode::ModelNotFound),
            )
            .await?;
            continue;
        };
        let new = NewGeneration {
            id: g.id,
            user_id: g.user_id,
            model_id: g.model_id,
            request: g.request.clone(),
            idempotency: None,
            batch_id: g.batch_id,
        };
        match super::start(st, &new, model, None, api_base.as_deref(), None, deadline).await {
            Ok(()) => started += 1,
            // Refused: it failed with its hold released; the slot is free again.
            Err(e) => {
                tracing::warn!(generation_id = %g.id, error = %e, "queued item refused by the provider")
            }
        }
    }
    Ok(started)
}

/// Moves the user's oldest queued item to `pending` if a slot is free (under
/// the lock `begin` takes, so the cap holds with every other start).
async fn promote_one(st: &AppState, user: Uuid) -> Result<Option<(Generation, Option<String>)>> {
    if !generations::has_queued(&**st.db.get().await?, user).await? {
        return Ok(None);
    }
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    holds::lock_quota(&*tx, user).await?;
    let (open, _) = generations::in_flight(&*tx, user).await?;
    if open >= st.cfg.max_in_flight_per_user {
        return Ok(None);
    }
    let promoted = generations::promote_queued(&*tx, user).await?;
    tx.commit().await?;
    Ok(promoted)
}

/// [`start_next`] for the user of a generation that just ended, if it did;
/// a failure is logged and left to the reconciler.
pub async fn after(st: &AppState, g: &Generation, deadline: Instant) {
    if !g.status.is_terminal() {
        return;
    }
    if let Err(e) = start_next(st, g.user_id, deadline).await {
        tracing::warn!(user_id = %g.user_id, error = %e, "queued items not started; left to the reconciler");
    }
}
