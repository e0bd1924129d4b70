"""The store's live graph at R, read for the proof (lnsync/rgs/proof.py) independently of how lookup
reads it: the snapshotter proves each generation with it, lookup a sample of dynamic deltas.

Lookup reads the graph persistence maintains (``channel_directions``, ``nodes``); this reads it
again from the records themselves: for each direction, its update with the highest gossip
timestamp among those seen before R (``channel_updates``), for each node likewise
(``node_announcements``), and the announcements seen before R and not closed by then. So a
maintained row that disagrees with the updates stored (written behind the writer's back, lost, a
writer bug) makes the next generation fail its proof instead of reaching wallets. Both backward
scans follow the unique indexes (scid, direction, timestamp) and (node_id, timestamp): no sort.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lnsync.rgs import format as f
from lnsync.rgs.model import ChannelTable, DeltaInput, NodeTable

U64_MASK = (1 << 64) - 1

CHANNELS_SQL = """
WITH latest AS (
    SELECT DISTINCT ON (scid, direction) scid, direction, timestamp, channel_flags, cltv_expiry_delta,
           htlc_minimum_msat, fee_base_msat, fee_proportional_millionths, htlc_maximum_msat
    FROM channel_updates WHERE seen < to_timestamp($1)
    ORDER BY scid DESC, direction DESC, timestamp DESC
)
SELECT a.scid, a.node_id_1, a.node_id_2, a.features, coalesce(a.funding_sats, -1),
       d0.channel_flags, d0.cltv_expiry_delta, d0.htlc_minimum_msat, d0.fee_base_msat,
       d0.fee_proportional_millionths, d0.htlc_maximum_msat,
       d1.channel_flags, d1.cltv_expiry_delta, d1.htlc_minimum_msat, d1.fee_base_msat,
       d1.fee_proportional_millionths, d1.htlc_maximum_msat
FROM channel_announcements a
JOIN latest d0 ON d0.scid = a.scid AND d0.direction = 0
JOIN latest d1 ON d1.scid = a.scid AND d1.direction = 1
WHERE a.seen < to_timestamp($1) AND (a.closed_at IS NULL OR a.closed_at >= to_timestamp($1))
  AND d0.timestamp >= $2 AND d1.timestamp >= $2
"""

NODES_SQL = """
SELECT DISTINCT ON (node_id) node_id, features, addresses
FROM node_announcements WHERE seen < to_timestamp($1)
ORDER BY node_id DESC, timestamp DESC
"""


async def live_graph(conn: Any, chain_hash: bytes, reference_time: int) -> DeltaInput:
    """The live graph at R as the engine's input for T = 0 (run it in one repeatable-read
    transaction); only what a client ends up holding is filled in (no change masks, no life
    starts)."""
    R = reference_time
    rows = sorted(await conn.fetch(CHANNELS_SQL, R, R - f.STALE_AFTER), key=lambda r: r[0] & U64_MASK)
    n = len(rows)
    node_list = sorted({bytes(r[1]) for r in rows} | {bytes(r[2]) for r in rows})
    index = {node: i for i, node in enumerate(node_list)}
    d = np.array([[list(r[5:11]), list(r[11:17])] for r in rows], dtype=np.int64).reshape(n, 2, 6)
    channels = ChannelTable(
        scid=np.array([r[0] for r in rows], dtype=np.int64).view(np.uint64),
        node_1=np.array([index[bytes(r[1])] for r in rows], dtype=np.int32),
        node_2=np.array([index[bytes(r[2])] for r in rows], dtype=np.int32),
        features=[bytes(r[3]) for r in rows],
        funding_sats=np.array([r[4] for r in rows], dtype=np.int64),
        live_since=np.zeros(n, np.int64),
        disabled=(d[..., 0] & f.UPDATE_DISABLED) != 0,
        cltv_expiry_delta=d[..., 1],
        htlc_minimum_msat=d[..., 2].view(np.uint64),
        fee_base_msat=d[..., 3],
        fee_proportional_millionths=d[..., 4],
        htlc_maximum_msat=d[..., 5].view(np.uint64),
        changes=np.zeros((n, 2), np.uint8),
    )
    m = len(node_list)
    has = np.zeros(m, dtype=np.bool_)
    features, addresses = [b""] * m, [b""] * m
    for r in await conn.fetch(NODES_SQL, R):
        i = index.get(bytes(r[0]))
        if i is not None:
            has[i], features[i], addresses[i] = True, bytes(r[1]), bytes(r[2])
    nodes = NodeTable(node_list, has, features, addresses, np.full(m, -1, np.int64), np.zeros(m, np.uint8))
    return DeltaInput(chain_hash, 0, R, channels, nodes)
