"""Producers (peers) in the database: registration, per-peer counters and deliveries, sync state.

Tables in ``lnsync/schema/002_persistence.sql``. Counters and delivery rows are written in the
same transaction as the messages they describe, so they never disagree with the store.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from lnsync.gossip import messages as m
from services.persistence.store import to_timestamp

_ANN_KEY = struct.Struct(">HQ")
_UPD_KEY = struct.Struct(">HQBI")
_NODE_TS = struct.Struct(">I")


def message_hash(msg: m.GossipMessage) -> int:
    """The first 8 bytes of BLAKE2b over the message's store key, as a signed bigint.

    The key is what the store deduplicates on, so every delivery of one stored message shares it.
    """
    if isinstance(msg, m.ChannelUpdate):
        key = _UPD_KEY.pack(m.CHANNEL_UPDATE, msg.short_channel_id, msg.direction, msg.timestamp)
    elif isinstance(msg, m.ChannelAnnouncement):
        key = _ANN_KEY.pack(m.CHANNEL_ANNOUNCEMENT, msg.short_channel_id)
    else:
        key = b"\x01\x01" + msg.node_id + _NODE_TS.pack(msg.timestamp)
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big", signed=True)


def kind_of(msg: m.GossipMessage) -> int:
    if isinstance(msg, m.ChannelUpdate):
        return m.CHANNEL_UPDATE
    if isinstance(msg, m.ChannelAnnouncement):
        return m.CHANNEL_ANNOUNCEMENT
    return m.NODE_ANNOUNCEMENT


REGISTER_SQL = """
INSERT INTO peers (peer_id, source) VALUES ($1, $2)
ON CONFLICT (peer_id) DO UPDATE SET source = EXCLUDED.source
RETURNING num
"""


async def register_peer(conn: Any, peer_id: str, source: str) -> int:
    """The peer's compact number (creating its row on first contact)."""
    return int(await conn.fetchval(REGISTER_SQL, peer_id, source))


@dataclass
class PeerTally:
    """What one batch did for one peer."""

    channel_announcements: int = 0
    channel_updates: int = 0
    node_announcements: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    last_received_us: int = 0
    rejections: dict[str, int] = field(default_factory=dict)

    def delivered(self, kind: int) -> None:
        if kind == m.CHANNEL_UPDATE:
            self.channel_updates += 1
        elif kind == m.CHANNEL_ANNOUNCEMENT:
            self.channel_announcements += 1
        else:
            self.node_announcements += 1

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.rejections[reason] = self.rejections.get(reason, 0) + 1


COUNTERS_SQL = """
UPDATE peers p SET
    channel_announcements = p.channel_announcements + k.ca,
    channel_updates = p.channel_updates + k.cu,
    node_announcements = p.node_announcements + k.na,
    stored = p.stored + k.stored, duplicates = p.duplicates + k.dup, rejected = p.rejected + k.rej,
    last_message_at = GREATEST(p.last_message_at, k.last)
FROM unnest($1::int4[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
            $8::timestamptz[]) AS k(num, ca, cu, na, stored, dup, rej, last)
WHERE p.num = k.num
"""
REJECTIONS_SQL = """
INSERT INTO peer_rejections (peer_num, reason, count, last_at)
SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::timestamptz[])
ON CONFLICT (peer_num, reason) DO UPDATE
    SET count = peer_rejections.count + EXCLUDED.count,
        last_at = GREATEST(peer_rejections.last_at, EXCLUDED.last_at)
"""
OBSERVATION_COLUMNS = ("peer_num", "msg_hash", "kind", "received", "first", "size")


async def record(
    conn: Any,
    tallies: dict[int, PeerTally],
    observations: Sequence[tuple[int, int, int, dt.datetime, bool, int]],
    now: dt.datetime,
) -> None:
    """Add ``tallies`` to the per-peer counters and append ``observations`` (in the caller's
    transaction)."""
    nums = sorted(tallies)  # a fixed lock order across replicas
    if nums:
        t = [tallies[n] for n in nums]
        await conn.execute(
            COUNTERS_SQL,
            nums,
            [x.channel_announcements for x in t],
            [x.channel_updates for x in t],
            [x.node_announcements for x in t],
            [x.stored for x in t],
            [x.duplicates for x in t],
            [x.rejected for x in t],
            [to_timestamp(x.last_received_us) if x.last_received_us else None for x in t],
        )
        rej = sorted((n, reason, c) for n in nums for reason, c in tallies[n].rejections.items())
        if rej:
            await conn.execute(
                REJECTIONS_SQL,
                [r[0] for r in rej],
                [r[1] for r in rej],
                [r[2] for r in rej],
                [now] * len(rej),
            )
    if observations:
        await conn.copy_records_to_table("observations", records=observations, columns=OBSERVATION_COLUMNS)


# -- sync state -------------------------------------------------------------------------------------

REPORT_SQL = """
INSERT INTO peers (peer_id, source, sync_completed_at, sync_channel_announcements, sync_channel_updates,
                   sync_node_announcements, caught_up_to)
VALUES ($1, 'downloader', now(), $2, $3, $4, $5::timestamptz)
ON CONFLICT (peer_id) DO UPDATE SET
    sync_completed_at = COALESCE(peers.sync_completed_at, EXCLUDED.sync_completed_at),
    caught_up_to = GREATEST(peers.caught_up_to, EXCLUDED.caught_up_to),
    sync_channel_announcements = CASE WHEN peers.sync_completed_at IS NULL
        THEN EXCLUDED.sync_channel_announcements ELSE peers.sync_channel_announcements END,
    sync_channel_updates = CASE WHEN peers.sync_completed_at IS NULL
        THEN EXCLUDED.sync_channel_updates ELSE peers.sync_channel_updates END,
    sync_node_announcements = CASE WHEN peers.sync_completed_at IS NULL
        THEN EXCLUDED.sync_node_announcements ELSE peers.sync_node_announcements END
"""
REACH_QUORUM_SQL = """
UPDATE sync_state SET fully_synced_at = now(), quorum = $1
WHERE fully_synced_at IS NULL
  AND (SELECT count(*) FROM peers WHERE sync_completed_at IS NOT NULL) >= $1
"""


async def report_sync_complete(
    conn: Any,
    peer_id: str,
    counts: tuple[int, int, int],
    quorum: int,
    caught_up_to: dt.datetime | None = None,
) -> tuple[bool, bool]:
    """Record the peer's report (only its first counts; ``caught_up_to``, which the caller keeps
    out of the future, only forward). Returns (the graph is fully synced, this was the peer's
    first report)."""
    async with conn.transaction():
        # The row lock serialises concurrent reports, so the quorum is counted exactly once.
        await conn.execute("SELECT 1 FROM sync_state FOR UPDATE")
        earlier = await conn.fetchval("SELECT sync_completed_at FROM peers WHERE peer_id = $1", peer_id)
        await conn.execute(REPORT_SQL, peer_id, *counts, caught_up_to)
        await conn.execute(REACH_QUORUM_SQL, quorum)
        synced = bool(await conn.fetchval("SELECT fully_synced_at IS NOT NULL FROM sync_state"))
        return synced, earlier is None


@dataclass
class PeerStatus:
    peer_id: str
    sync_completed_at: dt.datetime | None
    channel_announcements: int
    channel_updates: int
    node_announcements: int
    last_message_at: dt.datetime | None
    stored: int = 0
    duplicates: int = 0
    caught_up_to: dt.datetime | None = None


@dataclass
class SyncStatus:
    fully_synced_at: dt.datetime | None
    peers: list[PeerStatus]


async def sync_status(conn: Any) -> SyncStatus:
    synced = await conn.fetchval("SELECT fully_synced_at FROM sync_state")
    rows = await conn.fetch(
        "SELECT peer_id, sync_completed_at, channel_announcements, channel_updates, node_announcements,"
        " last_message_at, stored, duplicates, caught_up_to FROM peers ORDER BY num"
    )
    return SyncStatus(synced, [PeerStatus(*r) for r in rows])
