-- Several outputs per generation (`numOutputs`, 1 to 4): how many a model can
-- make, how many a generation asked for, one image row per stored output, and
-- a hold that covers every output asked (free slots first, then credits) and
-- is captured for the outputs delivered only.
ALTER TABLE models ADD COLUMN max_outputs integer NOT NULL DEFAULT 1
    CHECK (max_outputs BETWEEN 1 AND 4);
UPDATE models SET max_outputs = 4
 WHERE replicate_id IN ('black-forest-labs/flux-schnell', 'black-forest-labs/flux-dev',
                        'black-forest-labs/flux-krea-dev');

ALTER TABLE generations ADD COLUMN num_outputs integer NOT NULL DEFAULT 1
    CHECK (num_outputs BETWEEN 1 AND 4);

-- `units`: outputs asked; `free_units`: how many of them use free slots (the
-- rest cost credits: `amount`); once captured, `delivered` says how many were
-- stored, and `free_units` / `amount` what was really charged.
ALTER TABLE credit_holds
    ADD COLUMN units integer NOT NULL DEFAULT 1 CHECK (units BETWEEN 1 AND 4),
    ADD COLUMN free_units integer NOT NULL DEFAULT 0 CHECK (free_units >= 0),
    ADD COLUMN delivered integer CHECK (delivered >= 0);
UPDATE credit_holds SET free_units = 1 WHERE kind = 'free';
UPDATE credit_holds SET delivered = 1 WHERE state = 'captured';
ALTER TABLE credit_holds ADD CONSTRAINT credit_holds_free_units CHECK (free_units <= units);

-- Output 0 keeps the key it always had (`{generationId}.{ext}`); output i > 0
-- is stored at `{generationId}.{i}.{ext}`.
ALTER TABLE images ADD COLUMN output_index integer NOT NULL DEFAULT 0
    CHECK (output_index BETWEEN 0 AND 3);
ALTER TABLE images DROP CONSTRAINT images_generation_id_key;
ALTER TABLE images ADD CONSTRAINT images_generation_output UNIQUE (generation_id, output_index);
