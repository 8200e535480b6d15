-- Provider usage: what Replicate reports of each generation's prediction and
-- what it is estimated to cost (operator data, never shown to users), and
-- each model's price (docs/architecture.md, "Provider cost").

-- How Replicate bills a model: per output image (official models) or per
-- second of predict time (community models, by hardware).
ALTER TABLE models
    ADD COLUMN billing   text NOT NULL DEFAULT 'per_second' CHECK (billing IN ('per_image', 'per_second')),
    ADD COLUMN price_usd numeric(12, 6) NOT NULL DEFAULT 0.000975 CHECK (price_usd >= 0);

-- Public list prices of 2026 (shared/reference/models.md).
UPDATE models SET billing = 'per_image', price_usd = 0.003 WHERE name = 'flux-schnell';
UPDATE models SET billing = 'per_image', price_usd = 0.03  WHERE name = 'seedream-3';
UPDATE models SET billing = 'per_image', price_usd = 0.039 WHERE name = 'nano-banana';

-- `started_at` (V6) is the provider's start; `predict_time` is `metrics.predict_time`.
ALTER TABLE generations
    ADD COLUMN provider_created_at   timestamptz,
    ADD COLUMN provider_completed_at timestamptz,
    ADD COLUMN predict_time          double precision CHECK (predict_time >= 0),
    ADD COLUMN provider_cost_usd     numeric(12, 6) CHECK (provider_cost_usd >= 0);
