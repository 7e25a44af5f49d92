-- Engine bookkeeping: checkpoints, dead letters, projection registry, change sequence.

-- Every read-model row write takes its updated_seq from here; the API's
-- change feed reads rows above the last sequence it delivered.
CREATE SEQUENCE IF NOT EXISTS projector_updated_seq;

-- Checkpoints are the source of truth for positions: written in the same
-- transaction as the rows they cover. next_offset = -1 means "from the log start".
CREATE TABLE IF NOT EXISTS projector_checkpoints (
    projection   text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    next_offset  bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Events that were rejected by the decoder (projection = '*') or whose
-- projection code raised (projection = its name); written in the transaction
-- that moves the checkpoint past them.
CREATE TABLE IF NOT EXISTS dead_letters (
    id             bigserial   PRIMARY KEY,
    projection     text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    key            bytea,
    value          bytea,
    headers        jsonb       NOT NULL DEFAULT '[]',
    reason         text        NOT NULL,
    error          text        NOT NULL DEFAULT '',
    event_id       text,
    event_type     text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS dead_letters_reason_idx ON dead_letters (reason, id);

-- One row per projection: the version its live tables were built with, and
-- the physical table names behind each logical name.
CREATE TABLE IF NOT EXISTS projections (
    name        text        PRIMARY KEY,
    version     integer     NOT NULL,
    state       text        NOT NULL DEFAULT 'LIVE',
    tables      jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Partitions a projection refuses to consume because the log no longer
-- matches its checkpoint (retention deleted events, or the topic was recreated).
CREATE TABLE IF NOT EXISTS refused_partitions (
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    checkpoint  bigint      NOT NULL,
    log_start   bigint,
    log_end     bigint,
    reason      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
