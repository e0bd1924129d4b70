"""Producers (peers) in the database: registration, per-peer counters and deliveries, sync state.

Tables in ``lnsync/schema/002_persistence.sql``. Counters and delivery rows are written in the
same transaction as the messages they describe, so they never disagree with the store.
"""

from __future__ import annotations

import datetime as dt
import re
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
MAX_PEER_ID = 128
IMPORT_PREFIX = "import:"
_NODE_ID = re.compile(r"[0-9a-f]{66}")
# GetSyncStatus lists at most this many peers (the most recently active first): its answer stays
# far below the 8 MB message limit whatever the table holds.
MAX_LISTED_PEERS = 1000
# A peer row that never delivered a message nor reported a sync is pruned this long after its first
# stream (at once when the table is full): a header-only stream leaves nothing for long.
EMPTY_PEER_GRACE = 60


def peer_id_problem(peer_id: str) -> str | None:
    """Why ``peer_id`` is not a producer id, or None: a node id (33 bytes in lowercase hex) or
    ``import:<name>`` (printable, at most MAX_PEER_ID characters in all)."""
    if _NODE_ID.fullmatch(peer_id):
        return None
    if (
        peer_id.startswith(IMPORT_PREFIX)
        and len(IMPORT_PREFIX) < len(peer_id) <= MAX_PEER_ID
        and peer_id.isprintable()
    ):
        return None
    return (
        "peer_id must be a node id (66 lowercase hex digits) or import:<name> "
        f"(at most {MAX_PEER_ID} printable characters)"
    )


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


PRUNE_EMPTY_SQL = """
DELETE FROM peers
WHERE sync_completed_at IS NULL AND last_message_at IS NULL
  AND channel_announcements = 0 AND channel_updates = 0 AND node_announcements = 0 AND rejected = 0
  AND first_seen < now() - make_interval(secs => $1)
"""


class TooManyPeers(Exception):
    """The peers table is full (``persistence.max_peers``) even after pruning empty rows."""


async def register_peer(conn: Any, peer_id: str, source: str, max_peers: int | None = None) -> int:
    """The peer's compact number (creating its row on first contact, room permitting)."""
    if max_peers is not None:
        await ensure_room(conn, peer_id, max_peers)
    return int(await conn.fetchval(REGISTER_SQL, peer_id, source))


async def ensure_room(conn: Any, peer_id: str, max_peers: int) -> None:
    """Raise TooManyPeers if ``peer_id`` has no row and ``max_peers`` rows exist even after the
    rows that never delivered anything are pruned."""
    if await conn.fetchval("SELECT num FROM peers WHERE peer_id = $1", peer_id) is not None:
        return
    if await count_peers(conn) >= max_peers:
        await prune_empty_peers(conn, 0)
        if await count_peers(conn) >= max_peers:
            raise TooManyPeers(f"{max_peers} producers are known already (persistence.max_peers)")


async def count_peers(conn: Any) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM peers"))


async def prune_empty_peers(conn: Any, grace: float = EMPTY_PEER_GRACE) -> int:
    """Delete peer rows older than ``grace`` seconds that never delivered a message nor reported a
    sync (nothing refers to them); how many."""
    status = await conn.execute(PRUNE_EMPTY_SQL, float(grace))
    return int(status.split()[-1])


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


async def sync_status(conn: Any, peer_id: str = "", limit: int = MAX_LISTED_PEERS) -> SyncStatus:
    """The sync state and up to ``limit`` live peers (imports left out), the most recently active
    first (or only ``peer_id``)."""
    synced = await conn.fetchval("SELECT fully_synced_at FROM sync_state")
    rows = await conn.fetch(
        "SELECT peer_id, sync_completed_at, channel_announcements, channel_updates, node_announcements,"
        " last_message_at, stored, duplicates, caught_up_to FROM peers"
        " WHERE ($1 = '' OR peer_id = $1) AND peer_id NOT LIKE 'import:%'"
        " ORDER BY last_message_at DESC NULLS LAST, num LIMIT $2",
        peer_id,
        limit,
    )
    return SyncStatus(synced, [PeerStatus(*r) for r in rows])


@dataclass
class GateState:
    fully_synced_at: dt.datetime | None
    peers_complete: int
    syncing: list[str]


async def gate_state(conn: Any, sample: int = 8) -> GateState:
    """The sync gate in a few small queries: whether and when synced, how many peers reported, and a
    few peers still syncing (the most recently active)."""
    synced = await conn.fetchval("SELECT fully_synced_at FROM sync_state")
    complete = await conn.fetchval("SELECT count(*) FROM peers WHERE sync_completed_at IS NOT NULL")
    syncing = await conn.fetch(
        "SELECT peer_id FROM peers WHERE sync_completed_at IS NULL AND peer_id NOT LIKE 'import:%'"
        " ORDER BY last_message_at DESC NULLS LAST, num DESC LIMIT $1",
        sample,
    )
    return GateState(synced, int(complete), [r[0] for r in syncing])
