-- Persistence's own state: the producers that deliver gossip (peers) with their counters and
-- sync reports, the one sync-state row lookup and the snapshotter gate on, and every delivery of
-- a live producer (the raw material of the gossip observer). See docs/architecture.md,
-- "Persistence".

-- One row per producer: a downloader's peer (its node id in hex) or an import ("import:<name>").
CREATE TABLE peers (
    peer_id          text PRIMARY KEY,
    num              serial UNIQUE,          -- compact id, used by observations
    source           text NOT NULL,          -- "downloader", "import", ... (last stream's header)
    first_seen       timestamptz NOT NULL DEFAULT now(),
    last_message_at  timestamptz,            -- latest receive time of a committed delivery
    -- Deliveries committed, by kind, and what became of them. stored counts new rows (stale
    -- arrivals included); duplicates were already stored; rejected failed persistence's checks.
    channel_announcements  bigint NOT NULL DEFAULT 0,
    channel_updates        bigint NOT NULL DEFAULT 0,
    node_announcements     bigint NOT NULL DEFAULT 0,
    stored                 bigint NOT NULL DEFAULT 0,
    duplicates             bigint NOT NULL DEFAULT 0,
    rejected               bigint NOT NULL DEFAULT 0,
    -- ReportSyncComplete, recorded once (the first report wins): when, and the peer's own counts
    -- of what its initial sync delivered.
    sync_completed_at            timestamptz,
    sync_channel_announcements   bigint,
    sync_channel_updates         bigint,
    sync_node_announcements      bigint
);

-- Rejections per producer and reason (GossipError.reason labels, "store_error", ...).
CREATE TABLE peer_rejections (
    peer_num  integer NOT NULL REFERENCES peers (num) ON DELETE CASCADE,
    reason    text    NOT NULL,
    count     bigint  NOT NULL,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (peer_num, reason)
);

-- Whether the graph is fully synced: set once, when the configured quorum of peers has reported
-- their initial sync, and never reset (readers must not flip back to "not ready").
CREATE TABLE sync_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fully_synced_at  timestamptz,
    quorum           integer            -- the quorum in force when it was reached
);
INSERT INTO sync_state DEFAULT VALUES;

-- One row per delivery of a gossip message by a live producer (historical imports are not
-- deliveries and are not recorded). msg_hash identifies the message as the store does (the first
-- 8 bytes of BLAKE2b over its store key: scid for a channel_announcement; scid, direction and
-- timestamp for a channel_update; node id and timestamp for a node_announcement), so deliveries
-- of one message by many peers share it. first marks the delivery that stored the message.
-- received is the producer's receive time (never later than the commit). Rows older than
-- persistence.observation_retention are pruned. No foreign key: inserts stay cheap.
CREATE TABLE observations (
    peer_num   integer     NOT NULL,
    msg_hash   bigint      NOT NULL,
    kind       smallint    NOT NULL,      -- BOLT 7 type: 256, 257 or 258
    received   timestamptz NOT NULL,
    first      boolean     NOT NULL
);
CREATE INDEX observations_received ON observations (received);
CREATE INDEX observations_msg ON observations (msg_hash);

-- Who wrote the store last: each write batch stamps it under the writer lock (its writer's token
-- and the next counter), retention too (writer 0). A writer that finds its own last stamp knows
-- nobody else changed the store since, and may trust what it cached of it.
CREATE TABLE writer_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    writer     bigint NOT NULL DEFAULT 0,
    batch      bigint NOT NULL DEFAULT 0
);
INSERT INTO writer_state DEFAULT VALUES;

-- The writer updates a direction's row with every new latest update (about as often as updates
-- arrive). Without an index on the columns it changes, PostgreSQL updates it in place on its page
-- (a HOT update: no new index entries), given free room on the page. channel_directions_seen is
-- read by nothing that needs it (lookup reads directions by key; its status query scans the
-- table anyway): dropping it and leaving room on each page made applying the direction updates
-- 2.4x faster on the mainnet-scale benchmark (bench/bench_ingest.py).
DROP INDEX channel_directions_seen;
ALTER TABLE channel_directions SET (fillfactor = 60);
