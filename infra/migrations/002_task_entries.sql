-- The stream entry that carries each outstanding task, so that matching can tell when Redis
-- lost it (the entry is gone while the attempt has not ended) and publish it again.
ALTER TABLE engine_tasks ADD COLUMN entry_id text;
ALTER TABLE engine_tasks ADD COLUMN published_at timestamptz NOT NULL DEFAULT now();
