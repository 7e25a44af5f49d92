-- Runtime state the engine publishes for `projector status`, the API and metrics.

-- paused: the operator's switch (`projector pause/resume`); state: what the
-- engine observes (LIVE, CATCHING_UP, PAUSED, FAILED; REBUILDING during a rebuild).
ALTER TABLE projections ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE projections ADD COLUMN IF NOT EXISTS events_per_second double precision NOT NULL DEFAULT 0;
ALTER TABLE projections ADD COLUMN IF NOT EXISTS last_event_at timestamptz;
ALTER TABLE projections ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;

-- Per partition: the log end the owning instance last saw (fetch high
-- watermark), beside the checkpoint in projector_checkpoints.
CREATE TABLE IF NOT EXISTS partition_status (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    end_offset  bigint      NOT NULL,
    owner       text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
