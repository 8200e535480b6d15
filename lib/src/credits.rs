//! Credit holds and the free-generation counter (DESIGN §4).
//!
//! A generation takes a hold in the same transaction that inserts it, with the
//! user's `user_quotas` row locked, so parallel requests of one user are
//! serialised and can never take more free generations than allowed. The hold
//! is captured once on success and released on failure or cancel; releasing a
//! free hold gives the free generation back.

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{Problem, Result};

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
}

/// The freemium rules in force.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub free_generations: i32,
    pub credits_per_generation: i32,
    pub enforced: bool,
}

/// A hold just taken.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub charge: Charge,
    pub amount: i32,
    pub free_remaining: i32,
}

impl Policy {
    /// Built from the service settings.
    pub fn from_config(cfg: &crate::Config) -> Self {
        Policy {
            free_generations: cfg.free_generations,
            credits_per_generation: cfg.credits_per_generation,
            enforced: cfg.app_env.enforces_credits(),
        }
    }

    fn remaining(&self, free_used: i32) -> i32 {
        (self.free_generations - free_used).max(0)
    }

    /// Locks the user's quota row (creating it on first use) and decides the
    /// charge of one more generation. Must run inside the transaction that
    /// then calls [`Policy::record_hold`].
    pub async fn reserve(
        &self,
        tx: &impl GenericClient,
        user_id: Uuid,
    ) -> Result<Result<Hold, Problem>> {
        tx.execute(
            "INSERT INTO user_quotas (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&user_id],
        )
        .await?;
        let free_used: i32 = tx
            .query_one(
                "SELECT free_used FROM user_quotas WHERE user_id = $1 FOR UPDATE",
                &[&user_id],
            )
            .await?
            .get(0);
        if free_used < self.free_generations {
            return Ok(Ok(Hold {
                charge: Charge::Free,
                amount: 0,
                free_remaining: self.remaining(free_used + 1),
            }));
        }
        if !self.enforced {
            return Ok(Ok(Hold {
                charge: Charge::Waived,
                amount: 0,
                free_remaining: 0,
            }));
        }
        // Paid generations need a credit balance; until a credit provider is
        // configured every user's balance is zero.
        let balance = 0;
        Ok(Err(Problem::insufficient_credits(
            self.credits_per_generation.into(),
            balance,
            0,
        )))
    }

    /// Writes the hold of a generation inserted in the same transaction.
    pub async fn record_hold(
        &self,
        tx: &impl GenericClient,
        user_id: Uuid,
        generation_id: Uuid,
        hold: &Hold,
    ) -> Result<()> {
        tx.execute(
            "INSERT INTO credit_holds (generation_id, user_id, kind, amount) VALUES ($1, $2, $3, $4)",
            &[&generation_id, &user_id, &hold.charge.as_str(), &hold.amount],
        )
        .await?;
        if hold.charge == Charge::Free {
            tx.execute("UPDATE user_quotas SET free_used = free_used + 1, updated_at = now() WHERE user_id = $1", &[&user_id])
                .await?;
        }
        Ok(())
    }

    /// Free generations the user has left.
    pub async fn free_remaining(&self, db: &impl GenericClient, user_id: Uuid) -> Result<i32> {
        let used = db
            .query_opt(
                "SELECT free_used FROM user_quotas WHERE user_id = $1",
                &[&user_id],
            )
            .await?
            .map_or(0, |r| r.get::<_, i32>(0));
        Ok(self.remaining(used))
    }
}

/// Captures an open hold (inside the completing transaction); returns the credits charged.
pub async fn capture(tx: &impl GenericClient, generation_id: Uuid) -> Result<i32> {
    let row = tx
        .query_opt(
            "UPDATE credit_holds SET state = 'captured', settled_at = now()
              WHERE generation_id = $1 AND state = 'held' RETURNING kind, amount",
            &[&generation_id],
        )
        .await?;
    let charged = row.map_or(0, |r| {
        if r.get::<_, &str>(0) == "credits" {
            r.get(1)
        } else {
            0
        }
    });
    tracing::info!(%generation_id, credits = charged, op = "capture", "credit hold captured");
    Ok(charged)
}

/// Releases an open hold (inside the failing/cancelling transaction); a free
/// hold gives the free generation back.
pub async fn release(tx: &impl GenericClient, generation_id: Uuid) -> Result<()> {
    let row = tx
        .query_opt(
            "UPDATE credit_holds SET state = 'released', settled_at = now()
              WHERE generation_id = $1 AND state = 'held' RETURNING kind, user_id",
            &[&generation_id],
        )
        .await?;
    if let Some(r) = row {
        let user_id: Uuid = r.get(1);
        if r.get::<_, &str>(0) == "free" {
            tx.execute(
                "UPDATE user_quotas SET free_used = free_used - 1, updated_at = now() WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        }
        tracing::info!(%generation_id, %user_id, op = "release", "credit hold released");
    }
    Ok(())
}
