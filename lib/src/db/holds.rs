//! Credit holds (`credit_holds`) and free-generation counts (`user_quotas`):
//! the rows behind `crate::credits`, which decides what they mean.

use super::Sql;
use serde::Serialize;
use uuid::Uuid;

use crate::{Error, Result};

/// How a generation is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Charge {
    /// One of the user's free generations.
    Free,
    /// Paid with credits.
    Credits,
    /// Beyond the free ones where credits are not enforced (development): never charged.
    Waived,
}

impl Charge {
    pub fn as_str(self) -> &'static str {
        match self {
            Charge::Free => "free",
            Charge::Credits => "credits",
            Charge::Waived => "waived",
        }
    }

    /// The charge stored as `s`; an unknown value is an error, never a guess.
    pub fn parse(s: &str) -> Result<Charge> {
        match s {
            "free" => Ok(Charge::Free),
            "credits" => Ok(Charge::Credits),
            "waived" => Ok(Charge::Waived),
            other => Err(Error::Internal(format!("unknown charge {other:?}"))),
        }
    }
}

/// Locks the user's quota row (creating it on first use) for the rest of the
/// transaction; returns the free generations used.
pub async fn lock_quota(tx: &impl Sql, user_id: Uuid) -> Result<i32> {
    tx.execute(
        "INSERT INTO user_quotas (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&user_id],
    )
    .await?;
    Ok(tx
        .query_one(
            "SELECT free_used FROM user_quotas WHERE user_id = $1 FOR UPDATE",
            &[&user_id],
        )
        .await?
        .get(0))
}

/// The free generations the user has used (0 for a new user).
pub async fn free_used(db: &impl Sql, user_id: Uuid) -> Result<i32> {
    Ok(db
        .query_opt(
            "SELECT free_used FROM user_quotas WHERE user_id = $1",
            &[&user_id],
        )
        .await?
        .map_or(0, |r| r.get(0)))
}

/// Counts `delta` more (or, negative, fewer) free generations used.
pub async fn add_free_used(tx: &impl Sql, user_id: Uuid, delta: i32) -> Result<()> {
    tx.execute(
        "UPDATE user_quotas SET free_used = free_used + $2, updated_at = now() WHERE user_id = $1",
        &[&user_id, &delta],
    )
    .await?;
    Ok(())
}

/// The ledger balance (if the user has an account) and the credits of the user's
/// `credits` holds that are held or captured but not yet settled, read in one
/// statement (one snapshot: a capture committing meanwhile is counted once).
pub async fn balance_and_reserved(tx: &impl Sql, user_id: Uuid) -> Result<(Option<i64>, i64)> {
    let row = tx
        .query_one(
            "SELECT (SELECT balance FROM credit_accounts WHERE user_id = $1),
                    (SELECT coalesce(sum(amount), 0)::bigint FROM credit_holds
                      WHERE user_id = $1 AND kind = 'credits'
                        AND (state = 'held' OR (state = 'captured' AND capture_state <> 'done')))",
            &[&user_id],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A hold about to be recorded: `units` outputs, `free_units` of them on
/// free slots, the rest for `amount` credits (or waived).
#[derive(Debug, Clone, Copy)]
pub struct NewHold {
    /// `free` when every output has a free slot, else `credits` (`waived` if not enforced).
    pub charge: Charge,
    /// Outputs held for (the generation's `num_outputs`).
    pub units: i32,
    /// How many of them use free slots.
    pub free_units: i32,
    /// Credits held for the others (0 when free or waived).
    pub amount: i32,
}

/// Inserts the hold of a generation.
pub async fn insert(tx: &impl Sql, generation_id: Uuid, user_id: Uuid, h: &NewHold) -> Result<()> {
    tx.execute(
        "INSERT INTO credit_holds (generation_id, user_id, kind, amount, units, free_units)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &generation_id,
            &user_id,
            &h.charge.as_str(),
            &h.amount,
            &h.units,
            &h.free_units,
        ],
    )
    .await?;
    Ok(())
}

/// A hold that just changed state: its charge and user, its credits (those
/// captured, or those released), the free slots it now uses (0 once released),
/// and the free slots it gave back.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// The hold's kind.
    pub charge: Charge,
    /// Captured: the credits the delivered outputs cost; released: the credits that were held.
    pub amount: i32,
    /// Whose hold it is.
    pub user_id: Uuid,
    /// Free slots it now uses (those of delivered outputs; 0 once released).
    pub free_units: i32,
    /// Free slots it gave back (those of outputs not delivered; all once released).
    pub free_returned: i32,
}

impl Settled {
    fn from_row(r: &tokio_postgres::Row) -> Result<Self> {
        Ok(Settled {
            charge: Charge::parse(r.get("kind"))?,
            amount: r.get("amount"),
            user_id: r.get("user_id"),
            free_units: r.get("free_units"),
            free_returned: r.get("free_returned"),
        })
    }
}

/// `held → captured` for the `delivered` outputs stored, once: free slots are
/// used first, credits for the rest (`amount` becomes what they cost), the
/// slots of outputs not delivered are given back. `None` if it was not held.
pub async fn capture(
    tx: &impl Sql,
    generation_id: Uuid,
    delivered: i32,
) -> Result<Option<Settled>> {
    tx.query_opt(
        "UPDATE credit_holds h
            SET state = 'captured', settled_at = now(), delivered = $2,
                free_units = least(o.free_units, $2),
                amount = CASE WHEN o.units > o.free_units
                              THEN o.amount / (o.units - o.free_units) * greatest($2 - o.free_units, 0)
                              ELSE 0 END
           FROM (SELECT generation_id, units, free_units, amount FROM credit_holds
                  WHERE generation_id = $1 FOR UPDATE) o
          WHERE h.generation_id = o.generation_id AND h.state = 'held'
      RETURNING h.kind, h.amount, h.user_id, h.free_units, o.free_units - h.free_units AS free_returned",
        &[&generation_id, &delivered],
    )
    .await?
    .as_ref()
    .map(Settled::from_row)
    .transpose()
}

/// `held → released`, once (every free slot given back); `None` if it was not held.
pub async fn release(tx: &impl Sql, generation_id: Uuid) -> Result<Option<Settled>> {
    tx.query_opt(
        "UPDATE credit_holds SET state = 'released', settled_at = now()
          WHERE generation_id = $1 AND state = 'held'
      RETURNING kind, amount, user_id, 0 AS free_units, free_units AS free_returned",
        &[&generation_id],
    )
    .await?
    .as_ref()
    .map(Settled::from_row)
    .transpose()
}

/// Records where a captured hold's external charge stands (`pending`, `done`, …).
pub async fn set_capture_state(
    db: &impl Sql,
    generation_id: Uuid,
    state: &str,
    error: Option<&str>,
) -> Result<()> {
    db.execute(
        "UPDATE credit_holds SET capture_state = $2, capture_error = $3, capture_lease = NULL
          WHERE generation_id = $1",
        &[&generation_id, &state, &error],
    )
    .await?;
    Ok(())
}

/// An external capture claimed for sending.
#[derive(Debug, Clone, Copy)]
pub struct CaptureClaim {
    /// Whose credits are charged.
    pub user_id: Uuid,
    /// Credits to charge at the provider.
    pub amount: i32,
    /// Which attempt this is (1 for the first).
    pub attempt: i32,
}

/// Claims a captured hold's external charge for one attempt (`pending`,
/// `failed`, or `in_flight` past its 60 s lease → `in_flight`); `None` if it is
/// settled, rejected or being sent by someone else.
pub async fn claim_capture(db: &impl Sql, generation_id: Uuid) -> Result<Option<CaptureClaim>> {
    let row = db
        .query_opt(
            "UPDATE credit_holds
                SET capture_state = 'in_flight', capture_lease = now() + interval '60 seconds',
                    capture_attempts = capture_attempts + 1
              WHERE generation_id = $1 AND state = 'captured'
                AND (capture_state IN ('pending', 'failed') OR (capture_state = 'in_flight' AND capture_lease < now()))
              RETURNING user_id, amount, capture_attempts",
            &[&generation_id],
        )
        .await?;
    Ok(row.map(|r| CaptureClaim {
        user_id: r.get(0),
        amount: r.get(1),
        attempt: r.get(2),
    }))
}

/// Generations whose external capture is still open (oldest first, at most `limit`).
pub async fn open_captures(db: &impl Sql, limit: i64) -> Result<Vec<Uuid>> {
    Ok(db
        .query(
            "SELECT generation_id FROM credit_holds
              WHERE state = 'captured' AND capture_state IN ('pending', 'failed', 'in_flight')
              ORDER BY created_at LIMIT $1",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The user and amount of a `credits` hold captured and settled (refundable).
pub async fn refundable(tx: &impl Sql, generation_id: Uuid) -> Result<Option<(Uuid, i64)>> {
    Ok(tx
        .query_opt(
            "SELECT user_id, amount FROM credit_holds
              WHERE generation_id = $1 AND kind = 'credits' AND state = 'captured' AND capture_state = 'done'",
            &[&generation_id],
        )
        .await?
        .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1)))))
}
