//! The built-in credit ledger (`credit_accounts`, `credit_transactions`): one
//! balance row per user and an append-only log of grants, captures, refunds
//! and purchase entries (a generation is captured and refunded at most once,
//! and a Stripe object moves a balance at most once: unique indexes).

use super::Sql;
use serde::Serialize;
use uuid::Uuid;

use crate::Result;

/// A user's credit account (as the ledger or the credit service reports it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// Credits on the account (open holds not deducted); negative after a take-back of spent ones.
    pub balance: i64,
    /// Credits granted, bought and reinstated, less those taken back (0 if the service omits it).
    pub total_earned: i64,
    /// Credits charged for generations, less refunds (0 if the service omits it).
    pub total_spent: i64,
}

/// One entry of the log. `reference` (a Stripe object id) is unique per kind,
/// `session` the purchase (Checkout Session) an entry belongs to.
struct Entry<'a> {
    user_id: Uuid,
    kind: &'a str,
    amount: i64,
    generation_id: Option<Uuid>,
    description: &'a str,
    reference: Option<&'a str>,
    session: Option<&'a str>,
}

/// Appends `e`; false (and nothing written) if an entry with its unique key exists.
async fn append(db: &impl Sql, e: Entry<'_>) -> Result<bool> {
    let n = db
        .execute(
            "INSERT INTO credit_transactions (id, user_id, kind, amount, generation_id, description, reference, session_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &Uuid::new_v4(),
                &e.user_id,
                &e.kind,
                &e.amount,
                &e.generation_id,
                &e.description,
                &e.reference,
                &e.session,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Moves a balance by `delta` and what was earned with it (creating the account).
async fn earn(db: &impl Sql, user_id: Uuid, delta: i64) -> Result<Balance> {
    let row = db
        .query_one(
            "INSERT INTO credit_accounts (user_id, balance, total_earned) VALUES ($1, $2, $2)
             ON CONFLICT (user_id) DO UPDATE
                SET balance = credit_accounts.balance + $2, total_earned = credit_accounts.total_earned + $2, updated_at = now()
             RETURNING balance, total_earned, total_spent",
            &[&user_id, &delta],
        )
        .await?;
    Ok(Balance {
        balance: row.get(0),
        total_earned: row.get(1),
        total_spent: row.get(2),
    })
}

/// What a purchase entry does to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseEntry {
    /// A paid session's credits (reference: the session).
    Grant,
    /// A refund's share or a dispute's amount taken back (reference: the refund or dispute).
    TakeBack,
    /// A won dispute's take-back given back (reference: the dispute).
    Reinstate,
}

impl PurchaseEntry {
    fn kind(self) -> &'static str {
        match self {
            PurchaseEntry::Grant => "purchase",
            PurchaseEntry::TakeBack => "takeback",
            PurchaseEntry::Reinstate => "reinstate",
        }
    }
}

/// Records a purchase entry of `amount` credits keyed by its Stripe object
/// `reference`, once: true if it was recorded now (and the balance moved),
/// false if it had been before (nothing changes).
pub async fn purchase_entry(
    db: &impl Sql,
    user_id: Uuid,
    session: &str,
    entry: PurchaseEntry,
    reference: &str,
    amount: i64,
) -> Result<bool> {
    let recorded = append(
        db,
        Entry {
            user_id,
            kind: entry.kind(),
            amount,
            generation_id: None,
            description: "",
            reference: Some(reference),
            session: Some(session),
        },
    )
    .await?;
    if recorded {
        let delta = if entry == PurchaseEntry::TakeBack {
            -amount
        } else {
            amount
        };
        earn(db, user_id, delta).await?;
        tracing::info!(%user_id, session, reference, amount, op = entry.kind(), "ledger entry recorded");
    }
    Ok(recorded)
}

/// The amount of a purchase entry recorded under `reference`, if any.
pub async fn entry_amount(
    db: &impl Sql,
    entry: PurchaseEntry,
    reference: &str,
) -> Result<Option<i64>> {
    let row = db
        .query_opt(
            "SELECT amount FROM credit_transactions WHERE kind = $1 AND reference = $2",
            &[&entry.kind(), &reference],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Credits taken back from a purchase so far, net of reinstatements.
pub async fn taken_back(db: &impl Sql, session: &str) -> Result<i64> {
    let row = db
        .query_one(
            "SELECT coalesce(sum(CASE kind WHEN 'takeback' THEN amount ELSE -amount END), 0)::bigint
               FROM credit_transactions WHERE session_id = $1 AND kind IN ('takeback', 'reinstate')",
            &[&session],
        )
        .await?;
    Ok(row.get(0))
}

/// Adds credits to a user's balance (`make credits`).
pub async fn grant(
    db: &impl Sql,
    user_id: Uuid,
    amount: i64,
    description: &str,
) -> Result<Balance> {
    let entry = Entry {
        user_id,
        kind: "grant",
        amount,
        generation_id: None,
        description,
        reference: None,
        session: None,
    };
    append(db, entry).await?;
    let balance = earn(db, user_id, amount).await?;
    tracing::info!(%user_id, amount, op = "grant", outcome = "granted", "credits granted");
    Ok(balance)
}

/// Debits a generation's capture (inside the completing transaction).
pub async fn debit(db: &impl Sql, user_id: Uuid, generation_id: Uuid, amount: i64) -> Result<()> {
    let entry = Entry {
        user_id,
        kind: "capture",
        amount,
        generation_id: Some(generation_id),
        description: "image generation",
        reference: None,
        session: None,
    };
    if append(db, entry).await? {
        db.execute(
            "UPDATE credit_accounts SET balance = balance - $2, total_spent = total_spent + $2, updated_at = now()
              WHERE user_id = $1",
            &[&user_id, &amount],
        )
        .await?;
    }
    Ok(())
}

/// Records the refund of a generation's capture in the log; false if it was refunded before.
/// The log also records refunds made through an external provider.
pub async fn claim_refund(
    db: &impl Sql,
    user_id: Uuid,
    generation_id: Uuid,
    amount: i64,
) -> Result<bool> {
    let entry = Entry {
        user_id,
        kind: "refund",
        amount,
        generation_id: Some(generation_id),
        description: "refund",
        reference: None,
        session: None,
    };
    append(db, entry).await
}

/// Puts refunded credits back on the ledger balance.
pub async fn restore(db: &impl Sql, user_id: Uuid, amount: i64) -> Result<()> {
    db.execute(
        "UPDATE credit_accounts SET balance = balance + $2, total_spent = total_spent - $2, updated_at = now()
          WHERE user_id = $1",
        &[&user_id, &amount],
    )
    .await?;
    Ok(())
}

/// A user's balance and totals (zero for a user who never had credits).
pub async fn balance(db: &impl Sql, user_id: Uuid) -> Result<Balance> {
    let row = db
        .query_opt(
            "SELECT balance, total_earned, total_spent FROM credit_accounts WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row.map_or_else(Balance::default, |r| Balance {
        balance: r.get(0),
        total_earned: r.get(1),
        total_spent: r.get(2),
    }))
}

/// One entry of a user's ledger, as listed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// The entry's id.
    pub id: Uuid,
    /// `grant`, `purchase`, `capture`, `refund`, `takeback` or `reinstate`.
    pub kind: String,
    /// Credits, positive; `delta` says which way the balance moved.
    pub amount: i64,
    /// The change to the balance: `-amount` for `capture` and `takeback`, else `amount`.
    pub delta: i64,
    /// The generation of a `capture` or `refund`; `None` for the other kinds.
    pub generation_id: Option<Uuid>,
    /// The Stripe object (session, refund or dispute) of a purchase entry.
    pub reference: Option<String>,
    /// The purchase (Checkout Session) an entry belongs to.
    pub session_id: Option<String>,
    /// Free text: `image generation`, `refund`, a grant's reason; empty for purchase entries.
    pub description: String,
    /// When it was recorded.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A page of the user's ledger entries, newest first, strictly after `cursor`.
pub async fn page(
    db: &impl Sql,
    user_id: Uuid,
    cursor: Option<super::Cursor>,
    limit: i64,
) -> Result<Vec<Transaction>> {
    let (at, id) = cursor.unzip();
    let rows = db
        .query(
            "SELECT id, kind, amount, generation_id, reference, session_id, description, created_at
               FROM credit_transactions
              WHERE user_id = $1
                AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
              ORDER BY created_at DESC, id DESC LIMIT $4",
            &[&user_id, &at, &id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind: String = r.get(1);
            let amount: i64 = r.get(2);
            let delta = match kind.as_str() {
                "capture" | "takeback" => -amount,
                _ => amount,
            };
            Transaction {
                id: r.get(0),
                kind,
                amount,
                delta,
                generation_id: r.get(3),
                reference: r.get(4),
                session_id: r.get(5),
                description: r.get(6),
                created_at: r.get(7),
            }
        })
        .collect())
}
