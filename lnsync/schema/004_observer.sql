-- The gossip observer's summaries (services/observer). Raw deliveries (observations, migration 002)
-- are kept persistence.observation_retention; well before that, persistence's observer job folds
-- each closed interval of them into one row per kind and one row per (peer, kind) here, so
-- propagation figures outlive the raw rows at a small, fixed cost per interval. Definitions (first
-- arrival, redundancy, delays, ranks, histogram bins) are in services/observer/stats.py. Delays
-- and their sums are integer microseconds, so sums of summaries equal sums over raw rows exactly.

-- Per interval and kind: messages whose first arrival fell in the interval and every delivery
-- received in it.
CREATE TABLE observation_summaries (
    interval_start  timestamptz NOT NULL,
    seconds         integer     NOT NULL,   -- the interval's length
    kind            smallint    NOT NULL,   -- BOLT 7 type: 256, 257 or 258
    deliveries      bigint      NOT NULL,   -- deliveries received in the interval (every row)
    messages        bigint      NOT NULL,   -- messages first delivered in the interval
    counted         bigint      NOT NULL,   -- their deliveries by distinct peers within max_delay
    redundancy      int8[]      NOT NULL,   -- redundancy[k] (1-based): messages delivered by k peers
    -- Over the messages delivered by at least two peers: how many, the sums of their t50 and t95
    -- and their histograms over stats.DELAY_EDGES_US.
    spread          bigint      NOT NULL,
    t50_sum         bigint      NOT NULL,
    t95_sum         bigint      NOT NULL,
    t50_hist        int8[]      NOT NULL,
    t95_hist        int8[]      NOT NULL,
    -- Every counted delivery after the first: its delay behind the first arrival.
    delay_sum       bigint      NOT NULL,
    delay_hist      int8[]      NOT NULL,
    PRIMARY KEY (interval_start, kind)
);

-- What each peer contributed to the interval's messages, by kind.
CREATE TABLE observation_peer_summaries (
    interval_start  timestamptz NOT NULL,
    peer_num        integer     NOT NULL,   -- peers.num
    kind            smallint    NOT NULL,
    deliveries      bigint      NOT NULL,   -- its deliveries received in the interval
    messages        bigint      NOT NULL,   -- interval messages it delivered within max_delay
    firsts          bigint      NOT NULL,   -- of those, the ones it delivered first (rank 1)
    rank_sum        bigint      NOT NULL,   -- sum of its arrival ranks
    delay_sum       bigint      NOT NULL,   -- sum of its delays behind the first arrival
    PRIMARY KEY (interval_start, peer_num, kind)
);

-- How far the summaries reach: every interval before summarised_until is summarised (or had no
-- raw rows left to summarise).
CREATE TABLE observer_state (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    summarised_until  timestamptz
);
INSERT INTO observer_state DEFAULT VALUES;
