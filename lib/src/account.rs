//! A user's right to erasure (`DELETE /me`): the request is recorded, then
//! carried out in steps that can each run again: the user's open generations
//! are cancelled (holds released, predictions stopped), one transaction
//! removes image rows and uploads and the texts of every generation, every
//! object under `users/{user}/` is deleted, and the deletion is marked
//! finished. A process that dies mid-way leaves the request unfinished: the
//! reconciler ([`reconcile`]) carries it on. The ledger and credit holds stay
//! (accounting), as do generation rows without their texts.

use uuid::Uuid;

use crate::{AppState, Error, Result, db::accounts, lifecycle};

/// Records `user`'s request and carries it out (a caller bounded in time may
/// answer before it is done: the reconciler goes on).
pub async fn delete(st: &AppState, user: Uuid) -> Result<()> {
    accounts::request_deletion(&**st.db.get().await?, user).await?;
    tracing::info!(%user, "account deletion requested");
    carry_on(st, user).await
}

/// The steps of a deletion, each idempotent.
async fn carry_on(st: &AppState, user: Uuid) -> Result<()> {
    for id in accounts::open_generations(&**st.db.get().await?, user).await? {
        let g = lifecycle::load(st, id).await?;
        match lifecycle::cancel(st, &g).await {
            Ok(()) | Err(Error::NotCancellable(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // Rows first: deleting an image row waits for a thumbnail task that holds
    // it (and has then stored its object); one that comes later finds no row
    // and stores nothing. So the listing below sees every object there is.
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    accounts::scrub(&*tx, user).await?;
    tx.commit().await?;
    drop(conn); // not held during the S3 calls: the pool is small
    let mut keys = Vec::new();
    st.storage
        .list(&format!("users/{user}/"), |key, _| {
            keys.push(key.to_string())
        })
        .await?;
    for key in &keys {
        st.storage.delete(key).await?;
    }
    accounts::finish_deletion(&**st.db.get().await?, user).await?;
    tracing::info!(%user, objects = keys.len(), "account deletion finished");
    Ok(())
}

/// Carries on the deletions left unfinished (up to 20; one that fails does not
/// stop the others); returns how many finished now.
pub async fn reconcile(st: &AppState) -> Result<usize> {
    let mut finished = 0;
    for user in accounts::unfinished(&**st.db.get().await?, 20).await? {
        match carry_on(st, user).await {
            Ok(()) => finished += 1,
            Err(e) => tracing::warn!(%user, error = %e, "account deletion not finished; next run"),
        }
    }
    Ok(finished)
}
