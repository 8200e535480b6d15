-- Gallery thumbnails (`{generationId}.thumb.webp` beside the image) and a
-- blurhash placeholder. `thumbnail_state`: 'pending' (not tried yet: images
-- stored before this change, or by code that predates it; `make
-- backfill-thumbnails` does them), 'done' (key and blurhash set) or 'none'
-- (the image cannot be decoded, e.g. SVG: it has no thumbnail).
ALTER TABLE images
    ADD COLUMN thumbnail_key   text,
    ADD COLUMN blurhash        text,
    ADD COLUMN thumbnail_state text NOT NULL DEFAULT 'pending'
        CHECK (thumbnail_state IN ('pending', 'done', 'none')),
    ADD CONSTRAINT images_thumbnail_done
        CHECK ((thumbnail_state = 'done') = (thumbnail_key IS NOT NULL AND blurhash IS NOT NULL));
CREATE INDEX images_thumbnail_pending ON images (id) WHERE thumbnail_state = 'pending';
