//! The built-in credit ledger (`credit_accounts`, `credit_transactions`): one
//! balance row per user and an append-only log of grants, captures and
//! refunds (a generation is captured and refunded at most once, enforced by
//! unique indexes).

use super::Sql;
use serde::Serialize;
use uuid::Uuid;

use crate::Result;

/// A user's credit account (as the ledger or the credit service reports it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub balance: i64,
    pub total_earned: i64,
    pub total_spent: i64,
}

async fn append(
    db: &impl Sql,
    user_id: Uuid,
    kind: &str,
    amount: i64,
    generation_id: Option<Uuid>,
    description: &str,
) -> Result<bool> {
    let n = db
        .execute(
            "INSERT INTO credit_transactions (id, user_id, kind, amount, generation_id, description)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[&Uuid::new_v4(), &user_id, &kind, &amount, &generation_id, &description],
        )
        .await?;
    Ok(n == 1)
}

/// Adds credits to a user's balance.
pub async fn grant(
    db: &impl Sql,
    user_id: Uuid,
    amount: i64,
    description: &str,
) -> Result<Balance> {
    append(db, user_id, "grant", amount, None, description).await?;
    let row = db
        .query_one(
            "INSERT INTO credit_accounts (user_id, balance, total_earned) VALUES ($1, $2, $2)
             ON CONFLICT (user_id) DO UPDATE
                SET balance = credit_accounts.balance + $2, total_earned = credit_accounts.total_earned + $2, updated_at = now()
             RETURNING balance, total_earned, total_spent",
            &[&user_id, &amount],
        )
        .await?;
    tracing::info!(%user_id, amount, op = "grant", outcome = "granted", "credits granted");
    Ok(Balance {
        balance: row.get(0),
        total_earned: row.get(1),
        total_spent: row.get(2),
    })
}

/// Debits a generation's capture (inside the completing transaction).
pub async fn debit(db: &impl Sql, user_id: Uuid, generation_id: Uuid, amount: i64) -> Result<()> {
    if append(
        db,
        user_id,
        "capture",
        amount,
        Some(generation_id),
        "image generation",
    )
    .await?
    {
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
    append(db, user_id, "refund", amount, Some(generation_id), "refund").await
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
