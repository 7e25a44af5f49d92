-- Replays: how often an entry was retried, and when last.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS last_attempt_at timestamptz;
CREATE INDEX IF NOT EXISTS dead_letters_first_seen_idx ON dead_letters (first_seen_at);
