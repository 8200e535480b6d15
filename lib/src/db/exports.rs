//! Exports (`exports` table): a user's copy of their data, from `pending`
//! (built by whoever holds the lease) to `ready` (a zip in S3 for a day),
//! `failed` or `expired`. `crate::export` builds them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::Sql;
use crate::Result;

/// An export row.
#[derive(Debug, Clone)]
pub struct Export {
    /// The export's id (also its zip's file name).
    pub id: Uuid,
    /// Whose data it copies.
    pub user_id: Uuid,
    /// Where it is.
    pub status: ExportStatus,
    /// The zip's object key (`users/{userId}/exports/{id}.zip`), once ready.
    pub storage_key: Option<String>,
    /// Images in the zip, once ready.
    pub images: Option<i32>,
    /// The zip's size in bytes, once ready.
    pub size_bytes: Option<i64>,
    /// Runs that took its lease so far (one running out of time on the fifth gives it up).
    pub attempts: i32,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it became ready or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// Until when a ready export's zip is kept (a day after it was made).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Where an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    /// Being built, or left for the reconciler to finish.
    Pending,
    /// Its zip is in the bucket until `expires_at`.
    Ready,
    /// Given up: too large for a run, a permanent error, or the account deleted meanwhile.
    Failed,
    /// Its day passed (its zip is deleted), or the account was deleted.
    Expired,
}

impl From<&Row> for Export {
    fn from(r: &Row) -> Self {
        let status = match r.get::<_, &str>("status") {
            "ready" => ExportStatus::Ready,
            "failed" => ExportStatus::Failed,
            "expired" => ExportStatus::Expired,
            _ => ExportStatus::Pending,
        };
        Export {
            id: r.get("id"),
            user_id: r.get("user_id"),
            status,
            storage_key: r.get("storage_key"),
            images: r.get("images"),
            size_bytes: r.get("size_bytes"),
            attempts: r.get("attempts"),
            created_at: r.get("created_at"),
            finished_at: r.get("finished_at"),
            expires_at: r.get("expires_at"),
        }
    }
}

/// The user's unfinished export, or a new one.
pub async fn pending_or_new(db: &impl Sql, user_id: Uuid) -> Result<Export> {
    loop {
        let row = db
            .query_opt(
                "INSERT INTO exports (id, user_id) VALUES ($1, $2)
                 ON CONFLICT (user_id) WHERE status = 'pending' DO NOTHING RETURNING *",
                &[&Uuid::new_v4(), &user_id],
            )
            .await?;
        let row = match row {
            Some(row) => Some(row),
            None => {
                db.query_opt(
                    "SELECT * FROM exports WHERE user_id = $1 AND status = 'pending'",
                    &[&user_id],
                )
                .await?
            }
        };
        // None: the pending one ended between the two statements; a new one can be made now.
        if let Some(row) = row {
            return Ok(Export::from(&row));
        }
    }
}

/// The user's export.
pub async fn get_owned(db: &impl Sql, id: Uuid, user_id: Uuid) -> Result<Option<Export>> {
    let row = db
        .query_opt(
            "SELECT * FROM exports WHERE id = $1 AND user_id = $2",
            &[&id, &user_id],
        )
        .await?;
    Ok(row.as_ref().map(Export::from))
}

/// Takes a pending export's lease for `secs` (if nobody holds it); returns it.
pub async fn claim(db: &impl Sql, id: Uuid, secs: f64) -> Result<Option<Export>> {
    let row = db
        .query_opt(
            "UPDATE exports SET lease_until = now() + make_interval(secs => $2), attempts = attempts + 1
              WHERE id = $1 AND status = 'pending' AND (lease_until IS NULL OR lease_until < now())
          RETURNING *",
            &[&id, &secs],
        )
        .await?;
    Ok(row.as_ref().map(Export::from))
}

/// Marks a pending export ready: its zip, its size, and until when it is
/// kept; false if it is not pending any more (an account deletion ended it).
pub async fn finish(
    db: &impl Sql,
    id: Uuid,
    key: &str,
    images: i32,
    size: i64,
    keep_secs: f64,
) -> Result<bool> {
    let n = db
        .execute(
            "UPDATE exports SET status = 'ready', storage_key = $2, images = $3, size_bytes = $4,
                    lease_until = NULL, finished_at = now(), expires_at = now() + make_interval(secs => $5)
              WHERE id = $1 AND status = 'pending'",
            &[&id, &key, &images, &size, &keep_secs],
        )
        .await?;
    Ok(n == 1)
}

/// Gives up an export (`failed`, with the reason).
pub async fn fail(db: &impl Sql, id: Uuid, error: &str) -> Result<()> {
    db.execute(
        "UPDATE exports SET status = 'failed', error = $2, lease_until = NULL, finished_at = now()
          WHERE id = $1 AND status = 'pending'",
        &[&id, &error],
    )
    .await?;
    Ok(())
}

/// Pending exports nobody holds (at most `limit`, oldest first).
pub async fn unclaimed(db: &impl Sql, limit: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT id FROM exports WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < now())
              ORDER BY created_at LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Ready exports past their time (at most `limit`): (id, key).
pub async fn expired(db: &impl Sql, limit: i64) -> Result<Vec<(Uuid, String)>> {
    let rows = db
        .query(
            "SELECT id, storage_key FROM exports WHERE status = 'ready' AND expires_at < now() LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Marks a ready export expired (its object is gone).
pub async fn expire(db: &impl Sql, id: Uuid) -> Result<()> {
    db.execute(
        "UPDATE exports SET status = 'expired' WHERE id = $1 AND status = 'ready'",
        &[&id],
    )
    .await?;
    Ok(())
}
