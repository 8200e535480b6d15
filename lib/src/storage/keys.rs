//! The bucket's layout: the key of each kind of object (a generation's
//! images and thumbnails, a user's uploads) and what an image key names.
//! Pure functions of ids and keys: imports nothing of this crate.

use uuid::Uuid;

use super::Storage;

/// The extension of a thumbnail's key (`{generationId}.thumb.webp`).
const THUMBNAIL_EXT: &str = "thumb.webp";

/// What a key under `users/{userId}/images/` names: a generation's image or its thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageKey {
    /// The user whose prefix it is under.
    pub user_id: Uuid,
    /// The generation its file name starts with.
    pub generation_id: Uuid,
    /// Whether it names the thumbnail (`….thumb.webp`) rather than the image.
    pub thumbnail: bool,
}

impl ImageKey {
    /// `users/{userId}/images/{generationId}.{rest}`; `None` if the key is not under an
    /// images prefix at all, `Some(Err(()))` if it is but does not have that shape.
    pub fn parse(key: &str) -> Option<Result<ImageKey, ()>> {
        let rest = key.strip_prefix("users/")?;
        let (user, file) = rest.split_once("/images/")?;
        let parsed = file
            .split_once('.')
            .filter(|(_, ext)| !ext.is_empty() && !ext.contains('/'))
            .and_then(|(g, ext)| {
                Some(ImageKey {
                    user_id: Uuid::parse_str(user).ok()?,
                    generation_id: Uuid::parse_str(g).ok()?,
                    thumbnail: ext.ends_with(THUMBNAIL_EXT),
                })
            });
        Some(parsed.ok_or(()))
    }
}

impl Storage {
    /// The object key of a generation's output `index` (0 for the first):
    /// `{generationId}.{ext}`, then `{generationId}.{index}.{ext}`.
    pub fn key(user_id: Uuid, generation_id: Uuid, index: i32, ext: &str) -> String {
        match index {
            0 => format!("users/{user_id}/images/{generation_id}.{ext}"),
            i => format!("users/{user_id}/images/{generation_id}.{i}.{ext}"),
        }
    }

    /// The object key of the thumbnail of the image stored at `image_key`
    /// (its extension replaced: `{generationId}[.{index}].thumb.webp`).
    pub fn thumbnail_key(image_key: &str) -> String {
        let stem = image_key.rsplit_once('.').map_or(image_key, |(s, _)| s);
        format!("{stem}.{THUMBNAIL_EXT}")
    }

    /// The tag of every upload, which the bucket's lifecycle rule expires after a day.
    pub const UPLOAD_TAG: &str = "picture-upload=true";

    /// The object key of a user's upload.
    pub fn upload_key(user_id: Uuid, upload_id: Uuid) -> String {
        format!("users/{user_id}/uploads/{upload_id}")
    }

    /// Where a checked upload is copied for the provider to read: a key no
    /// presigned PUT names, so the checked bytes cannot be replaced (the copy
    /// keeps the upload's tag, and expires with it).
    pub fn checked_upload_key(user_id: Uuid, upload_id: Uuid) -> String {
        format!("users/{user_id}/uploads/{upload_id}.checked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic() {
        let (u, g) = (Uuid::nil(), Uuid::max());
        assert_eq!(
            Storage::key(u, g, 0, "png"),
            format!("users/{u}/images/{g}.png")
        );
        assert_eq!(
            Storage::key(u, g, 2, "webp"),
            format!("users/{u}/images/{g}.2.webp")
        );
        assert_eq!(
            Storage::thumbnail_key(&Storage::key(u, g, 0, "png")),
            format!("users/{u}/images/{g}.thumb.webp")
        );
        assert_eq!(
            Storage::thumbnail_key(&Storage::key(u, g, 3, "jpg")),
            format!("users/{u}/images/{g}.3.thumb.webp")
        );
    }
}
