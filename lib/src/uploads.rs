//! Uploads: a user's own image, PUT straight to the bucket through a presigned
//! URL, then the source of an image-to-image generation (`sourceImageId`).
//!
//! [`create`] records the upload and hands out the URL; [`source`] checks the
//! object against what was declared (magic bytes and pixel size read from its
//! first bytes, further for a JPEG with long metadata) and gives the provider
//! exactly what was checked: a data URI when the image is small enough for
//! Replicate to take inline, else a presigned GET, valid until the
//! generation's deadline, of a copy that the upload URL cannot overwrite.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    AppState, Error, Result,
    db::uploads::{self, Upload},
    media,
    storage::Storage,
};

/// The image types a client may upload.
pub const CONTENT_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];

/// How long an upload URL is valid.
pub const URL_TTL: Duration = Duration::from_secs(15 * 60);

/// How long the bucket keeps an upload (its lifecycle rule, `template.yaml`).
pub const LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Largest width or height of a source image, in pixels.
pub const MAX_SIDE: usize = 4096;

/// Largest image passed inline as a data URI (Replicate's limit for data URLs).
pub const INLINE_MAX: u64 = 256 * 1024;

/// How far into a JPEG its size marker is looked for (past long metadata).
pub const JPEG_HEADER_MAX: u64 = 4 * 1024 * 1024;

/// An upload URL handed out, with the headers the client must send with its PUT.
#[derive(Debug)]
pub struct Ticket {
    /// The upload's id (`sourceImageId`).
    pub id: Uuid,
    /// The presigned PUT URL.
    pub url: String,
    /// Headers the PUT must carry exactly (they are signed).
    pub headers: Vec<(String, String)>,
    /// When the URL stops working ([`URL_TTL`] after it was made).
    pub expires_at: DateTime<Utc>,
}

/// Presigns a PUT of a new upload of `content_type` and `content_length` bytes
/// for `user` and records it.
pub async fn create(
    st: &AppState,
    user: Uuid,
    content_type: &str,
    content_length: i64,
) -> Result<Ticket> {
    let id = Uuid::new_v4();
    let key = Storage::upload_key(user, id);
    let (url, headers) = st
        .storage
        .presign_put(&key, content_type, content_length, URL_TTL)
        .await?;
    let row = uploads::insert(
        &**st.db.get().await?,
        id,
        user,
        content_type,
        content_length,
    )
    .await?;
    Ok(Ticket {
        id,
        url,
        headers,
        expires_at: row.created_at + URL_TTL,
    })
}

/// The provider's input for `user`'s upload `id`: a data URI or a presigned GET URL.
///
/// [`Error::NotFound`] for an unknown id, another user's or an expired
/// upload; [`Error::UploadNotReady`] while nothing was PUT and the URL is
/// still valid; [`Error::UploadUnusable`] when the object is not an image of
/// the declared type within [`MAX_SIDE`].
pub async fn source(st: &AppState, user: Uuid, id: Uuid) -> Result<String> {
    let upload = uploads::get(&**st.db.get().await?, id, user)
        .await?
        .filter(|u| Utc::now() < u.created_at + LIFETIME)
        .ok_or(Error::NotFound(crate::Resource::Upload))?;
    let key = Storage::upload_key(user, id);
    let missing = || {
        if Utc::now() < upload.created_at + URL_TTL {
            Error::UploadNotReady
        } else {
            Error::NotFound(crate::Resource::Upload)
        }
    };
    let mut head = st
        .storage
        .read_head(&key, INLINE_MAX)
        .await?
        .ok_or_else(missing)?;
    // A JPEG's size comes after its metadata (EXIF, ICC, XMP), which may run long.
    if head.total > head.bytes.len() as u64
        && media::sniff(&head.bytes).is_some_and(|(_, mime)| mime == "image/jpeg")
        && media::raster_size(&head.bytes).is_none()
    {
        head = st
            .storage
            .read_head(&key, JPEG_HEADER_MAX)
            .await?
            .ok_or_else(missing)?;
    }
    check(&head.bytes, &upload).map_err(Error::UploadUnusable)?;
    // What the provider reads is what was checked: the bytes themselves, or a copy
    // at a key the client's upload URL cannot write (it is valid a while longer).
    if head.total <= INLINE_MAX {
        return Ok(format!(
            "data:{};base64,{}",
            upload.content_type,
            STANDARD.encode(&head.bytes)
        ));
    }
    let checked = Storage::checked_upload_key(user, id);
    if !st
        .storage
        .copy_if_unchanged(&key, &checked, head.etag.as_deref())
        .await?
    {
        return Err(Error::UploadUnusable("changed while it was checked".into()));
    }
    Ok(st
        .storage
        .presign_get(&checked, st.cfg.generation_deadline)
        .await?)
}

/// Why the first bytes of an upload are not a usable source image, if they are not.
fn check(head: &[u8], upload: &Upload) -> std::result::Result<(), String> {
    let declared = upload.content_type.as_str();
    match media::sniff(head) {
        Some((_, mime)) if mime == declared => {}
        Some((_, mime)) if CONTENT_TYPES.contains(&mime) => {
            return Err(format!("is {mime}, not {declared} as declared"));
        }
        _ => return Err(format!("is not an image of the declared type {declared}")),
    }
    match media::raster_size(head) {
        Some((w, h)) if w.max(h) > MAX_SIDE => Err(format!(
            "is {w}×{h} pixels; at most {MAX_SIDE}×{MAX_SIDE} are accepted"
        )),
        Some((w, h)) if w > 0 && h > 0 => Ok(()),
        _ => Err(format!("is not an image of the declared type {declared}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(content_type: &str) -> Upload {
        Upload {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            content_type: content_type.into(),
            content_length: 1,
            created_at: Utc::now(),
        }
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(w, h)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    /// A PNG header claiming `w`×`h` (no pixel data: only the header is read).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = png(1, 1);
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        b
    }

    #[test]
    fn accepts_a_real_image_of_the_declared_type() {
        assert_eq!(check(&png(8, 4), &upload("image/png")), Ok(()));
        assert_eq!(check(&png_header(4096, 4096), &upload("image/png")), Ok(()));
    }

    #[test]
    fn refuses_another_type_a_non_image_and_too_many_pixels() {
        assert_eq!(
            check(&png(8, 4), &upload("image/jpeg")).unwrap_err(),
            "is image/png, not image/jpeg as declared"
        );
        assert_eq!(
            check(b"hello, world", &upload("image/webp")).unwrap_err(),
            "is not an image of the declared type image/webp"
        );
        assert_eq!(
            check(b"GIF89a\x01\x00\x01\x00", &upload("image/png")).unwrap_err(),
            "is not an image of the declared type image/png"
        );
        assert!(
            check(&png_header(4097, 10), &upload("image/png"))
                .unwrap_err()
                .contains("4097×10")
        );
        assert!(check(&png(8, 4)[..12], &upload("image/png")).is_err());
    }
}
