-- Credits: the built-in ledger (balances plus an append-only transaction log)
-- and the state of captures sent to an external credit provider.

CREATE TABLE credit_accounts (
    user_id      uuid PRIMARY KEY,
    balance      bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    total_earned bigint NOT NULL DEFAULT 0,
    total_spent  bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credit_transactions (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('grant', 'capture', 'refund')),
    amount        bigint NOT NULL CHECK (amount > 0),
    generation_id uuid REFERENCES generations (id),
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_transactions_by_user ON credit_transactions (user_id, created_at DESC);
-- A generation is captured at most once, and refunded at most once.
CREATE UNIQUE INDEX credit_transactions_one_capture ON credit_transactions (generation_id) WHERE kind = 'capture';
CREATE UNIQUE INDEX credit_transactions_one_refund ON credit_transactions (generation_id) WHERE kind = 'refund';

-- A captured credits hold is settled with the provider: at once for the
-- ledger ('done'), after the commit for an external provider ('pending' →
-- 'in_flight' → 'done' | 'failed', retried until done).
ALTER TABLE credit_holds
    ADD COLUMN capture_state    text CHECK (capture_state IN ('pending', 'in_flight', 'done', 'failed')),
    ADD COLUMN capture_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN capture_error    text,
    ADD COLUMN capture_lease    timestamptz;
CREATE INDEX credit_holds_unsettled ON credit_holds (created_at) WHERE capture_state IN ('pending', 'in_flight', 'failed');
