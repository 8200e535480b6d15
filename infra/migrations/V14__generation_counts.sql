-- History at any size (issue 21): each user's generations counted by status,
-- kept by a trigger in the transaction that writes the generation rows, so that
-- `GET /generate/history` reads its `total` from one row instead of counting.
-- One row per user (a column per status): a status change updates one row,
-- so two transitions of the same user never take two counter locks in
-- opposite orders. No CHECK (n >= 0): a wrong counter must never fail a
-- generation's write; the audit reports it (`generation_count`).
LOCK TABLE generations IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE generation_counts (
    user_id    uuid PRIMARY KEY,
    pending    bigint NOT NULL DEFAULT 0,
    processing bigint NOT NULL DEFAULT 0,
    completed  bigint NOT NULL DEFAULT 0,
    failed     bigint NOT NULL DEFAULT 0,
    cancelled  bigint NOT NULL DEFAULT 0
);

-- Adds one generation of status `plus` and removes one of status `minus` (either may be NULL).
CREATE FUNCTION generation_counts_move(u uuid, plus text, minus text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO generation_counts AS c (user_id, pending, processing, completed, failed, cancelled)
    VALUES (u,
            (plus IS NOT DISTINCT FROM 'pending')::int - (minus IS NOT DISTINCT FROM 'pending')::int,
            (plus IS NOT DISTINCT FROM 'processing')::int - (minus IS NOT DISTINCT FROM 'processing')::int,
            (plus IS NOT DISTINCT FROM 'completed')::int - (minus IS NOT DISTINCT FROM 'completed')::int,
            (plus IS NOT DISTINCT FROM 'failed')::int - (minus IS NOT DISTINCT FROM 'failed')::int,
            (plus IS NOT DISTINCT FROM 'cancelled')::int - (minus IS NOT DISTINCT FROM 'cancelled')::int)
    ON CONFLICT (user_id) DO UPDATE
       SET pending = c.pending + EXCLUDED.pending,
           processing = c.processing + EXCLUDED.processing,
           completed = c.completed + EXCLUDED.completed,
           failed = c.failed + EXCLUDED.failed,
           cancelled = c.cancelled + EXCLUDED.cancelled
$$;

-- Rows inserted or deleted: one upsert per user and statement (a bulk insert or
-- delete costs one counter update per user, not one per row), users in order.
CREATE FUNCTION generation_counts_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sign int := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    INSERT INTO generation_counts AS c (user_id, pending, processing, completed, failed, cancelled)
    SELECT user_id,
           sign * count(*) FILTER (WHERE status = 'pending'),
           sign * count(*) FILTER (WHERE status = 'processing'),
           sign * count(*) FILTER (WHERE status = 'completed'),
           sign * count(*) FILTER (WHERE status = 'failed'),
           sign * count(*) FILTER (WHERE status = 'cancelled')
      FROM changed GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
       SET pending = c.pending + EXCLUDED.pending,
           processing = c.processing + EXCLUDED.processing,
           completed = c.completed + EXCLUDED.completed,
           failed = c.failed + EXCLUDED.failed,
           cancelled = c.cancelled + EXCLUDED.cancelled;
    RETURN NULL;
END
$$;

-- A row whose status or user changed.
CREATE FUNCTION generation_counts_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.user_id = NEW.user_id THEN
        PERFORM generation_counts_move(NEW.user_id, NEW.status, OLD.status);
    ELSE
        PERFORM generation_counts_move(OLD.user_id, NULL, OLD.status);
        PERFORM generation_counts_move(NEW.user_id, NEW.status, NULL);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER generation_counts_insert AFTER INSERT ON generations
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION generation_counts_rows();
CREATE TRIGGER generation_counts_delete AFTER DELETE ON generations
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION generation_counts_rows();
-- Only real moves: the many updates of leases, polls and progress never reach the function.
CREATE TRIGGER generation_counts_update AFTER UPDATE OF status, user_id ON generations
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION generation_counts_moved();

-- The rows already there (the table is locked: nothing is written meanwhile).
INSERT INTO generation_counts (user_id, pending, processing, completed, failed, cancelled)
SELECT user_id,
       count(*) FILTER (WHERE status = 'pending'),
       count(*) FILTER (WHERE status = 'processing'),
       count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'cancelled')
  FROM generations
 GROUP BY user_id;

-- The history's keyset order within one status (`?status=` with `cursor` or `page`).
CREATE INDEX generations_by_user_status ON generations (user_id, status, created_at DESC, id DESC);
