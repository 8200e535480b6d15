//! Freemium credits (docs/architecture.md, "Credits"): free generations,
//! credit holds and the providers that keep balances.
//!
//! A generation takes a hold in the same transaction that inserts it, with
//! the user's `user_quotas` row locked, so parallel requests of one user are
//! serialised: they can never take more free generations than allowed nor
//! hold more credits than the balance covers. A hold is captured once, in the
//! transaction that completes the generation, and released on failure or
//! cancel (a released free hold gives the free generation back).
//!
//! Balances live in a provider ([`Provider`]): the built-in ledger
//! ([`crate::db::ledger`]: the capture is written in the completing
//! transaction) or the external [`manacore`] service (the capture is sent
//! after the commit, and retried until it went through exactly once). The
//! rows are read and written by `db::holds` and `db::ledger`; this module
//! holds the rules.
//!
//! Domain: may import `db`, `http_client`, `telemetry`, `otel` and `config`;
//! never the edge.

pub mod manacore;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{
    Config, Error, Result,
    config::CreditsProvider,
    db::{holds, ledger},
};

pub use holds::Charge;
pub use ledger::Balance;

/// A hold just taken, for `units` outputs.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// How the generation is paid for.
    pub charge: Charge,
    /// Outputs asked for, and how many of them use free slots.
    pub units: i32,
    /// How many of `units` use free slots.
    pub free_units: i32,
    /// Credits held for the others (0 when free or waived).
    pub amount: i32,
    /// Free generations the user has left once this hold is taken.
    pub free_remaining: i32,
}

/// A failed call to a credit provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Not reachable, timed out or failing on its side: worth retrying.
    #[error("credit service unavailable: {0}")]
    Unavailable(String),
    /// Refused the request (4xx).
    #[error("credit service refused the request with {0}")]
    Rejected(u16),
}

impl ProviderError {
    /// Whether a later call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }
}

/// Where balances live.
#[derive(Debug)]
pub enum Provider {
    /// The built-in ledger ([`crate::db::ledger`]).
    Ledger,
    /// The external credit service, through its client.
    Manacore(manacore::Client),
}

/// The freemium rules and the balance provider.
#[derive(Debug)]
pub struct Credits {
    /// Free generations (outputs) every user gets (`FREE_GENERATIONS`).
    pub free_generations: i32,
    /// Credits one paid output costs (`CREDITS_PER_GENERATION`).
    pub cost: i32,
    /// Whether paid outputs are charged (staging, production); else they are waived.
    pub enforced: bool,
    fail_open: bool,
    provider: Provider,
}

impl Credits {
    /// Built from the service settings.
    pub fn new(cfg: &Config, http: crate::http_client::HttpClient) -> Self {
        let provider = match &cfg.credits_provider {
            CreditsProvider::Ledger => Provider::Ledger,
            CreditsProvider::Manacore {
                url,
                service_key,
                app_id,
            } => Provider::Manacore(manacore::Client::new(http, url, service_key, app_id)),
        };
        Credits {
            free_generations: cfg.free_generations,
            cost: cfg.credits_per_generation,
            enforced: cfg.app_env.enforces_credits(),
            fail_open: cfg.credit_check_fail_open,
            provider,
        }
    }

    fn remaining(&self, free_used: i32) -> i32 {
        (self.free_generations - free_used).max(0)
    }

    /// Decides the charge of a generation of `units` outputs by a user who
    /// has used `free_used` free ones: free slots first, then credits for the
    /// rest (waived where credits are not enforced), all or nothing:
    /// [`Error::InsufficientCredits`] when the balance does not cover them,
    /// [`Error::Credits`] when the provider fails. Must run inside the transaction
    /// that locked the user's quota row (`db::holds::lock_quota`) and then calls
    /// [`Credits::record_hold`].
    pub async fn reserve(
        &self,
        tx: &impl GenericClient,
        user_id: Uuid,
        free_used: i32,
        units: i32,
    ) -> Result<Hold> {
        let free_units = self.remaining(free_used).min(units);
        let paid_units = units - free_units;
        let hold = |charge, amount| Hold {
            charge,
            units,
            free_units,
            amount,
            free_remaining: self.remaining(free_used + free_units),
        };
        if paid_units == 0 {
            return Ok(hold(Charge::Free, 0));
        }
        if !self.enforced {
            return Ok(hold(Charge::Waived, 0));
        }
        let paid = hold(Charge::Credits, self.cost * paid_units);
        let available = match self.available(tx, user_id).await {
            Ok(a) => a,
            Err(Error::Credits(e)) if self.fail_open => {
                tracing::warn!(%user_id, error = %e, op = "balance", outcome = "fail-open", "credit check failed; allowed by CREDIT_CHECK_FAILURE=open");
                return Ok(paid);
            }
            Err(e) => return Err(e),
        };
        if available < i64::from(paid.amount) {
            tracing::info!(%user_id, available, required = paid.amount, op = "hold", outcome = "insufficient", "credit hold refused");
            return Err(Error::InsufficientCredits {
                required: paid.amount.into(),
                balance: available.max(0),
                free_remaining: self.remaining(free_used),
            });
        }
        Ok(paid)
    }

    /// The balance minus credits held or captured but not yet settled with the provider.
    async fn available(&self, tx: &impl GenericClient, user_id: Uuid) -> Result<i64> {
        let (ledger_balance, reserved) = holds::balance_and_reserved(tx, user_id).await?;
        let balance = match &self.provider {
            Provider::Ledger => ledger_balance.unwrap_or(0),
            Provider::Manacore(client) => client.balance(user_id).await?.balance,
        };
        Ok(balance - reserved)
    }

    /// Writes the hold of a generation inserted in the same transaction.
    pub async fn record_hold(
        &self,
        tx: &impl GenericClient,
        user_id: Uuid,
        generation_id: Uuid,
        hold: &Hold,
    ) -> Result<()> {
        let new = holds::NewHold {
            charge: hold.charge,
            units: hold.units,
            free_units: hold.free_units,
            amount: hold.amount,
        };
        holds::insert(tx, generation_id, user_id, &new).await?;
        if hold.free_units > 0 {
            holds::add_free_used(tx, user_id, hold.free_units).await?;
        }
        tracing::info!(%user_id, %generation_id, charge = hold.charge.as_str(), amount = hold.amount, op = "hold", outcome = "held", "credit hold taken");
        Ok(())
    }

    /// Free generations the user has left.
    pub async fn free_remaining(&self, db: &impl GenericClient, user_id: Uuid) -> Result<i32> {
        Ok(self.remaining(holds::free_used(db, user_id).await?))
    }

    /// Captures an open hold for the `delivered` outputs stored, inside the
    /// completing transaction; returns the credits charged (free slots first;
    /// those of outputs not delivered are given back). The ledger is debited in
    /// the same transaction; an external capture is marked `pending` for
    /// [`Credits::settle_capture`].
    pub async fn capture(
        &self,
        tx: &impl GenericClient,
        generation_id: Uuid,
        delivered: i32,
    ) -> Result<i32> {
        let Some(hold) = holds::capture(tx, generation_id, delivered).await? else {
            return Ok(0);
        };
        let (user_id, amount) = (hold.user_id, hold.amount);
        if hold.free_returned > 0 {
            holds::add_free_used(tx, user_id, -hold.free_returned).await?;
        }
        if hold.charge != Charge::Credits || amount == 0 {
            if hold.charge == Charge::Credits {
                holds::set_capture_state(tx, generation_id, "done", None).await?;
            }
            tracing::info!(%user_id, %generation_id, charge = hold.charge.as_str(), delivered, free = hold.free_units, amount = 0, op = "capture", outcome = "captured", "hold captured");
            return Ok(0);
        }
        let state = match self.provider {
            Provider::Ledger => {
                ledger::debit(tx, user_id, generation_id, amount.into()).await?;
                "done"
            }
            Provider::Manacore(_) => "pending",
        };
        holds::set_capture_state(tx, generation_id, state, None).await?;
        tracing::info!(%user_id, %generation_id, delivered, free = hold.free_units, amount, op = "capture", outcome = state, "credits captured");
        Ok(amount)
    }

    /// Sends a pending external capture to the provider, once: the hold is
    /// claimed with a short lease before the call, marked `done` after it, left
    /// `failed` (with the error) for a later retry if it did not go through, or
    /// `rejected` (final, counted as `CaptureRejected`) if the service refused it.
    /// A retry sends the same idempotency key, so a lost answer charges once.
    /// Returns whether it is settled now. The ledger has nothing to do.
    pub async fn settle_capture(
        &self,
        db: &impl GenericClient,
        generation_id: Uuid,
    ) -> Result<bool> {
        let Provider::Manacore(client) = &self.provider else {
            return Ok(true);
        };
        let Some(claim) = holds::claim_capture(db, generation_id).await? else {
            return Ok(false);
        };
        let (user_id, amount, attempt) = (claim.user_id, claim.amount, claim.attempt);
        let outcome = client
            .use_credits(user_id, amount.into(), generation_id)
            .await;
        // A refusal is final: retrying cannot change it, and it would block newer captures.
        let (state, error) = match &outcome {
            Ok(()) => ("done", None),
            Err(e) if e.is_transient() => ("failed", Some(e.to_string())),
            Err(e) => ("rejected", Some(e.to_string())),
        };
        holds::set_capture_state(db, generation_id, state, error.as_deref()).await?;
        match &error {
            None => {
                tracing::info!(%user_id, %generation_id, amount, attempt, op = "provider.use", outcome = "done", "capture sent")
            }
            Some(e) if state == "rejected" => {
                crate::telemetry::count(crate::telemetry::metric::CAPTURE_REJECTED, 1);
                tracing::error!(%user_id, %generation_id, amount, attempt, op = "provider.use", outcome = "rejected", error = %e, "capture refused by the credit service; not retried")
            }
            Some(e) => {
                tracing::warn!(%user_id, %generation_id, amount, attempt, op = "provider.use", outcome = "failed", error = %e, "capture failed; will retry")
            }
        }
        Ok(outcome.is_ok())
    }

    /// Retries external captures that have not gone through (oldest first, at most `limit`).
    /// Returns how many were settled and how many are still open.
    pub async fn retry_captures(
        &self,
        db: &impl GenericClient,
        limit: i64,
    ) -> Result<(usize, usize)> {
        let open = holds::open_captures(db, limit).await?;
        let mut settled = 0;
        for generation_id in &open {
            if self.settle_capture(db, *generation_id).await? {
                settled += 1;
            }
        }
        Ok((settled, open.len() - settled))
    }

    /// Releases an open hold (inside the failing/cancelling transaction),
    /// giving its free slots back.
    pub async fn release(&self, tx: &impl GenericClient, generation_id: Uuid) -> Result<()> {
        if let Some(hold) = holds::release(tx, generation_id).await? {
            let (user_id, amount) = (hold.user_id, hold.amount);
            if hold.free_returned > 0 {
                holds::add_free_used(tx, user_id, -hold.free_returned).await?;
            }
            tracing::info!(%user_id, %generation_id, charge = hold.charge.as_str(), amount, op = "release", outcome = "released", "credit hold released");
            crate::telemetry::count(
                crate::telemetry::metric::CREDITS_RELEASED,
                amount.unsigned_abs().into(),
            );
        }
        Ok(())
    }

    /// The user's balance and totals.
    pub async fn balance(&self, db: &impl GenericClient, user_id: Uuid) -> Result<Balance> {
        match &self.provider {
            Provider::Ledger => ledger::balance(db, user_id).await,
            Provider::Manacore(client) => Ok(client.balance(user_id).await?),
        }
    }

    /// Gives the credits of a captured generation back, once (a support tool;
    /// run it in a transaction so that a failed provider call leaves no trace).
    /// Returns the amount refunded, 0 if there was nothing (left) to refund.
    pub async fn refund(&self, tx: &impl GenericClient, generation_id: Uuid) -> Result<i64> {
        let Some((user_id, amount)) = holds::refundable(tx, generation_id).await? else {
            return Ok(0);
        };
        if !ledger::claim_refund(tx, user_id, generation_id, amount).await? {
            return Ok(0);
        }
        match &self.provider {
            Provider::Ledger => ledger::restore(tx, user_id, amount).await?,
            Provider::Manacore(client) => client.refund(user_id, amount, generation_id).await?,
        }
        tracing::info!(%user_id, %generation_id, amount, op = "refund", outcome = "refunded", "credits refunded");
        Ok(amount)
    }
}
