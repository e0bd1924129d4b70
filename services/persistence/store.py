"""Writing gossip into PostgreSQL with the store's rules (docs/architecture.md, "The store").

One batch is one transaction. Batches are serialised across every persistence replica by a
transaction-scoped advisory lock: the rules need each direction's current latest, and reading it
under the lock makes the decision and the write atomic. Inside a batch the work is set-based: one
query reads the state of every direction the batch touches, one finds which (scid, direction,
timestamp) are already stored, the new rows go in with a single COPY (ids taken from the sequence
beforehand so the latest-pointer can be written in the same transaction), and the new latest
state is upserted in one statement. The per-message decision is :func:`lnsync.rgs.rules.decide_update`,
the same function the in-memory model uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lnsync.gossip import messages as m
from lnsync.rgs import rules

WRITER_LOCK = 0x6C6E737772  # "lnswr": one batch at a time, across replicas
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_U64 = 1 << 64


def to_int8(value: int) -> int:
    """u64 (scids) in a signed bigint with the same bits."""
    return value - _U64 if value >= 1 << 63 else value


def to_timestamp(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A structurally valid gossip message and when it was first seen (µs, already clamped)."""

    message: m.GossipMessage
    seen_us: int
    funding_sats: int | None = None


def _policy(u: m.ChannelUpdate) -> rules.Policy:
    return (
        int(u.disabled),
        u.cltv_expiry_delta,
        u.htlc_minimum_msat,
        u.fee_base_msat,
        u.fee_proportional_millionths,
        u.htlc_maximum_msat,
    )


async def write_batch(conn: Any, items: Sequence[Incoming]) -> list[rules.Outcome]:
    """Store ``items`` in one transaction; return each item's outcome, in order."""
    outcomes: list[rules.Outcome] = [rules.Outcome.DUPLICATE] * len(items)
    anns = [(i, it) for i, it in enumerate(items) if isinstance(it.message, m.ChannelAnnouncement)]
    upds = [(i, it) for i, it in enumerate(items) if isinstance(it.message, m.ChannelUpdate)]
    nodes = [(i, it) for i, it in enumerate(items) if isinstance(it.message, m.NodeAnnouncement)]
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK)
        if anns:
            await _write_announcements(conn, anns, outcomes)
        if upds:
            await _write_updates(conn, upds, outcomes)
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
    conn: Any, anns: list[tuple[int, Incoming]], outcomes: list[rules.Outcome]
) -> None:
    # One row per scid (the earliest seen wins; ON CONFLICT cannot touch a row twice).
    first: dict[int, tuple[int, Incoming]] = {}
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

DIRECTION_STATE_SQL = """
SELECT d.scid, d.direction, d.update_id, d.timestamp, d.channel_flags, d.cltv_expiry_delta,
       d.htlc_minimum_msat, d.fee_base_msat, d.fee_proportional_millionths, d.htlc_maximum_msat,
       d.seen, d.alive_update_id, d.alive_since
FROM channel_directions d
JOIN unnest($1::int8[], $2::int2[]) AS k(scid, direction) USING (scid, direction)
"""
EXISTING_UPDATES_SQL = """
SELECT u.id, u.scid, u.direction, u.timestamp, u.seen
FROM channel_updates u
JOIN unnest($1::int8[], $2::int2[], $3::int8[]) AS k(scid, direction, timestamp)
  USING (scid, direction, timestamp)
"""
NEXT_IDS_SQL = "SELECT nextval('channel_updates_id_seq') FROM generate_series(1, $1)"
UPDATE_COLUMNS = (
    "id", "scid", "direction", "timestamp", "message_flags", "channel_flags", "cltv_expiry_delta",
    "htlc_minimum_msat", "fee_base_msat", "fee_proportional_millionths", "htlc_maximum_msat",
    "change_mask", "starts_life", "raw", "seen",
)  # fmt: skip
LOWER_UPDATE_SEEN_SQL = """
UPDATE channel_updates u SET seen = k.seen
FROM unnest($1::int8[], $2::timestamptz[]) AS k(id, seen) WHERE u.id = k.id AND k.seen < u.seen
"""
UPSERT_DIRECTIONS_SQL = """
INSERT INTO channel_directions (scid, direction, update_id, timestamp, channel_flags, cltv_expiry_delta,
    htlc_minimum_msat, fee_base_msat, fee_proportional_millionths, htlc_maximum_msat, seen,
    alive_update_id, alive_since)
SELECT * FROM unnest($1::int8[], $2::int2[], $3::int8[], $4::int8[], $5::int2[], $6::int4[], $7::int8[],
                     $8::int8[], $9::int8[], $10::int8[], $11::timestamptz[], $12::int8[], $13::timestamptz[])
ON CONFLICT (scid, direction) DO UPDATE SET
    update_id = EXCLUDED.update_id, timestamp = EXCLUDED.timestamp, channel_flags = EXCLUDED.channel_flags,
    cltv_expiry_delta = EXCLUDED.cltv_expiry_delta, htlc_minimum_msat = EXCLUDED.htlc_minimum_msat,
    fee_base_msat = EXCLUDED.fee_base_msat,
    fee_proportional_millionths = EXCLUDED.fee_proportional_millionths,
    htlc_maximum_msat = EXCLUDED.htlc_maximum_msat, seen = EXCLUDED.seen,
    alive_update_id = EXCLUDED.alive_update_id, alive_since = EXCLUDED.alive_since
"""


@dataclass
class _DirectionState:
    update_id: int
    timestamp: int
    policy: rules.Policy
    flags: int
    seen: dt.datetime
    alive_update_id: int
    alive_since: dt.datetime
    dirty: bool = False


async def _write_updates(conn: Any, upds: list[tuple[int, Incoming]], outcomes: list[rules.Outcome]) -> None:
    keys = sorted({(to_int8(it.message.short_channel_id), it.message.direction) for _, it in upds})  # type: ignore[union-attr]
    state: dict[tuple[int, int], _DirectionState] = {}
    for r in await conn.fetch(DIRECTION_STATE_SQL, [k[0] for k in keys], [k[1] for k in keys]):
        state[(r["scid"], r["direction"])] = _DirectionState(
            update_id=r["update_id"],
            timestamp=r["timestamp"],
            policy=(
                int(r["channel_flags"] & m.CHANNEL_FLAG_DISABLED != 0),
                r["cltv_expiry_delta"],
                r["htlc_minimum_msat"] % _U64,
                r["fee_base_msat"],
                r["fee_proportional_millionths"],
                r["htlc_maximum_msat"] % _U64,
            ),
            flags=r["channel_flags"],
            seen=r["seen"],
            alive_update_id=r["alive_update_id"],
            alive_since=r["alive_since"],
        )
    triples = sorted(
        {(to_int8(it.message.short_channel_id), it.message.direction, it.message.timestamp) for _, it in upds}  # type: ignore[union-attr]
    )
    # Rows already stored for these keys: id and seen (a duplicate may lower seen).
    existing: dict[tuple[int, int, int], list[Any]] = {
        (r["scid"], r["direction"], r["timestamp"]): [r["id"], r["seen"], r["seen"]]
        for r in await conn.fetch(EXISTING_UPDATES_SQL, *map(list, zip(*triples, strict=True)))
    }
    ids = [r[0] for r in await conn.fetch(NEXT_IDS_SQL, len(upds))]
    new_rows: list[list[Any]] = []
    new_by_key: dict[tuple[int, int, int], list[Any]] = {}
    for (i, it), row_id in zip(upds, ids, strict=True):
        u = it.message
        assert isinstance(u, m.ChannelUpdate)
        scid = to_int8(u.short_channel_id)
        key = (scid, u.direction, u.timestamp)
        seen = to_timestamp(it.seen_us)
        dup = existing.get(key) or new_by_key.get(key)
        st = state.get((scid, u.direction))
        latest = (st.timestamp, st.policy) if st is not None else None
        policy = _policy(u)
        decision = rules.decide_update(latest, u.timestamp, it.seen_us // 1_000_000, policy, dup is not None)
        outcomes[i] = decision.outcome
        if dup is not None:
            if seen < dup[2]:
                dup[2] = seen  # new_rows entries share this list, so a batch-new row is lowered too
                if st is not None:
                    if dup[0] == st.update_id and seen < st.seen:
                        st.seen, st.dirty = seen, True
                    if dup[0] == st.alive_update_id and seen < st.alive_since:
                        st.alive_since, st.dirty = seen, True
            continue
        record = [row_id, seen, seen]  # id, original seen, current (lowest) seen
        row = [
            row_id, scid, u.direction, u.timestamp, u.message_flags, u.channel_flags, u.cltv_expiry_delta,
            to_int8(u.htlc_minimum_msat), u.fee_base_msat, u.fee_proportional_millionths,
            to_int8(u.htlc_maximum_msat), decision.change_mask, decision.starts_life, u.raw, record,
        ]  # fmt: skip
        new_rows.append(row)
        new_by_key[key] = record
        if decision.outcome is rules.Outcome.STORED:
            if st is None:
                st = state[(scid, u.direction)] = _DirectionState(
                    row_id, u.timestamp, policy, u.channel_flags, seen, row_id, seen, dirty=True
                )
            else:
                st.update_id, st.timestamp, st.policy = row_id, u.timestamp, policy
                st.flags, st.seen = u.channel_flags, seen
                if decision.starts_life:
                    st.alive_update_id, st.alive_since = row_id, seen
                st.dirty = True

    if new_rows:
        for row in new_rows:
            row[-1] = row[-1][2]  # the lowest seen any delivery in this batch reported
        await conn.copy_records_to_table("channel_updates", records=new_rows, columns=UPDATE_COLUMNS)
    lowered = [(rec[0], rec[2]) for key, rec in existing.items() if rec[2] < rec[1]]
    if lowered:
        await conn.execute(LOWER_UPDATE_SEEN_SQL, [x[0] for x in lowered], [x[1] for x in lowered])
    dirty = [(k, st) for k, st in state.items() if st.dirty]
    if dirty:
        # A batch-new latest whose seen was lowered by a later duplicate in the same batch.
        seen_of = {rec[0]: rec[2] for rec in new_by_key.values()}
        cols: list[list[Any]] = [[] for _ in range(13)]
        for (scid, direction), st in dirty:
            seen = min(st.seen, seen_of.get(st.update_id, st.seen))
            alive = min(st.alive_since, seen_of.get(st.alive_update_id, st.alive_since))
            p = st.policy
            values = (
                scid, direction, st.update_id, st.timestamp, st.flags, p[1], to_int8(p[2]), p[3], p[4],
                to_int8(p[5]), seen, st.alive_update_id, alive,
            )  # fmt: skip
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        await conn.execute(UPSERT_DIRECTIONS_SQL, *cols)


# -- node announcements -----------------------------------------------------------------------------

NODE_STATE_SQL = """
SELECT node_id, announcement_id, timestamp, features, addresses, seen, first_announcement_id, first_seen
FROM nodes WHERE node_id = ANY($1::bytea[])
"""
EXISTING_NODE_ANNS_SQL = """
SELECT a.id, a.node_id, a.timestamp, a.seen FROM node_announcements a
JOIN unnest($1::bytea[], $2::int8[]) AS k(node_id, timestamp) USING (node_id, timestamp)
"""
NEXT_NODE_IDS_SQL = "SELECT nextval('node_announcements_id_seq') FROM generate_series(1, $1)"
NODE_COLUMNS = (
    "id", "node_id", "timestamp", "features", "addresses", "alias", "rgb_color", "change_mask", "raw", "seen",
)  # fmt: skip
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


async def _write_nodes(conn: Any, nodes: list[tuple[int, Incoming]], outcomes: list[rules.Outcome]) -> None:
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
    for (i, it), row_id in zip(nodes, ids, strict=True):
        a = it.message
        assert isinstance(a, m.NodeAnnouncement)
        key = (a.node_id, a.timestamp)
        seen = to_timestamp(it.seen_us)
        dup = existing.get(key) or new_by_key.get(key)
        st = state.get(a.node_id)
        latest = (st[1], st[2], st[3]) if st is not None else None
        decision = rules.decide_node(latest, a.timestamp, a.features, a.addresses, dup is not None)
        outcomes[i] = decision.outcome
        if dup is not None:
            if seen < dup[2]:
                dup[2] = seen
                if st is not None:
                    if dup[0] == st[0] and seen < st[4]:
                        st[4], st[7] = seen, True
                    if dup[0] == st[5] and seen < st[6]:
                        st[6], st[7] = seen, True
            continue
        record = [row_id, seen, seen]
        new_by_key[key] = record
        new_rows.append(
            [
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
        )
        if decision.outcome is rules.Outcome.STORED:
            if st is None:
                state[a.node_id] = [row_id, a.timestamp, a.features, a.addresses, seen, row_id, seen, True]
            else:
                st[0:5] = [row_id, a.timestamp, a.features, a.addresses, seen]
                st[7] = True
    if new_rows:
        for row in new_rows:
            row[-1] = row[-1][2]
        await conn.copy_records_to_table("node_announcements", records=new_rows, columns=NODE_COLUMNS)
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
