//! The audit's reads (`crate::audit` checks them): generations with their
//! image, hold and ledger capture; ledger accounts with their transaction
//! sums; free quotas with their free holds. Rows are streamed to a callback,
//! never loaded whole.

use std::{collections::HashMap, pin::pin};

use super::Sql;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use postgres_from_row::FromRow;
use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use crate::Result;

/// A generation with its image rows, hold and ledger capture.
#[derive(Debug, Clone)]
pub struct GenRow {
    /// The generation's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Its status as stored (`queued` … `cancelled`).
    pub status: String,
    /// Its image rows, in output order.
    pub images: Vec<ImageRow>,
    /// The user deleted an image of it (`DELETE /images/{id}`).
    pub image_deleted: bool,
    /// Its credit hold; `None` when it has none.
    pub hold: Option<Hold>,
    /// The amount of its `capture` transaction on the ledger.
    pub ledger_capture: Option<i64>,
    /// Open past the deadline plus one reconciler interval.
    pub overdue: bool,
    /// Its batch was cancelled over an hour ago.
    pub batch_cancelled: bool,
}

/// An image row of a generation.
#[derive(Debug, Clone)]
pub struct ImageRow {
    /// The image row's id.
    pub id: Uuid,
    /// The image's object key.
    pub key: String,
    /// The thumbnail key the row names.
    pub thumbnail: Option<String>,
    /// Its thumbnail is still to be made (`thumbnail_state` 'pending'): `Some(true)`
    /// when it has been for over an hour (the reconciler makes lost ones within minutes).
    pub thumbnail_pending: Option<bool>,
}

/// A generation's credit hold.
#[derive(Debug, Clone)]
pub struct Hold {
    /// `free`, `credits` or `waived`.
    pub kind: String,
    /// `held`, `captured` or `released`.
    pub state: String,
    /// Credits held, or once captured the credits charged.
    pub amount: i32,
    /// A captured `credits` hold's charge: `pending`, `in_flight`, `done`, `failed`, `rejected`.
    pub capture_state: Option<String>,
    /// Outputs charged, once captured.
    pub delivered: Option<i32>,
}

impl GenRow {
    /// Queued, pending or processing.
    pub fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "pending" | "processing")
    }
}

/// A ledger account with the sums of its transactions.
#[derive(FromRow)]
pub struct Account {
    /// The account's user.
    pub user_id: Uuid,
    /// The balance as stored.
    pub balance: i64,
    /// The total earned as stored.
    pub total_earned: i64,
    /// The total spent as stored.
    pub total_spent: i64,
    /// Grants and purchases, plus reinstatements, less take-backs.
    pub earned: i64,
    /// Credits of its `capture` entries.
    pub captures: i64,
    /// Credits of its `refund` entries.
    pub refunds: i64,
    /// Credits taken back after refunds and disputes (a balance may then go below zero).
    pub takebacks: i64,
}

/// A user's free-generation counter and the free holds that use it.
#[derive(FromRow)]
pub struct Quota {
    /// The user.
    pub user_id: Uuid,
    /// The stored count of free generations used; `None` without a quota row.
    pub free_used: Option<i32>,
    /// Free slots used by the user's held and captured holds.
    pub free_holds: i64,
}

/// Runs `sql` and hands each row, mapped, to `each`; returns how many.
async fn stream<T>(
    db: &impl Sql,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    map: fn(&Row) -> T,
    mut each: impl FnMut(T),
) -> Result<usize> {
    let mut rows = pin!(db.query_raw(sql, params.iter().copied()).await?);
    let mut n = 0;
    while let Some(r) = rows.try_next().await? {
        each(map(&r));
        n += 1;
    }
    Ok(n)
}

/// A generation with its images, hold and ledger capture; `$1` is the overdue age in seconds.
const GENERATIONS: &str = "
SELECT g.id, g.user_id, g.status, h.kind, h.state, h.amount, h.capture_state, h.delivered,
       t.amount,
       (g.status IN ('pending', 'processing') AND g.created_at < now() - $1::float8 * interval '1 second')
         OR (g.status = 'queued' AND g.created_at < now() - interval '1 day'),
       g.image_deleted_at IS NOT NULL,
       coalesce(i.ids, '{}'), coalesce(i.keys, '{}'), coalesce(i.thumbnails, '{}'), coalesce(i.pending, '{}'),
       coalesce(b.cancelled_at < now() - interval '1 hour', false)
  FROM generations g
  LEFT JOIN batches b ON b.id = g.batch_id
  LEFT JOIN LATERAL (
       SELECT array_agg(id ORDER BY output_index) AS ids,
              array_agg(storage_key ORDER BY output_index) AS keys,
              array_agg(thumbnail_key ORDER BY output_index) AS thumbnails,
              array_agg(CASE WHEN thumbnail_state = 'pending'
                             THEN created_at < now() - interval '1 hour' END ORDER BY output_index) AS pending
         FROM images WHERE generation_id = g.id) i ON true
  LEFT JOIN credit_holds h ON h.generation_id = g.id
  LEFT JOIN credit_transactions t ON t.generation_id = g.id AND t.kind = 'capture'";

fn gen_row(r: &Row) -> GenRow {
    let hold_kind: Option<String> = r.get(3);
    let ids: Vec<Uuid> = r.get(11);
    let keys: Vec<String> = r.get(12);
    let thumbnails: Vec<Option<String>> = r.get(13);
    let pending: Vec<Option<bool>> = r.get(14);
    let images = ids
        .into_iter()
        .zip(keys)
        .zip(thumbnails.into_iter().zip(pending))
        .map(|((id, key), (thumbnail, thumbnail_pending))| ImageRow {
            id,
            key,
            thumbnail,
            thumbnail_pending,
        })
        .collect();
    GenRow {
        id: r.get(0),
        user_id: r.get(1),
        status: r.get(2),
        images,
        hold: hold_kind.map(|kind| Hold {
            kind,
            state: r.get(4),
            amount: r.get(5),
            capture_state: r.get(6),
            delivered: r.get(7),
        }),
        ledger_capture: r.get(8),
        overdue: r.get(9),
        image_deleted: r.get(10),
        batch_cancelled: r.get(15),
    }
}

/// Streams the generations created since `since` (of `user`) to `each`; generations open
/// longer than `overdue_secs` are marked overdue. Returns how many.
pub async fn generations(
    db: &impl Sql,
    since: Option<DateTime<Utc>>,
    user: Option<Uuid>,
    overdue_secs: f64,
    each: impl FnMut(GenRow),
) -> Result<usize> {
    let sql = format!(
        "{GENERATIONS} WHERE ($2::timestamptz IS NULL OR g.created_at >= $2) AND ($3::uuid IS NULL OR g.user_id = $3)"
    );
    stream(db, &sql, &[&overdue_secs, &since, &user], gen_row, each).await
}

/// The users with generations created since `since`, in random order.
pub async fn recent_users(db: &impl Sql, since: DateTime<Utc>) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT user_id FROM (SELECT DISTINCT user_id FROM generations WHERE created_at >= $1) u
              ORDER BY random()",
            &[&since],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The generations with these ids (1000 per query).
pub async fn generations_by_id(db: &impl Sql, ids: &[Uuid]) -> Result<HashMap<Uuid, GenRow>> {
    let sql = format!("{GENERATIONS} WHERE g.id = ANY($2)");
    let mut found = HashMap::new();
    for chunk in ids.chunks(1000) {
        for r in db.query(&sql, &[&0f64, &chunk]).await? {
            let g = gen_row(&r);
            found.insert(g.id, g);
        }
    }
    Ok(found)
}

const ACCOUNTS: &str = "
SELECT a.user_id, a.balance, a.total_earned, a.total_spent,
       coalesce(sum(CASE WHEN t.kind IN ('grant', 'purchase', 'reinstate') THEN t.amount
                         WHEN t.kind = 'takeback' THEN -t.amount END), 0)::bigint AS earned,
       coalesce(sum(t.amount) FILTER (WHERE t.kind = 'capture'), 0)::bigint AS captures,
       coalesce(sum(t.amount) FILTER (WHERE t.kind = 'refund'), 0)::bigint AS refunds,
       coalesce(sum(t.amount) FILTER (WHERE t.kind = 'takeback'), 0)::bigint AS takebacks
  FROM credit_accounts a
  LEFT JOIN credit_transactions t ON t.user_id = a.user_id
 WHERE $1::uuid IS NULL OR a.user_id = $1
 GROUP BY a.user_id";

/// Streams the ledger accounts (of `user`) with their transaction sums; returns how many.
pub async fn accounts(
    db: &impl Sql,
    user: Option<Uuid>,
    each: impl FnMut(Account),
) -> Result<usize> {
    stream(db, ACCOUNTS, &[&user], Account::from_row, each).await
}

const QUOTAS: &str = "
SELECT coalesce(q.user_id, h.user_id) AS user_id, q.free_used, coalesce(h.n, 0) AS free_holds
  FROM (SELECT * FROM user_quotas WHERE $1::uuid IS NULL OR user_id = $1) q
  FULL JOIN (SELECT user_id, sum(free_units)::bigint AS n FROM credit_holds
              WHERE state IN ('held', 'captured') AND ($1::uuid IS NULL OR user_id = $1)
              GROUP BY user_id) h ON h.user_id = q.user_id";

/// Streams every user's (or `user`'s) free quota with the free slots their holds use.
pub async fn quotas(db: &impl Sql, user: Option<Uuid>, each: impl FnMut(Quota)) -> Result<usize> {
    stream(db, QUOTAS, &[&user], Quota::from_row, each).await
}

/// A purchase with what its ledger entries add up to.
#[derive(FromRow)]
pub struct PurchaseRow {
    /// The purchase's Checkout Session.
    pub session_id: String,
    /// The buyer.
    pub user_id: Uuid,
    /// Its status as stored.
    pub status: String,
    /// Credits its pack grants.
    pub credits: i64,
    /// Purchase entries (grants) and the credits they grant.
    pub grants: i64,
    /// Credits those entries grant.
    pub granted: i64,
    /// Credits taken back from it (refunds and disputes).
    pub takebacks: i64,
    /// Credits given back by won disputes.
    pub reinstated: i64,
}

const PURCHASES: &str = "
SELECT p.session_id, p.user_id, p.status, p.credits::bigint AS credits,
       count(t.id) FILTER (WHERE t.kind = 'purchase') AS grants,
       coalesce(sum(t.amount) FILTER (WHERE t.kind = 'purchase'), 0)::bigint AS granted,
       coalesce(sum(t.amount) FILTER (WHERE t.kind = 'takeback'), 0)::bigint AS takebacks,
       coalesce(sum(t.amount) FILTER (WHERE t.kind = 'reinstate'), 0)::bigint AS reinstated
  FROM purchases p
  LEFT JOIN credit_transactions t ON t.session_id = p.session_id
 WHERE ($1::uuid IS NULL OR p.user_id = $1) AND ($2::timestamptz IS NULL OR p.created_at >= $2)
 GROUP BY p.session_id";

/// Streams the purchases (of `user`, made since `since`) with their ledger sums; returns how many.
pub async fn purchases(
    db: &impl Sql,
    user: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    each: impl FnMut(PurchaseRow),
) -> Result<usize> {
    stream(db, PURCHASES, &[&user, &since], PurchaseRow::from_row, each).await
}

/// Purchase entries whose session has no purchase row (of `user`): (entry id, user, session).
pub async fn stray_purchase_entries(
    db: &impl Sql,
    user: Option<Uuid>,
) -> Result<Vec<(Uuid, Uuid, Option<String>)>> {
    let rows = db
        .query(
            "SELECT t.id, t.user_id, t.session_id FROM credit_transactions t
               LEFT JOIN purchases p ON p.session_id = t.session_id
              WHERE t.kind IN ('purchase', 'takeback', 'reinstate') AND p.session_id IS NULL
                AND ($1::uuid IS NULL OR t.user_id = $1)",
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Users whose data deletion finished (of `user`) with what is left of it:
/// (user, generations and batches still holding a text, image rows, uploads).
pub async fn deleted_users_leftovers(
    db: &impl Sql,
    user: Option<Uuid>,
) -> Result<Vec<(Uuid, i64, i64, i64)>> {
    let rows = db
        .query(
            "SELECT d.user_id,
                    (SELECT count(*) FROM generations g WHERE g.user_id = d.user_id AND g.created_at <= d.finished_at
                        AND (g.prompt <> '' OR g.negative_prompt IS NOT NULL OR g.style IS NOT NULL
                             OR g.source_image_url IS NOT NULL))
                  + (SELECT count(*) FROM batches b WHERE b.user_id = d.user_id AND b.created_at <= d.finished_at
                        AND (b.name IS NOT NULL OR jsonb_exists(b.settings, 'style'))),
                    (SELECT count(*) FROM images i WHERE i.user_id = d.user_id AND i.created_at <= d.finished_at),
                    (SELECT count(*) FROM uploads u WHERE u.user_id = d.user_id AND u.created_at <= d.finished_at)
               FROM account_deletions d
              WHERE d.finished_at IS NOT NULL AND ($1::uuid IS NULL OR d.user_id = $1)",
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Users (of `user`) whose data deletion is under way: their objects and
/// image rows are going, in no particular order.
pub async fn users_being_deleted(db: &impl Sql, user: Option<Uuid>) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT user_id FROM account_deletions
              WHERE finished_at IS NULL AND ($1::uuid IS NULL OR user_id = $1)",
            &[&user],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A user's generation counters (`generation_counts`) and their rows counted,
/// by status in the order of [`COUNTED_STATUSES`].
pub struct Counts {
    /// The user.
    pub user_id: Uuid,
    /// The counters as kept in `generation_counts` (zeros without a row).
    pub kept: Vec<i64>,
    /// The user's generation rows, counted.
    pub counted: Vec<i64>,
}

/// The statuses of [`Counts`], in order.
pub const COUNTED_STATUSES: [&str; 6] = [
    "queued",
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
];

const COUNTS: &str = "
WITH c AS (SELECT user_id, ARRAY[queued, pending, processing, completed, failed, cancelled] AS kept
             FROM generation_counts WHERE $1::uuid IS NULL OR user_id = $1),
     g AS (SELECT user_id,
                  ARRAY[count(*) FILTER (WHERE status = 'queued'),
                        count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing'),
                        count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
                        count(*) FILTER (WHERE status = 'cancelled')] AS counted
             FROM generations WHERE $1::uuid IS NULL OR user_id = $1 GROUP BY user_id)
SELECT user_id, kept, counted FROM (
    SELECT user_id, coalesce(kept, '{0,0,0,0,0,0}') AS kept, coalesce(counted, '{0,0,0,0,0,0}') AS counted
      FROM c FULL JOIN g USING (user_id)) x
 WHERE kept <> counted";

/// The users (or `user`) whose counters differ from their rows, read in one
/// snapshot (so a generation written meanwhile is on both sides or neither).
pub async fn count_mismatches(db: &impl Sql, user: Option<Uuid>) -> Result<Vec<Counts>> {
    let rows = db.query(COUNTS, &[&user]).await?;
    Ok(rows
        .iter()
        .map(|r| Counts {
            user_id: r.get(0),
            kept: r.get(1),
            counted: r.get(2),
        })
        .collect())
}
