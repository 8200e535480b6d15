-- A user's copy of their data (issue 22): one zip in S3 per export, built by
-- whoever holds its lease (the request, else the reconciler), ready for a day.
CREATE TABLE exports (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'ready', 'failed', 'expired')),
    storage_key text,
    images      integer,
    size_bytes  bigint,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    expires_at  timestamptz
);
CREATE INDEX exports_by_user ON exports (user_id, created_at DESC);
CREATE INDEX exports_open ON exports (created_at) WHERE status IN ('pending', 'ready');
-- One unfinished export per user at a time.
CREATE UNIQUE INDEX exports_one_pending ON exports (user_id) WHERE status = 'pending';
