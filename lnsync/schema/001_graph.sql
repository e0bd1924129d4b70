-- The gossip store. Semantics (what "seen" and "change_mask" mean) are specified in
-- docs/architecture.md, section "The store"; lnsync.rgs.history is the executable model of it.
-- short channel ids are u64 stored in bigint with the same bit pattern.

CREATE TABLE channel_announcements (
    scid          bigint PRIMARY KEY,
    id            bigserial UNIQUE,       -- insertion order (for change tracking)
    node_id_1     bytea NOT NULL,
    node_id_2     bytea NOT NULL,
    features      bytea NOT NULL,
    funding_sats  bigint,                 -- NULL when unknown
    raw           bytea NOT NULL,         -- the whole signed message, type included
    seen          timestamptz NOT NULL
);
CREATE INDEX channel_announcements_seen ON channel_announcements (seen);

-- Every distinct channel_update ever stored (one row per scid, direction, gossip timestamp).
CREATE TABLE channel_updates (
    id                           bigserial PRIMARY KEY,
    scid                         bigint   NOT NULL,
    direction                    smallint NOT NULL CHECK (direction IN (0, 1)),
    timestamp                    bigint   NOT NULL,
    message_flags                smallint NOT NULL,
    channel_flags                smallint NOT NULL,
    cltv_expiry_delta            integer  NOT NULL,
    htlc_minimum_msat            bigint   NOT NULL,
    fee_base_msat                bigint   NOT NULL,
    fee_proportional_millionths  bigint   NOT NULL,
    htlc_maximum_msat            bigint   NOT NULL,
    -- Fields that differ from the direction's latest update at the time this one became the
    -- latest, in RGS flag bits (0x40 cltv, 0x20 htlc_min, 0x10 fee_base, 0x08 fee_prop,
    -- 0x04 htlc_max, 0x02 disabled). 0x7E when it starts a life of the direction (its first update,
    -- or one arriving more than 14 days after the previous latest's timestamp: the direction was
    -- dead); 0 for a stale arrival (not newer than the latest already stored), which never becomes
    -- visible to clients.
    change_mask                  smallint NOT NULL,
    starts_life                  boolean  NOT NULL,
    raw                          bytea    NOT NULL,
    seen                         timestamptz NOT NULL,
    UNIQUE (scid, direction, timestamp)
);
CREATE INDEX channel_updates_seen ON channel_updates (seen) INCLUDE (scid, direction, change_mask);
ALTER TABLE channel_updates SET (autovacuum_vacuum_insert_scale_factor = 0.005);

-- The current state of each channel direction: its latest update by gossip timestamp.
CREATE TABLE channel_directions (
    scid                         bigint   NOT NULL,
    direction                    smallint NOT NULL,
    update_id                    bigint   NOT NULL,
    timestamp                    bigint   NOT NULL,
    channel_flags                smallint NOT NULL,
    cltv_expiry_delta            integer  NOT NULL,
    htlc_minimum_msat            bigint   NOT NULL,
    fee_base_msat                bigint   NOT NULL,
    fee_proportional_millionths  bigint   NOT NULL,
    htlc_maximum_msat            bigint   NOT NULL,
    seen                         timestamptz NOT NULL,   -- seen of that latest update
    alive_update_id              bigint   NOT NULL,      -- the update that started the current life
    alive_since                  timestamptz NOT NULL,   -- seen of that update
    PRIMARY KEY (scid, direction)
);
CREATE INDEX channel_directions_seen ON channel_directions (seen);

-- Every distinct node_announcement (one row per node id and gossip timestamp).
CREATE TABLE node_announcements (
    id           bigserial PRIMARY KEY,
    node_id      bytea    NOT NULL,
    timestamp    bigint   NOT NULL,
    features     bytea    NOT NULL,
    addresses    bytea    NOT NULL,       -- raw BOLT 7 address descriptors
    alias        bytea    NOT NULL,
    rgb_color    bytea    NOT NULL,
    -- 0x01 features changed, 0x02 address set changed, relative to the node's latest
    -- announcement when this one became the latest; 0x03 for the first; 0 for a stale arrival.
    change_mask  smallint NOT NULL,
    raw          bytea    NOT NULL,
    seen         timestamptz NOT NULL,
    UNIQUE (node_id, timestamp)
);
CREATE INDEX node_announcements_seen ON node_announcements (seen) INCLUDE (node_id, change_mask);

-- The current state of each node: its latest announcement by gossip timestamp.
CREATE TABLE nodes (
    node_id          bytea PRIMARY KEY,
    announcement_id  bigint NOT NULL,        -- the latest announcement
    first_announcement_id bigint NOT NULL,   -- the first one ever stored
    timestamp        bigint NOT NULL,
    features         bytea  NOT NULL,
    addresses        bytea  NOT NULL,
    seen             timestamptz NOT NULL,
    first_seen       timestamptz NOT NULL
);
