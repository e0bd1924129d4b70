"""Writing gossip into PostgreSQL with the store's rules (docs/architecture.md, "The store").

One batch is one transaction. Batches are serialised across every persistence replica by a
transaction-scoped advisory lock: the rules need each direction's current latest, and reading it
under the lock makes the decision and the write atomic. Inside a batch the work is set-based. The
per-message decision is :func:`lnsync.rgs.rules.decide_update`, the same function the in-memory
model uses.

channel_updates, the bulk of gossip, take this path:

* The state of every direction the batch touches comes from a :class:`StateCache` (what this
  writer itself committed last) or, for the rest, one query. The cache is trusted only if no one
  else wrote since: each batch stamps ``writer_state`` under the lock with the writer's token and
  a counter, and retention stamps it too, so a foreign stamp empties the cache.
* A direction's latest has the highest timestamp of its rows, so an update newer than it cannot be
  stored already: only older ones (rare: stale arrivals and re-deliveries) are looked up.
* New rows go in with one binary COPY, their ids taken from the sequence beforehand (one
  ``setval``) so the latest-pointers can be written in the same transaction; new directions are
  COPYed too, changed ones are COPYed into a temporary staging table and applied with one UPDATE.
  Large parameter arrays are avoided on this path: asyncpg inspects every array element.
* Times are integers (µs) until they are written.
"""

from __future__ import annotations

import datetime as dt
import secrets
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from lnsync.gossip import messages as m
from lnsync.rgs import rules
from lnsync.schema import columns

WRITER_LOCK = 0x6C6E737772  # "lnswr": one batch at a time, across replicas
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_fromtimestamp = dt.datetime.fromtimestamp
_U64 = 1 << 64
_DISABLED = m.CHANNEL_FLAG_DISABLED


def to_int8(value: int) -> int:
    """u64 (scids) in a signed bigint with the same bits."""
    return value - _U64 if value >= 1 << 63 else value


def to_timestamp(us: int) -> dt.datetime:
    """µs since the epoch as an aware datetime. Exact: us / 1e6 is within 0.12 µs of the true
    value for any time before 2255 (53-bit mantissa), and fromtimestamp rounds to the nearest µs.
    (Twice as fast as adding a timedelta; this runs several times per message.)"""
    return _fromtimestamp(us / 1_000_000, dt.UTC)


class Incoming(NamedTuple):
    """A structurally valid gossip message and when it was first seen (µs, already clamped)."""

    message: m.GossipMessage
    seen_us: int
    funding_sats: int | None = None


class IncomingLike(Protocol):
    """What :func:`write_batch` reads of each item (an :class:`Incoming` or the like)."""

    @property
    def message(self) -> m.GossipMessage: ...
    @property
    def seen_us(self) -> int: ...
    @property
    def funding_sats(self) -> int | None: ...


# (update_id, timestamp, policy, channel_flags, seen_us, alive_update_id, alive_since_us)
DirectionState = tuple[int, int, rules.Policy, int, int, int, int]


@dataclass
class StateCache:
    """The latest state of channel directions as this writer committed it (see the module doc).

    ``write_batch`` leaves what its batch would change in ``pending``; the caller calls
    :meth:`committed` once the enclosing transaction has committed. Bounded: past
    ``max_directions`` it starts over empty.
    """

    max_directions: int = 300_000
    token: int = field(default_factory=lambda: secrets.randbits(62) + 1)
    directions: dict[tuple[int, int], DirectionState] = field(default_factory=dict)
    stamp: int | None = None  # writer_state.batch after our last committed batch
    pending: dict[tuple[int, int], DirectionState] = field(default_factory=dict)
    pending_stamp: int | None = None
    hits: int = 0
    misses: int = 0

    def committed(self) -> None:
        if self.pending_stamp is None:
            return
        if len(self.directions) + len(self.pending) > self.max_directions:
            self.directions.clear()
        self.directions.update(self.pending)
        self.stamp, self.pending_stamp = self.pending_stamp, None
        self.pending = {}

    def clear(self) -> None:
        self.directions.clear()
        self.stamp = self.pending_stamp = None
        self.pending = {}


STAMP_SQL = """
UPDATE writer_state w SET writer = $1, batch = w.batch + 1
FROM (SELECT writer, batch FROM writer_state) o
RETURNING o.writer, o.batch
"""


async def write_batch(
    conn: Any, items: Sequence[IncomingLike], cache: StateCache | None = None
) -> list[rules.Outcome]:
    """Store ``items`` in one transaction; return each item's outcome, in order.

    With ``cache``, call ``cache.committed()`` after the (possibly enclosing) transaction commits.
    """
    outcomes: list[rules.Outcome] = [rules.Outcome.DUPLICATE] * len(items)
    anns: list[tuple[int, IncomingLike]] = []
    upds: list[tuple[int, IncomingLike]] = []
    nodes: list[tuple[int, IncomingLike]] = []
    for i, it in enumerate(items):
        t = type(it.message)
        (upds if t is m.ChannelUpdate else anns if t is m.ChannelAnnouncement else nodes).append((i, it))
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK)
        if cache is not None:
            writer, stamp = await conn.fetchrow(STAMP_SQL, cache.token)
            if writer != cache.token or stamp != cache.stamp:
                cache.clear()
            cache.pending, cache.pending_stamp = {}, stamp + 1
        if anns:
            await _write_announcements(conn, anns, outcomes)
        if upds:
            await _write_updates(conn, upds, outcomes, cache)
        if nodes:
            await _write_nodes(conn, nodes, outcomes)
    return outcomes


# -- channel announcements --------------------------------------------------------------------------

ANNOUNCEMENTS_SQL = """
INSERT INTO channel_announcements (scid, node_id_1, node_id_2, features, funding_sats, raw, seen)
SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[], $6::bytea[],
                     $7::timestamptz[])
ON CONFLICT (scid) DO UPDATE
    SET seen = LEAST(channel_announcements.seen, EXCLUDED.seen),
        funding_sats = COALESCE(channel_announcements.funding_sats, EXCLUDED.funding_sats)
RETURNING scid, (xmax = 0) AS inserted
"""


async def _write_announcements(
    conn: Any, anns: list[tuple[int, IncomingLike]], outcomes: list[rules.Outcome]
) -> None:
    # One row per scid (the earliest seen wins; ON CONFLICT cannot touch a row twice).
    first: dict[int, tuple[int, IncomingLike]] = {}
    for i, it in anns:
        scid = it.message.short_channel_id  # type: ignore[union-attr]
        prev = first.get(scid)
        if prev is None or it.seen_us < prev[1].seen_us:
            first[scid] = (i, it)
    chosen = list(first.values())
    cols: list[list[Any]] = [[], [], [], [], [], [], []]
    for _, it in chosen:
        a = it.message
        assert isinstance(a, m.ChannelAnnouncement)
        for col, value in zip(
            cols,
            (to_int8(a.short_channel_id), a.node_id_1, a.node_id_2, a.features, it.funding_sats, a.raw,
             to_timestamp(it.seen_us)),
            strict=True,
        ):  # fmt: skip
            col.append(value)
    inserted = {int(r["scid"]) for r in await conn.fetch(ANNOUNCEMENTS_SQL, *cols) if r["inserted"]}
    for i, it in chosen:
        if to_int8(it.message.short_channel_id) in inserted:  # type: ignore[union-attr]
            outcomes[i] = rules.Outcome.STORED


# -- channel updates ------------------------------------------------------------------------------

# Every column (lnsync/schema/columns.py order), times as µs since the epoch.
_STATE_SELECT = ", ".join(c.as_micros("d") for c in columns.DIRECTION)
DIRECTION_STATE_SQL = (
    "\nSELECT " + _STATE_SELECT + "\nFROM channel_directions d\n"
    "JOIN unnest($1::int8[], $2::int2[]) AS k(scid, direction) USING (scid, direction)\n"
)
EXISTING_UPDATES_SQL = """
SELECT u.id, u.scid, u.direction, u.timestamp, (extract(epoch FROM u.seen) * 1000000)::int8
FROM channel_updates u
JOIN unnest($1::int8[], $2::int2[], $3::int8[]) AS k(scid, direction, timestamp)
  USING (scid, direction, timestamp)
"""
# Ids for n rows: all writes to channel_updates hold the writer lock, so the range is ours.
RESERVE_IDS_SQL = "SELECT setval('channel_updates_id_seq', nextval('channel_updates_id_seq') + $1 - 1)"
UPDATE_COLUMNS = (
    "id", "scid", "direction", "timestamp", "message_flags", "channel_flags", "cltv_expiry_delta",
    "htlc_minimum_msat", "fee_base_msat", "fee_proportional_millionths", "htlc_maximum_msat",
    "change_mask", "starts_life", "raw", "seen",
)  # fmt: skip
LOWER_UPDATE_SEEN_SQL = """
UPDATE channel_updates u SET seen = k.seen
FROM unnest($1::int8[], $2::timestamptz[]) AS k(id, seen) WHERE u.id = k.id AND k.seen < u.seen
"""
DIRECTION_COLUMNS = columns.names(columns.DIRECTION)
STAGE_SQL = "CREATE TEMP TABLE IF NOT EXISTS direction_stage (LIKE channel_directions) ON COMMIT DELETE ROWS"
# The staging table has no statistics, and the planner then prefers hashing all of
# channel_directions to one index look-up per staged row (2x slower at 100k directions).
_STAGE_SET = ", ".join(f"{n} = s.{n}" for n in DIRECTION_COLUMNS if n not in columns.DIRECTION_KEY)
APPLY_STAGE_SQL = """
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_mergejoin = off;
UPDATE channel_directions d SET
    _STAGE_SET
FROM direction_stage s WHERE d.scid = s.scid AND d.direction = s.direction;
SET LOCAL enable_hashjoin = on;
SET LOCAL enable_mergejoin = on;
""".replace("_STAGE_SET", _STAGE_SET)


# Binary COPY (PostgreSQL's documented format): rows are packed with struct rather than encoded
# value by value by asyncpg, and times go in as µs since 2000-01-01 without datetime objects. Each
# field is its length then its big-endian value; the column types are those of 001_graph.sql.
PG_EPOCH_US = 946_684_800_000_000
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
# channel_updates up to raw's length (UPDATE_COLUMNS order): then raw, then seen.
_UPDATE_HEAD = struct.Struct(
    ">h" + "iq" + "iq" + "ih" + "iq" + "ih" + "ih" + "ii" + "iq" * 4 + "ih" + "i?" + "i"
)
_SEEN_FIELD = struct.Struct(">iq")
COPY_CHUNK = 512  # rows per chunk streamed to COPY
# channel_directions (DIRECTION_COLUMNS order).
_DIRECTION_ROW = columns.copy_row(columns.DIRECTION)
_DIRECTION_FIELDS = len(columns.DIRECTION)


async def _copy_binary(conn: Any, table: str, columns: Sequence[str], rows: list[bytes]) -> None:
    payload = b"".join((_COPY_HEADER, *rows, _COPY_TRAILER))
    # A memoryview: asyncpg would take bytes for a file name.
    await conn.copy_to_table(table, source=memoryview(payload), columns=columns, format="binary")


def _lower_seen(row: list[Any], state: list[Any] | None, seen: Any) -> None:
    """A delivery of an already stored message with an earlier ``seen``: lower the row's seen
    (``row`` = [id, seen as stored, seen now]) and the copies the latest state holds of it
    (``state`` = [latest id, _, _, _, its seen, life/first id, its seen, changed])."""
    row[2] = seen
    if state is not None:
        if row[0] == state[0] and seen < state[4]:
            state[4], state[7] = seen, True
        if row[0] == state[5] and seen < state[6]:
            state[6], state[7] = seen, True


async def _direction_states(
    conn: Any, keys: set[tuple[int, int]], cache: StateCache | None
) -> dict[tuple[int, int], DirectionState]:
    """The stored state of ``keys`` (absent keys have no row)."""
    states: dict[tuple[int, int], DirectionState] = {}
    missing = keys
    if cache is not None:
        get = cache.directions.get
        states = {k: st for k in keys if (st := get(k)) is not None}
        missing = keys.difference(states)
        cache.hits += len(states)
        cache.misses += len(missing)
    if missing:
        ordered = sorted(missing)
        rows = await conn.fetch(DIRECTION_STATE_SQL, [k[0] for k in ordered], [k[1] for k in ordered])
        for r in rows:
            policy = (int(r[4] & _DISABLED != 0), r[5], r[6] % _U64, r[7], r[8], r[9] % _U64)
            states[(r[0], r[1])] = (r[2], r[3], policy, r[4], r[10], r[11], r[12])
    return states


async def _write_updates(
    conn: Any, upds: list[tuple[int, IncomingLike]], outcomes: list[rules.Outcome], cache: StateCache | None
) -> None:
    decide = rules.decide_update
    stored = rules.Outcome.STORED
    half = 1 << 63
    keyed = []
    for i, it in upds:
        u: m.ChannelUpdate = it.message  # type: ignore[assignment]
        scid = u.short_channel_id
        keyed.append((i, it.seen_us, u, (scid - _U64 if scid >= half else scid, u.channel_flags & 1)))
    before = await _direction_states(conn, {k[3] for k in keyed}, cache)
    # Rows already stored under older timestamps (a direction's latest has its highest one), as
    # [id, seen as stored, seen after this batch]; the latest rows are added when met.
    get_before = before.get
    older = sorted(
        {(d[0], d[1], u.timestamp) for _, _, u, d in keyed if (b := get_before(d)) and u.timestamp < b[1]}
    )
    existing: dict[tuple[int, int, int], list[int]] = {}
    if older:
        rows = await conn.fetch(EXISTING_UPDATES_SQL, *map(list, zip(*older, strict=True)))
        existing = {(r[1], r[2], r[3]): [r[0], r[4], r[4]] for r in rows}
    last_id = await conn.fetchval(RESERVE_IDS_SQL, len(keyed))
    next_id = last_id - len(keyed) + 1

    # Touched directions as mutable lists: the DirectionState fields, then a "changed" flag.
    state: dict[tuple[int, int], list[Any]] = {}
    # New rows by key: [id, seen, lowest seen in this batch, seen written (once streamed)].
    new_by_key: dict[tuple[int, int, int], list[int]] = {}

    async def decide_rows() -> AsyncIterator[bytes]:
        """Decide every update and stream the new rows to COPY in chunks, so PostgreSQL inserts
        one chunk while the next is being decided."""
        nonlocal next_id
        seen_field = _SEEN_FIELD.pack
        chunk: list[tuple[bytes, bytes, list[int]]] = []  # binary row before seen, raw, record

        def flush() -> bytes:
            out = []
            for head, raw, rec in chunk:
                rec[3] = rec[2]
                out.append(b"".join((head, raw, seen_field(8, rec[2] - PG_EPOCH_US))))
            chunk.clear()
            return b"".join(out)

        yield _COPY_HEADER
        for i, seen, u, dkey in keyed:
            ts = u.timestamp
            key = (dkey[0], dkey[1], ts)
            st = state.get(dkey)
            prev = before.get(dkey)
            if st is None and prev is not None:
                st = state[dkey] = [*prev, False]
            dup = new_by_key.get(key) or existing.get(key)
            if dup is None and prev is not None and ts == prev[1]:  # the stored latest itself
                dup = existing[key] = [prev[0], prev[4], prev[4]]
            flags = u.channel_flags
            policy = (
                1 if flags & _DISABLED else 0, u.cltv_expiry_delta, u.htlc_minimum_msat, u.fee_base_msat,
                u.fee_proportional_millionths, u.htlc_maximum_msat,
            )  # fmt: skip
            decision = decide(
                None if st is None else (st[1], st[2]), ts, seen // 1_000_000, policy, dup is not None
            )
            outcomes[i] = decision.outcome
            if dup is not None:
                if seen < dup[2]:  # (a batch-new row already streamed is corrected below)
                    _lower_seen(dup, st, seen)
                continue
            row_id = next_id
            next_id += 1
            record = [row_id, seen, seen, 0]
            new_by_key[key] = record
            hmin, hmax = policy[2], policy[5]
            hmin8 = hmin - _U64 if hmin >= half else hmin
            hmax8 = hmax - _U64 if hmax >= half else hmax
            raw = u.raw
            head = _UPDATE_HEAD.pack(
                15, 8, row_id, 8, dkey[0], 2, dkey[1], 8, ts, 2, u.message_flags, 2, flags, 4, policy[1],
                8, hmin8, 8, policy[3], 8, policy[4], 8, hmax8, 2, decision.change_mask,
                1, decision.starts_life, len(raw),
            )  # fmt: skip
            chunk.append((head, raw, record))
            if len(chunk) >= COPY_CHUNK:
                yield flush()
            if decision.outcome is stored:
                if st is None:
                    state[dkey] = [row_id, ts, policy, flags, seen, row_id, seen, True]
                else:
                    st[0], st[1], st[2], st[3], st[4], st[7] = row_id, ts, policy, flags, seen, True
                    if decision.starts_life:
                        st[5], st[6] = row_id, seen
        yield flush() + _COPY_TRAILER

    await conn.copy_to_table("channel_updates", source=decide_rows(), columns=UPDATE_COLUMNS, format="binary")
    lowered = [(rec[0], to_timestamp(rec[2])) for rec in existing.values() if rec[2] < rec[1]]
    # Batch-new rows whose seen a later delivery in this batch lowered after they were streamed.
    lowered += [(rec[0], to_timestamp(rec[2])) for rec in new_by_key.values() if rec[2] < rec[3]]
    if lowered:
        await conn.execute(LOWER_UPDATE_SEEN_SQL, [x[0] for x in lowered], [x[1] for x in lowered])

    created: list[bytes] = []
    changed: list[bytes] = []
    pending = cache.pending if cache is not None else None
    pack = _DIRECTION_ROW.pack
    for dkey, st in state.items():
        if not st[7]:
            continue
        p = st[2]
        hmin, hmax = p[2], p[5]
        hmin8 = hmin - _U64 if hmin >= half else hmin
        hmax8 = hmax - _U64 if hmax >= half else hmax
        direction_row = pack(
            _DIRECTION_FIELDS, 8, dkey[0], 2, dkey[1], 8, st[0], 8, st[1], 2, st[3], 4, p[1], 8, hmin8,
            8, p[3], 8, p[4], 8, hmax8, 8, st[4] - PG_EPOCH_US, 8, st[5], 8, st[6] - PG_EPOCH_US,
        )  # fmt: skip
        (changed if dkey in before else created).append(direction_row)
        if pending is not None:
            pending[dkey] = (st[0], st[1], p, st[3], st[4], st[5], st[6])
    if created:
        await _copy_binary(conn, "channel_directions", DIRECTION_COLUMNS, created)
    if changed:
        await conn.execute(STAGE_SQL)
        await _copy_binary(conn, "direction_stage", DIRECTION_COLUMNS, changed)
        await conn.execute(APPLY_STAGE_SQL)


# -- node announcements -----------------------------------------------------------------------------

NODE_STATE_SQL = """
SELECT n.node_id, n.announcement_id, n.timestamp, n.features, n.addresses, n.seen, n.first_announcement_id,
       n.first_seen, a.raw
FROM nodes n JOIN node_announcements a ON a.id = n.announcement_id WHERE n.node_id = ANY($1::bytea[])
"""
EXISTING_NODE_ANNS_SQL = """
SELECT a.id, a.node_id, a.timestamp, a.seen FROM node_announcements a
JOIN unnest($1::bytea[], $2::int8[]) AS k(node_id, timestamp) USING (node_id, timestamp)
"""
NEXT_NODE_IDS_SQL = "SELECT nextval('node_announcements_id_seq') FROM generate_series(1, $1)"
NODE_COLUMNS = (
    "id", "node_id", "timestamp", "features", "addresses", "alias", "rgb_color", "change_mask", "raw", "seen",
)  # fmt: skip
# A node's latest announcement replaced by the winner of a tie (rules.node_tie_winner).
REPLACE_NODE_SQL = """
UPDATE node_announcements a SET features = k.features, addresses = k.addresses, alias = k.alias,
    rgb_color = k.rgb_color, raw = k.raw, change_mask = a.change_mask | k.mask
FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::int2[])
    AS k(id, features, addresses, alias, rgb_color, raw, mask)
WHERE a.id = k.id
"""
LOWER_NODE_SEEN_SQL = """
UPDATE node_announcements a SET seen = k.seen
FROM unnest($1::int8[], $2::timestamptz[]) AS k(id, seen) WHERE a.id = k.id AND k.seen < a.seen
"""
UPSERT_NODES_SQL = """
INSERT INTO nodes (node_id, announcement_id, timestamp, features, addresses, seen,
                   first_announcement_id, first_seen)
SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[], $6::timestamptz[],
                     $7::int8[], $8::timestamptz[])
ON CONFLICT (node_id) DO UPDATE SET
    announcement_id = EXCLUDED.announcement_id, timestamp = EXCLUDED.timestamp, features = EXCLUDED.features,
    addresses = EXCLUDED.addresses, seen = EXCLUDED.seen, first_seen = EXCLUDED.first_seen
"""


async def _write_nodes(
    conn: Any, nodes: list[tuple[int, IncomingLike]], outcomes: list[rules.Outcome]
) -> None:
    node_ids = sorted({it.message.node_id for _, it in nodes})  # type: ignore[union-attr]
    state: dict[bytes, list[Any]] = {
        bytes(r["node_id"]): [
            r["announcement_id"],
            r["timestamp"],
            bytes(r["features"]),
            bytes(r["addresses"]),
            r["seen"],
            r["first_announcement_id"],
            r["first_seen"],
            False,
            bytes(r["raw"]),
        ]
        for r in await conn.fetch(NODE_STATE_SQL, node_ids)
    }
    pairs = sorted({(it.message.node_id, it.message.timestamp) for _, it in nodes})  # type: ignore[union-attr]
    existing: dict[tuple[bytes, int], list[Any]] = {
        (bytes(r["node_id"]), r["timestamp"]): [r["id"], r["seen"], r["seen"]]
        for r in await conn.fetch(EXISTING_NODE_ANNS_SQL, [p[0] for p in pairs], [p[1] for p in pairs])
    }
    ids = [r[0] for r in await conn.fetch(NEXT_NODE_IDS_SQL, len(nodes))]
    new_by_key: dict[tuple[bytes, int], list[Any]] = {}
    new_rows: list[list[Any]] = []
    new_row_of: dict[tuple[bytes, int], list[Any]] = {}
    replaced: dict[int, list[Any]] = {}  # stored row id -> its new content and the mask bits to add
    for (i, it), row_id in zip(nodes, ids, strict=True):
        a = it.message
        assert isinstance(a, m.NodeAnnouncement)
        key = (a.node_id, a.timestamp)
        seen = to_timestamp(it.seen_us)
        dup = existing.get(key) or new_by_key.get(key)
        st = state.get(a.node_id)
        latest = (st[1], st[2], st[3], st[8]) if st is not None else None
        decision = rules.decide_node(latest, a.timestamp, a.features, a.addresses, a.raw, dup is not None)
        outcomes[i] = decision.outcome
        if dup is not None:
            if seen < dup[2]:
                _lower_seen(dup, st, seen)
            if decision.replaces:
                assert st is not None
                content = [a.features, a.addresses, a.alias, a.rgb_color, a.raw]
                row = new_row_of.get(key)
                if row is not None:  # written by this batch: not in the table yet
                    row[3:7] = content[:4]
                    row[7] |= decision.change_mask
                    row[8] = a.raw
                else:
                    mask = replaced[dup[0]][5] if dup[0] in replaced else 0
                    replaced[dup[0]] = [*content, mask | decision.change_mask]
                st[2], st[3], st[8], st[7] = a.features, a.addresses, a.raw, True
            continue
        record = [row_id, seen, seen]
        new_by_key[key] = record
        new_row = [
            row_id,
            a.node_id,
            a.timestamp,
            a.features,
            a.addresses,
            a.alias,
            a.rgb_color,
            decision.change_mask,
            a.raw,
            record,
        ]
        new_rows.append(new_row)
        new_row_of[key] = new_row
        if decision.outcome is rules.Outcome.STORED:
            if st is None:
                state[a.node_id] = [
                    row_id,
                    a.timestamp,
                    a.features,
                    a.addresses,
                    seen,
                    row_id,
                    seen,
                    True,
                    a.raw,
                ]
            else:
                st[0:5] = [row_id, a.timestamp, a.features, a.addresses, seen]
                st[7], st[8] = True, a.raw
    if new_rows:
        for row in new_rows:
            row[-1] = row[-1][2]
        await conn.copy_records_to_table("node_announcements", records=new_rows, columns=NODE_COLUMNS)
    if replaced:
        cols_r: list[list[Any]] = [list(replaced), *([c[k] for c in replaced.values()] for k in range(6))]
        await conn.execute(REPLACE_NODE_SQL, *cols_r)
    lowered = [(rec[0], rec[2]) for rec in existing.values() if rec[2] < rec[1]]
    if lowered:
        await conn.execute(LOWER_NODE_SEEN_SQL, [x[0] for x in lowered], [x[1] for x in lowered])
    dirty = [(node_id, st) for node_id, st in state.items() if st[7]]
    if dirty:
        seen_of = {rec[0]: rec[2] for rec in new_by_key.values()}
        cols: list[list[Any]] = [[] for _ in range(8)]
        for node_id, st in dirty:
            values = (
                node_id, st[0], st[1], st[2], st[3], min(st[4], seen_of.get(st[0], st[4])), st[5],
                min(st[6], seen_of.get(st[5], st[6])),
            )  # fmt: skip
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        await conn.execute(UPSERT_NODES_SQL, *cols)
