-- Credit purchases through Stripe Checkout (the `ledger` provider): the packs
-- on sale, one row per Checkout Session, and ledger entries keyed by the
-- Stripe object that caused them, so that any number of deliveries, in any
-- order, move a balance once.

CREATE TABLE credit_packs (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    credits     integer NOT NULL CHECK (credits > 0),
    price_cents integer NOT NULL CHECK (price_cents > 0),
    currency    text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    is_active   boolean NOT NULL DEFAULT true,
    sort_order  integer NOT NULL DEFAULT 0
);

INSERT INTO credit_packs (id, name, credits, price_cents, currency, sort_order) VALUES
  ('credits-100', '100 credits', 100, 499, 'eur', 0),
  ('credits-500', '500 credits', 500, 1999, 'eur', 1),
  ('credits-1200', '1,200 credits', 1200, 3999, 'eur', 2)
ON CONFLICT (id) DO NOTHING;

-- One Checkout Session: what was offered (pack, credits, amount, currency, as
-- they were when the session was made) and where it stands.
CREATE TABLE purchases (
    session_id      text PRIMARY KEY,
    user_id         uuid NOT NULL,
    pack_id         text NOT NULL REFERENCES credit_packs (id),
    credits         integer NOT NULL CHECK (credits > 0),
    amount_cents    integer NOT NULL CHECK (amount_cents > 0),
    currency        text NOT NULL,
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'paid', 'granted', 'expired', 'failed')),
    payment_intent  text UNIQUE,
    checkout_url    text NOT NULL,
    -- Stripe's session disagreed with this row (amount or currency): nothing is granted.
    mismatch        boolean NOT NULL DEFAULT false,
    idempotency_key text,
    request_hash    text,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchases_by_user ON purchases (user_id, created_at DESC);
CREATE UNIQUE INDEX purchases_one_per_key ON purchases (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX purchases_unsettled ON purchases (created_at) WHERE status IN ('open', 'paid');

-- A balance may go below zero once credits already spent are taken back.
ALTER TABLE credit_accounts DROP CONSTRAINT IF EXISTS credit_accounts_balance_check;

-- Ledger entries of purchases: 'purchase' (a paid session's credits),
-- 'takeback' (a refund's share, or what a dispute takes), 'reinstate' (a won
-- dispute gives its take-back back). `reference` is the Stripe object (session,
-- refund, dispute), unique per kind; `session_id` the purchase it belongs to.
ALTER TABLE credit_transactions DROP CONSTRAINT IF EXISTS credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check
    CHECK (kind IN ('grant', 'capture', 'refund', 'purchase', 'takeback', 'reinstate'));
ALTER TABLE credit_transactions
    ADD COLUMN reference  text,
    ADD COLUMN session_id text REFERENCES purchases (session_id);
CREATE UNIQUE INDEX credit_transactions_one_per_reference ON credit_transactions (kind, reference)
    WHERE reference IS NOT NULL;
CREATE INDEX credit_transactions_by_session ON credit_transactions (session_id)
    WHERE session_id IS NOT NULL;
CREATE INDEX credit_transactions_page ON credit_transactions (user_id, created_at DESC, id DESC);
