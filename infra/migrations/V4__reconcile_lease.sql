-- When a reconciler run last claimed a generation: runs that overlap skip
-- generations claimed within the last minute.
ALTER TABLE generations ADD COLUMN reconciled_at timestamptz;
