"""Writing gossip into PostgreSQL with the store's rules (docs/architecture.md, "The store").

One batch is one transaction. Batches are serialised across every persistence replica by a
transaction-scoped advisory lock: the rules need each direction's current latest, and reading it
under the lock makes the decision and the write atomic. Inside a batch the work is set-based:
channel_updates are decided column-wise by :func:`lnsync.rgs.rules.decide_updates`, the batch twin
of :func:`lnsync.rgs.rules.decide_update` (which the in-memory model uses; a property test checks
one against the other), and node announcements one by one with :func:`lnsync.rgs.rules.decide_node`.

channel_updates, the bulk of gossip, take this path:

* The state of every direction the batch touches comes from a :class:`StateCache` (what this
  writer itself committed last) or, for the rest, one query. The cache is trusted only if no one
  else wrote since: each batch stamps ``writer_state`` under the lock with the writer's token and
  a counter, and retention stamps it too, so a foreign stamp empties the cache.
* A direction's latest has the highest timestamp of its rows, so an update newer than it cannot be
  stored already: only older ones (rare: stale arrivals and re-deliveries) are looked up.
* New rows go in with one binary COPY (NumPy records), their ids taken from the sequence beforehand (one
  ``setval`` under a lock of its own) so the latest-pointers can be written in the same
  transaction; new directions are COPYed too, changed ones are COPYed into a temporary staging
  table and applied with one UPDATE. Large parameter arrays are avoided on this path: asyncpg
  inspects every array element.
* Times are integers (µs) until they are written.

The decision can also be made *ahead*, outside the lock (:func:`plan_updates`), while the
writer's previous batch is still being written: on top of that batch's decided end state, reading
what neither holds from the database. It stays valid only if, when its own batch takes the lock,
the stamp is the one it was made on (the previous batch committed as decided and no one else
wrote since); otherwise it is made again under the lock. So the CPU-heavy decision of batch N+1
overlaps PostgreSQL's work on batch N, and what is stored is the same either way. The batch's node
announcements are decided with it, the same way (:func:`_plan_nodes`, on top of the node decision
of the batch being written): under the lock only their COPY and the upsert of ``nodes`` remain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple, Protocol

import numpy as np

from lnsync.gossip import messages as m
from lnsync.rgs import rules
from lnsync.schema import columns
from lnsync.schema.columns import to_int8, to_u64

WRITER_LOCK = 0x6C6E737772  # "lnswr": one batch at a time, across replicas
IDS_LOCK = WRITER_LOCK + 1  # one channel_updates id reservation at a time (taken with or without it)
_fromtimestamp = dt.datetime.fromtimestamp
_DISABLED = m.CHANNEL_FLAG_DISABLED


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


# A direction's state as the writer keeps it: its row of channel_directions (update_id, seen in
# µs, alive_update_id, alive_since in µs, timestamp, channel_flags) and the policy the rules
# compare (rules.Policy), twelve u64 packed in bytes (_STATE), so that a batch's states become one
# NumPy array with one frombuffer. Immutable: the cached one stays as committed.
DirectionState = bytes
DirectionKey = int  # scid << 1 | direction (an int hashes faster than a tuple, many times a batch)
_STATE = struct.Struct("=12Q")
_ID, _SEEN, _LIFE, _LIFE_SEEN, _TS, _FLAGS = range(6)
_STATE_POLICY = 6  # where the policy starts
_NO_STATE = bytes(_STATE.size)  # a direction without a row


@dataclass
class StateCache:
    """The latest state of channel directions as this writer committed it (see the module doc).

    ``write_batch`` leaves what its batch would change in ``pending``; the caller calls
    :meth:`committed` once the enclosing transaction has committed. Bounded: past
    ``max_directions`` it starts over empty.
    """

    max_directions: int = 300_000
    token: int = field(default_factory=lambda: secrets.randbits(62) + 1)
    directions: dict[DirectionKey, DirectionState] = field(default_factory=dict)
    stamp: int | None = None  # writer_state.batch after our last committed batch
    pending: dict[DirectionKey, DirectionState] = field(default_factory=dict)
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


class EarlyCopyStale(Exception):
    """A decision whose rows were COPYed before the writer lock (:func:`copy_early`) no longer
    holds under it: roll the transaction back and write the batch again."""


STAMP_SQL = """
UPDATE writer_state w SET writer = $1, batch = w.batch + 1
FROM (SELECT writer, batch FROM writer_state) o
RETURNING o.writer, o.batch
"""
READ_STAMP_SQL = "SELECT writer, batch FROM writer_state"


async def write_batch(
    conn: Any,
    items: Sequence[IncomingLike],
    cache: StateCache | None = None,
    planned: PlannedUpdates | None = None,
    underway: Callable[[], None] | None = None,
) -> list[rules.Outcome]:
    """Store ``items`` in one transaction; return each item's outcome, in order.

    ``underway`` is called when what is left is mostly PostgreSQL's work (the channel_updates COPY
    is about to be sent, or there is none): a writer deciding its next batch meanwhile then leaves
    the event loop free for this batch's first, short statements.
    With ``cache``, call ``cache.committed()`` after the (possibly enclosing) transaction commits.
    ``planned``: the decision on these items' channel_updates made ahead (:func:`plan_updates`,
    same ``cache``); used if still valid (then ``planned.used`` is set), else made again here, or,
    if its rows were COPYed early (:func:`copy_early`), :class:`EarlyCopyStale` is raised.
    """
    outcomes: list[rules.Outcome] = [rules.Outcome.DUPLICATE] * len(items)
    anns: list[tuple[int, IncomingLike]] = []
    nodes: list[tuple[int, IncomingLike]] = []
    if planned is not None:
        others = planned.others
    else:
        others = [i for i, it in enumerate(items) if type(it.message) is not m.ChannelUpdate]
    for i in others:
        it = items[i]
        (anns if type(it.message) is m.ChannelAnnouncement else nodes).append((i, it))
    has_updates = len(others) < len(items)
    async with conn.transaction():
        await conn.execute(LOCK_SQL)
        # Every write stamps, so that a cached writer notices (writer 0: not a cached one).
        writer, stamp = await conn.fetchrow(STAMP_SQL, 0 if cache is None else cache.token)
        if cache is not None:
            if writer != cache.token or stamp != cache.stamp:
                cache.clear()
            cache.pending, cache.pending_stamp = {}, stamp + 1
        if planned is not None and not planned.valid(writer, stamp):
            if planned.copied:
                raise EarlyCopyStale
            planned = None
        if anns:
            await _write_announcements(conn, anns, outcomes)
        node_plan = None
        if has_updates:
            if planned is None:
                planned = await plan_updates(conn, items, cache, locked=True)
            else:
                planned.used = True
            node_plan = planned.nodes
            if underway is not None:
                underway()
            await _write_updates(conn, planned, outcomes, cache)
        else:
            if underway is not None:
                underway()
            if nodes:
                node_plan = await _plan_nodes(conn, nodes)
        if node_plan is not None:
            await _write_nodes(conn, node_plan, outcomes)
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
DIRECTION_STATE_SQL = (
    "\nSELECT "
    + ", ".join(f"{c.as_micros('d')} AS {c.name}" for c in columns.DIRECTION)
    + "\nFROM channel_directions d\n"
    "JOIN unnest($1::int8[], $2::int2[]) AS k(scid, direction) USING (scid, direction)\n"
)
EXISTING_UPDATES_SQL = f"""
SELECT u.id, u.scid, u.direction, u.timestamp, {columns.column(columns.UPDATE, "seen").as_micros("u")}
FROM channel_updates u
JOIN unnest($1::int8[], $2::int2[], $3::int8[]) AS k(scid, direction, timestamp)
  USING (scid, direction, timestamp)
"""  # noqa: S608 - declared column names
# Ids for n rows, one range: each reservation holds IDS_LOCK for itself only (a session lock taken
# and released in one statement, the subqueries kept apart by OFFSET so they run in order), as
# decisions made ahead reserve outside the writer lock: ids then follow reservation order, not
# commit order, across replicas.
RESERVE_IDS_SQL = """
SELECT r.last, pg_advisory_unlock($2) FROM (
    SELECT setval('channel_updates_id_seq', nextval('channel_updates_id_seq') + $1 - 1) AS last
    FROM (SELECT pg_advisory_lock($2) OFFSET 0) AS held OFFSET 0
) AS r
"""
UPDATE_COLUMNS = columns.names(columns.UPDATE)
LOWER_UPDATE_SEEN_SQL = """
UPDATE channel_updates u SET seen = k.seen
FROM unnest($1::int8[], $2::timestamptz[]) AS k(id, seen) WHERE u.id = k.id AND k.seen < u.seen
"""
DIRECTION_COLUMNS = columns.names(columns.DIRECTION)
STAGE_SQL = "CREATE TEMP TABLE IF NOT EXISTS direction_stage (LIKE channel_directions) ON COMMIT DELETE ROWS"
# A batch's first round trip: the writer lock, and the staging table ready (one simple query).
LOCK_SQL = f"SELECT pg_advisory_xact_lock({WRITER_LOCK}); {STAGE_SQL}"
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
# field is its length then its big-endian value, as lnsync/schema/columns.py declares them.
PG_EPOCH_US = 946_684_800_000_000
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"


async def _copy_binary(conn: Any, table: str, names: Sequence[str], rows: bytes) -> None:
    """COPY binary COPY ``rows`` into ``table``."""
    payload = b"".join((_COPY_HEADER, rows, _COPY_TRAILER))
    # A memoryview: asyncpg would take bytes for a file name.
    await conn.copy_to_table(table, source=memoryview(payload), columns=names, format="binary")


@dataclass(slots=True)
class _Row:
    """A stored (or batch-new) row a batch may deliver again: its id, the seen the table holds (for a
    new row: the seen it is written with), and the lowest seen of its deliveries so far."""

    id: int
    stored: Any  # µs for channel_updates, datetime for node_announcements
    seen: Any


def _redeliver(row: _Row, latest: _Node | None, seen: dt.datetime) -> None:
    """A delivery of ``row`` with an earlier ``seen`` than its deliveries so far: lower the row's
    seen and the copies its node's ``latest`` holds of it."""
    row.seen = seen
    if latest is not None:
        if row.id == latest.latest_id and seen < latest.seen:
            latest.seen, latest.changed = seen, True
        if row.id == latest.life_id and seen < latest.life_seen:
            latest.life_seen, latest.changed = seen, True


UpdateKey = tuple[int, int, int]  # (scid, direction, timestamp)
# (position in the batch, seen µs, the update)
Update = tuple[int, int, m.ChannelUpdate]


def _copy_records(dtype: np.dtype, count: int) -> np.ndarray:
    """``count`` binary COPY rows of ``dtype`` (:func:`columns.copy_dtype`), their field count and
    lengths filled in."""
    records = np.empty(count, dtype=dtype)
    fields: dict[str, Any] = dict(dtype.fields or {})
    records["n"] = len(fields) // 2
    for name in list(fields)[1::2]:  # the lengths
        records[name] = fields[name[: -len("_len")]][0].itemsize
    return records


_DIRECTION_DTYPE = columns.copy_dtype(columns.DIRECTION)
_POLICY_COLUMNS = (
    "cltv_expiry_delta",
    "htlc_minimum_msat",
    "fee_base_msat",
    "fee_proportional_millionths",
    "htlc_maximum_msat",
)


@cache
def _update_dtype(size: int) -> np.dtype:
    """A channel_updates COPY row whose raw message has ``size`` bytes."""
    return columns.copy_dtype(columns.UPDATE, size)


class _Decided(NamedTuple):
    """A plan's decision, per update (its outcome etc., id, seen) and per direction (its state
    before the batch as int64 rows with seens lowered, its policy, whether a seen was lowered)."""

    decided: rules.Decided
    ids: np.ndarray
    row_seen: np.ndarray
    before: np.ndarray
    before_policy: np.ndarray
    lowered: np.ndarray


class _UpdatePlan:
    """What a batch of channel_updates does to the store, decided column-wise without touching it
    (:func:`lnsync.rgs.rules.decide_updates`): from the directions' state before the batch and the
    older rows it delivers again, each update's outcome, the new rows (one binary COPY), the stored
    rows whose seen to lower and the directions to write. In three steps, each given what the one
    before asked of the database: ``keys`` (the directions), :meth:`older` (given their states),
    :meth:`decide` (given the older rows stored), then :meth:`directions` and :meth:`copy`, which
    a plan made ahead runs apart so that the event loop serves the batch being written between."""

    def __init__(self, updates: list[Update]) -> None:
        positions, seens, messages = tuple(zip(*updates, strict=True)) or ((), (), ())
        n = len(updates)
        self.positions = positions
        self.raws = raws = [u.raw for u in messages]
        self.joined = b"".join(raws)
        self.sizes = np.fromiter(map(len, raws), dtype=np.int64, count=n)
        self.size = int(self.sizes[0]) if n and (self.sizes == self.sizes[0]).all() else 0  # 0: mixed
        self.seen = np.array(seens, dtype=np.int64)
        policy = self.policy = np.empty((n, 6), dtype=np.uint64)  # rules.Policy, a row an update
        if self.size == m.CHANNEL_UPDATE_SIZE:  # the usual: read every field at once
            records = m.channel_update_records(self.joined)
            fields: Sequence[Any] = [records[name] for name in m.ChannelUpdate._fields[2:-1]]
        else:
            fields = tuple(zip(*messages, strict=True))[2:-1] if n else ((),) * 9
        scids, tss, mflags, flagss, cltvs, hmins, fbases, fprops, hmaxs = fields
        self.scid = np.asarray(scids, dtype=np.uint64)
        self.ts = np.asarray(tss, dtype=np.int64)
        self.message_flags = np.asarray(mflags, dtype=np.int64)
        self.flags = np.asarray(flagss, dtype=np.int64)
        self.direction = self.flags & 1
        policy[:, 0] = (self.flags & _DISABLED) != 0
        for k, values in enumerate((cltvs, hmins, fbases, fprops, hmaxs), 1):
            policy[:, k] = np.asarray(values, dtype=np.uint64)
        # Directions: ``group`` numbers each update's, ``keys`` lists them in that order.
        order = np.lexsort((self.direction, self.scid))
        scid, direction = self.scid[order], self.direction[order]
        first = np.ones(n, dtype=bool)
        first[1:] = (scid[1:] != scid[:-1]) | (direction[1:] != direction[:-1])
        self.group = np.empty(n, dtype=np.int64)
        self.group[order] = np.cumsum(first) - 1
        self.group_scid, self.group_direction = scid[first], direction[first]
        self.keys: list[DirectionKey] = [
            s << 1 | d for s, d in zip(self.group_scid.tolist(), self.group_direction.tolist(), strict=True)
        ]
        self.before: list[DirectionState | None] = []
        self.present = np.empty(0, dtype=bool)  # a direction has a row before the batch
        self.before_rows = np.empty((0, 12), dtype=np.uint64)  # the states as rows (_NO_STATE: none)
        self.latest_ts = np.empty(0, dtype=np.int64)  # -1: none
        self.existing: dict[UpdateKey, _Row] = {}
        # Filled by decide():
        self.state: dict[DirectionKey, DirectionState] = {}  # the directions touched, as they end
        self.states: dict[DirectionKey, DirectionState] = {}  # ... those the batch changes
        self.created = self.changed = b""  # binary COPY rows of the directions without / with a row
        self.new = np.empty(0, dtype=np.int64)  # the new rows' positions in the plan
        self.new_ids = np.empty(0, dtype=np.int64)
        self.new_seen = np.empty(0, dtype=np.int64)
        self._new_index: dict[UpdateKey, int] | None = None
        self._decided: _Decided | None = None  # what decide() leaves to directions() and copy()

    def _keys_at(self, at: np.ndarray) -> Iterator[UpdateKey]:
        """The keys of the updates at positions ``at`` of the plan."""
        return zip(self.scid[at].tolist(), self.direction[at].tolist(), self.ts[at].tolist(), strict=True)

    def older(self, before: list[DirectionState | None]) -> set[UpdateKey]:
        """Given the state of each of ``keys`` before the batch, the keys of the updates older than
        their direction's latest: only those can be stored already, and not as the latest."""
        self.before = before
        self.present = np.array([b is not None for b in before], dtype=bool)
        rows = b"".join([_NO_STATE if b is None else b for b in before])
        self.before_rows = np.frombuffer(rows, dtype=np.uint64).reshape(-1, 12)
        self.latest_ts = np.where(self.present, self.before_rows[:, _TS].astype(np.int64), -1)
        return set(self._keys_at(np.flatnonzero(self.ts < self.latest_ts[self.group])))

    def decide(
        self, existing: dict[UpdateKey, _Row], first_id: int, outcomes: dict[int, rules.Outcome]
    ) -> None:
        """Decide every update: its outcome into ``outcomes`` (by position), new rows numbered from
        ``first_id``."""
        self.existing = existing
        n, group, ts, seen = len(self.positions), self.group, self.ts, self.seen
        if n == 0:
            return
        # The deliveries of each (direction, timestamp) key: runs, in arrival order within one.
        order = np.lexsort((ts, group))
        first = np.ones(n, dtype=bool)
        first[1:] = (group[order][1:] != group[order][:-1]) | (ts[order][1:] != ts[order][:-1])
        starts = np.flatnonzero(first)
        earliest = np.minimum.reduceat(seen[order], starts)  # each key's earliest delivery
        run = np.empty(n, dtype=np.int64)
        run[order] = np.cumsum(first) - 1
        first_delivery = np.empty(n, dtype=bool)
        first_delivery[order] = first
        stored = np.zeros(len(starts), dtype=bool)  # the key is stored already
        before = self.before_rows.astype(np.int64)  # (the policy columns are not read from it)
        lowered = np.zeros(len(self.keys), dtype=bool)  # the batch lowers a seen of the direction's row
        # Keys delivered at or below their direction's latest: the latest itself, or maybe stored.
        again = np.flatnonzero(first_delivery & (ts <= self.latest_ts[group]))
        for r, g, key in zip(run[again].tolist(), group[again].tolist(), self._keys_at(again), strict=True):
            row = existing.get(key)
            b = before[g].tolist()
            if row is None:
                if key[2] != b[_TS]:
                    continue  # older than the latest and not stored: a new (stale) row
                row = existing[key] = _Row(b[_ID], b[_SEEN], b[_SEEN])  # the stored latest itself
            stored[r] = True
            low = int(earliest[r])
            if low < row.seen:  # delivered again, earlier: lower its seen and its direction's copies
                row.seen = low
                if row.id == b[_ID] and low < before[g, _SEEN]:
                    before[g, _SEEN], lowered[g] = low, True
                if row.id == b[_LIFE] and low < before[g, _LIFE_SEEN]:
                    before[g, _LIFE_SEEN], lowered[g] = low, True
        duplicate = ~first_delivery | stored[run]
        before_policy = self.before_rows[:, _STATE_POLICY:]
        decided = rules.decide_updates(
            group, ts, seen // 1_000_000, self.policy, duplicate, self.latest_ts, before_policy
        )
        outcomes.update(
            zip(self.positions, map(rules.OUTCOMES.__getitem__, decided.outcome.tolist()), strict=True)
        )
        new = self.new = np.flatnonzero(~duplicate)
        ids = np.full(n, -1, dtype=np.int64)
        ids[new] = np.arange(first_id, first_id + len(new))
        row_seen = earliest[run]  # a new row's seen: the earliest of its deliveries
        self.new_ids, self.new_seen = ids[new], row_seen[new]
        self._decided = _Decided(decided, ids, row_seen, before, before_policy, lowered)

    def copy(self) -> bytes:
        """The new rows (after :meth:`decide`) as binary COPY rows, those of one raw size at a time."""
        if self._decided is None:
            return b""
        decided, ids, row_seen = self._decided.decided, self._decided.ids, self._decided.row_seen
        new, raws = self.new, self.raws
        sizes = self.sizes[new]
        parts = []
        for size in np.unique(sizes).tolist():
            rows = new[sizes == size]
            rec = _copy_records(_update_dtype(size), len(rows))
            rec["id"] = ids[rows]
            rec["scid"] = self.scid[rows]
            rec["direction"] = self.direction[rows]
            rec["timestamp"] = self.ts[rows]
            rec["message_flags"] = self.message_flags[rows]
            rec["channel_flags"] = self.flags[rows]
            for k, name in enumerate(_POLICY_COLUMNS, 1):
                rec[name] = self.policy[rows, k]
            rec["change_mask"] = decided.change_mask[rows]
            rec["starts_life"] = decided.starts_life[rows]
            if self.size:  # all of one size: a view of them all
                rec["raw"] = np.frombuffer(self.joined, dtype=f"S{size}")[rows]
            else:
                rec["raw"] = np.frombuffer(b"".join([raws[j] for j in rows.tolist()]), dtype=f"S{size}")
            rec["seen"] = row_seen[rows] - PG_EPOCH_US
            parts.append(rec.tobytes())
        return b"".join(parts)

    def directions(self) -> None:
        """Each direction touched as the batch leaves it (after :meth:`decide`): ``state``, and the
        changed ones as ``states`` and as binary COPY rows (``created``: no row yet, ``changed``)."""
        if self._decided is None:
            return
        decided, ids, row_seen, before, before_policy, lowered = self._decided
        count = len(self.keys)
        stored = np.flatnonzero(decided.outcome == 0)
        latest = np.full(count, -1, dtype=np.int64)  # the last stored update of each direction
        np.maximum.at(latest, self.group[stored], stored)
        lives = stored[decided.starts_life[stored]]
        life = np.full(count, -1, dtype=np.int64)  # the last one that started a life
        np.maximum.at(life, self.group[lives], lives)
        dirs = np.flatnonzero((latest >= 0) | lowered)
        new, at = latest[dirs] >= 0, np.maximum(latest[dirs], 0)
        born, at_life = life[dirs] >= 0, np.maximum(life[dirs], 0)
        b = before[dirs]
        end = np.empty((len(dirs), 12), dtype=np.uint64)  # their states, as they end
        end[:, _ID] = np.where(new, ids[at], b[:, _ID])
        end[:, _SEEN] = np.where(new, row_seen[at], b[:, _SEEN])
        end[:, _LIFE] = np.where(born, ids[at_life], b[:, _LIFE])
        end[:, _LIFE_SEEN] = np.where(born, row_seen[at_life], b[:, _LIFE_SEEN])
        end[:, _TS] = np.where(new, self.ts[at], b[:, _TS])
        end[:, _FLAGS] = np.where(new, self.flags[at], b[:, _FLAGS])
        end[:, _STATE_POLICY:] = np.where(new[:, None], self.policy[at], before_policy[dirs])
        rec = _copy_records(_DIRECTION_DTYPE, len(dirs))
        rec["scid"] = self.group_scid[dirs]
        rec["direction"] = self.group_direction[dirs]
        rec["update_id"] = end[:, _ID]
        rec["timestamp"] = end[:, _TS]
        rec["channel_flags"] = end[:, _FLAGS]
        for k, name in enumerate(_POLICY_COLUMNS, _STATE_POLICY + 1):
            rec[name] = end[:, k]
        rec["seen"] = end[:, _SEEN].astype(np.int64) - PG_EPOCH_US
        rec["alive_update_id"] = end[:, _LIFE]
        rec["alive_since"] = end[:, _LIFE_SEEN].astype(np.int64) - PG_EPOCH_US
        created = ~self.present[dirs]
        self.created = rec[created].tobytes()
        self.changed = rec[~created].tobytes()
        keys = self.keys
        packed, size = end.tobytes(), _STATE.size
        self.states = {
            keys[g]: packed[k : k + size]
            for g, k in zip(dirs.tolist(), range(0, len(packed), size), strict=True)
        }
        self.state = {k: b for k, b in zip(keys, self.before, strict=True) if b is not None}
        self.state.update(self.states)

    def lowered(self) -> list[tuple[int, dt.datetime]]:
        """Stored rows whose seen the batch lowered below what the table holds."""
        return [(row.id, to_timestamp(row.seen)) for row in self.existing.values() if row.seen < row.stored]

    def rows_of(self, keys: set[UpdateKey]) -> dict[UpdateKey, _Row]:
        """Those of ``keys`` the batch stores or meets (as copies, with the seen it leaves them):
        for a batch decided on top of this one."""
        found = {}
        for key in keys.intersection(self.existing):
            row = self.existing[key]
            found[key] = _Row(row.id, row.seen, row.seen)
        if self._new_index is None:
            self._new_index = {key: k for k, key in enumerate(self._keys_at(self.new))}
        for key in keys.intersection(self._new_index):
            k = self._new_index[key]
            seen = int(self.new_seen[k])
            found[key] = _Row(int(self.new_ids[k]), seen, seen)
        return found


async def _direction_states(
    conn: Any, keys: list[DirectionKey], cache: StateCache | None, after: PlannedUpdates | None
) -> list[DirectionState | None]:
    """The state of each of ``keys`` (None: no row): as ``after`` leaves it, as cached, or as
    stored."""
    none: dict[DirectionKey, DirectionState] = {}
    cached = (cache.directions if cache is not None else none).get
    if after is not None and after.plan.state:
        ahead = after.plan.state.get
        states = [ahead(k) or cached(k) for k in keys]
    else:
        states = list(map(cached, keys))
    missing = [i for i, st in enumerate(states) if st is None]
    if cache is not None:
        cache.hits += len(keys) - len(missing)
        cache.misses += len(missing)
    if missing:
        at = {keys[i]: i for i in missing}
        ordered = sorted(at)
        scids = [to_int8(k >> 1) for k in ordered]
        for r in await conn.fetch(DIRECTION_STATE_SQL, scids, [k & 1 for k in ordered]):
            flags = r["channel_flags"]
            states[at[to_u64(r["scid"]) << 1 | r["direction"]]] = _STATE.pack(
                r["update_id"], r["seen"], r["alive_update_id"], r["alive_since"], r["timestamp"], flags,
                int(flags & _DISABLED != 0), r["cltv_expiry_delta"], to_u64(r["htlc_minimum_msat"]),
                r["fee_base_msat"], r["fee_proportional_millionths"], to_u64(r["htlc_maximum_msat"]),
            )  # fmt: skip
    return states


async def _existing_updates(
    conn: Any, older: set[UpdateKey], after: PlannedUpdates | None
) -> dict[UpdateKey, _Row]:
    """Of ``older`` (updates older than their direction's latest), the rows already stored (rare:
    stale arrivals and re-deliveries). With ``after``, the rows that batch stores or meets count as
    stored (as copies, with the seen that batch leaves them)."""
    if not older:
        return {}
    found: dict[UpdateKey, _Row] = {}
    if after is not None:
        found = after.plan.rows_of(older)
        older = older.difference(found)
    if older:
        ordered = sorted(older)
        scids, directions, timestamps = (
            [to_int8(k[0]) for k in ordered],
            [k[1] for k in ordered],
            [k[2] for k in ordered],
        )
        for r in await conn.fetch(EXISTING_UPDATES_SQL, scids, directions, timestamps):
            found[(to_u64(r[1]), r[2], r[3])] = _Row(r[0], r[4], r[4])
    return found


@dataclass(eq=False)
class PlannedUpdates:
    """The decision on a batch's channel_updates (see the module doc): outcomes by the batch's
    positions, the new rows as binary COPY rows, the rows whose seen to lower, the directions
    to write (binary COPY rows). Made ahead, it holds the stamp it expects under the lock and the
    batch it was made on."""

    others: list[int]  # the batch's positions of other messages
    outcomes: dict[int, rules.Outcome]
    plan: _UpdatePlan
    rows: bytes
    lowered: list[tuple[int, dt.datetime]]
    created: bytes
    changed: bytes
    states: dict[DirectionKey, DirectionState]
    nodes: _NodePlan | None  # the batch's node_announcements, decided alike (None: it has none)
    expect: tuple[int, int] | None = None  # (writer, batch) of writer_state when it takes the lock
    after: PlannedUpdates | None = None
    copied: bool = False  # its new rows are COPYed already, in the caller's transaction (copy_early)
    used: bool = False  # write_batch wrote it as decided
    kept: bool = False  # ... and that transaction committed (the caller says so)

    def valid(self, writer: int, stamp: int) -> bool:
        """Whether it still holds under the lock, ``writer``/``stamp`` being writer_state's."""
        after, self.after = self.after, None  # (no chain of batches kept alive)
        return self.expect == (writer, stamp) and (after is None or after.kept)


async def plan_updates(
    conn: Any,
    items: Sequence[IncomingLike],
    cache: StateCache | None,
    after: PlannedUpdates | None = None,
    *,
    locked: bool = False,
) -> PlannedUpdates:
    """Decide ``items``' channel_updates: under the writer lock (``locked``, inside the batch's
    transaction) or ahead, on ``conn`` outside any transaction, on top of ``after`` (the decision
    of the batch still being written, if any) and yielding to the event loop as it goes."""
    expect: tuple[int, int] | None = None
    if not locked:
        if after is not None:
            assert cache is not None
            assert after.expect is not None
            expect = (cache.token, after.expect[1] + 1)
        else:
            writer, stamp = await conn.fetchrow(READ_STAMP_SQL)
            expect = (writer, stamp)
            if cache is not None and (writer != cache.token or stamp != cache.stamp):
                cache = None  # someone else wrote since: read everything
    updates: list[Update] = []
    others: list[int] = []
    update = m.ChannelUpdate
    for i, it in enumerate(items):
        u = it.message
        if type(u) is update:
            updates.append((i, it.seen_us, u))
        else:
            others.append(i)
    plan = _UpdatePlan(updates)
    if not locked:
        await asyncio.sleep(0)  # (a few ms each step: let the batch being written go on between)
    before = await _direction_states(conn, plan.keys, cache, after)
    existing = await _existing_updates(conn, plan.older(before), after)
    last_id = await conn.fetchval(RESERVE_IDS_SQL, len(updates), IDS_LOCK)
    outcomes: dict[int, rules.Outcome] = {}
    plan.decide(existing, last_id - len(updates) + 1, outcomes)
    if not locked:
        await asyncio.sleep(0)
    plan.directions()
    if not locked:
        await asyncio.sleep(0)
    rows = plan.copy()
    nodes = [(i, items[i]) for i in others if type(items[i].message) is m.NodeAnnouncement]
    node_plan = None
    if nodes:
        node_plan = await _plan_nodes(conn, nodes, None if after is None else after.nodes)
    return PlannedUpdates(
        others,
        outcomes,
        plan,
        rows,
        plan.lowered(),
        plan.created,
        plan.changed,
        plan.states,
        node_plan,
        expect,
        after,
    )


async def copy_early(conn: Any, planned: PlannedUpdates) -> None:
    """COPY the new channel_updates rows of a decision made ahead in the caller's transaction,
    before :func:`write_batch` takes the writer lock in it, so that PostgreSQL takes them in while
    the batch before still holds the lock. Ids are reserved and the rows new unless the decision
    turns out stale, in which case ``write_batch`` raises :class:`EarlyCopyStale` (a row another
    writer stored meanwhile may also fail this COPY: a unique violation, the same way out)."""
    await _copy_binary(conn, "channel_updates", UPDATE_COLUMNS, planned.rows)
    planned.copied = True


async def _write_updates(
    conn: Any, planned: PlannedUpdates, outcomes: list[rules.Outcome], cache: StateCache | None
) -> None:
    """Write what :func:`plan_updates` decided."""
    for i, outcome in planned.outcomes.items():
        outcomes[i] = outcome
    if not planned.copied:
        await _copy_binary(conn, "channel_updates", UPDATE_COLUMNS, planned.rows)
    lowered = planned.lowered
    if lowered:
        await conn.execute(LOWER_UPDATE_SEEN_SQL, [x[0] for x in lowered], [x[1] for x in lowered])
    if cache is not None:
        cache.pending.update(planned.states)
    if planned.created:
        await _copy_binary(conn, "channel_directions", DIRECTION_COLUMNS, planned.created)
    if planned.changed:
        await _copy_binary(conn, "direction_stage", DIRECTION_COLUMNS, planned.changed)
        await conn.execute(APPLY_STAGE_SQL)


# -- node announcements -----------------------------------------------------------------------------

NODE_STATE_SQL = f"""
SELECT {", ".join("n." + c for c in columns.names(columns.NODE))}, a.raw
FROM nodes n JOIN node_announcements a ON a.id = n.announcement_id WHERE n.node_id = ANY($1::bytea[])
"""  # noqa: S608 - declared column names
EXISTING_NODE_ANNS_SQL = """
SELECT a.id, a.node_id, a.timestamp, a.seen FROM node_announcements a
JOIN unnest($1::bytea[], $2::int8[]) AS k(node_id, timestamp) USING (node_id, timestamp)
"""
NEXT_NODE_IDS_SQL = "SELECT nextval('node_announcements_id_seq') FROM generate_series(1, $1)"
NODE_COLUMNS = columns.names(columns.NODE_ANNOUNCEMENT)
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
# Every column of nodes; a node's first announcement never changes.
_NODE_KEPT = ("node_id", "first_announcement_id")
UPSERT_NODES_SQL = f"""
INSERT INTO nodes ({", ".join(columns.names(columns.NODE))})
SELECT * FROM unnest({", ".join(f"${k}::{c.array_type}" for k, c in enumerate(columns.NODE, 1))})
ON CONFLICT (node_id) DO UPDATE SET
    {", ".join(f"{c.name} = EXCLUDED.{c.name}" for c in columns.NODE if c.name not in _NODE_KEPT)}
"""  # noqa: S608 - declared column names


@dataclass(slots=True)
class _Node:
    """A node's row of nodes as a batch sees it: its latest announcement's id and seen, its first
    announcement's id and seen, whether the batch changed any of it, and what the rules compare."""

    latest_id: int
    seen: dt.datetime
    life_id: int
    life_seen: dt.datetime
    changed: bool
    timestamp: int
    features: bytes
    addresses: bytes
    raw: bytes  # of the latest announcement: ties are decided on it


class _Replacement(NamedTuple):
    """New content for a stored latest announcement that lost a tie, and the change bits to add."""

    features: bytes
    addresses: bytes
    alias: bytes
    rgb_color: bytes
    raw: bytes
    mask: int


NodeKey = tuple[bytes, int]  # (node_id, timestamp): a node_announcement's key


@dataclass(eq=False)
class _NodePlan:
    """The decision on a batch's node_announcements: outcomes by the batch's positions, what to
    write (new rows in NODE_COLUMNS order, tie replacements by row id, rows whose seen to lower,
    UPSERT_NODES_SQL's columns), and what a batch decided on top of this one needs: every node it
    touches and every row it stores or meets, as this batch leaves them."""

    outcomes: dict[int, rules.Outcome]
    rows: list[list[Any]]
    replaced: dict[int, _Replacement]
    lowered: list[tuple[int, dt.datetime]]
    upsert: list[list[Any]]
    nodes: dict[bytes, _Node]
    met: dict[NodeKey, _Row]


async def _plan_nodes(
    conn: Any, nodes: list[tuple[int, IncomingLike]], after: _NodePlan | None = None
) -> _NodePlan:
    """Decide ``nodes`` (a batch's node_announcements, with their positions): under the writer
    lock, or ahead on top of ``after`` (the node decision of the batch still being written), reading
    only what ``after`` does not hold. Ids come from the sequence: taken outside the lock too."""
    state: dict[bytes, _Node] = {}
    existing: dict[NodeKey, _Row] = {}
    node_ids = sorted({it.message.node_id for _, it in nodes})  # type: ignore[union-attr]
    pairs = sorted({(it.message.node_id, it.message.timestamp) for _, it in nodes})  # type: ignore[union-attr]
    if after is not None:
        for node_id in node_ids:
            if (st := after.nodes.get(node_id)) is not None:
                state[node_id] = dataclasses.replace(st)
        for key in pairs:
            if (row := after.met.get(key)) is not None:
                existing[key] = _Row(row.id, row.seen, row.seen)
        node_ids = [n for n in node_ids if n not in state]
        pairs = [p for p in pairs if p not in existing]
    if node_ids:
        for r in await conn.fetch(NODE_STATE_SQL, node_ids):
            state[bytes(r["node_id"])] = _Node(
                r["announcement_id"],
                r["seen"],
                r["first_announcement_id"],
                r["first_seen"],
                False,
                r["timestamp"],
                bytes(r["features"]),
                bytes(r["addresses"]),
                bytes(r["raw"]),
            )
    if pairs:
        for r in await conn.fetch(EXISTING_NODE_ANNS_SQL, [p[0] for p in pairs], [p[1] for p in pairs]):
            existing[(bytes(r["node_id"]), r["timestamp"])] = _Row(r["id"], r["seen"], r["seen"])
    ids = [r[0] for r in await conn.fetch(NEXT_NODE_IDS_SQL, len(nodes))]
    return _decide_nodes(nodes, state, existing, ids)


def _decide_nodes(
    nodes: list[tuple[int, IncomingLike]],
    state: dict[bytes, _Node],
    existing: dict[NodeKey, _Row],
    ids: list[int],
) -> _NodePlan:
    """The rules (:func:`lnsync.rgs.rules.decide_node`) applied one by one, ``state`` and
    ``existing`` updated as the batch goes; ``ids``: one fresh row id per announcement."""
    outcomes: dict[int, rules.Outcome] = {}
    new_by_key: dict[NodeKey, _Row] = {}
    # New rows in NODE_COLUMNS order, the last field (seen) as its _Row until decided.
    new_rows: list[list[Any]] = []
    new_row_of: dict[NodeKey, list[Any]] = {}
    replaced: dict[int, _Replacement] = {}  # by stored row id
    for (i, it), row_id in zip(nodes, ids, strict=True):
        a = it.message
        assert isinstance(a, m.NodeAnnouncement)
        key = (a.node_id, a.timestamp)
        seen = to_timestamp(it.seen_us)
        dup = existing.get(key) or new_by_key.get(key)
        st = state.get(a.node_id)
        latest = (st.timestamp, st.features, st.addresses, st.raw) if st is not None else None
        decision = rules.decide_node(latest, a.timestamp, a.features, a.addresses, a.raw, dup is not None)
        outcomes[i] = decision.outcome
        if dup is not None:
            if seen < dup.seen:
                _redeliver(dup, st, seen)
            if decision.replaces:
                assert st is not None
                row = new_row_of.get(key)
                if row is not None:  # written by this batch: not in the table yet
                    row[3:7] = [a.features, a.addresses, a.alias, a.rgb_color]
                    row[7] |= decision.change_mask
                    row[8] = a.raw
                else:
                    mask = replaced[dup.id].mask if dup.id in replaced else 0
                    replaced[dup.id] = _Replacement(
                        a.features, a.addresses, a.alias, a.rgb_color, a.raw, mask | decision.change_mask
                    )
                st.features, st.addresses, st.raw, st.changed = a.features, a.addresses, a.raw, True
            continue
        record = new_by_key[key] = _Row(row_id, seen, seen)
        new_row = [
            row_id, a.node_id, a.timestamp, a.features, a.addresses, a.alias, a.rgb_color,
            decision.change_mask, a.raw, record,
        ]  # fmt: skip
        new_rows.append(new_row)
        new_row_of[key] = new_row
        if decision.outcome is rules.Outcome.STORED:
            if st is None:
                state[a.node_id] = _Node(
                    row_id, seen, row_id, seen, True, a.timestamp, a.features, a.addresses, a.raw
                )
            else:
                st.latest_id, st.timestamp, st.features, st.addresses, st.seen = (
                    row_id, a.timestamp, a.features, a.addresses, seen,
                )  # fmt: skip
                st.changed, st.raw = True, a.raw
    for row in new_rows:
        row[-1] = row[-1].seen
    lowered = [(row.id, row.seen) for row in existing.values() if row.seen < row.stored]
    seen_of = {row.id: row.seen for row in new_by_key.values()}
    upsert: list[list[Any]] = [[] for _ in columns.NODE]
    end: dict[bytes, _Node] = {}
    for node_id, st in state.items():
        seen = min(st.seen, seen_of.get(st.latest_id, st.seen))
        life_seen = min(st.life_seen, seen_of.get(st.life_id, st.life_seen))
        if st.changed:
            values = (
                node_id,
                st.latest_id,
                st.life_id,
                st.timestamp,
                st.features,
                st.addresses,
                seen,
                life_seen,
            )
            for col, value in zip(upsert, values, strict=True):
                col.append(value)
        end[node_id] = _Node(
            st.latest_id, seen, st.life_id, life_seen, False, st.timestamp, st.features, st.addresses, st.raw
        )
    met = {key: _Row(row.id, row.seen, row.seen) for key, row in (*existing.items(), *new_by_key.items())}
    return _NodePlan(outcomes, new_rows, replaced, lowered, upsert if upsert[0] else [], end, met)


async def _write_nodes(conn: Any, plan: _NodePlan, outcomes: list[rules.Outcome]) -> None:
    """Write what :func:`_plan_nodes` decided."""
    for i, outcome in plan.outcomes.items():
        outcomes[i] = outcome
    if plan.rows:
        await conn.copy_records_to_table("node_announcements", records=plan.rows, columns=NODE_COLUMNS)
    if plan.replaced:
        replaced = plan.replaced
        cols_r: list[list[Any]] = [list(replaced), *map(list, zip(*replaced.values(), strict=True))]
        await conn.execute(REPLACE_NODE_SQL, *cols_r)
    if plan.lowered:
        await conn.execute(LOWER_NODE_SEEN_SQL, [x[0] for x in plan.lowered], [x[1] for x in plan.lowered])
    if plan.upsert:
        await conn.execute(UPSERT_NODES_SQL, *plan.upsert)
