"""The store's live graph at R, read for the proof. I/O: a SQL reader (asyncpg queries and binary
COPY), not part of the pure core; the proof itself (lnsync/rgs/proof.py) is pure code and only
compares what this returns. It reads independently of how lookup reads the graph: the snapshotter
proves each generation with it, lookup a sample of dynamic deltas.

Lookup reads the graph persistence maintains (``channel_directions``, ``nodes``); this reads it
again from the records themselves: for each direction, its update with the highest gossip
timestamp among those seen before R (``channel_updates``), for each node likewise
(``node_announcements``), and the announcements seen before R and not closed by then. So a
maintained row that disagrees with the updates stored (written behind the writer's back, lost, a
writer bug) makes the next generation fail its proof instead of reaching wallets. Each direction of
each announced channel is one backward probe of the unique index (scid, direction, timestamp),
stopping at the first update seen before R (not a scan of every stored update, ``DISTINCT ON``,
which grows with the history); nodes are one backward scan of (node_id, timestamp). The
channels come as binary COPY straight into NumPy (lnsync/pgbinary.py), not as a Python object per
value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lnsync import pgbinary
from lnsync.rgs import format as f
from lnsync.rgs.model import ChannelTable, DeltaInput, NodeTable
from lnsync.schema import columns

# A direction's policy as an update sets it: the direction columns lookup reads that an update row
# holds too, but its timestamp and seen (the query orders and filters by those), in table order
# (lnsync/schema/columns.py, where they are declared once; the SQL and the binary COPY dtypes below
# are generated from them).
_UPDATE_NAMES = set(columns.names(columns.UPDATE))
_POLICY = tuple(
    c
    for c in columns.engine_columns(columns.DIRECTION)
    if c.name in _UPDATE_NAMES and c.name not in ("timestamp", "seen")
)


def _policy(table: str) -> str:
    return ", ".join(f"{table}.{c.name}" for c in _POLICY)


def _latest(direction: int) -> str:
    """The join of a direction's update with the highest timestamp among those seen before R."""
    return f"""
CROSS JOIN LATERAL (
    SELECT u.timestamp, {_policy("u")}
    FROM channel_updates u
    WHERE u.scid = a.scid AND u.direction = {direction} AND u.seen < to_timestamp($1)
    ORDER BY u.timestamp DESC LIMIT 1
) d{direction}"""  # noqa: S608 - declared column names


CHANNELS_SQL = f"""
SELECT a.scid, a.node_id_1, a.node_id_2, coalesce(a.funding_sats, -1),
       {_policy("d0")},
       {_policy("d1")}
FROM channel_announcements a{_latest(0)}{_latest(1)}
WHERE a.seen < to_timestamp($1) AND (a.closed_at IS NULL OR a.closed_at >= to_timestamp($1))
  AND d0.timestamp >= $2 AND d1.timestamp >= $2
"""  # noqa: S608 - declared column names
# The same query as binary COPY (parameters inlined: COPY takes none; both are integers).
_DIRECTION = [(str(c.read_as), c.stored_dtype) for c in _POLICY]
_COLUMNS: list[pgbinary.Column] = [
    ("scid", ">i8"), ("node_1", "V33"), ("node_2", "V33"), ("funding", ">i8"),
    *[(f"d0_{n}", t) for n, t in _DIRECTION], *[(f"d1_{n}", t) for n, t in _DIRECTION],
]  # fmt: skip

NODES_SQL = """
SELECT DISTINCT ON (node_id) node_id, features, addresses
FROM node_announcements WHERE seen < to_timestamp($1)
ORDER BY node_id DESC, timestamp DESC
"""


async def _copy(conn: Any, sql: str) -> bytearray:
    # One growing buffer (realloc), not the chunks and then their join: half the peak (~9 MB at
    # mainnet scale).
    data = bytearray()

    async def sink(chunk: bytes) -> None:
        data.extend(chunk)

    await conn.copy_from_query(sql, output=sink, format="binary")
    return data


async def _channel_columns(conn: Any, R: int) -> np.ndarray | None:
    """The live channels as one structured array (binary COPY), or None when a row does not fit
    the fixed widths (a node id of another length: a corrupted store, read row by row instead)."""
    sql = CHANNELS_SQL.replace("$1", str(int(R))).replace("$2", str(int(R - f.STALE_AFTER)))
    try:
        return pgbinary.parse(await _copy(conn, sql), _COLUMNS)
    except pgbinary.CopyFormatError:
        return None


async def live_graph(conn: Any, chain_hash: bytes, reference_time: int, *, copy: bool = True) -> DeltaInput:
    """The live graph at R as the engine's input for T = 0 (run it in one repeatable-read
    transaction); only what a client ends up holding is filled in (no change masks, no life
    starts, no features). ``copy=False`` reads the records the way a store whose rows do not fit
    binary COPY's fixed widths is read."""
    R = reference_time
    rows = await _channel_columns(conn, R) if copy else None
    if rows is not None:
        d = np.stack(
            [np.stack([rows[f"d{i}_{name}"] for name, _ in _DIRECTION], axis=-1) for i in (0, 1)], axis=1
        ).astype(np.int64)
        scid, node_1, node_2 = rows["scid"].astype(np.int64), rows["node_1"], rows["node_2"]
        funding = rows["funding"].astype(np.int64)
    else:  # through asyncpg's records (any width of node id)
        records = await conn.fetch(CHANNELS_SQL, R, R - f.STALE_AFTER)
        k = len(_POLICY)
        d = np.array(
            [[list(r[4 : 4 + k]), list(r[4 + k : 4 + 2 * k])] for r in records], dtype=np.int64
        ).reshape(-1, 2, k)
        scid = np.array([r[0] for r in records], dtype=np.int64)
        node_1 = np.array([bytes(r[1]) for r in records], dtype=object)
        node_2 = np.array([bytes(r[2]) for r in records], dtype=object)
        funding = np.array([r[3] for r in records], dtype=np.int64)
    order = np.argsort(scid.view(np.uint64), kind="stable")
    n = len(order)
    ids, inverse = np.unique(np.concatenate([node_1[order], node_2[order]]), return_inverse=True)
    node_list = [bytes(x) for x in ids.tolist()]
    d = d[order]
    at = {name: k for k, (name, _) in enumerate(_DIRECTION)}
    channels = ChannelTable(
        scid=scid[order].view(np.uint64),
        node_1=inverse[:n].astype(np.int32),
        node_2=inverse[n:].astype(np.int32),
        features=[b""] * n,
        funding_sats=funding[order],
        live_since=np.zeros(n, np.int64),
        disabled=(d[..., at["flags"]] & f.UPDATE_DISABLED) != 0,
        cltv_expiry_delta=d[..., at["cltv"]],
        htlc_minimum_msat=d[..., at["hmin"]].view(np.uint64),
        fee_base_msat=d[..., at["fbase"]],
        fee_proportional_millionths=d[..., at["fprop"]],
        htlc_maximum_msat=d[..., at["hmax"]].view(np.uint64),
        changes=np.zeros((n, 2), np.uint8),
    )
    return DeltaInput(chain_hash, 0, R, channels, await _nodes(conn, node_list, R))


async def _nodes(conn: Any, node_list: list[bytes], R: int) -> NodeTable:
    index = {node: i for i, node in enumerate(node_list)}
    m = len(node_list)
    has = np.zeros(m, dtype=np.bool_)
    features, addresses = [b""] * m, [b""] * m
    for r in await conn.fetch(NODES_SQL, R):
        i = index.get(bytes(r[0]))
        if i is not None:
            has[i], features[i], addresses[i] = True, bytes(r[1]), bytes(r[2])
    return NodeTable(node_list, has, features, addresses, np.full(m, -1, np.int64), np.zeros(m, np.uint8))
