//! Gallery thumbnails: a lossy WebP whose longer side is at most
//! [`LONG_SIDE`] pixels (never upscaled, aspect ratio kept) and a blurhash
//! placeholder (4×3 components) computed from it, made from an output's bytes
//! (PNG and JPEG decoded by the `image` crate, WebP by libwebp, which also
//! encodes the thumbnail). Never on an answer's path: made after the output's
//! commit, by the `thumbnails` function on the bucket's notification or a task of
//! the process that stored it ([`for_object`]), and by the [`backfill`] (which the
//! reconciler runs for images whose notification was lost). Decoding is CPU work,
//! run on a blocking thread ([`store`]).
//!
//! Domain: may import `db`, `storage`, `media` and the platform; never the edge.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    AppState, Error, Result,
    db::{
        generations,
        images::{self, Pending, StoredThumbnail},
    },
    storage::{ImageKey, Storage},
};

/// The longer side of a thumbnail, in pixels.
pub const LONG_SIDE: u32 = 384;
/// Images wider or taller than this are not decoded.
pub const MAX_SIDE: u32 = 4096;
/// Images with more pixels than this are not decoded: a decode holds 4 bytes a
/// pixel (32 MiB here) plus the decoder's own; the worst case measured is 59 MB
/// of peak RSS (docs/performance.md, "Memory").
pub const MAX_PIXELS: u64 = 2048 * 2048 * 2;
/// Blurhash components, horizontally and vertically.
pub const BLURHASH_COMPONENTS: (u32, u32) = (4, 3);

/// A thumbnail, encoded, with its size and the blurhash of its pixels.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    /// The encoded WebP.
    pub webp: Vec<u8>,
    /// Its width in pixels (at most [`LONG_SIDE`]).
    pub width: u32,
    /// Its height in pixels (at most [`LONG_SIDE`]).
    pub height: u32,
    /// The BlurHash of its pixels ([`BLURHASH_COMPONENTS`]).
    pub blurhash: String,
}

/// Why no thumbnail can be made of some bytes (now or ever: none is transient).
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not PNG, JPEG or WebP (e.g. SVG or GIF).
    #[error("not a decodable raster format")]
    Unsupported,
    /// Width and height beyond [`MAX_SIDE`] or [`MAX_PIXELS`]: not decoded.
    #[error("{0}×{1} is larger than {MAX_SIDE}×{MAX_SIDE} or {MAX_PIXELS} pixels")]
    TooLarge(u32, u32),
    /// The `image` crate could not decode it (corrupt, or over the memory limit).
    #[error("decode: {0}")]
    Decode(String),
    /// libwebp could not decode it (corrupt, or animated).
    #[error("undecodable WebP")]
    WebP,
    /// libwebp could not encode the thumbnail.
    #[error("encode: {0}")]
    Encode(String),
    /// The blurhash could not be computed.
    #[error("blurhash: {0}")]
    Blurhash(String),
    /// This build has no decoders ([`crate::config::THUMBNAIL_DECODERS`]).
    #[error("built without the thumbnail decoders (feature `thumbnails`)")]
    NotBuilt,
}

#[cfg(feature = "thumbnails")]
mod encode;
#[cfg(feature = "thumbnails")]
pub use encode::make;

/// Without the decoders, no thumbnail is ever made here ([`store`] refuses to
/// record one as undecodable).
#[cfg(not(feature = "thumbnails"))]
pub fn make(_: &[u8]) -> Result<Thumbnail, ThumbnailError> {
    Err(ThumbnailError::NotBuilt)
}

/// Makes the thumbnail of an image's bytes (on a blocking thread, when one of
/// `turns` is free: `THUMBNAIL_DECODES` per process, one by default) and stores
/// it at its deterministic key (beside `image_key`), all before `deadline`. `Ok(None)`: the bytes
/// cannot be decoded (the image has no thumbnail); an error is transient (S3,
/// or the deadline).
pub async fn store(
    storage: &Storage,
    turns: &tokio::sync::Semaphore,
    image_key: &str,
    bytes: Bytes,
    deadline: Instant,
) -> Result<Option<StoredThumbnail>> {
    let work = async {
        // One decode at a time per process: its memory is the largest part of a completion's.
        let _turn = turns
            .acquire()
            .await
            .map_err(|e| Error::Internal(format!("thumbnail turn: {e}")))?;
        let made = tokio::task::spawn_blocking(move || make(&bytes))
            .await
            .map_err(|e| Error::Internal(format!("thumbnail task: {e}")))?;
        let thumb = match made {
            Ok(t) => t,
            Err(e @ ThumbnailError::NotBuilt) => return Err(Error::Internal(e.to_string())),
            Err(e) => {
                tracing::info!(key = %image_key, error = %e, "no thumbnail for this image");
                return Ok(None);
            }
        };
        let key = Storage::thumbnail_key(image_key);
        storage.put(&key, "image/webp", thumb.webp.into()).await?;
        Ok::<_, Error>(Some(StoredThumbnail {
            key,
            blurhash: thumb.blurhash,
        }))
    };
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .map_err(|_| Error::TimedOut("thumbnail"))?
}

/// Time one image gets (read, thumbnail, upload).
const ITEM_TIME: Duration = Duration::from_secs(60);

/// What [`for_object`] did with a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Made {
    /// The image got its thumbnail and blurhash.
    Thumbnail,
    /// The image cannot be decoded: now marked as having none.
    Undecodable,
    /// Nothing to do: not a generation's image (a thumbnail, an upload), its
    /// thumbnail was tried already or is being made, or the generation ended without it.
    Nothing,
}

/// Makes the thumbnail of the generation image stored at `key`: what the
/// `thumbnails` function does on the bucket's `ObjectCreated` notification, and
/// what the process that stored an output does after its commit (`THUMBNAILS=background`).
/// An image whose generation is still being completed (the object is stored before
/// its row commits) is a transient error, for a retry; a fault leaves the image
/// pending for a retry or the reconciler, and never touches the generation.
pub async fn for_object(st: &AppState, key: &str) -> Result<Made> {
    let Some(Ok(parsed)) = ImageKey::parse(key) else {
        return Ok(Made::Nothing);
    };
    if parsed.thumbnail {
        return Ok(Made::Nothing);
    }
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    let Some(row) = images::claim_pending_at(&*tx, parsed.generation_id, key).await? else {
        drop(tx);
        let open = generations::get(&**conn, parsed.generation_id)
            .await?
            .is_some_and(|g| !g.status.is_terminal());
        return match open {
            true => Err(Error::CompletionInProgress),
            false => Ok(Made::Nothing),
        };
    };
    let made = fill(st, &*tx, &row).await?;
    tx.commit().await?;
    Ok(made)
}

/// Makes the thumbnail of a claimed row and records the outcome on it in `tx`
/// (`Nothing`: its object is missing; the row stays pending).
async fn fill(st: &AppState, tx: &impl crate::db::Sql, row: &Pending) -> Result<Made> {
    let Some(thumb) = make_for(st, row).await? else {
        tracing::warn!(image_id = %row.id, key = %row.storage_key, "image object missing; no thumbnail");
        return Ok(Made::Nothing);
    };
    images::set_thumbnail(tx, row.id, thumb.as_ref()).await?;
    Ok(match thumb {
        Some(_) => Made::Thumbnail,
        None => Made::Undecodable,
    })
}

/// Starts [`for_object`] on a task of this process, for an output just committed
/// (`THUMBNAILS=background`); a failure is logged and left to the reconciler.
pub fn spawn_for_object(st: &AppState, key: String) {
    let st = st.clone();
    tokio::spawn(async move {
        if let Err(e) = for_object(&st, &key).await {
            tracing::warn!(%key, error = %e, "thumbnail not made; left for the reconciler");
        }
    });
}

/// What a [`backfill`] run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Backfilled {
    /// Images that got a thumbnail and blurhash.
    pub made: usize,
    /// Images that cannot be decoded, now marked as having none.
    pub undecodable: usize,
    /// Images left for the next run: their object is missing or a fault occurred.
    pub left: usize,
}

/// Which pending images a [`backfill`] does.
#[derive(Debug, Default, Clone, Copy)]
pub struct Selection {
    /// Only this user's.
    pub user: Option<Uuid>,
    /// Only those stored before this time (the reconciler leaves recent ones to their event).
    pub stored_before: Option<DateTime<Utc>>,
}

/// Gives every selected image without a thumbnail try one, `batch` rows at
/// a time: each batch is claimed in a transaction (`FOR UPDATE SKIP LOCKED`,
/// so concurrent runs share the work and a deletion waits for it) and
/// committed with the outcomes. One pass in id order: rows left by a fault
/// wait for the next run.
pub async fn backfill(st: &AppState, batch: i64, sel: Selection) -> Result<Backfilled> {
    let mut report = Backfilled::default();
    let mut after = None;
    loop {
        let mut conn = st.db.get().await?;
        let tx = crate::db::Tx::begin(&mut conn).await?;
        let rows = images::claim_pending(&*tx, sel.user, sel.stored_before, after, batch).await?;
        let Some(last) = rows.last() else {
            return Ok(report);
        };
        after = Some(last.id);
        for row in &rows {
            match fill(st, &*tx, row).await {
                Ok(Made::Thumbnail) => report.made += 1,
                Ok(Made::Undecodable) => report.undecodable += 1,
                Ok(Made::Nothing) => report.left += 1,
                Err(e) => {
                    tracing::warn!(image_id = %row.id, error = %e, "thumbnail not made; left for the next run");
                    report.left += 1;
                }
            }
        }
        tx.commit().await?;
    }
}

/// The thumbnail of a stored image (`Some(None)`: not decodable); `None` if its object is gone.
async fn make_for(st: &AppState, row: &Pending) -> Result<Option<Option<StoredThumbnail>>> {
    let deadline = Instant::now() + ITEM_TIME;
    let read = tokio::time::timeout_at(deadline.into(), st.storage.read(&row.storage_key));
    let Some(bytes) = read.await.map_err(|_| Error::TimedOut("image read"))?? else {
        return Ok(None);
    };
    let stored = store(&st.storage, &st.decodes, &row.storage_key, bytes, deadline).await?;
    Ok(Some(stored))
}
