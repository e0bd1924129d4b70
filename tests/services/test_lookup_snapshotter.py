"""Lookup and snapshotter as real processes over real gRPC, on a real PostgreSQL.

* ComputeDelta answers are byte-identical to the RGS engine run on the same history in memory;
  bad input is INVALID_ARGUMENT, a short deadline DEADLINE_EXCEEDED, and nothing is served before
  the first full sync (FAILED_PRECONDITION naming the peers still syncing).
* The snapshotter's generations: any client timestamp maps to a blob that LDK's client applies on
  top of the state that client had, ending with the full snapshot's graph; regenerating while
  readers fetch in a loop fails no read; a generator killed mid-generation leaves the previous
  generation served; with two snapshotters, the one waiting for the lock publishes the generation
  the killed one did not finish; a generation asked for while lookup restarts waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from lnsync import rpc
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.ladder import scopes
from lnsync.rgs.model import DeltaParams
from lnsync.rgs.policy import DYNAMIC_APPLY_LAG
from lnsync.v1 import (
    lookup_pb2,
    lookup_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from tests.conftest import free_port
from tests.ldk import LdkRgsClient
from tests.rgs.histories import DAY, START
from tests.stack import Stack, load_history, regenerate, report_synced, until

pytestmark = pytest.mark.slow
INTERVAL = 3 * 3600


async def compute(stub: lookup_pb2_grpc.LookupStub, **fields: int) -> tuple[lookup_pb2.BlobInfo, bytes]:
    info, data = await rpc.join_chunks(
        stub.ComputeDelta(lookup_pb2.ComputeDeltaRequest(**fields), timeout=60)
    )
    return info, data


@pytest.fixture
async def stack(database_url: str, short_tmp: Path):  # type: ignore[no-untyped-def]
    s = Stack(
        database_url,
        short_tmp,
        extra_env={"LNSYNC_SNAPSHOTTER__INTERVAL": str(INTERVAL), "LNSYNC_INGEST_LAG": "1"},
    )
    yield s
    s.close()


async def test_compute_delta_matches_the_engine_and_checks_its_input(stack: Stack, database_url: str) -> None:
    history = await load_history(database_url, seed=11, days=12)
    await stack.start_healthy("persistence")
    await stack.start_healthy("lookup")
    async with rpc.channel(stack.target("lookup")) as ch:
        lookup = lookup_pb2_grpc.LookupStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await compute(lookup, last_sync_timestamp=0, version=2)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not complete" in (err.value.details() or "")
        await report_synced(stack)
        await asyncio.sleep(1.5)  # lookup caches a "not synced" answer for a second
        rng = random.Random(3)
        for _ in range(6):
            R = START + rng.randrange(2 * DAY, 12 * DAY)
            T = rng.choice([0, R - 3600, R - DAY, R - 4 * DAY])
            version = rng.choice([1, 2])
            info, data = await compute(lookup, last_sync_timestamp=T, version=version, reference_time=R)
            expected = encode(
                compute_delta(history.delta_input(T, R), DeltaParams(apply_lag=DYNAMIC_APPLY_LAG)), version
            )
            assert data == expected
            assert (info.timestamp, info.size, info.reference_time) == (R, len(data), R)
        # A client more than 14 days behind gets the full graph (it has pruned all it had).
        R = START + 12 * DAY
        _, old = await compute(lookup, last_sync_timestamp=R - 15 * DAY + 1, version=2, reference_time=R)
        _, full = await compute(lookup, last_sync_timestamp=0, version=2, reference_time=R)
        assert old == full
        for bad in ({"version": 3}, {"version": 2, "last_sync_timestamp": 4_000_000_000}):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await compute(lookup, **bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc.join_chunks(
                lookup.ComputeDelta(
                    lookup_pb2.ComputeDeltaRequest(
                        last_sync_timestamp=1, version=2, reference_time=START + 3 * DAY + 7
                    ),
                    timeout=0.001,
                )
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        summary = await lookup.GraphSummary(lookup_pb2.GraphSummaryRequest(), timeout=10)
        assert summary.nodes > 0
        conn = await asyncpg.connect(database_url)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM channel_updates")
        finally:
            await conn.close()
        assert summary.channel_updates_stored == stored > 0  # small tables are counted exactly


async def get_snapshot(stub: snapshots_pb2_grpc.SnapshotsStub, T: int, version: int) -> tuple[object, bytes]:
    return await rpc.join_chunks(
        stub.GetSnapshot(snapshots_pb2.GetSnapshotRequest(timestamp=T, version=version), timeout=30)
    )


async def test_snapshots_serve_every_client_timestamp(
    stack: Stack, database_url: str, ldk_client: LdkRgsClient
) -> None:
    history = await load_history(database_url, seed=12, days=20)
    await stack.start_healthy("persistence")
    await report_synced(stack)
    await stack.start_healthy("lookup")
    await stack.start_healthy("snapshotter")
    R = START + 18 * DAY
    R -= R % INTERVAL
    async with rpc.channel(stack.target("snapshotter")) as ch:
        snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
        await regenerate(stack, R)
        listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
        assert listing.reference_time == R
        assert len(listing.snapshots) == 2 * (len(scopes(INTERVAL)) + 2)
        _, full = await get_snapshot(snaps, 0, 2)
        with ldk_client.new_graph("bitcoin") as reference:
            assert reference.apply(full, now=R).accepted
            expected = reference.dump()
        rng = random.Random(5)
        for _ in range(4):
            # A client that synced at T (on the grid) held the full snapshot computed at T.
            T = R - rng.randrange(1, 30) * INTERVAL
            version = rng.choice([1, 2])
            before = encode(compute_delta(history.delta_input(0, T), DeltaParams()), version)
            _, delta = await get_snapshot(snaps, T, version)
            with ldk_client.new_graph("bitcoin") as graph:
                assert graph.apply(before, now=T).accepted
                result = graph.apply(delta, now=R)
                assert result.accepted and result.timestamp == R, result.error_message
                got = graph.dump()
            live = {s for s, c in expected.channels.items() if c.one_to_two and c.two_to_one}
            for scid in live:
                mine, want = got.channels[scid], expected.channels[scid]
                assert (mine.one_to_two, mine.two_to_one) != (None, None)
                for a, b in ((mine.one_to_two, want.one_to_two), (mine.two_to_one, want.two_to_one)):
                    assert a is not None and b is not None
                    assert (
                        a.fee_base_msat,
                        a.fee_proportional_millionths,
                        a.cltv_expiry_delta,
                        a.enabled,
                    ) == (
                        b.fee_base_msat,
                        b.fee_proportional_millionths,
                        b.cltv_expiry_delta,
                        b.enabled,
                    )
        _, empty = await get_snapshot(snaps, R, 2)
        assert len(empty) == 53
        # Every listed snapshot can be fetched by what the listing says of it (kind and scope).
        kinds = {snapshots_pb2.SNAPSHOT_KIND_FULL, snapshots_pb2.SNAPSHOT_KIND_NOTHING_NEW}
        assert {s.kind for s in listing.snapshots} == {*kinds, snapshots_pb2.SNAPSHOT_KIND_SCOPED}
        for listed in listing.snapshots:
            request = snapshots_pb2.GetSnapshotRequest(
                version=listed.version, kind=listed.kind, scope_seconds=listed.scope_seconds
            )
            info, data = await rpc.join_chunks(snaps.GetSnapshot(request, timeout=30))
            assert (info.kind, info.scope_seconds) == (listed.kind, listed.scope_seconds)
            assert hashlib.sha256(data).digest() == listed.sha256
            assert info.blob.data_generation == 0  # deprecated (it repeated reference_time): unset


async def test_regeneration_never_fails_a_reader_and_a_crash_keeps_the_old_generation(
    stack: Stack, database_url: str
) -> None:
    await load_history(database_url, seed=13, days=15)
    await stack.start_healthy("persistence")
    await report_synced(stack)
    await stack.start_healthy("lookup")
    snapshotter = await stack.start_healthy("snapshotter")
    R1 = START + 10 * DAY
    R1 -= R1 % INTERVAL
    async with rpc.channel(stack.target("snapshotter")) as ch:
        snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
        await regenerate(stack, R1)
        failures = 0
        reads = 0
        stop = asyncio.Event()

        async def reader() -> None:
            nonlocal failures, reads
            while not stop.is_set():
                try:
                    info, data = await get_snapshot(snaps, R1 - DAY, 2)
                    assert len(data) == info.size  # type: ignore[attr-defined]
                    reads += 1
                except (grpc.aio.AioRpcError, AssertionError):
                    failures += 1

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        held = (await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)).generation
        # A long poll (what the gateway sends) answers at once when the generation is not the one
        # named, after its wait when nothing changes, and as soon as the new generation is out.
        quick = await snaps.ListSnapshots(
            snapshots_pb2.ListSnapshotsRequest(unless_generation=held + 100, wait_seconds=60), timeout=5
        )
        assert quick.generation == held
        started = time.monotonic()
        idle = await snaps.ListSnapshots(
            snapshots_pb2.ListSnapshotsRequest(unless_generation=held, wait_seconds=1), timeout=10
        )
        assert idle.generation == held and time.monotonic() - started >= 0.9
        polling = asyncio.ensure_future(
            snaps.ListSnapshots(
                snapshots_pb2.ListSnapshotsRequest(unless_generation=held, wait_seconds=60), timeout=300
            )
        )
        await snaps.Regenerate(snapshots_pb2.RegenerateRequest(reference_time=R1 + INTERVAL), timeout=300)
        answered = await asyncio.wait_for(polling, 5)
        assert answered.generation != held and answered.reference_time == R1 + INTERVAL
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*readers)
        assert failures == 0 and reads > 10
        listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
        assert listing.reference_time == R1 + INTERVAL
    # A generator killed in the middle of a generation leaves the previous generation in place.
    regen = asyncio.create_task(regenerate(stack, R1 + 2 * INTERVAL))
    conn = await asyncpg.connect(database_url)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not await conn.fetchval(
            "SELECT count(*) FROM snapshot_blobs b JOIN snapshot_generations g ON g.id = b.generation_id "
            "WHERE g.reference_time = $1 AND g.published_at IS NULL",
            R1 + 2 * INTERVAL,
        ):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        snapshotter.kill()
        regen.cancel()
        await asyncio.gather(regen, return_exceptions=True)
        current = await conn.fetchval(
            "SELECT g.reference_time FROM snapshot_current c "
            "JOIN snapshot_generations g ON g.id = c.generation_id"
        )
        assert current == R1 + INTERVAL
    finally:
        await conn.close()
    await stack.start_healthy("snapshotter")
    async with rpc.channel(stack.target("snapshotter")) as ch:
        snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
        # Served at once after the restart (the previous generation, or a newer one it made since).
        _, data = await get_snapshot(snaps, 0, 1)
        assert data[:4] == b"LDK\x01"


async def test_a_second_snapshotter_takes_over_a_generation_the_first_did_not_finish(
    stack: Stack, database_url: str
) -> None:
    await load_history(database_url, seed=17, days=15)
    await stack.start_healthy("persistence")
    await report_synced(stack)
    await stack.start_healthy("lookup")
    first = await stack.start_healthy("snapshotter")
    second_target = f"127.0.0.1:{free_port()}"
    second = stack.start("snapshotter", env={"LNSYNC_SNAPSHOTTER__LISTEN": second_target})

    async def second_healthy() -> bool:
        return await rpc.check_health(second_target, timeout=1)

    await until(second_healthy, 60, "the second snapshotter healthy", interval=0.1)
    R = START + 10 * DAY
    R -= R % INTERVAL
    await regenerate(stack, R - INTERVAL)  # both serve a generation before the one asked for
    request = snapshots_pb2.RegenerateRequest(reference_time=R)
    async with rpc.channel(stack.target("snapshotter")) as ch1, rpc.channel(second_target) as ch2:
        # Both are asked for R at once, as their timers ask every interval: one generates, the
        # other waits for the lock. Whichever generates is killed before it publishes.
        async def ask(ch: grpc.aio.Channel) -> snapshots_pb2.RegenerateResponse:
            return await snapshots_pb2_grpc.SnapshotsStub(ch).Regenerate(request, timeout=300)

        calls = [(p, asyncio.create_task(ask(ch))) for p, ch in ((first, ch1), (second, ch2))]

        async def waiting() -> int:
            """1 or 2: which of the two logged that it waits for the other's generation (0: none yet)."""
            return next(
                (i for i, (p, _) in enumerate(calls, 1) if "waiting for its generation" in p.log()), 0
            )

        w = await until(waiting, 60, "a snapshotter waiting for the other's generation", interval=0.05)
        waiter, waiter_call = calls[w - 1]
        generator, generator_call = calls[2 - w]
        generator.kill()
        generator_call.cancel()
        resp = await waiter_call
    assert resp.reference_time == R
    conn = await asyncpg.connect(database_url)
    try:
        published = await conn.fetchval(
            "SELECT g.reference_time FROM snapshot_current c "
            "JOIN snapshot_generations g ON g.id = c.generation_id"
        )
    finally:
        await conn.close()
    assert published == R
    assert "ended without publishing; generating R=" in waiter.log()


async def test_a_generation_outlives_a_lookup_restart(stack: Stack, database_url: str) -> None:
    """Every lookup pod replaced at once (a rollout) while a generation is asked for: the
    snapshotter waits for lookup to be back (``LOOKUP_READY_WAIT``) instead of failing it."""
    await load_history(database_url, seed=19, days=15)
    await stack.start_healthy("persistence")
    await report_synced(stack)
    lookup = await stack.start_healthy("lookup")
    await stack.start_healthy("snapshotter")
    R = START + 10 * DAY
    R -= R % INTERVAL
    await regenerate(stack, R - INTERVAL)
    lookup.kill()
    asked = asyncio.create_task(regenerate(stack, R))
    await asyncio.sleep(4)  # the generation has met the missing lookup
    assert not asked.done()
    await stack.start_healthy("lookup")
    await asyncio.wait_for(asked, 120)
    async with rpc.channel(stack.target("snapshotter")) as ch:
        listing = await snapshots_pb2_grpc.SnapshotsStub(ch).ListSnapshots(
            snapshots_pb2.ListSnapshotsRequest(), timeout=10
        )
    assert listing.reference_time == R
