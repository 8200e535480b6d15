//! The `uploads` table: one row per upload URL handed out, so a generation's
//! `sourceImageId` can be told apart as unknown, not PUT yet, or ready.

use chrono::{DateTime, Utc};
use postgres_from_row::FromRow;
use uuid::Uuid;

use super::Sql;
use crate::Result;

/// An upload URL handed out to a user, with what the user declared.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Upload {
    /// The upload's id (`sourceImageId`; names its object key).
    pub id: Uuid,
    /// Who asked for the URL.
    pub user_id: Uuid,
    /// The declared type (`image/png`, `image/jpeg` or `image/webp`): the object must be one.
    pub content_type: String,
    /// The declared size in bytes (signed into the PUT).
    pub content_length: i64,
    /// When the URL was handed out: it works for 15 minutes, the object is kept a day.
    pub created_at: DateTime<Utc>,
}

/// Records an upload URL handed out to `user_id`; returns the row.
pub async fn insert(
    db: &impl Sql,
    id: Uuid,
    user_id: Uuid,
    content_type: &str,
    content_length: i64,
) -> Result<Upload> {
    let r = db
        .query_one(
            "INSERT INTO uploads (id, user_id, content_type, content_length)
             VALUES ($1, $2, $3, $4) RETURNING *",
            &[&id, &user_id, &content_type, &content_length],
        )
        .await?;
    Ok(Upload::from_row(&r))
}

/// The user's upload `id`; `None` for an unknown id or another user's.
pub async fn get(db: &impl Sql, id: Uuid, user_id: Uuid) -> Result<Option<Upload>> {
    let r = db
        .query_opt(
            "SELECT * FROM uploads WHERE id = $1 AND user_id = $2",
            &[&id, &user_id],
        )
        .await?;
    Ok(r.as_ref().map(Upload::from_row))
}

/// Forgets uploads created before `before`; returns how many.
pub async fn delete_before(db: &impl Sql, before: DateTime<Utc>) -> Result<u64> {
    Ok(db
        .execute("DELETE FROM uploads WHERE created_at < $1", &[&before])
        .await?)
}
