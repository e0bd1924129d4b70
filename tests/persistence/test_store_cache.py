"""The writer's StateCache never changes what is stored.

The same random histories as test_store_rules are written through two writers with their own
caches taking turns (each sees the other's stamp and must forget what it cached), with some
batches rolled back after write_batch returned (the cache must not keep their state), and with
retention deleting directions in between; the blobs read back equal the in-memory model's.
"""

from __future__ import annotations

import random

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnsync.gossip.messages import decode_gossip
from lnsync.rgs.history import GossipHistory
from services.persistence import retention
from services.persistence.store import Incoming, StateCache, write_batch
from tests.persistence.conftest import channel_update
from tests.persistence.test_store_rules import assert_same_blobs
from tests.rgs.histories import DAY, MAINNET, START, event_message, random_events


class _Rollback(Exception):
    pass


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32))
async def test_cached_writers_store_what_the_model_stores(database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    conn = await asyncpg.connect(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        await conn.execute(
            "TRUNCATE channel_announcements, channel_updates, channel_directions, node_announcements, nodes"
        )
        caches = [StateCache(), StateCache()]
        history = GossipHistory(MAINNET)
        events = random_events(seed, channels=25, days=20)
        pending: list[tuple[bytes, int, int | None]] = []
        rolled_back = 0

        async def flush() -> None:
            nonlocal rolled_back
            cache = rng.choice(caches)
            batch = [Incoming(decode_gossip(raw), us, funding) for raw, us, funding in pending]
            if rng.random() < 0.15:  # the enclosing transaction fails after write_batch returned
                try:
                    async with conn.transaction():
                        await write_batch(conn, batch, cache)
                        raise _Rollback
                except _Rollback:
                    rolled_back += 1
            async with conn.transaction():
                await write_batch(conn, batch, cache)
            cache.committed()
            pending.clear()

        for ev in events:
            raw = event_message(ev)
            funding = ev.kwargs.get("funding_sats") if ev.kind == "ann" else None
            history.add_message(raw, ev.seen, funding_sats=funding)  # type: ignore[arg-type]
            pending.append((raw, ev.seen * 1_000_000 + rng.randrange(1_000_000), funding))  # type: ignore[arg-type]
            if len(pending) >= rng.choice([1, 7, 50, 300]):
                await flush()
        if pending:
            await flush()
        assert rolled_back and all(c.hits for c in caches)
        pairs = [(0, START + 5 * DAY)]
        for _ in range(6):
            R = START + rng.randrange(DAY, 20 * DAY)
            pairs.append((R - rng.choice([3600, DAY, 3 * DAY]), R))
        await assert_same_blobs(conn, history, pairs)

    finally:
        await pool.close()
        await conn.close()


async def test_a_cache_never_outlives_directions_that_retention_deleted(database_url: str) -> None:
    """Retention stamps writer_state: a cached direction it deleted is read again, not updated
    in place (an UPDATE of a row that no longer exists would silently lose the new latest)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    cache = StateCache()
    scid = 700_000 << 40
    try:
        async with pool.acquire() as conn:
            for ts in (START, START + DAY):
                await write_batch(
                    conn, [Incoming(decode_gossip(channel_update(scid, 0, ts)), ts * 1_000_000)], cache
                )
                cache.committed()
            assert cache.directions
        now = START + 30 * DAY  # a never-announced direction, pending for too long
        stats = await retention.prune(pool, now=now, superseded_retention=40 * DAY, pending_update_ttl=DAY,
                                      observation_retention=0)  # fmt: skip
        assert stats.pending_directions == 1
        async with pool.acquire() as conn:
            ts = now - 60
            await write_batch(
                conn, [Incoming(decode_gossip(channel_update(scid, 0, ts)), ts * 1_000_000)], cache
            )
            cache.committed()
            row = await conn.fetchrow("SELECT timestamp FROM channel_directions WHERE scid = $1", scid)
            assert row is not None and row["timestamp"] == ts
            assert await conn.fetchval(
                "SELECT bool_and(starts_life) FROM channel_updates WHERE scid = $1", scid
            )
    finally:
        await pool.close()


@pytest.mark.parametrize("cached", [False, True])
async def test_a_stored_latest_redelivered_after_a_newer_update_in_the_same_batch_is_a_duplicate(
    database_url: str, cached: bool
) -> None:
    """Regression (found by test_store_rules, seed 3369): the batch's first update of a direction
    replaces its latest, then the previous latest arrives again in the same batch."""
    cache = StateCache() if cached else None
    scid, t1, t2 = 700_001 << 40, START, START + DAY
    conn = await asyncpg.connect(database_url)
    try:
        first = Incoming(decode_gossip(channel_update(scid, 1, t1)), t1 * 1_000_000)
        await write_batch(conn, [first], cache)
        newer = Incoming(decode_gossip(channel_update(scid, 1, t2, fee_ppm=7)), t2 * 1_000_000)
        again = Incoming(decode_gossip(channel_update(scid, 1, t1)), (t1 - 5) * 1_000_000)
        if cache is not None:
            cache.committed()
        outcomes = await write_batch(conn, [newer, again], cache)
        assert [o.value for o in outcomes] == ["stored", "duplicate"]
        seen = await conn.fetchval(
            "SELECT extract(epoch FROM seen)::int8 FROM channel_updates WHERE timestamp = $1", t1
        )
        assert seen == t1 - 5  # the earlier delivery still lowers the stored row's seen
    finally:
        await conn.close()


@pytest.mark.parametrize("cached", [False, True])
async def test_a_stored_latest_delivered_twice_more_in_one_batch_keeps_the_earliest_seen(
    database_url: str, cached: bool
) -> None:
    """The stored latest arrives twice in one batch, the first time earlier than the second: the
    second must find the row the first one lowered (a batch's look-up of rows it already met)."""
    cache = StateCache() if cached else None
    scid, t1 = 700_002 << 40, START
    conn = await asyncpg.connect(database_url)
    try:
        await write_batch(conn, [Incoming(decode_gossip(channel_update(scid, 1, t1)), t1 * 1_000_000)], cache)
        if cache is not None:
            cache.committed()
        again = [
            Incoming(decode_gossip(channel_update(scid, 1, t1)), (t1 - 10) * 1_000_000),
            Incoming(decode_gossip(channel_update(scid, 1, t1)), (t1 - 5) * 1_000_000),
        ]
        outcomes = await write_batch(conn, again, cache)
        assert [o.value for o in outcomes] == ["duplicate", "duplicate"]
        seen = await conn.fetchval(
            "SELECT extract(epoch FROM seen)::int8 FROM channel_updates WHERE timestamp = $1", t1
        )
        direction_seen = await conn.fetchval(
            "SELECT extract(epoch FROM seen)::int8 FROM channel_directions WHERE scid = $1", scid
        )
        assert seen == direction_seen == t1 - 10
    finally:
        await conn.close()
