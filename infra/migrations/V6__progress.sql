-- What a waiting user sees: the provider's progress (0 to 1, never going
-- back; 1 once completed) and when the provider began running it.
ALTER TABLE generations
    ADD COLUMN progress   real CHECK (progress >= 0 AND progress <= 1),
    ADD COLUMN started_at timestamptz;
