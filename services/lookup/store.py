"""Read the store into the delta engine's input for a client's (T, R).

Set-based SQL only: the live graph comes from ``channel_announcements`` joined with
``channel_directions`` (the latest update per direction, maintained by persistence), read as one
binary COPY straight into NumPy; which fields changed since T is one index range scan of
``channel_updates`` by ``seen`` OR-ing the stored change masks. Nothing reads the whole update
history, so a one-day delta costs the same whether the store holds a day or a month of updates.
Directions whose latest update was seen at or after R (a few, at most the last minute's) are
resolved by a per-direction index look-up. The result is, by construction and by test, the same
as :meth:`lnsync.rgs.history.GossipHistory.delta_input` on the same messages.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lnsync import pgbinary
from lnsync.rgs import format as f
from lnsync.rgs.model import DIRECTION_CHANGE_BITS, ChannelTable, DeltaInput, NodeTable
from lnsync.schema import columns
from lnsync.schema.columns import to_u64, u64_array

# What the engine reads of each direction (lnsync/schema/columns.py), by its short names.
_ENGINE_COLUMNS = columns.engine_columns(columns.DIRECTION)
_DIR_COLUMNS = tuple(str(c.read_as) for c in _ENGINE_COLUMNS)

CHANNELS_SQL = """
SELECT a.scid, a.node_id_1, a.node_id_2, coalesce(a.funding_sats, -1),
       floor(extract(epoch FROM a.seen))::int8,
       {d0}, {d1}
FROM channel_announcements a
JOIN channel_directions d0 ON d0.scid = a.scid AND d0.direction = 0
JOIN channel_directions d1 ON d1.scid = a.scid AND d1.direction = 1
WHERE a.seen < to_timestamp($1) AND (a.closed_at IS NULL OR a.closed_at >= to_timestamp($1))
"""
_DIRECTION_SELECT = ", ".join(c.as_engine_value("{p}") for c in _ENGINE_COLUMNS)
_CHANNEL_COLUMNS: list[pgbinary.Column] = [
    ("scid", ">i8"),
    ("node_1", "V33"),
    ("node_2", "V33"),
    ("funding", ">i8"),
    ("ann_seen", ">i8"),
    *[(f"d0_{c.read_as}", c.dtype) for c in _ENGINE_COLUMNS],
    *[(f"d1_{c.read_as}", c.dtype) for c in _ENGINE_COLUMNS],
]

CHANGES_SQL = """
SELECT scid, direction, bit_or(change_mask)::int2
FROM channel_updates
WHERE seen >= to_timestamp($1) AND seen < to_timestamp($2)
GROUP BY scid, direction
"""
_CHANGE_COLUMNS: list[pgbinary.Column] = [("scid", ">i8"), ("direction", ">i2"), ("mask", ">i2")]

# Directions whose current latest was seen at or after R: their latest and life start before R.
# The engine's direction columns an update row holds too, read from that update.
_UPDATE_NAMES = set(columns.names(columns.UPDATE))
_FROM_UPDATE = tuple(c for c in _ENGINE_COLUMNS if c.name in _UPDATE_NAMES)
_FROM_UPDATE_NAMES = tuple(str(c.read_as) for c in _FROM_UPDATE)
LATEST_BEFORE_SQL = """
SELECT k.scid, k.direction, _FROM_UPDATE,
       (SELECT floor(extract(epoch FROM l.seen))::int8 FROM channel_updates l
         WHERE l.scid = k.scid AND l.direction = k.direction AND l.starts_life AND l.seen < to_timestamp($3)
         ORDER BY l.seen DESC LIMIT 1) AS alive
FROM unnest($1::int8[], $2::int2[]) AS k(scid, direction)
CROSS JOIN LATERAL (
    SELECT * FROM channel_updates u
    WHERE u.scid = k.scid AND u.direction = k.direction AND u.seen < to_timestamp($3)
    ORDER BY u.timestamp DESC LIMIT 1
) u
""".replace("_FROM_UPDATE", ", ".join(f"{c.as_engine_value('u')} AS {c.read_as}" for c in _FROM_UPDATE))

FEATURES_SQL = "SELECT scid, features FROM channel_announcements WHERE length(features) > 0"

NODES_SQL = """
SELECT n.node_id, n.features, n.addresses, floor(extract(epoch FROM n.seen))::int8,
       floor(extract(epoch FROM n.first_seen))::int8
FROM nodes n WHERE n.node_id = ANY($1::bytea[])
"""
NODE_BEFORE_SQL = """
SELECT DISTINCT ON (node_id) node_id, features, addresses
FROM node_announcements WHERE node_id = ANY($1::bytea[]) AND seen < to_timestamp($2)
ORDER BY node_id, timestamp DESC
"""
NODE_CHANGES_SQL = """
SELECT node_id, bit_or(change_mask)::int2 FROM node_announcements
WHERE seen >= to_timestamp($1) AND seen < to_timestamp($2) GROUP BY node_id
"""


async def _copy(conn: Any, sql: str, *args: Any) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(sql, *args, output=sink, format="binary")
    return b"".join(chunks)


@dataclasses.dataclass(frozen=True)
class GraphAt:
    """The live graph at R: the part of every delta for R that does not depend on T.

    Loading it is most of a delta's database work, and every client asking within the same
    minute (and every scope of a snapshot generation) shares R, so lookup keeps it. Its tables
    carry no changes (``changes`` all zero); :func:`load_delta_input` adds those for a T.
    """

    reference_time: int
    channels: ChannelTable
    nodes: NodeTable


async def load_delta_input(
    conn: Any, chain_hash: bytes, last_sync: int, reference_time: int, graph: GraphAt | None = None
) -> DeltaInput:
    """The engine's input for (T, R); ``graph`` (the graph at the same R) saves re-reading it."""
    T, R = last_sync, reference_time
    if graph is None:
        graph = await load_graph(conn, R)
    elif graph.reference_time != R:
        raise ValueError(f"graph at {graph.reference_time} used for R = {R}")
    channels, nodes = graph.channels, graph.nodes
    if T > 0:
        channels = dataclasses.replace(channels, changes=await _channel_changes(conn, channels.scid, T, R))
        nodes = dataclasses.replace(nodes, changes=await _node_changes(conn, nodes.node_id, T, R))
    return DeltaInput(chain_hash, T, R, channels, nodes)


async def _channel_changes(conn: Any, scid: np.ndarray, T: int, R: int) -> np.ndarray:
    """Per live direction, the OR of the change masks of its updates seen in [T, R)."""
    n = len(scid)
    changes = np.zeros((n, 2), dtype=np.uint8)
    ch = pgbinary.parse(await _copy(conn, CHANGES_SQL, T, R), _CHANGE_COLUMNS)
    if n and len(ch):
        ch_scid = u64_array(ch["scid"])
        pos = np.searchsorted(scid, ch_scid)
        pos_ok = pos < n
        hit = np.zeros(len(ch), dtype=np.bool_)
        hit[pos_ok] = scid[pos[pos_ok]] == ch_scid[pos_ok]
        np.bitwise_or.at(
            changes,
            (pos[hit], ch["direction"][hit].astype(np.int64)),
            ch["mask"][hit].astype(np.uint8),
        )
    return changes & np.uint8(DIRECTION_CHANGE_BITS)


async def _node_changes(conn: Any, node_list: list[bytes], T: int, R: int) -> np.ndarray:
    """Per node, the OR of the change masks of its announcements seen in [T, R)."""
    changes = np.zeros(len(node_list), dtype=np.uint8)
    index = {node: i for i, node in enumerate(node_list)}
    for r in await conn.fetch(NODE_CHANGES_SQL, T, R):
        j = index.get(bytes(r[0]))
        if j is not None:
            changes[j] = int(r[1])
    return changes


async def load_graph(conn: Any, reference_time: int) -> GraphAt:
    """Read the live graph at R (run it in one repeatable-read transaction)."""
    R = reference_time
    sql = CHANNELS_SQL.format(d0=_DIRECTION_SELECT.format(p="d0"), d1=_DIRECTION_SELECT.format(p="d1"))
    rows = pgbinary.parse(await _copy(conn, sql, R), _CHANNEL_COLUMNS)
    # Sorted here rather than by PostgreSQL: its sort spills the rows to disk at default work_mem.
    rows = rows[np.argsort(u64_array(rows["scid"]), kind="stable")]
    n = len(rows)
    d = {c: np.stack([rows[f"d0_{c}"], rows[f"d1_{c}"]], axis=1).astype(np.int64) for c in _DIR_COLUMNS}
    present = np.ones((n, 2), dtype=np.bool_)

    # Directions whose latest (or life start) was seen at or after R: look up their state before R.
    late = (d["seen"] >= R) | (d["alive"] >= R)
    if late.any():
        ri, di = np.nonzero(late)
        present[ri, di] = False
        found = await conn.fetch(LATEST_BEFORE_SQL, rows["scid"][ri].tolist(), di.tolist(), R)
        where = {(int(r["scid"]), int(r["direction"])): r for r in found}
        for i, dir_ in zip(ri.tolist(), di.tolist(), strict=True):
            r = where.get((int(rows["scid"][i]), dir_))
            if r is None or r["alive"] is None:
                continue
            present[i, dir_] = True
            for name in _FROM_UPDATE_NAMES:
                d[name][i, dir_] = r[name]
            d["alive"][i, dir_] = r["alive"]

    live = present.all(axis=1) & (d["ts"] >= R - f.STALE_AFTER).all(axis=1)
    rows, present = rows[live], present[live]
    d = {c: v[live] for c, v in d.items()}
    n = len(rows)
    scid = u64_array(rows["scid"])

    node_ids, inverse = np.unique(np.concatenate([rows["node_1"], rows["node_2"]]), return_inverse=True)
    node_list = [bytes(x) for x in node_ids.tolist()]
    features_by_scid = {to_u64(r["scid"]): bytes(r["features"]) for r in await conn.fetch(FEATURES_SQL)}
    channels = ChannelTable(
        scid=scid,
        node_1=inverse[:n].astype(np.int32),
        node_2=inverse[n:].astype(np.int32),
        features=[features_by_scid.get(s, b"") for s in scid.tolist()],
        funding_sats=rows["funding"].astype(np.int64),
        live_since=np.maximum(rows["ann_seen"].astype(np.int64), d["alive"].max(axis=1)),
        disabled=(d["flags"] & f.UPDATE_DISABLED) != 0,
        cltv_expiry_delta=d["cltv"],
        htlc_minimum_msat=u64_array(d["hmin"]),
        fee_base_msat=d["fbase"],
        fee_proportional_millionths=d["fprop"],
        htlc_maximum_msat=u64_array(d["hmax"]),
        changes=np.zeros((n, 2), dtype=np.uint8),
    )
    return GraphAt(R, channels, await _load_nodes(conn, node_list, R))


async def _load_nodes(conn: Any, node_list: list[bytes], R: int) -> NodeTable:
    m = len(node_list)
    index = {node: i for i, node in enumerate(node_list)}
    has = np.zeros(m, dtype=np.bool_)
    features = [b""] * m
    addresses = [b""] * m
    first_seen = np.full(m, -1, dtype=np.int64)
    changes = np.zeros(m, dtype=np.uint8)
    late: list[bytes] = []
    for r in await conn.fetch(NODES_SQL, node_list):
        i = index[bytes(r[0])]
        if r[4] >= R:
            continue  # first announced after R: no announcement yet
        first_seen[i] = r[4]
        if r[3] >= R:
            late.append(bytes(r[0]))
            continue
        has[i], features[i], addresses[i] = True, bytes(r[1]), bytes(r[2])
    if late:
        for r in await conn.fetch(NODE_BEFORE_SQL, late, R):
            i = index[bytes(r[0])]
            has[i], features[i], addresses[i] = True, bytes(r[1]), bytes(r[2])
    first_seen[~has] = -1
    return NodeTable(node_list, has, features, addresses, first_seen, changes)
