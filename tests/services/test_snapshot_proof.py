"""The self-verifying publisher (issue 26) with real processes on a real PostgreSQL: a store
corrupted behind the engine's back (a fee changed in channel_directions, a channel's directions
deleted) makes the next generation fail its proof: Regenerate says which channel differs, it is not
published, the previous generation keeps serving, and the listing reports the failure; once the
store is right again the next generation passes and the report clears. Lookup proves a sample of
dynamic deltas after answering them (here every one) and logs the first difference."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from lnsync import rpc
from lnsync.gossip.scid import scid_str
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from tests.gateway.conftest import get, wait_up
from tests.rgs.histories import DAY, START
from tests.stack import Stack, load_history, regenerate, report_synced, until

pytestmark = pytest.mark.slow
INTERVAL = 3 * 3600


@pytest.fixture
async def stack(database_url: str, short_tmp: Path):  # type: ignore[no-untyped-def]
    s = Stack(
        database_url,
        short_tmp,
        extra_env={"LNSYNC_SNAPSHOTTER__INTERVAL": str(INTERVAL), "LNSYNC_INGEST_LAG": "1"},
    )
    yield s
    s.close()


async def _regenerate_fails(snaps: snapshots_pb2_grpc.SnapshotsStub, R: int) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await snaps.Regenerate(
            snapshots_pb2.RegenerateRequest(reference_time=R, replace_newer=True), timeout=300
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    return err.value.details() or ""


async def test_a_corrupted_store_fails_the_proof_and_the_previous_generation_keeps_serving(
    stack: Stack, database_url: str
) -> None:
    history = await load_history(database_url, seed=26, days=20)
    await stack.start_healthy("persistence")
    await report_synced(stack)
    await stack.start_healthy("lookup")
    await stack.start_healthy("snapshotter")
    R1 = START + 16 * DAY
    R1 -= R1 % INTERVAL
    # Lookup keeps the graph it read for an R: every attempt here is at a new R.
    R2, R3, R4 = (R1 + i * INTERVAL for i in (1, 2, 3))
    first = await regenerate(stack, R1)  # a correct store passes
    conn = await asyncpg.connect(database_url)
    async with rpc.channel(stack.target("snapshotter")) as ch:
        snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
        try:
            # A direction lookup reads from channel_directions at R2 (its latest seen before R2).
            live = history.live_graph(R2)
            scid, direction, fee = next(
                (r["scid"], r["direction"], r["fee_base_msat"])
                for r in await conn.fetch(
                    "SELECT scid, direction, fee_base_msat FROM channel_directions "
                    "WHERE seen < to_timestamp($1) AND alive_since < to_timestamp($1) "
                    "ORDER BY scid, direction",
                    R2,
                )
                if r["scid"] in live
            )
            await conn.execute(
                "UPDATE channel_directions SET fee_base_msat = fee_base_msat + 1 "
                "WHERE scid = $1 AND direction = $2",
                scid,
                direction,
            )
            problem = await _regenerate_fails(snaps, R2)
            field = f"direction {direction} fee_base_msat {fee} expected, {fee + 1} held"
            assert f"full: channel {scid_str(scid)}: {field}" in problem
            listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
            assert (listing.generation, listing.reference_time) == (first, R1)
            # The gateway still serves generation `first`, says why in /readyz (degraded, still
            # ready: the previous generation is proven) and on the status page's data.
            stack.start("gateway")
            base, admin = f"http://{stack.target('gateway')}", f"http://{stack.target('gateway-admin')}"
            await wait_up(base)

            async def readyz() -> dict[str, Any] | None:
                status, _, body = await get(base + "/readyz")
                ready = json.loads(body)
                return ready if status == 200 and "proof_failure" in ready else None

            ready = await until(readyz, 30, "the gateway to report the failed proof")
            assert "snapshot_proof" in ready["degraded"] and scid_str(scid) in ready["proof_failure"]
            facts = json.loads((await get(admin + "/api/status"))[2])
            assert facts["snapshots"]["generation"] == first
            assert facts["snapshots"]["proof_failure"]["reference_time"] == R2
            assert (
                listing.proof_failure.reference_time == R2 and scid_str(scid) in listing.proof_failure.problem
            )
            info, _ = await rpc.join_chunks(
                snaps.GetSnapshot(snapshots_pb2.GetSnapshotRequest(timestamp=0, version=2), timeout=30)
            )
            assert (info.generation, info.reference_time) == (first, R1)

            # Put it right: the next generation passes and the report clears.
            await conn.execute(
                "UPDATE channel_directions SET fee_base_msat = $3 WHERE scid = $1 AND direction = $2",
                scid,
                direction,
                fee,
            )
            second = (
                await snaps.Regenerate(
                    snapshots_pb2.RegenerateRequest(reference_time=R3, replace_newer=True), timeout=300
                )
            ).generation
            listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
            assert listing.generation == second > first and not listing.HasField("proof_failure")

            # A channel deleted from the maintained state: the proof misses it in the blobs.
            await conn.execute("DELETE FROM channel_directions WHERE scid = $1", scid)
            problem = await _regenerate_fails(snaps, R4)
            assert f"channel {scid_str(scid)}: missing from the client's graph" in problem
            listing = await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
            assert listing.generation == second and listing.proof_failure.reference_time == R4
        finally:
            await conn.close()


async def test_lookup_proves_a_sample_of_dynamic_deltas(database_url: str, short_tmp: Path) -> None:
    now = int(time.time())
    history = await load_history(database_url, seed=27, days=20, start=now - 20 * DAY)
    stack = Stack(
        database_url,
        short_tmp,
        extra_env={
            "LNSYNC_INGEST_LAG": "1",
            "LNSYNC_LOOKUP__PROOF_SAMPLE": "1",
            "LNSYNC_LOOKUP__TIMESTAMP_GRANULARITY": "1",  # a new R (and graph read) every second
        },
    )
    conn = await asyncpg.connect(database_url)
    try:
        await stack.start_healthy("persistence")
        await report_synced(stack)
        lookup_process = await stack.start_healthy("lookup")
        async with rpc.channel(stack.target("lookup")) as ch:
            lookup = lookup_pb2_grpc.LookupStub(ch)

            async def dynamic(T: int) -> None:
                request = lookup_pb2.ComputeDeltaRequest(last_sync_timestamp=T, version=2)
                await asyncio.sleep(1.1)  # a new R: the proof reads the store again
                await rpc.join_chunks(lookup.ComputeDelta(request, timeout=60))

            async def logged(text: str) -> bool:
                return text in lookup_process.log()

            await dynamic(now - 2 * DAY)
            await until(lambda: logged("proven in"), 30, "a dynamic delta proven")
            R = int(time.time())
            live = history.live_graph(R)
            scid = next(
                r["scid"]
                for r in await conn.fetch(
                    "SELECT scid FROM channel_directions WHERE seen < to_timestamp($1) "
                    "AND alive_since < to_timestamp($1) AND direction = 0 ORDER BY scid",
                    R - 2 * DAY,
                )
                if r["scid"] in live
            )
            await conn.execute(
                "UPDATE channel_directions SET fee_base_msat = fee_base_msat + 1 "
                "WHERE scid = $1 AND direction = 0",
                scid,
            )
            # A client that synced before the corruption: its delta lacks the change the full has,
            # or (synced from scratch) the full has what the records do not.
            await dynamic(now - DAY)
            await until(lambda: logged("failed its proof"), 30, "a failed proof logged")
            assert f"channel {scid_str(scid)}" in lookup_process.log()
    finally:
        await conn.close()
        stack.close()
