-- Core schema: the model catalog, generations, their images, and the credit
-- holds with the per-user free-generation counter they maintain.

CREATE TABLE models (
    id                       uuid PRIMARY KEY,
    name                     text NOT NULL UNIQUE,
    display_name             text NOT NULL,
    description              text NOT NULL DEFAULT '',
    replicate_id             text NOT NULL,
    version                  text,
    default_width            integer NOT NULL,
    default_height           integer NOT NULL,
    default_steps            integer NOT NULL,
    default_guidance_scale   double precision NOT NULL,
    min_width                integer NOT NULL,
    min_height               integer NOT NULL,
    max_width                integer NOT NULL,
    max_height               integer NOT NULL,
    max_steps                integer NOT NULL,
    supports_negative_prompt boolean NOT NULL DEFAULT false,
    supports_img2img         boolean NOT NULL DEFAULT false,
    supports_seed            boolean NOT NULL DEFAULT false,
    is_default               boolean NOT NULL DEFAULT false,
    is_active                boolean NOT NULL DEFAULT true,
    sort_order               integer NOT NULL DEFAULT 0,
    estimated_time_seconds   integer NOT NULL DEFAULT 5,
    created_at               timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX models_single_default ON models (is_default) WHERE is_default;

CREATE TABLE generations (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL,
    model_id            uuid NOT NULL REFERENCES models (id),
    prompt              text NOT NULL,
    negative_prompt     text,
    width               integer NOT NULL,
    height              integer NOT NULL,
    steps               integer NOT NULL,
    guidance_scale      double precision NOT NULL,
    seed                bigint,
    source_image_url    text,
    generation_strength double precision,
    style               text,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    prediction_id       text UNIQUE,
    error_code          text,
    error_message       text,
    charge              text NOT NULL CHECK (charge IN ('free', 'credits', 'waived')),
    credits_used        integer NOT NULL DEFAULT 0,
    -- Who is copying the output to S3 right now, and until when (the completion lease).
    lease_owner         uuid,
    lease_until         timestamptz,
    last_polled_at      timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz
);
CREATE INDEX generations_by_user ON generations (user_id, created_at DESC, id DESC);
CREATE INDEX generations_open ON generations (created_at) WHERE status IN ('pending', 'processing');

CREATE TABLE images (
    id            uuid PRIMARY KEY,
    generation_id uuid NOT NULL UNIQUE REFERENCES generations (id),
    user_id       uuid NOT NULL,
    storage_key   text NOT NULL,
    format        text NOT NULL,
    file_size     bigint NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    is_favorite   boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX images_by_user ON images (user_id, created_at DESC, id DESC);

-- One row per user; locked FOR UPDATE while a hold is taken so that parallel
-- requests are serialised per user.
CREATE TABLE user_quotas (
    user_id    uuid PRIMARY KEY,
    free_used  integer NOT NULL DEFAULT 0 CHECK (free_used >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credit_holds (
    generation_id uuid PRIMARY KEY REFERENCES generations (id),
    user_id       uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('free', 'credits', 'waived')),
    amount        integer NOT NULL CHECK (amount >= 0),
    state         text NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'captured', 'released')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    settled_at    timestamptz
);
CREATE INDEX credit_holds_open ON credit_holds (user_id) WHERE state = 'held';
