-- Versions a caller may pick with `modelVersion`, beside the catalog's own
-- `version` (always allowed). Any other version id is refused: a version of
-- another model would run on our token at this model's price.
ALTER TABLE models ADD COLUMN versions text[] NOT NULL DEFAULT '{}';

-- Reconciler runs in a row that found the provider no longer knows the
-- generation's prediction (404): at two, the generation fails.
ALTER TABLE generations ADD COLUMN prediction_missing int NOT NULL DEFAULT 0;

-- A completion lease taken by a status poll yields to a webhook delivery,
-- which would otherwise get 503 for as long as polls keep coming.
ALTER TABLE generations ADD COLUMN lease_yields boolean NOT NULL DEFAULT false;
