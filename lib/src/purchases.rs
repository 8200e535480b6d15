//! Buying credits with the `ledger` provider: packs sold through Stripe
//! Checkout Sessions (docs/architecture.md, "Purchases").
//!
//! [`checkout`] records a purchase row for every session before the client
//! sees it. What Stripe reports moves the balance through ledger entries
//! keyed by the Stripe object that caused them (unique per kind): the grant
//! by its session ([`fulfil`]), a refund's share by the refund ([`refunded`]),
//! a dispute's take-back and its reinstatement by the dispute ([`disputed`]).
//! So duplicate, concurrent and out-of-order deliveries (from the payments
//! webhook, the success page's status read and the reconciler alike) change
//! a balance exactly once. Each entry is written with the purchase row
//! locked, so the shares of one purchase are computed one at a time.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
    AppState, Error, Result,
    config::CreditsProvider,
    db::{
        Tx,
        generations::RequestKey,
        ledger::{self, PurchaseEntry},
        purchases::{self, NewPurchase, Pack, Purchase, PurchaseStatus},
    },
    stripe::{Charge, Dispute, NewSession, Session},
    telemetry::{self, metric},
};

/// How long a Checkout Session stays open (Stripe's minimum is 30 minutes,
/// counted when it receives the request: one more minute covers the trip).
const SESSION_LIFETIME: TimeDelta = TimeDelta::minutes(31);
/// How far back the reconciler lists completed sessions at Stripe.
const RECONCILE_WINDOW: TimeDelta = TimeDelta::hours(48);
/// Most pages of completed sessions listed per reconciler run (100 each).
const RECONCILE_PAGES: usize = 10;
/// Purchases open longer than this are asked about by the reconciler.
const RECONCILE_GRACE: TimeDelta = TimeDelta::minutes(1);

/// Whether this deployment sells credits: the ledger provider and a Stripe key.
pub fn available(st: &AppState) -> bool {
    st.cfg.credits_provider == CreditsProvider::Ledger && st.stripe.configured()
}

/// The packs on sale (none where credits are not sold here).
pub async fn packs(st: &AppState) -> Result<Vec<Pack>> {
    if st.cfg.credits_provider != CreditsProvider::Ledger {
        return Ok(Vec::new());
    }
    purchases::active_packs(&**st.db.get().await?).await
}

/// Starts buying `pack_id` for `user`: a Checkout Session at Stripe, recorded
/// before it is returned. With an `Idempotency-Key`, a retry returns the same
/// purchase (409 [`Error::IdempotencyKeyReused`] with another body).
/// `api_base`: the API's own URL as the request reached it.
pub async fn checkout(
    st: &AppState,
    user: Uuid,
    pack_id: &str,
    key: Option<&RequestKey>,
    api_base: Option<&str>,
) -> Result<Purchase> {
    if !available(st) {
        return Err(Error::PurchaseNotAvailable);
    }
    let (success_url, cancel_url) = st
        .cfg
        .checkout_urls(api_base)
        .ok_or(Error::PurchaseNotAvailable)?;
    if let Some(found) = earlier(st, user, key).await? {
        return Ok(found);
    }
    let pack = purchases::active_pack(&**st.db.get().await?, pack_id)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Pack))?;
    let expires_at = Utc::now() + SESSION_LIFETIME;
    // Stripe answers a repeated create with the first session: a retry of this request
    // (same key) after a lost answer makes no second session.
    let stripe_key = match key {
        Some(k) => format!("checkout-{user}-{}-{}", k.key, k.hash),
        None => format!("checkout-{user}-{}", Uuid::new_v4()),
    };
    let user_id = user.to_string();
    let session = st
        .stripe
        .create_session(&NewSession {
            user_id: &user_id,
            pack_id: &pack.id,
            product_name: &pack.name,
            amount_cents: pack.price_cents.into(),
            currency: &pack.currency,
            success_url: &success_url,
            cancel_url: &cancel_url,
            expires_at: expires_at.timestamp(),
            idempotency_key: &stripe_key,
        })
        .await?;
    let checkout_url = session
        .url
        .clone()
        .ok_or_else(|| Error::Internal("a new Checkout Session has no url".into()))?;
    let db = st.db.get().await?;
    let recorded = purchases::insert(
        &**db,
        &NewPurchase {
            session_id: &session.id,
            user_id: user,
            pack: &pack,
            checkout_url: &checkout_url,
            expires_at: session
                .expires_at
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .unwrap_or(expires_at),
            key: key.map(|k| (k.key.as_str(), k.hash.as_str())),
        },
    )
    .await?;
    drop(db);
    if !recorded {
        // A concurrent request with the same key (or Stripe's replay of this session).
        return earlier(st, user, key)
            .await?
            .ok_or(Error::IdempotencyKeyTaken);
    }
    tracing::info!(%user, session_id = %session.id, pack = %pack.id, "checkout started");
    purchases::get_owned(&**st.db.get().await?, &session.id, user)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Purchase))
}

/// The purchase this user recorded earlier with `key`, if any.
async fn earlier(st: &AppState, user: Uuid, key: Option<&RequestKey>) -> Result<Option<Purchase>> {
    let Some(k) = key else { return Ok(None) };
    match purchases::get_by_key(&**st.db.get().await?, user, &k.key).await? {
        Some(p) if p.request_hash.as_deref() != Some(k.hash.as_str()) => {
            Err(Error::IdempotencyKeyReused)
        }
        found => Ok(found),
    }
}

/// The user's purchase of `session_id`. One still open or paid is first
/// brought up to date with Stripe (the success page's read fulfils a purchase
/// whose webhook is late or lost); when Stripe cannot be asked, the stored
/// state is the answer.
pub async fn status(st: &AppState, user: Uuid, session_id: &str) -> Result<Purchase> {
    let stored = purchases::get_owned(&**st.db.get().await?, session_id, user)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Purchase))?;
    if !matches!(stored.status, PurchaseStatus::Open | PurchaseStatus::Paid) {
        return Ok(stored);
    }
    match st.stripe.session(session_id).await {
        Ok(session) => {
            fulfil(st, &session).await?;
        }
        Err(e) => {
            tracing::warn!(session_id, error = %e, "Stripe not asked; the stored state stands");
            return Ok(stored);
        }
    }
    purchases::get_owned(&**st.db.get().await?, session_id, user)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Purchase))
}

/// What [`fulfil`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fulfilled {
    /// Not a session of ours.
    Unknown,
    /// The session disagrees with its purchase: nothing granted, an alarm raised.
    Mismatch,
    /// The purchase's status, changed by this call (granted once, however often this runs).
    Changed(PurchaseStatus),
    /// The purchase's status, as it was.
    Unchanged(PurchaseStatus),
}

/// Applies what Stripe says of a session: a paid one grants its pack's
/// credits (once), an expired one is recorded as such. Only a session whose
/// amount, currency and customer match the purchase row grants anything.
pub async fn fulfil(st: &AppState, session: &Session) -> Result<Fulfilled> {
    let mut conn = st.db.get().await?;
    let tx = Tx::begin(&mut conn).await?;
    let Some(p) = purchases::lock(&*tx, &session.id).await? else {
        return Ok(Fulfilled::Unknown);
    };
    let pi = session.payment_intent.as_deref();
    if p.status == PurchaseStatus::Granted {
        return Ok(Fulfilled::Unchanged(PurchaseStatus::Granted));
    }
    let owner = p.user_id.to_string();
    let matches = session.amount_total == Some(p.amount_cents.into())
        && session.currency.as_deref() == Some(p.currency.as_str())
        && session
            .client_reference_id
            .as_deref()
            .is_none_or(|c| c == owner)
        && session.metadata.get("user_id").is_none_or(|u| *u == owner);
    if !matches {
        purchases::update(&*tx, &p.session_id, PurchaseStatus::Failed, pi, true).await?;
        tx.commit().await?;
        telemetry::count(metric::PURCHASE_MISMATCH, 1);
        tracing::error!(session_id = %p.session_id, user_id = %p.user_id, stripe_amount = ?session.amount_total,
            stripe_currency = ?session.currency, amount = p.amount_cents, currency = %p.currency,
            "a Checkout Session disagrees with its purchase: nothing granted");
        return Ok(Fulfilled::Mismatch);
    }
    let status = if session.is_paid() {
        let credits = i64::from(p.credits);
        let session_id = p.session_id.as_str();
        let grant = PurchaseEntry::Grant;
        if ledger::purchase_entry(&*tx, p.user_id, session_id, grant, session_id, credits).await? {
            telemetry::count(metric::CREDITS_PURCHASED, credits.unsigned_abs());
        }
        PurchaseStatus::Granted
    } else if session.is_expired() {
        PurchaseStatus::Expired
    } else {
        p.status
    };
    purchases::update(&*tx, &p.session_id, status, pi, false).await?;
    tx.commit().await?;
    if status == p.status {
        return Ok(Fulfilled::Unchanged(status));
    }
    tracing::info!(session_id = %p.session_id, user_id = %p.user_id, status = status.as_str(), "purchase updated");
    Ok(Fulfilled::Changed(status))
}

/// An asynchronous payment (a bank debit) that failed: the purchase ends `failed`.
pub async fn payment_failed(st: &AppState, session: &Session) -> Result<()> {
    let mut conn = st.db.get().await?;
    let tx = Tx::begin(&mut conn).await?;
    let Some(p) = purchases::lock(&*tx, &session.id).await? else {
        return Ok(());
    };
    if p.status == PurchaseStatus::Open {
        let pi = session.payment_intent.as_deref();
        purchases::update(&*tx, &p.session_id, PurchaseStatus::Failed, pi, false).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The purchase a PaymentIntent paid for: ours by the id recorded at payment,
/// else (a refund or dispute delivered before the completion) found through
/// Stripe's session list and recorded now. `None`: not a purchase of ours.
async fn purchase_of(st: &AppState, payment_intent: &str) -> Result<Option<Purchase>> {
    if let Some(p) = purchases::get_by_payment(&**st.db.get().await?, payment_intent).await? {
        return Ok(Some(p));
    }
    let Some(session) = st.stripe.session_of_payment(payment_intent).await? else {
        return Ok(None);
    };
    let db = st.db.get().await?;
    let Some(p) = purchases::lock(&**db, &session.id).await? else {
        return Ok(None);
    };
    purchases::update(&**db, &p.session_id, p.status, Some(payment_intent), false).await?;
    purchases::get_by_payment(&**db, payment_intent).await
}

/// A charge was refunded (in part or in full): each of its refunds takes back
/// its share of the pack's credits, once per refund. Shares are cumulative
/// (refunds in the order Stripe made them), so refunding everything, in any
/// number of parts, takes back exactly the pack's credits.
pub async fn refunded(st: &AppState, charge: &Charge) -> Result<()> {
    let Some(pi) = charge.payment_intent.as_deref() else {
        return Ok(());
    };
    let Some(p) = purchase_of(st, pi).await? else {
        tracing::info!(charge = %charge.id, "refund of a payment that is not a purchase: ignored");
        return Ok(());
    };
    let mut refunds: Vec<_> = charge
        .refunds
        .as_ref()
        .map(|l| l.data.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            r.status
                .as_deref()
                .is_none_or(|s| s == "succeeded" || s == "pending")
        })
        .collect();
    refunds.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    let mut conn = st.db.get().await?;
    let tx = Tx::begin(&mut conn).await?;
    purchases::lock(&*tx, &p.session_id).await?;
    let (total, credits) = (i64::from(p.amount_cents), i64::from(p.credits));
    let share_of = |refunded: i64| credits * refunded.clamp(0, total) / total;
    // Recorded refunds keep the share they took; each new one takes what brings the total
    // to the share of everything refunded so far. The sum never depends on the order a
    // delivery lists them in (two refunds made in the same second have none Stripe tells).
    let (mut refunded, mut taken) = (0, 0);
    let mut new = Vec::new();
    for r in &refunds {
        match ledger::entry_amount(&*tx, PurchaseEntry::TakeBack, &r.id).await? {
            Some(amount) => (refunded, taken) = (refunded + r.amount, taken + amount),
            None => new.push(r),
        }
    }
    for r in new {
        refunded += r.amount;
        let share = share_of(refunded) - taken;
        if share > 0 {
            ledger::purchase_entry(
                &*tx,
                p.user_id,
                &p.session_id,
                PurchaseEntry::TakeBack,
                &r.id,
                share,
            )
            .await?;
            taken += share;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// A dispute (chargeback) on a purchase's payment: opened, it takes back what
/// the purchase still holds; won (funds reinstated), it gives that back. Keyed
/// by the dispute, so each happens once, and a win delivered before the
/// opening still ends with the credits where they were.
pub async fn disputed(st: &AppState, dispute: &Dispute, won: bool) -> Result<()> {
    let Some(pi) = dispute.payment_intent.as_deref() else {
        return Ok(());
    };
    let Some(p) = purchase_of(st, pi).await? else {
        tracing::info!(dispute = %dispute.id, "dispute of a payment that is not a purchase: ignored");
        return Ok(());
    };
    let mut conn = st.db.get().await?;
    let tx = Tx::begin(&mut conn).await?;
    purchases::lock(&*tx, &p.session_id).await?;
    let taken = match ledger::entry_amount(&*tx, PurchaseEntry::TakeBack, &dispute.id).await? {
        Some(amount) => amount,
        None => {
            let rest = i64::from(p.credits) - ledger::taken_back(&*tx, &p.session_id).await?;
            let rest = rest.max(0);
            ledger::purchase_entry(
                &*tx,
                p.user_id,
                &p.session_id,
                PurchaseEntry::TakeBack,
                &dispute.id,
                rest,
            )
            .await?;
            rest
        }
    };
    if won && taken > 0 {
        ledger::purchase_entry(
            &*tx,
            p.user_id,
            &p.session_id,
            PurchaseEntry::Reinstate,
            &dispute.id,
            taken,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(dispute = %dispute.id, session_id = %p.session_id, won, credits = taken, "dispute applied");
    Ok(())
}

/// What a reconciler run did with purchases.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    /// Paid sessions granted now (their webhook was lost).
    pub granted: usize,
    /// Purchases recorded as expired now.
    pub expired: usize,
}

/// Grants the paid sessions of the last two days that have no grant (lost
/// webhooks), listed at Stripe, and brings purchases still open a minute
/// after they were made up to date (expired ones among them).
pub async fn reconcile(st: &AppState) -> Result<Reconciled> {
    let mut done = Reconciled::default();
    if !available(st) {
        return Ok(done);
    }
    let since = (Utc::now() - RECONCILE_WINDOW).timestamp();
    let mut after: Option<String> = None;
    for _ in 0..RECONCILE_PAGES {
        let page = st
            .stripe
            .sessions(since, "complete", after.as_deref())
            .await?;
        for session in &page.data {
            count(&mut done, fulfil(st, session).await?);
        }
        match (page.has_more, page.data.last()) {
            (true, Some(last)) => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let before = Utc::now() - RECONCILE_GRACE;
    for p in purchases::unsettled(&**st.db.get().await?, before, 100).await? {
        match st.stripe.session(&p.session_id).await {
            Ok(session) => count(&mut done, fulfil(st, &session).await?),
            Err(e) if e.is_transient() => return Err(e.into()),
            // One Stripe does not know (another account's key, say) does not stop the rest.
            Err(e) => {
                tracing::error!(session_id = %p.session_id, error = %e, "purchase unknown to Stripe")
            }
        }
    }
    Ok(done)
}

fn count(done: &mut Reconciled, outcome: Fulfilled) {
    match outcome {
        Fulfilled::Changed(PurchaseStatus::Granted) => done.granted += 1,
        Fulfilled::Changed(PurchaseStatus::Expired) => done.expired += 1,
        _ => {}
    }
}
