-- Random peer sets (services/observer/peerset.py): which peer was observed when. One row per peer
-- and peer-set epoch it was observed in: opened when the peer joins the set (or when a new epoch
-- starts and it stays), closed with the outcome that ended it. Deliveries of a peer received in
-- [started, ended) belong to that epoch (the view peer_set_observations joins them).
CREATE TABLE peer_set_epochs (
    id        bigserial PRIMARY KEY,
    epoch     bigint      NOT NULL,   -- floor(unix time / observer.rotate_interval)
    slot      integer     NOT NULL,   -- the set's slot the peer filled
    peer_id   text        NOT NULL,   -- the node id in hex (peers.peer_id)
    address   text        NOT NULL,   -- host:port dialled
    seed      bigint      NOT NULL,   -- observer.seed of the run
    started   timestamptz NOT NULL,
    joined    timestamptz NOT NULL,   -- when the peer joined the set (= started unless continued)
    ended     timestamptz,            -- NULL while observed
    -- NULL while observed; else continued (the next epoch's row follows), rotated, refused,
    -- stalled, misbehaved, closed (by the peer), gone (no longer dialable) or stopped.
    outcome   text
);
CREATE INDEX peer_set_epochs_epoch ON peer_set_epochs (epoch);
CREATE INDEX peer_set_epochs_peer ON peer_set_epochs (peer_id, started);

-- Every delivery made by a random-set peer while it was in the set, with its epoch.
CREATE VIEW peer_set_observations AS
SELECT e.epoch, e.slot, e.peer_id, o.peer_num, o.msg_hash, o.kind, o.received, o.first, o.size
FROM peer_set_epochs e
JOIN peers p ON p.peer_id = e.peer_id
JOIN observations o ON o.peer_num = p.num
    AND o.received >= e.started AND (e.ended IS NULL OR o.received < e.ended);
