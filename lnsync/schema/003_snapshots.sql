-- Snapshot generations written by the snapshotter (services/snapshotter). A generation becomes
-- visible all at once: readers follow snapshot_current, which is switched in the same transaction
-- that marks the generation published. Older generations are kept for a while (readers may still
-- be streaming them) and then deleted with their blobs.

CREATE TABLE snapshot_generations (
    id               bigserial PRIMARY KEY,
    reference_time   bigint NOT NULL,
    interval_seconds integer NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    seconds          double precision
);

CREATE TABLE snapshot_blobs (
    generation_id      bigint   NOT NULL REFERENCES snapshot_generations (id) ON DELETE CASCADE,
    version            smallint NOT NULL,
    scope              bigint   NOT NULL,   -- seconds; 0 = full snapshot; -1 = "nothing new"
    last_sync          bigint   NOT NULL,   -- the T the blob was computed against
    timestamp          bigint   NOT NULL,   -- its header timestamp
    node_count         integer  NOT NULL,
    announcement_count integer  NOT NULL,
    update_count       integer  NOT NULL,
    sha256             bytea    NOT NULL,
    blob               bytea    NOT NULL,
    gzip               bytea    NOT NULL,   -- the same bytes gzip-compressed, once per generation
    PRIMARY KEY (generation_id, version, scope)
);
ALTER TABLE snapshot_blobs ALTER COLUMN blob SET STORAGE EXTERNAL;  -- already compact; skip TOAST compression
ALTER TABLE snapshot_blobs ALTER COLUMN gzip SET STORAGE EXTERNAL;

CREATE TABLE snapshot_current (
    id            integer PRIMARY KEY CHECK (id = 1),
    generation_id bigint NOT NULL REFERENCES snapshot_generations (id)
);
