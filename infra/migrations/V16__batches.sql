-- Batches (issue 20): 1 to 10 prompts with shared settings, admitted all or
-- nothing (every item's hold in one transaction), run at most
-- MAX_IN_FLIGHT_PER_USER at a time together with the user's other
-- generations. Items not started yet are generations in the new status
-- `queued` (hold held, no prediction); they become `pending` as slots free up.
CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    name            text,
    -- The shared settings as asked (modelId, width, height, …), for the views.
    settings        jsonb NOT NULL,
    -- The API's own URL as the request reached it, for the items' webhooks.
    api_base        text,
    idempotency_key text,
    request_hash    text,
    cancelled_at    timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX batches_idempotency ON batches (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_by_user ON batches (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;

ALTER TABLE generations ADD COLUMN batch_id uuid REFERENCES batches (id);
CREATE INDEX generations_by_batch ON generations (batch_id) WHERE batch_id IS NOT NULL;

-- An item of a batch and its current run (a retry points it at a new generation).
CREATE TABLE batch_items (
    batch_id      uuid NOT NULL REFERENCES batches (id),
    item_index    integer NOT NULL CHECK (item_index BETWEEN 0 AND 9),
    generation_id uuid NOT NULL UNIQUE REFERENCES generations (id),
    PRIMARY KEY (batch_id, item_index)
);

ALTER TABLE generations DROP CONSTRAINT generations_status_check;
ALTER TABLE generations ADD CONSTRAINT generations_status_check
    CHECK (status IN ('queued', 'pending', 'processing', 'completed', 'failed', 'cancelled'));
CREATE INDEX generations_queued ON generations (user_id, created_at) WHERE status = 'queued';

-- The history counters (V14) count queued generations too.
ALTER TABLE generation_counts ADD COLUMN queued bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION generation_counts_move(u uuid, plus text, minus text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO generation_counts AS c (user_id, queued, pending, processing, completed, failed, cancelled)
    VALUES (u,
            (plus IS NOT DISTINCT FROM 'queued')::int - (minus IS NOT DISTINCT FROM 'queued')::int,
            (plus IS NOT DISTINCT FROM 'pending')::int - (minus IS NOT DISTINCT FROM 'pending')::int,
            (plus IS NOT DISTINCT FROM 'processing')::int - (minus IS NOT DISTINCT FROM 'processing')::int,
            (plus IS NOT DISTINCT FROM 'completed')::int - (minus IS NOT DISTINCT FROM 'completed')::int,
            (plus IS NOT DISTINCT FROM 'failed')::int - (minus IS NOT DISTINCT FROM 'failed')::int,
            (plus IS NOT DISTINCT FROM 'cancelled')::int - (minus IS NOT DISTINCT FROM 'cancelled')::int)
    ON CONFLICT (user_id) DO UPDATE
       SET queued = c.queued + EXCLUDED.queued,
           pending = c.pending + EXCLUDED.pending,
           processing = c.processing + EXCLUDED.processing,
           completed = c.completed + EXCLUDED.completed,
           failed = c.failed + EXCLUDED.failed,
           cancelled = c.cancelled + EXCLUDED.cancelled
$$;

CREATE OR REPLACE FUNCTION generation_counts_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    INSERT INTO generation_counts AS c (user_id, queued, pending, processing, completed, failed, cancelled)
    SELECT user_id,
           sign * count(*) FILTER (WHERE status = 'queued'),
           sign * count(*) FILTER (WHERE status = 'pending'),
           sign * count(*) FILTER (WHERE status = 'processing'),
           sign * count(*) FILTER (WHERE status = 'completed'),
           sign * count(*) FILTER (WHERE status = 'failed'),
           sign * count(*) FILTER (WHERE status = 'cancelled')
      FROM changed GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET queued = c.queued + EXCLUDED.queued,
           pending = c.pending + EXCLUDED.pending,
           processing = c.processing + EXCLUDED.processing,
           completed = c.completed + EXCLUDED.completed,
           failed = c.failed + EXCLUDED.failed,
           cancelled = c.cancelled + EXCLUDED.cancelled;
    RETURN NULL;
END
$$;
