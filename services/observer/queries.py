"""The observer's SQL: summaries of raw deliveries computed in PostgreSQL, and summary storage.

:func:`summarise_range` ranks every counted arrival of the messages first delivered in a range
once (a temporary table, dropped at commit), then aggregates it by interval, kind and peer in a
handful of ``GROUP BY`` queries; only per-interval sums and histograms cross the wire. It computes
exactly what :func:`services.observer.stats.summarise` computes in Python (tests hold them equal).
The caller wraps it in a transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lnsync.gossip.scid import scid_str
from services.observer import outliers, recon, stats
from services.observer.stats import KindSummary, PeerSummary

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
WORK_MEM = "64MB"  # a day of mainnet deliveries ranks without spilling to disk


def ts(seconds: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


RANK_SQL = """
CREATE TEMP TABLE observer_ranked ON COMMIT DROP AS
WITH firsts AS (  -- messages with a delivery in [$1, $2) and none before $1
    SELECT w.msg_hash, min(w.kind) AS kind, min(w.received) AS first_at
    FROM observations w
    WHERE w.received >= $1 AND w.received < $2
    GROUP BY w.msg_hash
    HAVING NOT EXISTS (SELECT 1 FROM observations e WHERE e.msg_hash = w.msg_hash AND e.received < $1)
), arrivals AS (  -- each peer's earliest counted delivery: a range scan, joined by hash
    SELECT f.msg_hash, f.kind, f.first_at, o.peer_num, min(o.received) AS at
    FROM observations o JOIN firsts f ON f.msg_hash = o.msg_hash
    WHERE o.received >= $1 AND o.received <= $2 + $3::int8 * INTERVAL '1 microsecond'
      AND o.received <= f.first_at + $3::int8 * INTERVAL '1 microsecond'
    GROUP BY f.msg_hash, f.kind, f.first_at, o.peer_num
)
SELECT kind, peer_num,
       extract(epoch FROM date_bin(make_interval(secs => $4::int), first_at, TIMESTAMPTZ 'epoch'))::int8
           AS interval_start,
       (extract(epoch FROM at - first_at) * 1000000)::int8 AS delay,
       row_number() OVER (PARTITION BY msg_hash ORDER BY at, peer_num) AS rank,
       count(*) OVER (PARTITION BY msg_hash) AS r
FROM arrivals
"""
REDUNDANCY_SQL = """
SELECT interval_start, kind, r, count(*) FROM observer_ranked WHERE rank = 1 GROUP BY 1, 2, 3
"""
# Histograms: width_bucket(delay - 1, edges) counts the edges below an integer delay, the bin
# stats.delay_bin gives it. q = 50 / 95: the arrival at rank ceil(q * r); q = 0: every arrival
# after the first.
HISTOGRAMS_SQL = """
SELECT interval_start, kind, q, width_bucket(delay - 1, $1::int8[]) AS bin, count(*), sum(delay)::int8
FROM observer_ranked, (VALUES (50), (95)) AS qs(q)
WHERE r >= 2 AND rank = greatest(1, (q * r + 99) / 100)
GROUP BY 1, 2, 3, 4
UNION ALL
SELECT interval_start, kind, 0, width_bucket(delay - 1, $1::int8[]), count(*), sum(delay)::int8
FROM observer_ranked WHERE rank > 1
GROUP BY 1, 2, 3, 4
"""
PEERS_SQL = """
SELECT interval_start, peer_num, kind, count(*), count(*) FILTER (WHERE rank = 1),
       sum(rank)::int8, sum(delay)::int8
FROM observer_ranked GROUP BY 1, 2, 3
"""
DELIVERIES_SQL = """
SELECT extract(epoch FROM date_bin(make_interval(secs => $3::int), received, TIMESTAMPTZ 'epoch'))::int8,
       peer_num, kind, count(*)
FROM observations WHERE received >= $1 AND received < $2
GROUP BY 1, 2, 3
"""


async def summarise_range(
    conn: Any, lo: float, hi: float, *, interval: int, max_delay: int
) -> tuple[stats.Kinds, stats.Peers]:
    """Summaries of the intervals in [lo, hi) (seconds) from the raw rows, inside a transaction."""
    kinds: stats.Kinds = defaultdict(KindSummary)
    peers: stats.Peers = defaultdict(PeerSummary)
    lo_t, hi_t = ts(lo), ts(hi)
    await conn.execute("DROP TABLE IF EXISTS observer_ranked")
    await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")  # sorts in memory, for this transaction only
    await conn.execute(RANK_SQL, lo_t, hi_t, max_delay * stats.US, interval)
    for start, kind, r, n in await conn.fetch(REDUNDANCY_SQL):
        k = kinds[start, kind]
        k.messages += n
        k.counted += r * n
        stats.add_lists(k.redundancy, [0] * (r - 1) + [n])
    for start, kind, q, b, n, total in await conn.fetch(HISTOGRAMS_SQL, list(stats.DELAY_EDGES_US)):
        k = kinds[start, kind]
        if q == 50:
            k.spread += n
            k.t50_sum += total
            k.t50_hist[b] += n
        elif q == 95:
            k.t95_sum += total
            k.t95_hist[b] += n
        else:
            k.delay_sum += total
            k.delay_hist[b] += n
    for start, peer, kind, n, firsts, rank_sum, delay_sum in await conn.fetch(PEERS_SQL):
        peers[start, peer, kind].add(PeerSummary(0, n, firsts, rank_sum, delay_sum))
    for start, peer, kind, n in await conn.fetch(DELIVERIES_SQL, lo_t, hi_t, interval):
        kinds[start, kind].deliveries += n
        peers[start, peer, kind].deliveries += n
    await conn.execute("DROP TABLE observer_ranked")
    return dict(kinds), dict(peers)


INSERT_KINDS_SQL = """
INSERT INTO observation_summaries (interval_start, seconds, kind, deliveries, messages, counted, redundancy,
    spread, t50_sum, t95_sum, t50_hist, t95_hist, delay_sum, delay_hist)
VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (interval_start, kind) DO NOTHING
"""
INSERT_PEERS_SQL = """
INSERT INTO observation_peer_summaries (interval_start, peer_num, kind, deliveries, messages, firsts,
    rank_sum, delay_sum)
VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (interval_start, peer_num, kind) DO NOTHING
"""


async def store_summaries(conn: Any, kinds: stats.Kinds, peers: stats.Peers, interval: int) -> None:
    await conn.executemany(
        INSERT_KINDS_SQL,
        [
            (start, interval, kind, s.deliveries, s.messages, s.counted, s.redundancy, s.spread, s.t50_sum,
             s.t95_sum, s.t50_hist, s.t95_hist, s.delay_sum, s.delay_hist)
            for (start, kind), s in kinds.items()
        ],
    )  # fmt: skip
    await conn.executemany(
        INSERT_PEERS_SQL,
        [
            (start, peer, kind, p.deliveries, p.messages, p.firsts, p.rank_sum, p.delay_sum)
            for (start, peer, kind), p in peers.items()
        ],
    )


async def load_summaries(conn: Any, lo: float, hi: float) -> tuple[stats.Kinds, stats.Peers]:
    """Stored summaries of the intervals starting in [lo, hi)."""
    kinds: stats.Kinds = {}
    peers: stats.Peers = {}
    rows = await conn.fetch(
        "SELECT extract(epoch FROM interval_start)::int8, kind, deliveries, messages, counted, redundancy,"
        " spread, t50_sum, t95_sum, t50_hist, t95_hist, delay_sum, delay_hist FROM observation_summaries"
        " WHERE interval_start >= $1 AND interval_start < $2",
        ts(lo),
        ts(hi),
    )
    for r in rows:
        kinds[r[0], r[1]] = KindSummary(
            r[2], r[3], r[4], list(r[5]), r[6], r[7], r[8], list(r[9]), list(r[10]), r[11], list(r[12])
        )
    rows = await conn.fetch(
        "SELECT extract(epoch FROM interval_start)::int8, peer_num, kind, deliveries, messages, firsts,"
        " rank_sum, delay_sum FROM observation_peer_summaries"
        " WHERE interval_start >= $1 AND interval_start < $2",
        ts(lo),
        ts(hi),
    )
    for start, peer, kind, *values in rows:
        peers[start, peer, kind] = PeerSummary(*values)
    return kinds, peers


async def summarised_until(conn: Any) -> float | None:
    t = await conn.fetchval("SELECT extract(epoch FROM summarised_until)::float8 FROM observer_state")
    return None if t is None else float(t)


async def peer_names(conn: Any) -> dict[int, str]:
    return {num: peer_id for num, peer_id in await conn.fetch("SELECT num, peer_id FROM peers")}


# Random peer sets (migration 007): the epoch rows overlapping a window, and the deliveries of each
# epoch's peers received in the window while they were in the set.
PEER_SET_ROWS_SQL = """
SELECT epoch, peer_id, extract(epoch FROM started)::float8 AS started,
       coalesce(outcome, 'observing') AS outcome
FROM peer_set_epochs WHERE started < $2 AND (ended IS NULL OR ended > $1)
"""
PEER_SET_DELIVERIES_SQL = """
SELECT epoch, count(*) AS deliveries, count(DISTINCT msg_hash) AS messages
FROM peer_set_observations WHERE received >= $1 AND received < $2
GROUP BY epoch
"""


async def peer_set_epochs(conn: Any, start: float, end: float) -> list[dict[str, Any]]:
    """Per random-set epoch overlapping ``[start, end)``: when its first row started, its peers,
    how their rows ended (outcome -> rows; "observing" while open), and the deliveries and
    distinct messages its peers made in the window while in the set."""
    lo, hi = ts(start), ts(end)
    epochs: dict[int, dict[str, Any]] = {}
    peers: dict[int, set[str]] = defaultdict(set)
    for r in await conn.fetch(PEER_SET_ROWS_SQL, lo, hi):
        e = epochs.setdefault(
            r["epoch"],
            {"epoch": r["epoch"], "started": r["started"], "deliveries": 0, "messages": 0, "outcomes": {}},
        )
        e["started"] = min(e["started"], r["started"])
        e["outcomes"][r["outcome"]] = e["outcomes"].get(r["outcome"], 0) + 1
        peers[r["epoch"]].add(r["peer_id"])
    for r in await conn.fetch(PEER_SET_DELIVERIES_SQL, lo, hi):
        if r["epoch"] in epochs:
            epochs[r["epoch"]].update(deliveries=r["deliveries"], messages=r["messages"])
    return [{**e, "peers": len(peers[n])} for n, e in sorted(epochs.items())]


TOP_CHANNELS_SQL = """
SELECT scid, count(*) AS updates, count(DISTINCT direction) AS directions
FROM channel_updates WHERE seen >= $1 AND seen < $2
GROUP BY scid ORDER BY updates DESC, scid LIMIT $3
"""
# channel_updates by the node that signed them: direction 0 is node_id_1's, 1 is node_id_2's.
TOP_UPDATE_NODES_SQL = """
SELECT CASE WHEN u.direction = 0 THEN a.node_id_1 ELSE a.node_id_2 END AS node, count(*) AS updates
FROM channel_updates u JOIN channel_announcements a ON a.scid = u.scid
WHERE u.seen >= $1 AND u.seen < $2
GROUP BY 1 ORDER BY updates DESC, node LIMIT $3
"""
TOP_NODE_ANNOUNCEMENTS_SQL = """
SELECT node_id, count(*) AS announcements FROM node_announcements WHERE seen >= $1 AND seen < $2
GROUP BY node_id ORDER BY announcements DESC, node_id LIMIT $3
"""


async def top_updaters(conn: Any, lo: float, hi: float, limit: int) -> dict[str, list[dict[str, Any]]]:
    """Who gossips most in [lo, hi): distinct messages stored, from the store's own tables (these
    keep superseded updates persistence.superseded_retention, longer than raw observations)."""
    lo_t, hi_t = ts(lo), ts(hi)
    channels = await conn.fetch(TOP_CHANNELS_SQL, lo_t, hi_t, limit)
    nodes = await conn.fetch(TOP_UPDATE_NODES_SQL, lo_t, hi_t, limit)
    announcements = await conn.fetch(TOP_NODE_ANNOUNCEMENTS_SQL, lo_t, hi_t, limit)
    return {
        "channels": [{"scid": scid_str(r[0]), "updates": r[1], "directions": r[2]} for r in channels],
        "nodes_by_channel_updates": [{"node_id": bytes(r[0]).hex(), "updates": r[1]} for r in nodes],
        "nodes_by_node_announcements": [
            {"node_id": bytes(r[0]).hex(), "announcements": r[1]} for r in announcements
        ],
    }


# The reconciliation estimate (services/observer/recon.py defines it; this computes the same).
# pairs: every (observed peer, message) with when the others had it (o: the earliest arrival by
# another peer) and when the peer had it (p), kept if the earlier lies in the peer's span of
# deliveries; then per interval each pair is common (0), ours only (1) or theirs only (2), and
# active rounds are grouped by their difference size. The pairs go into a temporary table that is
# ANALYZEd, so the planner groups the rounds by hashing in memory (estimated from the CTEs, it sorted
# them on disk: 5.8 s instead of about 1 s for 30,000 messages).
PAIRS_SQL = """
CREATE TEMP TABLE observer_pairs ON COMMIT DROP AS
WITH d AS (
    SELECT msg_hash, peer_num, (extract(epoch FROM received) * 1000000)::int8 AS at,
           coalesce(size, ($3::int4[])[kind - 255]) AS size
    FROM observations WHERE received >= $1 AND received < $2
), arr AS (  -- each peer's earliest delivery of each message
    SELECT DISTINCT ON (msg_hash, peer_num) msg_hash, peer_num, at, size FROM d
    ORDER BY msg_hash, peer_num, at
), top2 AS (
    SELECT msg_hash, min(at) FILTER (WHERE rk = 1) AS t1, min(peer_num) FILTER (WHERE rk = 1) AS p1,
           min(at) FILTER (WHERE rk = 2) AS t2
    FROM (SELECT msg_hash, peer_num, at,
                 row_number() OVER (PARTITION BY msg_hash ORDER BY at, peer_num) AS rk FROM arr) r
    WHERE rk <= 2 GROUP BY msg_hash
), spans AS (
    SELECT peer_num, min(at) AS first, max(at) AS last FROM d GROUP BY peer_num
), pairs AS (
    SELECT s.peer_num, CASE WHEN t.p1 = s.peer_num THEN t.t2 ELSE t.t1 END AS o, a.at AS p, a.size
    FROM top2 t CROSS JOIN spans s
    LEFT JOIN arr a ON a.msg_hash = t.msg_hash AND a.peer_num = s.peer_num
    WHERE least(CASE WHEN t.p1 = s.peer_num THEN t.t2 ELSE t.t1 END, a.at) BETWEEN s.first AND s.last
)
SELECT * FROM pairs
"""
ROUNDS_SQL = """
WITH classified AS (
    SELECT peer_num, iv, least(o, p) AS at, least(o, p) / (iv * 1000000) AS round, size,
           CASE WHEN o / (iv * 1000000) = p / (iv * 1000000) THEN 0
                WHEN p IS NULL OR o < p THEN 1 ELSE 2 END AS side
    FROM observer_pairs, unnest($1::int8[]) AS iv
), rounds AS (
    SELECT peer_num, iv, count(*) FILTER (WHERE side = 1) AS ours,
           count(*) FILTER (WHERE side = 2) AS theirs, count(*) FILTER (WHERE side = 0) AS common,
           coalesce(sum(size) FILTER (WHERE side = 2), 0) AS bytes,
           coalesce(sum((round + 1) * iv * 1000000 - at) FILTER (WHERE side > 0), 0) AS delay_sum,
           coalesce(max((round + 1) * iv * 1000000 - at) FILTER (WHERE side > 0), 0) AS delay_max
    FROM classified GROUP BY peer_num, iv, round
)
SELECT peer_num, iv, ours + theirs AS d, count(*), sum(ours)::int8, sum(theirs)::int8, sum(common)::int8,
       sum(bytes)::int8, sum(delay_sum)::int8, max(delay_max)::int8
FROM rounds GROUP BY 1, 2, 3
"""
FLOOD_SQL = """
SELECT peer_num, count(*), sum(coalesce(size, ($3::int4[])[kind - 255]))::int8
FROM observations WHERE received >= $1 AND received < $2 GROUP BY peer_num
"""


async def oldest_delivery(conn: Any) -> float | None:
    """Receive time (seconds) of the oldest raw delivery still kept."""
    value = await conn.fetchval("SELECT extract(epoch FROM min(received))::float8 FROM observations")
    return None if value is None else float(value)


def _nominal_sizes() -> list[int]:
    """recon.NOMINAL_SIZE as an array indexed by kind - 255 (PostgreSQL arrays start at 1)."""
    return [recon.size_of(kind, None) for kind in (256, 257, 258)]


async def reconciliation(
    conn: Any, lo: float, hi: float, intervals: Sequence[int]
) -> tuple[recon.Links, dict[int, recon.FloodTally]]:
    """:func:`services.observer.recon.tally` of the deliveries received in [lo, hi), in PostgreSQL."""
    lo_t, hi_t, sizes = ts(lo), ts(hi), _nominal_sizes()
    await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    await conn.execute("DROP TABLE IF EXISTS observer_pairs")
    await conn.execute(PAIRS_SQL, lo_t, hi_t, sizes)
    await conn.execute("ANALYZE observer_pairs")
    links: recon.Links = {}
    for peer, iv, d, n, ours, theirs, common, size, delay_sum, delay_max in await conn.fetch(
        ROUNDS_SQL, list(intervals)
    ):
        link = links.setdefault((peer, iv), recon.LinkTally())
        link.ours_only += ours
        link.theirs_only += theirs
        link.common += common
        link.transfer_bytes += size
        link.delay_sum_us += delay_sum
        link.delay_max_us = max(link.delay_max_us, delay_max)
        link.add_round(d, n)
    floods = {
        peer: recon.FloodTally(n, size) for peer, n, size in await conn.fetch(FLOOD_SQL, lo_t, hi_t, sizes)
    }
    await conn.execute("DROP TABLE observer_pairs")
    return links, floods


# Outliers (services/observer/outliers.py decides; these read counts and the rows behind flags).
JUMPS_SQL = """
WITH b AS (
    SELECT {key} AS e, date_bin(make_interval(secs => $4::int), seen, TIMESTAMPTZ 'epoch') AS b, count(*) AS n
    FROM {table} WHERE seen >= $1 AND seen < $2 GROUP BY 1, 2
), t AS (SELECT e, b, n, sum(n) OVER (PARTITION BY e) AS total FROM b)
SELECT e, extract(epoch FROM b)::int8, n, total::int8,
       (SELECT count(*) FROM {table} h WHERE h.{key} = t.e AND h.seen >= $3 AND h.seen < $1)
FROM t WHERE n >= $5
"""
JUMP_SOURCES = {  # category -> (table, key column, how to name a key)
    "channel_updates": ("channel_updates", "scid", scid_str),
    "node_announcements": ("node_announcements", "node_id", lambda key: bytes(key).hex()),
}
JUMP_ROWS_SQL = {
    "channel_updates": "SELECT extract(epoch FROM seen)::float8 AS seen, direction, timestamp, change_mask,"
    " channel_flags & 2 = 2 AS disabled, fee_base_msat, fee_proportional_millionths FROM channel_updates"
    " WHERE scid = $1 AND seen >= $2 AND seen < $3 ORDER BY seen LIMIT $4",
    "node_announcements": "SELECT extract(epoch FROM seen)::float8 AS seen, timestamp, change_mask, alias"
    " FROM node_announcements WHERE node_id = $1 AND seen >= $2 AND seen < $3 ORDER BY seen LIMIT $4",
}
NEW_NODES_SQL = """
SELECT extract(epoch FROM date_bin(make_interval(secs => $3::int), first_seen, TIMESTAMPTZ 'epoch'))::int8,
       count(*)
FROM nodes WHERE first_seen >= $1 AND first_seen < $2 GROUP BY 1
"""
NEW_NODE_ROWS_SQL = """
SELECT n.node_id, extract(epoch FROM n.first_seen)::float8 AS first_seen, a.alias
FROM nodes n LEFT JOIN node_announcements a ON a.id = n.first_announcement_id
WHERE n.first_seen >= $1 AND n.first_seen < $2 ORDER BY n.first_seen LIMIT $3
"""
ROWS_PER_FLAG = 50


def _plain(row: Any) -> dict[str, Any]:
    """A record as JSON-able data (bytes as hex, aliases as text)."""
    out = {}
    for k, v in dict(row).items():
        if k == "alias" and v is not None:
            v = bytes(v).rstrip(b"\0").decode("utf-8", "replace")
        elif isinstance(v, bytes | bytearray | memoryview):
            v = bytes(v).hex()
        out[k] = v
    return out


async def rate_jumps(conn: Any, window: outliers.Window) -> list[outliers.Flag]:
    """Channels and nodes whose counts jump against their history, each with its bucket's rows."""
    lo, hi, hist = ts(window.start), ts(window.end), ts(window.start - outliers.HISTORY)
    flags = []
    for category, (table, key, name) in JUMP_SOURCES.items():
        keys = {}
        counts = []
        sql = JUMPS_SQL.format(table=table, key=key)
        for e, bucket, n, total, history in await conn.fetch(
            sql, lo, hi, hist, window.bucket, outliers.MIN_COUNT
        ):
            keys[name(e)] = e
            counts.append(outliers.BucketCount(name(e), bucket, n, total, history))
        what = "updates" if category == "channel_updates" else "announcements"
        for f in outliers.rate_jumps(category, counts, window, what):
            assert f.bucket is not None
            rows = await conn.fetch(JUMP_ROWS_SQL[category], keys[f.subject], ts(f.bucket),
                                    ts(f.bucket + window.bucket), ROWS_PER_FLAG)  # fmt: skip
            f.rows = [_plain(r) for r in rows]
            flags.append(f)
    return flags


async def new_node_bursts(conn: Any, window: outliers.Window) -> list[outliers.Flag]:
    """Buckets with bursts of newly seen nodes, each with those nodes."""
    rows = await conn.fetch(NEW_NODES_SQL, ts(window.start - outliers.HISTORY), ts(window.end), window.bucket)
    flags = outliers.new_node_bursts({b: n for b, n in rows}, window)
    for f in flags:
        assert f.bucket is not None
        nodes = await conn.fetch(NEW_NODE_ROWS_SQL, ts(f.bucket), ts(f.bucket + window.bucket), ROWS_PER_FLAG)
        f.rows = [_plain(r) for r in nodes]
    return flags
