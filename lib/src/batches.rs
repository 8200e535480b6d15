//! Batches (docs/architecture.md, "Batches"): 1 to 10 prompts with shared
//! settings. Admission is all or nothing: every item's generation is recorded
//! `queued` with its hold in one transaction under the user's lock, else
//! nothing is. Items then run as slots free up ([`lifecycle::queue`]); a
//! cancel stops the running ones and never starts the rest; a retry re-runs
//! the failed ones, each with a new hold; a deletion cancels and deletes the
//! images of every run. Each item is a generation like any other, so it is
//! charged exactly once by the lifecycle.

use serde::Serialize;

use crate::{
    AppState, Error, Result,
    db::{
        batches::{self, Batch, NewBatch},
        generations::{self, Generation, NewGeneration, Status},
        holds, images,
    },
    lifecycle,
};

/// Most prompts in one batch.
pub const MAX_ITEMS: usize = 10;

/// Where a batch is, from its items' current runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Nothing started yet.
    Queued,
    /// Some items are running or waiting.
    Processing,
    /// Every item completed.
    Completed,
    /// Ended with some items completed and others not.
    Partial,
    /// Ended with nothing completed.
    Failed,
    /// Cancelled by its user, with nothing completed.
    Cancelled,
}

/// How many items are in which state (pending ones count as processing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Items in the batch.
    pub total: usize,
    /// Items waiting for a slot.
    pub queued: usize,
    /// Items pending or processing.
    pub processing: usize,
    /// Items whose current run completed.
    pub completed: usize,
    /// Items whose current run failed.
    pub failed: usize,
    /// Items whose current run was cancelled.
    pub cancelled: usize,
}

impl Counts {
    /// The counts of these item statuses.
    pub fn of(statuses: impl IntoIterator<Item = Status>) -> Self {
        let mut c = Counts::default();
        for s in statuses {
            c.total += 1;
            match s {
                Status::Queued => c.queued += 1,
                Status::Pending | Status::Processing => c.processing += 1,
                Status::Completed => c.completed += 1,
                Status::Failed => c.failed += 1,
                Status::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    /// The batch's status (`cancelled`: its user cancelled it).
    pub fn status(&self, cancelled: bool) -> BatchStatus {
        let ended = self.completed + self.failed + self.cancelled;
        if self.queued + self.processing > 0 {
            return match self.processing == 0 && ended == 0 {
                true => BatchStatus::Queued,
                false => BatchStatus::Processing,
            };
        }
        match self.completed {
            n if n == self.total => BatchStatus::Completed,
            0 if cancelled || self.cancelled == self.total => BatchStatus::Cancelled,
            0 => BatchStatus::Failed,
            _ => BatchStatus::Partial,
        }
    }
}

/// Records a batch and its items (`items[i]` is item `i`, its `batch_id` the
/// batch's), all held at once, or nothing: [`Error::InsufficientCredits`] with
/// what the whole batch needs, [`Error::TooManyQueued`], or
/// [`Error::IdempotencyKeyTaken`] when its key was recorded meanwhile.
pub async fn admit(st: &AppState, batch: &NewBatch, items: &[NewGeneration]) -> Result<()> {
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    let user = batch.user_id;
    let free_used = holds::lock_quota(&*tx, user).await?;
    check_queue(&tx, st, user, items.len()).await?;
    if !batches::insert(&*tx, batch).await? {
        return Err(Error::IdempotencyKeyTaken);
    }
    let indexed: Vec<_> = (0..).zip(items).collect();
    hold_all(st, &tx, user, free_used, &indexed).await?;
    for (index, item) in &indexed {
        batches::put_item(&*tx, batch.id, *index, item.id).await?;
    }
    tx.commit().await?;
    tracing::info!(batch_id = %batch.id, %user, items = items.len(), "batch admitted");
    Ok(())
}

/// Refuses `adding` more queued items when the user would have more than allowed.
async fn check_queue(
    tx: &tokio_postgres::Transaction<'_>,
    st: &AppState,
    user: uuid::Uuid,
    adding: usize,
) -> Result<()> {
    let queued = batches::queued(tx, user).await?;
    let limit = st.cfg.max_queued_per_user;
    if queued + i64::try_from(adding).unwrap_or(i64::MAX) > limit {
        return Err(Error::TooManyQueued { queued, limit });
    }
    Ok(())
}

/// Records each item `queued` with its hold (free slots first, then credits),
/// in `tx`; refused whole when the credits do not cover every item.
async fn hold_all(
    st: &AppState,
    tx: &tokio_postgres::Transaction<'_>,
    user: uuid::Uuid,
    mut free_used: i32,
    items: &[(i32, &NewGeneration)],
) -> Result<()> {
    let first_free_used = free_used;
    let mut held = 0i64;
    for (_, item) in items {
        let units = item.request.num_outputs;
        let hold = match st.credits.reserve(tx, user, free_used, units).await {
            Err(Error::InsufficientCredits { balance, .. }) => {
                // Say what the whole batch needs, against the balance before any of it.
                let all: i32 = items.iter().map(|(_, i)| i.request.num_outputs).sum();
                let free = (st.credits.free_generations - first_free_used).clamp(0, all);
                return Err(Error::InsufficientCredits {
                    required: i64::from((all - free) * st.credits.cost),
                    balance: balance + held,
                    free_remaining: (st.credits.free_generations - first_free_used).max(0),
                });
            }
            other => other?,
        };
        free_used += hold.free_units;
        held += i64::from(hold.amount);
        generations::insert(tx, item, hold.charge).await?;
        st.credits.record_hold(tx, user, item.id, &hold).await?;
    }
    Ok(())
}

/// The items of a batch with their current runs, in item order.
pub async fn items(st: &AppState, batch: &Batch) -> Result<Vec<(i32, Generation)>> {
    let rows = batches::items(&**st.db.get().await?, &[batch.id]).await?;
    Ok(rows.into_iter().map(|(_, i, g)| (i, g)).collect())
}

/// Cancels a batch: no queued item will start, and the open ones are
/// cancelled (holds released, predictions stopped).
pub async fn cancel(st: &AppState, batch: &Batch) -> Result<()> {
    batches::set_cancelled(&**st.db.get().await?, batch.id, true).await?;
    for (_, g) in items(st, batch).await? {
        match lifecycle::cancel(st, &g).await {
            Ok(()) | Err(Error::NotCancellable(_)) => {}
            Err(e) => return Err(e),
        }
    }
    tracing::info!(batch_id = %batch.id, "batch cancelled");
    Ok(())
}

/// Re-runs the failed items of a batch (each as a new generation with a new
/// hold, all or nothing, like [`admit`]); returns how many. The batch runs again
/// if it was cancelled.
pub async fn retry(st: &AppState, batch: &Batch) -> Result<usize> {
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    // The batch's row first: concurrent retries run one after the other, the second finds nothing failed.
    batches::get_owned(&*tx, batch.id, batch.user_id, true)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Batch))?;
    let user = batch.user_id;
    let free_used = holds::lock_quota(&*tx, user).await?;
    let failed: Vec<(i32, NewGeneration)> = batches::items(&*tx, &[batch.id])
        .await?
        .into_iter()
        .filter(|(_, _, g)| g.status == Status::Failed)
        .map(|(_, index, g)| {
            let run = NewGeneration {
                id: uuid::Uuid::new_v4(),
                user_id: g.user_id,
                model_id: g.model_id,
                request: g.request,
                idempotency: None,
                batch_id: Some(batch.id),
            };
            (index, run)
        })
        .collect();
    if failed.is_empty() {
        return Ok(0);
    }
    check_queue(&tx, st, user, failed.len()).await?;
    let indexed: Vec<_> = failed.iter().map(|(i, g)| (*i, g)).collect();
    hold_all(st, &tx, user, free_used, &indexed).await?;
    for (index, run) in &indexed {
        batches::put_item(&*tx, batch.id, *index, run.id).await?;
    }
    batches::set_cancelled(&*tx, batch.id, false).await?;
    tx.commit().await?;
    tracing::info!(batch_id = %batch.id, items = failed.len(), "batch items retried");
    Ok(failed.len())
}

/// Deletes a batch: cancelled first, then the images of every run of its
/// items (as `DELETE /images/{id}` does), then the batch is gone from the views.
/// The generations stay (accounting), as deleted images leave them.
pub async fn delete(st: &AppState, batch: &Batch) -> Result<()> {
    cancel(st, batch).await?;
    let runs = batches::runs(&**st.db.get().await?, batch.id).await?;
    let stored = images::for_generations(&**st.db.get().await?, &runs).await?;
    for img in &stored {
        crate::images::delete(st, img).await?;
    }
    batches::mark_deleted(&**st.db.get().await?, batch.id).await?;
    tracing::info!(batch_id = %batch.id, images = stored.len(), "batch deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn a_batch_status_follows_its_items() {
        let status =
            |items: &[Status], cancelled| Counts::of(items.iter().copied()).status(cancelled);
        assert_eq!(status(&[Queued, Queued], false), BatchStatus::Queued);
        assert_eq!(status(&[Pending, Queued], false), BatchStatus::Processing);
        assert_eq!(status(&[Completed, Queued], false), BatchStatus::Processing);
        assert_eq!(
            status(&[Completed, Completed], false),
            BatchStatus::Completed
        );
        assert_eq!(status(&[Completed, Failed], false), BatchStatus::Partial);
        assert_eq!(status(&[Completed, Cancelled], true), BatchStatus::Partial);
        assert_eq!(status(&[Failed, Failed], false), BatchStatus::Failed);
        assert_eq!(status(&[Failed, Cancelled], true), BatchStatus::Cancelled);
        assert_eq!(
            status(&[Cancelled, Cancelled], false),
            BatchStatus::Cancelled
        );
        let c = Counts::of([Queued, Pending, Processing, Completed, Failed, Cancelled]);
        assert_eq!(
            (
                c.total,
                c.queued,
                c.processing,
                c.completed,
                c.failed,
                c.cancelled
            ),
            (6, 1, 2, 1, 1, 1)
        );
    }
}
