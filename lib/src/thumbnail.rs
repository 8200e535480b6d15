//! Gallery thumbnails: a lossy WebP whose longer side is at most
//! [`LONG_SIDE`] pixels (never upscaled, aspect ratio kept) and a blurhash
//! placeholder (4×3 components) computed from it, made from an output's bytes
//! (PNG and JPEG decoded by the `image` crate, WebP by libwebp, which also
//! encodes the thumbnail). Never on an answer's path: made after the output's
//! commit, by the `thumbnails` function on the bucket's notification or a task of
//! the process that stored it ([`for_object`]), and by the [`backfill`] (which the
//! reconciler runs for images whose notification was lost). Decoding is CPU work,
//! run on a blocking thread ([`store`]).

use std::{
    io::Cursor,
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage, RgbaImage};
use uuid::Uuid;

use crate::{
    AppState, Error, Result,
    db::{
        generations,
        images::{self, Pending, StoredThumbnail},
    },
    media,
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
/// At most this much memory for one decode (4096² RGBA plus the decoder's own).
const MAX_ALLOC: u64 = 80 << 20;
/// libwebp's quality for thumbnails (0–100): small files, no visible loss at gallery size.
const QUALITY: f32 = 80.0;

/// A thumbnail, encoded, with its size and the blurhash of its pixels.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub webp: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub blurhash: String,
}

/// Why no thumbnail can be made of some bytes (now or ever: none is transient).
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not PNG, JPEG or WebP (e.g. SVG or GIF).
    #[error("not a decodable raster format")]
    Unsupported,
    #[error("{0}×{1} is larger than {MAX_SIDE}×{MAX_SIDE} or {MAX_PIXELS} pixels")]
    TooLarge(u32, u32),
    #[error("decode: {0}")]
    Decode(#[from] image::ImageError),
    /// libwebp could not decode it (corrupt, or animated).
    #[error("undecodable WebP")]
    WebP,
    #[error("encode: {0}")]
    Encode(String),
    #[error("blurhash: {0}")]
    Blurhash(String),
}

/// Decodes `bytes` and makes the thumbnail and its blurhash. CPU-bound: call
/// it off the async executor.
pub fn make(bytes: &[u8]) -> Result<Thumbnail, ThumbnailError> {
    let format = match media::sniff(bytes) {
        Some(("png", _)) => ImageFormat::Png,
        Some(("jpg", _)) => ImageFormat::Jpeg,
        Some(("webp", _)) => ImageFormat::WebP,
        _ => return Err(ThumbnailError::Unsupported),
    };
    let (w, h) = media::raster_size(bytes).ok_or(ThumbnailError::Unsupported)?;
    let (w, h) = (w as u32, h as u32);
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(ThumbnailError::TooLarge(w, h));
    }
    let decoded = match format {
        ImageFormat::WebP => decode_webp(bytes)?,
        _ => {
            let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
            limits.max_alloc = Some(MAX_ALLOC);
            reader.limits(limits);
            reader.decode()?
        }
    };
    let small = shrink(decoded);
    let (width, height) = (small.width(), small.height());
    let rgba = small.to_rgba8();
    let (cx, cy) = BLURHASH_COMPONENTS;
    let blurhash = blurhash::encode(cx, cy, width, height, rgba.as_raw())
        .map_err(|e| ThumbnailError::Blurhash(e.to_string()))?;
    let encoded = if small.color().has_alpha() {
        webp::Encoder::from_rgba(rgba.as_raw(), width, height).encode_simple(false, QUALITY)
    } else {
        let rgb = small.to_rgb8();
        webp::Encoder::from_rgb(rgb.as_raw(), width, height).encode_simple(false, QUALITY)
    };
    let webp = encoded.map_err(|e| ThumbnailError::Encode(format!("{e:?}")))?;
    Ok(Thumbnail {
        webp: webp.to_vec(),
        width,
        height,
        blurhash,
    })
}

/// Decodes a (still) WebP with libwebp: several times faster than the `image`
/// crate's decoder on detailed lossy images (docs/performance.md).
fn decode_webp(bytes: &[u8]) -> Result<DynamicImage, ThumbnailError> {
    let img = webp::Decoder::new(bytes)
        .decode()
        .ok_or(ThumbnailError::WebP)?;
    let (w, h, pixels) = (img.width(), img.height(), img.to_vec());
    let decoded = if img.is_alpha() {
        RgbaImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    };
    decoded.ok_or(ThumbnailError::WebP)
}

/// The image scaled down to fit [`LONG_SIDE`]², aspect ratio kept; a smaller one as it is.
fn shrink(img: DynamicImage) -> DynamicImage {
    if img.width().max(img.height()) <= LONG_SIDE {
        return img;
    }
    img.thumbnail(LONG_SIDE, LONG_SIDE)
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

#[cfg(test)]
mod tests {
    use image::{ExtendedColorType, ImageEncoder, Rgb, codecs::png::PngEncoder};

    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn decoded(t: &Thumbnail) -> DynamicImage {
        decode_webp(&t.webp).unwrap()
    }

    #[test]
    fn the_longer_side_becomes_384_with_the_aspect_ratio_kept() {
        for (w, h, tw, th) in [
            (1024, 1024, 384, 384),
            (1600, 900, 384, 216),
            (600, 1200, 192, 384),
        ] {
            let t = make(&png(w, h)).unwrap();
            assert_eq!((t.width, t.height), (tw, th), "{w}×{h}");
            let img = decoded(&t);
            assert_eq!((img.width(), img.height()), (tw, th));
        }
    }

    #[test]
    fn webp_outputs_are_decoded_too() {
        let (w, h) = (800, 600);
        let rgb = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 40]));
        let lossy = webp::Encoder::from_rgb(rgb.as_raw(), w, h)
            .encode_simple(false, 90.0)
            .unwrap();
        let t = make(&lossy).unwrap();
        assert_eq!((t.width, t.height), (384, 288));
        let img = decoded(&t).to_rgb8();
        // Lossy, but the colours survive: the pixel at (192, 144) came from (400, 300).
        let Rgb([r, g, b]) = *img.get_pixel(192, 144);
        assert!(
            (r as i32 - 144).abs() < 24 && (g as i32 - 44).abs() < 24 && (b as i32 - 40).abs() < 24,
            "{r} {g} {b}"
        );
        assert!(matches!(
            make(&lossy[..lossy.len() / 2]),
            Err(ThumbnailError::WebP)
        ));
    }

    #[test]
    fn small_images_are_not_upscaled() {
        let t = make(&png(200, 100)).unwrap();
        assert_eq!((t.width, t.height), (200, 100));
    }

    #[test]
    fn the_blurhash_has_4_by_3_components() {
        let t = make(&png(512, 256)).unwrap();
        // Size flag: (x − 1) + (y − 1) × 9 = 21 → base83 'L'; 4 + 2 × 11 more characters.
        assert!(t.blurhash.starts_with('L'), "{}", t.blurhash);
        assert_eq!(t.blurhash.len(), 28);
        assert!(blurhash::decode(&t.blurhash, 32, 32, 1.0).is_ok());
    }

    #[test]
    fn other_formats_and_huge_images_are_refused() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>"#;
        assert!(matches!(make(svg), Err(ThumbnailError::Unsupported)));
        assert!(matches!(
            make(b"GIF89a\x01\0\x01\0"),
            Err(ThumbnailError::Unsupported)
        ));
        // A PNG header claiming 5000×10 is refused before anything is decoded.
        let mut huge = png(1, 1);
        huge[16..20].copy_from_slice(&5000u32.to_be_bytes());
        assert!(matches!(
            make(&huge),
            Err(ThumbnailError::TooLarge(5000, 1))
        ));
        // 4096×4096 is within each side's limit but over the pixel budget.
        huge[16..24].copy_from_slice(&[0, 0, 16, 0, 0, 0, 16, 0]);
        assert!(matches!(
            make(&huge),
            Err(ThumbnailError::TooLarge(4096, 4096))
        ));
        let mut truncated = png(64, 64);
        truncated.truncate(60);
        assert!(matches!(make(&truncated), Err(ThumbnailError::Decode(_))));
    }
}
