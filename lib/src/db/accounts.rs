//! Deleting a user's data (`account_deletions`, and the rows it scrubs):
//! prompts, images, uploads. The ledger and credit holds stay (accounting);
//! generations stay as rows without their texts, so captures keep their
//! generation.

use uuid::Uuid;

use super::Sql;
use crate::Result;

/// Records that `user` asked for deletion (again: nothing changes, an unfinished one goes on).
pub async fn request_deletion(db: &impl Sql, user: Uuid) -> Result<()> {
    db.execute(
        "INSERT INTO account_deletions (user_id) VALUES ($1)
         ON CONFLICT (user_id) DO UPDATE SET finished_at = NULL",
        &[&user],
    )
    .await?;
    Ok(())
}

/// The ids of the user's generations still open.
pub async fn open_generations(db: &impl Sql, user: Uuid) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT id FROM generations WHERE user_id = $1 AND status IN ('queued', 'pending', 'processing')",
            &[&user],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Removes what the user wrote and stored from the database, in one
/// transaction (`db` is one): image rows, uploads, exports (ended), and the
/// texts and source URLs of their generations. Generations whose image existed are marked as
/// such (`image_deleted_at`), so the audit does not miss the image.
pub async fn scrub(db: &impl Sql, user: Uuid) -> Result<()> {
    db.execute(
        "UPDATE generations g
            SET prompt = '', negative_prompt = NULL, style = NULL, source_image_url = NULL,
                image_deleted_at = coalesce(g.image_deleted_at,
                    CASE WHEN EXISTS (SELECT 1 FROM images i WHERE i.generation_id = g.id) THEN now() END)
          WHERE user_id = $1",
        &[&user],
    )
    .await?;
    db.execute("DELETE FROM images WHERE user_id = $1", &[&user])
        .await?;
    db.execute("DELETE FROM uploads WHERE user_id = $1", &[&user])
        .await?;
    // Batch names and shared settings (their style is free text) are the user's words too.
    db.execute(
        "UPDATE batches SET name = NULL, settings = settings - 'style' WHERE user_id = $1",
        &[&user],
    )
    .await?;
    // Their zips go with the objects: no export is downloadable or built any more.
    db.execute(
        "UPDATE exports SET status = CASE status WHEN 'pending' THEN 'failed' ELSE 'expired' END,
                error = CASE status WHEN 'pending' THEN 'account deleted' ELSE error END
          WHERE user_id = $1 AND status IN ('pending', 'ready')",
        &[&user],
    )
    .await?;
    Ok(())
}

/// Marks the user's deletion finished.
pub async fn finish_deletion(db: &impl Sql, user: Uuid) -> Result<()> {
    db.execute(
        "UPDATE account_deletions SET finished_at = now() WHERE user_id = $1",
        &[&user],
    )
    .await?;
    Ok(())
}

/// Users whose deletion is not finished, oldest first.
pub async fn unfinished(db: &impl Sql, limit: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT user_id FROM account_deletions WHERE finished_at IS NULL
              ORDER BY requested_at LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether the user's deletion finished (`None`: never asked).
pub async fn deletion_finished(db: &impl Sql, user: Uuid) -> Result<Option<bool>> {
    let row = db
        .query_opt(
            "SELECT finished_at IS NOT NULL FROM account_deletions WHERE user_id = $1",
            &[&user],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
