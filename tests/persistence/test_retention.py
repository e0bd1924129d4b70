"""Retention deletes what no client needs, and no blob a client can ask for changes because of it.

A random 45-day history (fee changes, stale and duplicate deliveries, closing channels, revived
directions, node changes) is written with the real writer; then every blob lookup computes for
last-sync times T inside the retention scope and reference times R up to "now" is compared
before and after a pruning pass: byte-identical, while rows of every kind were deleted.
"""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import pytest

from lnsync.gossip.messages import decode_gossip
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.model import DeltaParams
from services.lookup.store import load_delta_input
from services.persistence import retention
from services.persistence.store import Incoming, write_batch
from tests.persistence.conftest import channel_announcement, channel_update
from tests.rgs.histories import DAY, MAINNET, START, event_message, random_events
from tests.stack import until

pytestmark = pytest.mark.timeout(120)

DAYS = 45
NOW = START + DAYS * DAY
SCOPE = 10 * DAY  # superseded_retention
PENDING_TTL = 7 * DAY


async def blobs(conn: asyncpg.Connection, pairs: list[tuple[int, int]]) -> list[bytes]:  # type: ignore[type-arg]
    out = []
    for T, R in pairs:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            delta = compute_delta(await load_delta_input(conn, MAINNET, T, R), DeltaParams(apply_lag=3600))
        out += [encode(delta, 1), encode(delta, 2)]
    return out


async def counts(conn: asyncpg.Connection) -> dict[str, int]:  # type: ignore[type-arg]
    tables = ("channel_announcements", "channel_updates", "channel_directions", "node_announcements")
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


@pytest.mark.slow
async def test_pruning_keeps_every_blob_in_scope_identical(database_url: str) -> None:
    rng = random.Random(5)
    events = random_events(11, channels=40, days=DAYS)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            batch: list[Incoming] = []
            for ev in events:
                batch.append(Incoming(decode_gossip(event_message(ev)), ev.seen * 1_000_000))
                if len(batch) >= 200:
                    await write_batch(conn, batch)
                    batch = []
            # Updates of channels never announced: one waiting too long, one recent.
            for scid, seen in ((123 << 40, NOW - PENDING_TTL - DAY), (124 << 40, NOW - DAY)):
                raw = channel_update(scid, 0, seen - 10)
                batch.append(Incoming(decode_gossip(raw), seen * 1_000_000))
            # A channel that closed early: dead (no update for 14 days) for much longer than 14 days.
            dead = 125 << 40
            batch.append(Incoming(decode_gossip(channel_announcement(dead)), START * 1_000_000))
            for k in range(5):
                for d in (0, 1):
                    raw = channel_update(dead, d, START + k * DAY, fee_ppm=k)
                    batch.append(Incoming(decode_gossip(raw), (START + k * DAY + 5) * 1_000_000))
            # A channel that went quiet for over 14 days and came back just before NOW: at R shortly
            # before its return it is live, and its life began with its very first update.
            revived = 126 << 40
            batch.append(Incoming(decode_gossip(channel_announcement(revived)), START * 1_000_000))
            for t in [*range(START, NOW - 15 * DAY, DAY), NOW - DAY // 2]:
                for d in (0, 1):
                    raw = channel_update(revived, d, t, fee_ppm=t % 1000)
                    batch.append(Incoming(decode_gossip(raw), (t + 5) * 1_000_000))
            await write_batch(conn, batch)
            peer = await conn.fetchval(
                "INSERT INTO peers (peer_id, source) VALUES ('x', 'test') RETURNING num"
            )
            old, recent = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (NOW - 8 * DAY, NOW - DAY))
            await conn.copy_records_to_table(
                "observations",
                records=[(peer, i, 258, old if i % 2 else recent, True) for i in range(100)],
                columns=("peer_num", "msg_hash", "kind", "received", "first"),
            )

            cutoff = NOW - SCOPE
            pairs = [(0, NOW), (0, cutoff), (cutoff, NOW), (cutoff, cutoff + DAY), (NOW - DAY, NOW)]
            pairs += [(0, NOW - 2 * DAY), (cutoff, NOW - 2 * DAY)]  # the revived channel's old life
            for _ in range(10):
                R = rng.randrange(cutoff + 1, NOW + 1)
                pairs.append((rng.randrange(cutoff, R), R))
            before_blobs = await blobs(conn, pairs)
            before = await counts(conn)

        async def prune() -> retention.PruneStats:
            return await retention.prune(
                pool, now=NOW, superseded_retention=SCOPE, pending_update_ttl=PENDING_TTL,
                observation_retention=7 * DAY,
            )  # fmt: skip

        stats = await prune()
        async with pool.acquire() as conn:
            after = await counts(conn)
            assert await blobs(conn, pairs) == before_blobs
            # The latest and the life-start of every remaining direction are still there.
            assert not await conn.fetchval(
                "SELECT count(*) FROM channel_directions d WHERE NOT EXISTS (SELECT 1 FROM channel_updates u"
                " WHERE u.id = d.update_id) OR NOT EXISTS (SELECT 1 FROM channel_updates u"
                " WHERE u.id = d.alive_update_id)"
            )
            assert not await conn.fetchval(
                "SELECT count(*) FROM nodes n WHERE NOT EXISTS (SELECT 1 FROM node_announcements a"
                " WHERE a.id = n.announcement_id)"
            )
            rows = await conn.fetch(
                "SELECT scid FROM channel_directions WHERE scid = ANY($1)", [123 << 40, 124 << 40]
            )
            pending = {r[0] >> 40 for r in rows}
            assert pending == {124}
            assert await conn.fetchval("SELECT count(*) FROM observations") == 50
        assert stats.superseded_updates > 0.3 * before["channel_updates"]
        assert stats.superseded_node_announcements > 0
        assert stats.dead_channels > 0 and stats.pending_directions == 1 and stats.observations == 50
        assert after["channel_announcements"] == before["channel_announcements"] - stats.dead_channels
        assert after["channel_updates"] < before["channel_updates"] - stats.superseded_updates
        assert (await prune()).total() == 0  # a second pass finds nothing more
    finally:
        await pool.close()


async def test_the_service_prunes_on_its_interval(persistence_factory, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        peer = await conn.fetchval("INSERT INTO peers (peer_id, source) VALUES ('x', 'test') RETURNING num")
        now = dt.datetime.now(dt.UTC)
        await conn.executemany(
            "INSERT INTO observations VALUES ($1, $2, 258, $3, true)",
            [(peer, 1, now - dt.timedelta(days=8)), (peer, 2, now)],
        )
        await persistence_factory(prune_interval=1, observation_retention=7 * DAY)

        async def pruned() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM observations") == 1)

        await until(pruned, 20, "the old observation to be pruned")
        assert await conn.fetchval("SELECT msg_hash FROM observations") == 2
    finally:
        await conn.close()
