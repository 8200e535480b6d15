//! Batches (`batches`, `batch_items`): a user's list of prompts with shared
//! settings, each item pointing at its current run (a generation; a retry
//! points it at a new one). `crate::batches` decides what they mean.

use chrono::{DateTime, Utc};
use postgres_from_row::FromRow;
use uuid::Uuid;

use super::{
    Cursor, Sql,
    generations::{Generation, RequestKey},
};
use crate::Result;

/// What the caller asked of a batch, as stored with it.
#[derive(Debug, Clone, FromRow)]
pub struct BatchRequest {
    /// The caller's name for it, if given (emptied once the account is deleted).
    pub name: Option<String>,
    /// The shared settings as asked (`{}` when none).
    pub settings: serde_json::Value,
}

/// A batch row (not deleted).
#[derive(Debug, Clone, FromRow)]
pub struct Batch {
    /// The batch's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Its name and shared settings.
    #[from_row(flatten)]
    pub request: BatchRequest,
    /// The SHA-256 (hex) of the body sent with its `Idempotency-Key`, if one was.
    pub request_hash: Option<String>,
    /// When its user cancelled it; `None` if never.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When it was admitted.
    pub created_at: DateTime<Utc>,
}

/// A batch about to be recorded.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// The id to record it under (new).
    pub id: Uuid,
    /// The user admitting it.
    pub user_id: Uuid,
    /// What the caller asked.
    pub request: BatchRequest,
    /// The API's own URL as the request reached it (the items' webhooks).
    pub api_base: Option<String>,
    /// The request's `Idempotency-Key` and body hash: a retry with the key finds this batch.
    pub idempotency: Option<RequestKey>,
}

/// Inserts a batch; false (nothing inserted) when the user has one with its key.
pub async fn insert(tx: &impl Sql, b: &NewBatch) -> Result<bool> {
    let (key, hash) = b
        .idempotency
        .as_ref()
        .map(|k| (k.key.as_str(), k.hash.as_str()))
        .unzip();
    let n = tx
        .execute(
            "INSERT INTO batches (id, user_id, name, settings, api_base, idempotency_key, request_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            &[
                &b.id,
                &b.user_id,
                &b.request.name,
                &b.request.settings,
                &b.api_base,
                &key,
                &hash,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Points item `index` of a batch at a run: its first when admitted, a new
/// one when retried (the item is recorded on first use).
pub async fn put_item(
    tx: &impl Sql,
    batch_id: Uuid,
    index: i32,
    generation_id: Uuid,
) -> Result<()> {
    tx.execute(
        "INSERT INTO batch_items (batch_id, item_index, generation_id) VALUES ($1, $2, $3)
         ON CONFLICT (batch_id, item_index) DO UPDATE SET generation_id = EXCLUDED.generation_id",
        &[&batch_id, &index, &generation_id],
    )
    .await?;
    Ok(())
}

/// The user's batch recorded with this idempotency key (deleted or not).
pub async fn get_by_key(db: &impl Sql, user_id: Uuid, key: &str) -> Result<Option<Batch>> {
    let row = db
        .query_opt(
            "SELECT * FROM batches WHERE user_id = $1 AND idempotency_key = $2",
            &[&user_id, &key],
        )
        .await?;
    Ok(row.as_ref().map(Batch::from_row))
}

/// The user's batch, if it exists and was not deleted; `lock`: for the rest of the transaction.
pub async fn get_owned(
    db: &impl Sql,
    id: Uuid,
    user_id: Uuid,
    lock: bool,
) -> Result<Option<Batch>> {
    let sql = format!(
        "SELECT * FROM batches WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(db
        .query_opt(&sql, &[&id, &user_id])
        .await?
        .as_ref()
        .map(Batch::from_row))
}

/// Up to `limit` of the user's batches, newest first, strictly after `cursor`.
pub async fn page(
    db: &impl Sql,
    user_id: Uuid,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Batch>> {
    let (at, id) = cursor.unzip();
    let rows = db
        .query(
            "SELECT * FROM batches
              WHERE user_id = $1 AND deleted_at IS NULL
                AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
              ORDER BY created_at DESC, id DESC LIMIT $4",
            &[&user_id, &at, &id, &limit],
        )
        .await?;
    Ok(rows.iter().map(Batch::from_row).collect())
}

/// The items of some batches with their current runs: (batch, index, run), in item order.
pub async fn items(db: &impl Sql, batch_ids: &[Uuid]) -> Result<Vec<(Uuid, i32, Generation)>> {
    let rows = db
        .query(
            "SELECT i.batch_id, i.item_index, g.* FROM batch_items i
               JOIN generations g ON g.id = i.generation_id
              WHERE i.batch_id = ANY($1) ORDER BY i.batch_id, i.item_index",
            &[&batch_ids],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.get("batch_id"),
                r.get("item_index"),
                Generation::from_row(r)?,
            ))
        })
        .collect()
}

/// Every run of a batch's items (current and earlier ones).
pub async fn runs(db: &impl Sql, batch_id: Uuid) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT id FROM generations WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How many of the user's generations are queued.
pub async fn queued(db: &impl Sql, user_id: Uuid) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM generations WHERE user_id = $1 AND status = 'queued'",
            &[&user_id],
        )
        .await?
        .get(0))
}

/// Marks the batch cancelled (`true`) or running again (`false`).
pub async fn set_cancelled(db: &impl Sql, id: Uuid, cancelled: bool) -> Result<()> {
    db.execute(
        "UPDATE batches SET cancelled_at = CASE WHEN $2 THEN coalesce(cancelled_at, now()) END WHERE id = $1",
        &[&id, &cancelled],
    )
    .await?;
    Ok(())
}

/// Marks the batch deleted: it is gone from the views.
pub async fn mark_deleted(db: &impl Sql, id: Uuid) -> Result<()> {
    db.execute(
        "UPDATE batches SET deleted_at = coalesce(deleted_at, now()) WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}
