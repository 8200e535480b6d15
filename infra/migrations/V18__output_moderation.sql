-- Output moderation (issue 22), optional per model: each output of a model
-- with `moderate_outputs` is checked by the image moderation provider before
-- it is stored; a flagged one is never stored nor charged.
ALTER TABLE models ADD COLUMN moderate_outputs boolean NOT NULL DEFAULT false;
