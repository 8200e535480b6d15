-- Uploads (`POST /uploads`): who asked for which object key, declared as
-- what. `POST /generate` with `sourceImageId` reads it to tell an unknown id
-- (or another user's) from an upload not PUT yet, and to check the object
-- against its declared type. The generation records which upload it used.
CREATE TABLE uploads (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL,
    content_type   text NOT NULL,
    content_length bigint NOT NULL CHECK (content_length > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_created ON uploads (created_at);

ALTER TABLE generations ADD COLUMN source_upload_id uuid;
