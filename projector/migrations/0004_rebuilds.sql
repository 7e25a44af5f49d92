-- Blue/green rebuilds: one row per attempt; the previous generation is kept
-- (tables renamed to <table>__prev) until the next rebuild or --drop-old.
CREATE TABLE IF NOT EXISTS rebuilds (
    projection    text        NOT NULL,
    generation    integer     NOT NULL,
    version       integer     NOT NULL,
    state         text        NOT NULL,  -- RUNNING, SWAPPED, CANCELLED, ABANDONED, ROLLED_BACK
    partial       boolean     NOT NULL DEFAULT false,
    tables        jsonb       NOT NULL,  -- logical -> shadow physical name
    progress      jsonb       NOT NULL DEFAULT '{}',
    prev_version  integer,
    prev_checkpoints jsonb,               -- live checkpoints at the swap, for --rollback
    cancel_requested boolean  NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (projection, generation)
);
ALTER TABLE projections ADD COLUMN IF NOT EXISTS partial boolean NOT NULL DEFAULT false;
