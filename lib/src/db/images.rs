//! Images (`images` table): one per output stored of a completed generation
//! (1 to 4), owned by its user.

use super::Sql;
use chrono::{DateTime, Utc};
use postgres_from_row::FromRow;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::Result;

/// Where a thumbnail was stored, as the image row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredThumbnail {
    /// The thumbnail's object key (`{generationId}[.{index}].thumb.webp`, beside the image).
    pub key: String,
    /// The BlurHash (4×3 components) of the thumbnail's pixels.
    pub blurhash: String,
}

/// An image with the generation facts clients show next to it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image's own id (`/images/{id}`; names its file in an export).
    pub id: Uuid,
    /// Its stored object, owner and output index.
    pub file: NewImage,
    /// Whether its user marked it as a favourite (`PATCH /images/{id}`).
    pub is_favorite: bool,
    /// When its row was recorded (as its generation completed).
    pub created_at: DateTime<Utc>,
    /// Its generation's prompt (the style appended, if any).
    pub prompt: String,
    /// Its generation's negative prompt, if any.
    pub negative_prompt: Option<String>,
    /// Its generation's model, by name (`flux-schnell`).
    pub model: String,
}

impl From<&Row> for Image {
    fn from(r: &Row) -> Self {
        Image {
            id: r.get("id"),
            file: NewImage {
                generation_id: r.get("generation_id"),
                user_id: r.get("user_id"),
                output_index: r.get("output_index"),
                storage_key: r.get("storage_key"),
                format: r.get("format"),
                file_size: r.get("file_size"),
                width: r.get("width"),
                height: r.get("height"),
                thumbnail: thumbnail(r),
            },
            is_favorite: r.get("is_favorite"),
            created_at: r.get("created_at"),
            prompt: r.get("prompt"),
            negative_prompt: r.get("negative_prompt"),
            model: r.get("model"),
        }
    }
}

/// The thumbnail a row names, if any.
fn thumbnail(r: &Row) -> Option<StoredThumbnail> {
    let key: Option<String> = r.get("thumbnail_key");
    let blurhash: Option<String> = r.get("blurhash");
    key.zip(blurhash)
        .map(|(key, blurhash)| StoredThumbnail { key, blurhash })
}

const SELECT: &str = "SELECT i.*, g.prompt, g.negative_prompt, m.name AS model
                        FROM images i
                        JOIN generations g ON g.id = i.generation_id
                        JOIN models m ON m.id = g.model_id";

/// An image's stored object and whose it is (what a new image row records).
#[derive(Debug, Clone)]
pub struct NewImage {
    /// The generation it is an output of.
    pub generation_id: Uuid,
    /// Its owner (the generation's).
    pub user_id: Uuid,
    /// Which of the generation's outputs it is (0 for the first).
    pub output_index: i32,
    /// The object key (`users/{userId}/images/{generationId}[.{index}].{ext}`).
    pub storage_key: String,
    /// Its format as an extension (`png`, `jpg`, `webp`, `gif`, `svg`), sniffed from its bytes.
    pub format: String,
    /// The object's size in bytes.
    pub file_size: i64,
    /// Width in pixels, read from the file.
    pub width: i32,
    /// Height in pixels, read from the file.
    pub height: i32,
    /// `None`: not made yet (`thumbnail_state` 'pending') or the image cannot be
    /// decoded ('none').
    pub thumbnail: Option<StoredThumbnail>,
}

/// `thumbnail_state` for a thumbnail made, or found impossible.
fn state(thumbnail: Option<&StoredThumbnail>) -> &'static str {
    if thumbnail.is_some() { "done" } else { "none" }
}

/// Inserts an image of a generation, its thumbnail still to be made (`thumbnail_state`
/// 'pending'); a second insert of the same output does nothing.
pub async fn insert(db: &impl Sql, img: &NewImage) -> Result<()> {
    db.execute(
        "INSERT INTO images (id, generation_id, user_id, storage_key, format, file_size, width, height,
                             output_index)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (generation_id, output_index) DO NOTHING",
        &[
            &Uuid::new_v4(),
            &img.generation_id,
            &img.user_id,
            &img.storage_key,
            &img.format,
            &img.file_size,
            &img.width,
            &img.height,
            &img.output_index,
        ],
    )
    .await?;
    Ok(())
}

/// An image whose thumbnail has not been tried yet.
#[derive(Debug, Clone, FromRow)]
pub struct Pending {
    /// The image's id.
    pub id: Uuid,
    /// The generation it is an output of.
    pub generation_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// The image's object key, read to make the thumbnail.
    pub storage_key: String,
}

/// Locks up to `limit` images (of `user`, stored before `stored_before`) without a
/// thumbnail try, ids after `after`, in id order, for the rest of the transaction;
/// rows other runs hold are skipped.
pub async fn claim_pending(
    db: &impl Sql,
    user: Option<Uuid>,
    stored_before: Option<DateTime<Utc>>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Pending>> {
    let rows = db
        .query(
            "SELECT id, generation_id, user_id, storage_key FROM images
              WHERE thumbnail_state = 'pending' AND ($1::uuid IS NULL OR user_id = $1)
                AND ($2::timestamptz IS NULL OR created_at < $2)
                AND ($3::uuid IS NULL OR id > $3)
              ORDER BY id LIMIT $4
                FOR UPDATE SKIP LOCKED",
            &[&user, &stored_before, &after, &limit],
        )
        .await?;
    Ok(rows.iter().map(Pending::from_row).collect())
}

/// Locks the image of `generation_id` stored at `key` if its thumbnail has not been
/// tried yet (and no one else holds it), for the rest of the transaction.
pub async fn claim_pending_at(
    db: &impl Sql,
    generation_id: Uuid,
    key: &str,
) -> Result<Option<Pending>> {
    let row = db
        .query_opt(
            "SELECT id, generation_id, user_id, storage_key FROM images
              WHERE generation_id = $1 AND storage_key = $2 AND thumbnail_state = 'pending'
                FOR UPDATE SKIP LOCKED",
            &[&generation_id, &key],
        )
        .await?;
    Ok(row.as_ref().map(Pending::from_row))
}

/// Records the outcome of a thumbnail try on an image that had none; false if
/// it has one already (or is gone).
pub async fn set_thumbnail(
    db: &impl Sql,
    id: Uuid,
    thumbnail: Option<&StoredThumbnail>,
) -> Result<bool> {
    let n = db
        .execute(
            "UPDATE images SET thumbnail_key = $2, blurhash = $3, thumbnail_state = $4
              WHERE id = $1 AND thumbnail_state = 'pending'",
            &[
                &id,
                &thumbnail.map(|t| &t.key),
                &thumbnail.map(|t| &t.blurhash),
                &state(thumbnail),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// An image by id, only if `user_id` owns it.
pub async fn get_owned(db: &impl Sql, id: Uuid, user_id: Uuid) -> Result<Option<Image>> {
    let sql = format!("{SELECT} WHERE i.id = $1 AND i.user_id = $2");
    Ok(db
        .query_opt(&sql, &[&id, &user_id])
        .await?
        .as_ref()
        .map(Image::from))
}

/// The images of a generation, in output order.
pub async fn for_generation(db: &impl Sql, generation_id: Uuid) -> Result<Vec<Image>> {
    for_generations(db, &[generation_id]).await
}

/// The images of several generations, each generation's in output order.
pub async fn for_generations(db: &impl Sql, generation_ids: &[Uuid]) -> Result<Vec<Image>> {
    let sql = format!("{SELECT} WHERE i.generation_id = ANY($1) ORDER BY i.output_index");
    Ok(db
        .query(&sql, &[&generation_ids])
        .await?
        .iter()
        .map(Image::from)
        .collect())
}

use super::Cursor;

/// A page of the user's images, newest first, strictly after `cursor`.
pub async fn list(
    db: &impl Sql,
    user_id: Uuid,
    favorites_only: bool,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Image>> {
    let (at, id) = cursor.unzip();
    let sql = format!(
        "{SELECT} WHERE i.user_id = $1 AND (NOT $2 OR i.is_favorite)
           AND ($3::timestamptz IS NULL OR (i.created_at, i.id) < ($3::timestamptz, $4::uuid))
         ORDER BY i.created_at DESC, i.id DESC LIMIT $5"
    );
    let rows = db
        .query(&sql, &[&user_id, &favorites_only, &at, &id, &limit])
        .await?;
    Ok(rows.iter().map(Image::from).collect())
}

/// Sets the favourite flag; false if the user has no such image.
pub async fn set_favorite(db: &impl Sql, id: Uuid, user_id: Uuid, favorite: bool) -> Result<bool> {
    let n = db
        .execute(
            "UPDATE images SET is_favorite = $3 WHERE id = $1 AND user_id = $2",
            &[&id, &user_id, &favorite],
        )
        .await?;
    Ok(n == 1)
}

/// Deletes the row; returns the thumbnail key it named (`Some(None)`: none)
/// if the user had such an image.
pub async fn delete(db: &impl Sql, id: Uuid, user_id: Uuid) -> Result<Option<Option<String>>> {
    Ok(db
        .query_opt(
            "DELETE FROM images WHERE id = $1 AND user_id = $2 RETURNING thumbnail_key",
            &[&id, &user_id],
        )
        .await?
        .map(|r| r.get(0)))
}
