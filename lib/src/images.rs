//! Deleting a stored image (`DELETE /images/{id}`, a batch's deletion): the
//! objects first, then, in one transaction, the row and the generation's
//! `image_deleted_at`. If the row's deletion fails, a retry finishes it: the
//! audit sees a row without its objects meanwhile, never an object nobody
//! can reach.

use crate::{
    AppState, Result,
    db::{
        generations,
        images::{self, Image},
    },
};

/// Deletes `img` (its user's); false if a concurrent request deleted it first.
pub async fn delete(st: &AppState, img: &Image) -> Result<bool> {
    let thumb = img.file.thumbnail.as_ref().map(|t| &t.key);
    for key in std::iter::once(&img.file.storage_key).chain(thumb) {
        st.storage.delete(key).await?;
    }
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    let Some(thumb_at_delete) = images::delete(&*tx, img.id, img.file.user_id).await? else {
        return Ok(false);
    };
    generations::mark_image_deleted(&*tx, img.file.generation_id).await?;
    tx.commit().await?;
    drop(conn);
    // A backfill that held the row meanwhile may have added a thumbnail (the audit lists it if this fails).
    if let Some(key) = thumb_at_delete.filter(|k| Some(k) != thumb)
        && let Err(e) = st.storage.delete(&key).await
    {
        tracing::warn!(image_id = %img.id, %key, error = %e, "thumbnail of a deleted image not deleted");
    }
    Ok(true)
}
