-- A generation remembers the Idempotency-Key it was requested with (and the
-- body's hash), so that a retry with the key leads to it whatever happened to
-- the runtime table's record.
ALTER TABLE generations
    ADD COLUMN idempotency_key text,
    ADD COLUMN request_hash    text;
CREATE UNIQUE INDEX generations_idempotency_key
    ON generations (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- An external capture the credit service refused (4xx) is not retried: it is
-- `rejected`, counted and alarmed on, and left for an operator.
ALTER TABLE credit_holds DROP CONSTRAINT credit_holds_capture_state_check;
ALTER TABLE credit_holds ADD CONSTRAINT credit_holds_capture_state_check
    CHECK (capture_state IN ('pending', 'in_flight', 'done', 'failed', 'rejected'));

-- When the user deleted the image of a completed generation (the audit then
-- expects neither an image row nor an object).
ALTER TABLE generations ADD COLUMN image_deleted_at timestamptz;
