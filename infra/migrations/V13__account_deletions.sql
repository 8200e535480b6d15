-- A user's request to delete their data (DELETE /api/v1/me): recorded first,
-- then carried out step by step (each step idempotent), and finished by the
-- reconciler if the request's process dies mid-way.
CREATE TABLE account_deletions (
    user_id      uuid PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX account_deletions_unfinished ON account_deletions (requested_at) WHERE finished_at IS NULL;
