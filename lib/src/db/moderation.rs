//! The moderation blocklist (`moderation_terms`) and the per-user count of
//! refused requests (`user_quotas.content_refused`).

use uuid::Uuid;

use super::Sql;
use crate::Result;

/// A blocklist row.
#[derive(Debug, Clone)]
pub struct TermRow {
    /// One or more words, lower case, matched on word boundaries after normalisation.
    pub term: String,
    /// The OpenAI moderation category it stands for (`sexual/minors`, `hate`, …).
    pub category: String,
    /// Refused whatever the settings (`MODERATION_BLOCKLIST=off` keeps only these).
    pub always: bool,
}

/// Every blocked term.
pub async fn terms(db: &impl Sql) -> Result<Vec<TermRow>> {
    let rows = db
        .query(
            "SELECT term, category, always FROM moderation_terms ORDER BY term",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TermRow {
            term: r.get(0),
            category: r.get(1),
            always: r.get(2),
        })
        .collect())
}

/// Counts one more refused request of `user`.
pub async fn count_refusal(db: &impl Sql, user: Uuid) -> Result<()> {
    db.execute(
        "INSERT INTO user_quotas (user_id, content_refused) VALUES ($1, 1)
         ON CONFLICT (user_id) DO UPDATE SET content_refused = user_quotas.content_refused + 1",
        &[&user],
    )
    .await?;
    Ok(())
}
