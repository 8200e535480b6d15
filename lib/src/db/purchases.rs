//! Credit packs (`credit_packs`) and purchases (`purchases`, one row per
//! Stripe Checkout Session). The ledger entries a purchase causes live in
//! `credit_transactions` (`db::ledger`).

use chrono::{DateTime, Utc};
use postgres_from_row::FromRow;
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::Sql;
use crate::{Error, Result};

/// A pack of credits on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Pack {
    /// The pack's id (`packId`, e.g. `credits-100`).
    pub id: String,
    /// Name to show (also the Checkout line item's).
    pub name: String,
    /// Credits it grants.
    pub credits: i32,
    /// Its price in the currency's minor unit.
    pub price_cents: i32,
    /// ISO 4217 code, lower case (`eur`).
    pub currency: String,
}

/// The packs on sale, in their order.
pub async fn active_packs(db: &impl Sql) -> Result<Vec<Pack>> {
    let rows = db
        .query(
            "SELECT * FROM credit_packs WHERE is_active ORDER BY sort_order, id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(Pack::from_row).collect())
}

/// A pack on sale.
pub async fn active_pack(db: &impl Sql, id: &str) -> Result<Option<Pack>> {
    let row = db
        .query_opt(
            "SELECT * FROM credit_packs WHERE id = $1 AND is_active",
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(Pack::from_row))
}

/// Where a purchase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PurchaseStatus {
    /// The session is open: the customer has not paid (yet).
    Open,
    /// Stripe says it is paid; its credits are not granted yet.
    Paid,
    /// Paid, and its credits granted (once).
    Granted,
    /// The session closed unpaid.
    Expired,
    /// The (async) payment failed, or the session disagreed with the pack.
    Failed,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Open => "open",
            PurchaseStatus::Paid => "paid",
            PurchaseStatus::Granted => "granted",
            PurchaseStatus::Expired => "expired",
            PurchaseStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "open" => PurchaseStatus::Open,
            "paid" => PurchaseStatus::Paid,
            "granted" => PurchaseStatus::Granted,
            "expired" => PurchaseStatus::Expired,
            "failed" => PurchaseStatus::Failed,
            other => {
                return Err(Error::Internal(format!(
                    "unknown purchase status {other:?}"
                )));
            }
        })
    }
}

/// A Checkout Session we made, with what it sells.
#[derive(Debug, Clone)]
pub struct Purchase {
    /// The Stripe Checkout Session's id (`cs_…`): the purchase's key.
    pub session_id: String,
    /// The buyer.
    pub user_id: Uuid,
    /// The pack bought.
    pub pack_id: String,
    /// Credits it grants, as the pack had them when the session was made.
    pub credits: i32,
    /// The price asked, in the currency's minor unit, as the pack had it then.
    pub amount_cents: i32,
    /// ISO 4217 code, lower case.
    pub currency: String,
    /// Where it stands.
    pub status: PurchaseStatus,
    /// Stripe's PaymentIntent (`pi_…`) once known: refunds and disputes find the purchase by it.
    pub payment_intent: Option<String>,
    /// Stripe's hosted payment page for the session.
    pub checkout_url: String,
    /// The SHA-256 (hex) of the body sent with its `Idempotency-Key`, if one was.
    pub request_hash: Option<String>,
    /// When the session closes unpaid.
    pub expires_at: DateTime<Utc>,
    /// When it was recorded (before the client saw the session).
    pub created_at: DateTime<Utc>,
}

impl Purchase {
    fn from_row(r: &Row) -> Result<Self> {
        Ok(Purchase {
            session_id: r.get("session_id"),
            user_id: r.get("user_id"),
            pack_id: r.get("pack_id"),
            credits: r.get("credits"),
            amount_cents: r.get("amount_cents"),
            currency: r.get("currency"),
            status: PurchaseStatus::parse(r.get("status"))?,
            payment_intent: r.get("payment_intent"),
            checkout_url: r.get("checkout_url"),
            request_hash: r.get("request_hash"),
            expires_at: r.get("expires_at"),
            created_at: r.get("created_at"),
        })
    }
}

/// A purchase about to be recorded.
#[derive(Debug, Clone)]
pub struct NewPurchase<'a> {
    /// The new session's id.
    pub session_id: &'a str,
    /// The buyer.
    pub user_id: Uuid,
    /// The pack sold: its credits, price and currency are copied into the row.
    pub pack: &'a Pack,
    /// Stripe's hosted payment page for the session.
    pub checkout_url: &'a str,
    /// When the session closes unpaid (as Stripe reports it, else as asked).
    pub expires_at: DateTime<Utc>,
    /// The request's `Idempotency-Key` and body hash.
    pub key: Option<(&'a str, &'a str)>,
}

/// Records a purchase; false when the session (or the user's key) is recorded already.
pub async fn insert(db: &impl Sql, p: &NewPurchase<'_>) -> Result<bool> {
    let (key, hash) = p.key.unzip();
    let n = db
        .execute(
            "INSERT INTO purchases (session_id, user_id, pack_id, credits, amount_cents, currency,
                                    expires_at, idempotency_key, request_hash, checkout_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            &[
                &p.session_id,
                &p.user_id,
                &p.pack.id,
                &p.pack.credits,
                &p.pack.price_cents,
                &p.pack.currency,
                &p.expires_at,
                &key,
                &hash,
                &p.checkout_url,
            ],
        )
        .await?;
    Ok(n == 1)
}

async fn one(
    db: &impl Sql,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Purchase>> {
    db.query_opt(sql, params)
        .await?
        .as_ref()
        .map(Purchase::from_row)
        .transpose()
}

/// The user's purchase of a session (none for another user's).
pub async fn get_owned(db: &impl Sql, session_id: &str, user_id: Uuid) -> Result<Option<Purchase>> {
    one(
        db,
        "SELECT * FROM purchases WHERE session_id = $1 AND user_id = $2",
        &[&session_id, &user_id],
    )
    .await
}

/// The user's purchase recorded with an idempotency key.
pub async fn get_by_key(db: &impl Sql, user_id: Uuid, key: &str) -> Result<Option<Purchase>> {
    one(
        db,
        "SELECT * FROM purchases WHERE user_id = $1 AND idempotency_key = $2",
        &[&user_id, &key],
    )
    .await
}

/// The purchase paid by a PaymentIntent.
pub async fn get_by_payment(db: &impl Sql, payment_intent: &str) -> Result<Option<Purchase>> {
    one(
        db,
        "SELECT * FROM purchases WHERE payment_intent = $1",
        &[&payment_intent],
    )
    .await
}

/// Locks a purchase for the rest of the transaction and returns it.
pub async fn lock(db: &impl Sql, session_id: &str) -> Result<Option<Purchase>> {
    one(
        db,
        "SELECT * FROM purchases WHERE session_id = $1 FOR UPDATE",
        &[&session_id],
    )
    .await
}

/// Records what Stripe says of a purchase: its status, its PaymentIntent (once known) and
/// whether it disagreed with the pack.
pub async fn update(
    db: &impl Sql,
    session_id: &str,
    status: PurchaseStatus,
    payment_intent: Option<&str>,
    mismatch: bool,
) -> Result<()> {
    db.execute(
        "UPDATE purchases SET status = $2, payment_intent = coalesce(payment_intent, $3),
                mismatch = mismatch OR $4, updated_at = now()
          WHERE session_id = $1",
        &[&session_id, &status.as_str(), &payment_intent, &mismatch],
    )
    .await?;
    Ok(())
}

/// Open (or paid, not granted) purchases created before `before`, oldest first: the
/// reconciler asks Stripe about them.
pub async fn unsettled(db: &impl Sql, before: DateTime<Utc>, limit: i64) -> Result<Vec<Purchase>> {
    let rows = db
        .query(
            "SELECT * FROM purchases WHERE status IN ('open', 'paid') AND created_at < $1
              ORDER BY created_at LIMIT $2",
            &[&before, &limit],
        )
        .await?;
    rows.iter().map(Purchase::from_row).collect()
}
