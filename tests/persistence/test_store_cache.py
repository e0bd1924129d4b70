"""The writer's StateCache never changes what is stored.

The same random histories as test_store_rules are written through two writers with their own
caches taking turns (each sees the other's stamp and must forget what it cached), with some
batches rolled back after write_batch returned (the cache must not keep their state), and with
retention deleting directions in between; the blobs read back equal the in-memory model's.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lnsync.gossip import messages as m
from lnsync.gossip.messages import decode_gossip
from lnsync.rgs.history import GossipHistory
from lnsync.rgs.rules import Outcome
from services.persistence import retention
from services.persistence.store import (
    IDS_LOCK,
    RESERVE_IDS_SQL,
    EarlyCopyStale,
    Incoming,
    PlannedUpdates,
    StateCache,
    copy_early,
    plan_updates,
    write_batch,
)
from tests.persistence.conftest import ZERO_SIG, channel_update, node_id
from tests.persistence.test_store_rules import assert_same_blobs
from tests.rgs.histories import DAY, MAINNET, START, event_message, random_events


class _Rollback(Exception):
    pass


def _pairs(rng: random.Random) -> list[tuple[int, int]]:
    """(T, R) pairs to compare blobs at: a full sync and six random deltas within the history."""
    pairs = [(0, START + 5 * DAY)]
    for _ in range(6):
        R = START + rng.randrange(DAY, 20 * DAY)
        pairs.append((R - rng.choice([3600, DAY, 3 * DAY]), R))
    return pairs


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
        await assert_same_blobs(conn, history, _pairs(rng))

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


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32))
async def test_decisions_made_ahead_store_what_the_model_stores(database_url: str, seed: int) -> None:
    """The writer's pipeline: batch k+1's updates and node announcements (ties among them) are
    decided ahead (plan_updates, on a second connection) while batch k's transaction is still open,
    and half the time their rows COPYed early (copy_early) before write_batch takes the lock.
    Some of those transactions roll back, and another writer sometimes writes a batch of its own
    (before or after a decision made ahead of it): each decision made ahead is used only while it
    still holds (a stale one COPYed early rolls its transaction back), and the blobs read back
    equal the in-memory model's."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(database_url)
    side = await asyncpg.connect(database_url)  # the writer's connection for deciding ahead
    try:
        await conn.execute(
            "TRUNCATE channel_announcements, channel_updates, channel_directions, node_announcements, nodes"
        )
        ours, theirs = StateCache(), StateCache()
        history = GossipHistory(MAINNET)
        batches: list[list[Incoming]] = []
        pending: list[Incoming] = []
        for ev in random_events(seed, channels=25, days=20, node_ties=0.2):
            raw = event_message(ev)
            funding = ev.kwargs.get("funding_sats") if ev.kind == "ann" else None
            history.add_message(raw, ev.seen, funding_sats=funding)  # type: ignore[arg-type]
            pending.append(
                Incoming(decode_gossip(raw), ev.seen * 1_000_000 + rng.randrange(1_000_000), funding)
            )  # type: ignore[arg-type]
            if len(pending) >= rng.choice([1, 7, 50, 300]):
                batches.append(pending)
                pending = []
        if pending:
            batches.append(pending)
        mine = [rng.random() < 0.85 for _ in batches]  # else the other writer's
        used = remade = rolled_back = nodes_used = copied_early = stale_early = 0
        ahead: PlannedUpdates | None = None  # batch k's decision, made during batch k-1
        for k, batch in enumerate(batches):
            if not mine[k]:
                async with conn.transaction():
                    await write_batch(conn, batch, theirs)
                    if k + 1 < len(batches) and mine[k + 1] and rng.random() < 0.5:
                        ahead = await plan_updates(side, batches[k + 1], ours)  # before their commit
                theirs.committed()
                continue
            planned, ahead = ahead, None
            if planned is None and rng.random() < 0.7:  # nothing being written: decided ahead alone
                planned = await plan_updates(side, batch, ours)
            while True:
                fail = rng.random() < 0.1
                try:
                    async with conn.transaction():
                        if planned is not None and rng.random() < 0.5:  # the writer's early COPY
                            await copy_early(conn, planned)
                            copied_early += 1
                        await write_batch(conn, batch, ours, planned)
                        if k + 1 < len(batches) and mine[k + 1] and planned is not None and not fail:
                            ahead = await plan_updates(side, batches[k + 1], ours, planned)
                        if fail:
                            raise _Rollback
                except (_Rollback, EarlyCopyStale, asyncpg.UniqueViolationError) as exc:
                    rolled_back += isinstance(exc, _Rollback)
                    stale_early += not isinstance(exc, _Rollback)
                    if planned is not None:
                        planned.kept = False
                    planned = None  # written again, decided under the lock
                    continue
                ours.committed()
                if planned is not None:
                    planned.kept = planned.used
                    used += planned.used
                    remade += not planned.used
                    nodes_used += planned.used and planned.nodes is not None
                break
        assert used and remade and rolled_back and nodes_used and copied_early
        await assert_same_blobs(conn, history, _pairs(rng))
    finally:
        await side.close()
        await conn.close()


async def test_a_decision_made_ahead_is_made_again_after_retention_deleted_a_row_it_found(
    database_url: str,
) -> None:
    """A decision made ahead found a superseded row (a re-delivery: duplicate); retention deletes
    that row before the batch takes the lock. Retention stamps, so the decision is made again: the
    re-delivery is stored as the stale row it now is, not dropped as a duplicate of nothing."""
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=2)
    assert pool is not None
    cache = StateCache()
    scid, t0, t1, t2 = 700_003 << 40, START, START + DAY, START + 2 * DAY  # t0 starts the life
    try:
        async with pool.acquire() as conn:
            for ts in (t0, t1, t2):
                await write_batch(
                    conn, [Incoming(decode_gossip(channel_update(scid, 0, ts)), ts * 1_000_000)], cache
                )
                cache.committed()
            again = [Incoming(decode_gossip(channel_update(scid, 0, t1)), (t2 + 60) * 1_000_000)]
            planned = await plan_updates(conn, again, cache)
            assert planned.outcomes == {0: Outcome.DUPLICATE}
        stats = await retention.prune(pool, now=t2 + 10 * DAY, superseded_retention=DAY,
                                      pending_update_ttl=60 * DAY, observation_retention=0)  # fmt: skip
        assert stats.superseded_updates == 1
        async with pool.acquire() as conn:
            outcomes = await write_batch(conn, again, cache, planned)
            cache.committed()
            assert not planned.used
            assert outcomes == [Outcome.STALE]
            assert await conn.fetchval("SELECT count(*) FROM channel_updates WHERE timestamp = $1", t1) == 1
    finally:
        await pool.close()


async def _decided_on_top_of_an_open_batch(
    conn: asyncpg.Connection,
    side: asyncpg.Connection,
    cache: StateCache,
    first: list[Incoming],
    second: list[Incoming],
    commit: bool,
) -> tuple[PlannedUpdates, list[Outcome]]:
    """The writer's pipeline by hand: batch 1 written (decided ahead, all of it new), batch 2
    decided on ``side`` while batch 1's transaction is open, batch 1 committed (or rolled back),
    then batch 2 written. Batch 2's decision made ahead, and the outcomes it was written with."""
    planned1 = await plan_updates(side, first, cache)
    try:
        async with conn.transaction():
            assert set(await write_batch(conn, first, cache, planned1)) == {Outcome.STORED}
            planned2 = await plan_updates(side, second, cache, planned1)
            if not commit:
                raise _Rollback
    except _Rollback:
        pass
    else:
        cache.committed()
        planned1.kept = planned1.used
    assert planned1.used
    outcomes = await write_batch(conn, second, cache, planned2)
    cache.committed()
    assert planned2.used is commit
    return planned2, outcomes


async def test_a_decision_made_ahead_holds_on_top_of_the_batch_being_written(database_url: str) -> None:
    """Batch 2 is decided while batch 1's transaction is open: it sees batch 1's rows (a
    re-delivery of one is a duplicate) and is used once batch 1 committed as decided; had batch 1
    rolled back, it is made again."""
    conn = await asyncpg.connect(database_url)
    side = await asyncpg.connect(database_url)
    cache = StateCache()
    scid, t1, t2 = 700_004 << 40, START, START + DAY
    first = [Incoming(decode_gossip(channel_update(scid, 1, ts)), ts * 1_000_000) for ts in (t1, t2)]
    second = [Incoming(decode_gossip(channel_update(scid, 1, t1)), (t1 - 7) * 1_000_000)]
    try:
        for commit in (False, True):
            planned2, outcomes = await _decided_on_top_of_an_open_batch(
                conn, side, cache, first, second, commit
            )
            assert planned2.outcomes == {0: Outcome.DUPLICATE}
            # Rolled back: batch 1 is not stored, so the update of t1 is new again.
            assert outcomes == [Outcome.DUPLICATE if commit else Outcome.STORED]
            if not commit:
                await conn.execute("DELETE FROM channel_updates WHERE scid = $1", scid)
                await conn.execute("DELETE FROM channel_directions WHERE scid = $1", scid)
                await conn.execute("UPDATE writer_state SET writer = 0, batch = batch + 1")
        seen = await conn.fetchval(
            "SELECT extract(epoch FROM seen)::int8 FROM channel_updates WHERE timestamp = $1", t1
        )
        assert seen == t1 - 7  # the re-delivery lowered the row batch 1 wrote
    finally:
        await side.close()
        await conn.close()


def _node_ann(i: int, timestamp: int, alias: bytes) -> Incoming:
    raw = m.with_type(
        m.NODE_ANNOUNCEMENT, ZERO_SIG, m.encode_node_announcement_body(node_id(i), timestamp, alias=alias)
    )
    return Incoming(decode_gossip(raw), 0)


async def test_node_announcements_decided_ahead_hold_on_top_of_the_batch_being_written(
    database_url: str,
) -> None:
    """Batch 2's node announcements are decided while batch 1's transaction is open, on top of
    what batch 1 leaves: a re-delivery of batch 1's announcement is a duplicate that lowers its
    seen, a rival with the same timestamp and a greater raw replaces it (the tie rule), an older
    one is stale. Used once batch 1 committed as decided; had batch 1 rolled back, made again (the
    announcement then new)."""
    conn = await asyncpg.connect(database_url)
    side = await asyncpg.connect(database_url)
    cache = StateCache()
    scid, t1 = 700_005 << 40, START
    node = 41
    try:
        for commit in (False, True):
            await conn.execute("TRUNCATE node_announcements, nodes")
            low, high = sorted(
                (_node_ann(node, t1, b"a"), _node_ann(node, t1, b"b")), key=lambda x: x.message.raw
            )
            first = [
                Incoming(decode_gossip(channel_update(scid, 0, t1)), t1 * 1_000_000),
                low._replace(seen_us=t1 * 1_000_000),
            ]
            second = [
                Incoming(decode_gossip(channel_update(scid, 0, t1 + 60)), (t1 + 60) * 1_000_000),
                low._replace(seen_us=(t1 - 5) * 1_000_000),  # delivered again, earlier
                high._replace(seen_us=(t1 + 60) * 1_000_000),  # the tie's winner
                _node_ann(node, t1 - DAY, b"old")._replace(seen_us=(t1 + 60) * 1_000_000),
            ]
            planned2, outcomes = await _decided_on_top_of_an_open_batch(
                conn, side, cache, first, second, commit
            )
            assert planned2.nodes is not None
            assert planned2.nodes.outcomes == {1: Outcome.DUPLICATE, 2: Outcome.STORED, 3: Outcome.STALE}
            # Rolled back: batch 1 is not stored, so the first of the tie is new again, then replaced.
            expected = Outcome.DUPLICATE if commit else Outcome.STORED
            assert outcomes == [Outcome.STORED, expected, Outcome.STORED, Outcome.STALE]
            rows = await conn.fetch(
                "SELECT a.timestamp, a.raw, extract(epoch FROM a.seen)::int8 AS seen,"
                " n.announcement_id = a.id AS latest"
                " FROM node_announcements a JOIN nodes n USING (node_id) ORDER BY a.timestamp"
            )
            assert [(r["timestamp"], bytes(r["raw"]), r["seen"], r["latest"]) for r in rows] == [
                (t1 - DAY, _node_ann(node, t1 - DAY, b"old").message.raw, t1 + 60, False),
                (t1, high.message.raw, t1 - 5, True),
            ]
            first_seen = await conn.fetchval("SELECT extract(epoch FROM first_seen)::int8 FROM nodes")
            assert first_seen == t1 - 5
            await conn.execute("DELETE FROM channel_updates WHERE scid = $1", scid)
            await conn.execute("DELETE FROM channel_directions WHERE scid = $1", scid)
            await conn.execute("UPDATE writer_state SET writer = 0, batch = batch + 1")
    finally:
        await side.close()
        await conn.close()


async def test_an_early_copy_of_a_stale_decision_is_rolled_back_and_the_batch_written_once(
    database_url: str,
) -> None:
    """A decision made ahead, its rows COPYed early in the writer's transaction; another writer
    committed a batch in between, so under the lock the decision is stale: write_batch raises
    EarlyCopyStale, the transaction rolls back (the early rows with it), and the batch written
    again stores each update once."""
    conn = await asyncpg.connect(database_url)
    side = await asyncpg.connect(database_url)
    ours, theirs = StateCache(), StateCache()
    scid, t1 = 700_006 << 40, START
    batch = [Incoming(decode_gossip(channel_update(scid, 0, t1 + k * 60)), (t1 + k * 60) * 1_000_000)
             for k in range(3)]  # fmt: skip
    foreign = [Incoming(decode_gossip(channel_update(scid, 1, t1)), t1 * 1_000_000)]
    try:
        planned = await plan_updates(side, batch, ours)
        await write_batch(conn, foreign, theirs)  # commits: the stamp moves
        theirs.committed()

        async def early_then_write() -> None:
            async with conn.transaction():
                await copy_early(conn, planned)
                await write_batch(conn, batch, ours, planned)

        with pytest.raises(EarlyCopyStale):
            await early_then_write()
        assert not planned.used
        assert await conn.fetchval("SELECT count(*) FROM channel_updates WHERE scid = $1", scid) == 1
        async with conn.transaction():
            outcomes = await write_batch(conn, batch, ours)
        ours.committed()
        assert outcomes == [Outcome.STORED] * 3
        counts = await conn.fetch(
            "SELECT direction, count(*) AS n FROM channel_updates WHERE scid = $1 GROUP BY 1 ORDER BY 1", scid
        )
        assert [(r["direction"], r["n"]) for r in counts] == [(0, 3), (1, 1)]
        latest = await conn.fetchval(
            "SELECT timestamp FROM channel_directions WHERE scid = $1 AND direction = 0", scid
        )
        assert latest == t1 + 120
    finally:
        await side.close()
        await conn.close()


async def test_id_reservations_never_overlap(database_url: str) -> None:
    """Writers deciding ahead reserve channel_updates ids outside the writer lock, concurrently:
    every reservation is one range of its own. (Without IDS_LOCK, nextval and setval of two
    sessions interleave: this many reservations on eight connections overlapped.)"""
    pool = await asyncpg.create_pool(database_url, min_size=8, max_size=8)
    assert pool is not None
    rng = random.Random(7)

    async def reserve(n: int) -> range:
        async with pool.acquire() as conn:
            last = await conn.fetchval(RESERVE_IDS_SQL, n, IDS_LOCK)
        return range(last - n + 1, last + 1)

    try:
        ranges = await asyncio.gather(*(reserve(rng.randint(1, 5000)) for _ in range(3000)))
        ids = [i for r in ranges for i in r]
        assert len(ids) == len(set(ids)) == sum(len(r) for r in ranges)
    finally:
        await pool.close()


@pytest.mark.parametrize("excess", [b"", b"\x00\x01\x02", b"\x00" * 9])
async def test_updates_of_any_size_are_stored_byte_exact(database_url: str, excess: bytes) -> None:
    """The writer reads a batch's fields column-wise when every update is CHANNEL_UPDATE_SIZE bytes
    and one by one otherwise: both store each raw message as received, with its own fields."""
    scid, t1 = 700_003 << 40, START
    raws = [channel_update(scid + k, k % 2, t1 + k, fee_ppm=k) for k in range(6)]
    raws[3] += excess  # (signed extension bytes: kept, the decoder ignores them)
    conn = await asyncpg.connect(database_url)
    try:
        batch = [Incoming(decode_gossip(raw), (t1 + 1) * 1_000_000) for raw in raws]
        outcomes = await write_batch(conn, batch, StateCache())
        assert [o.value for o in outcomes] == ["stored"] * 6
        rows = await conn.fetch(
            "SELECT raw, scid, direction, timestamp, fee_proportional_millionths FROM channel_updates"
            " WHERE scid >= $1 AND scid < $2 ORDER BY id",
            scid,
            scid + 6,
        )
        assert [bytes(r["raw"]) for r in rows] == raws
        assert [
            (r["scid"], r["direction"], r["timestamp"], r["fee_proportional_millionths"]) for r in rows
        ] == [(scid + k, k % 2, t1 + k, k) for k in range(6)]
    finally:
        await conn.close()
