"""A dynamic delta outlives a moment with no lookup reachable, and a lookup that stays away is a 503.

In a rollout the gateway's channel can lose every lookup pod it knows before it re-resolves the
name. The gateway then waits a bounded time for a lookup to be reachable instead of answering 503
at once. A real gRPC server on a socket stands for lookup (it states its serving policy and answers
ComputeDelta with a small blob); it is stopped after a first answer and, in one test, started again
while a request waits.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from lnsync import rpc
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from services.gateway.deltas import READY_WAIT, DynamicDeltas
from services.gateway.errors import HttpError
from services.gateway.shared import SharedFacts
from tests.conftest import free_port

BODY = b"LDK\x02" + b"\x00" * 60


class Lookup(lookup_pb2_grpc.LookupServicer):  # type: ignore[misc]
    gate_closed = False  # refuse deltas as lookup does before the first full sync

    async def GetServingPolicy(self, request, context):  # type: ignore[no-untyped-def]
        return lookup_pb2.ServingPolicy(ingest_lag=60, timestamp_granularity=60, versions=[1, 2])

    async def ComputeDelta(self, request, context):  # type: ignore[no-untyped-def]
        if self.gate_closed:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the first full graph sync is not complete"
            )
        info = lookup_pb2.BlobInfo(version=2, timestamp=request.reference_time, size=len(BODY))
        yield lookup_pb2.BlobChunk(data=BODY, info=info)


async def start_lookup(port: int, lookup: Lookup | None = None) -> grpc.aio.Server:
    server = grpc.aio.server()
    lookup_pb2_grpc.add_LookupServicer_to_server(lookup or Lookup(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def deltas(remote: rpc.Remote, shared_folder: Path | None = None) -> DynamicDeltas:
    return DynamicDeltas(remote, max_concurrent=4, cache=(60, 60, 0, 0), shared=SharedFacts(shared_folder))


async def answered_then_gone(port: int, remote: rpc.Remote) -> DynamicDeltas:
    """Deltas that got a first answer (and lookup's serving policy) from a lookup now stopped."""
    cache = deltas(remote)
    server = await start_lookup(port)
    assert (await cache.get(int(time.time()) - 7200, 2)).body == BODY
    await server.stop(None)
    return cache


@pytest.mark.timeout(60)
async def test_a_lookup_back_within_the_wait_answers_the_request() -> None:
    port = free_port()
    remote = rpc.Remote(f"127.0.0.1:{port}")
    try:
        cache = await answered_then_gone(port, remote)
        asking = asyncio.create_task(cache.get(int(time.time()) - 3600, 2))
        await asyncio.sleep(2.0)  # longer than the channel's own retries of UNAVAILABLE
        assert not asking.done()
        server = await start_lookup(port)
        try:
            blob = await asyncio.wait_for(asking, READY_WAIT + 5)
        finally:
            await server.stop(None)
    finally:
        await remote.close()
    assert blob.body == BODY


@pytest.mark.timeout(60)
async def test_a_lookup_that_stays_away_is_a_503_within_the_wait() -> None:
    port = free_port()
    remote = rpc.Remote(f"127.0.0.1:{port}")
    try:
        cache = await answered_then_gone(port, remote)
        started = time.monotonic()
        with pytest.raises(HttpError) as refused:
            await cache.get(int(time.time()) - 3600, 2)
    finally:
        await remote.close()
    assert refused.value.status == 503
    assert time.monotonic() - started < READY_WAIT + 5


@pytest.mark.timeout(60)
async def test_every_worker_knows_the_gate_one_of_them_met(tmp_path: Path) -> None:
    """Two workers (two DynamicDeltas sharing a folder, as the gateway's worker processes do): the
    refusal one of them meets closes the gate for both, and an answer to either opens it again (a
    readiness probe reaches either worker)."""
    port = free_port()
    lookup = Lookup()
    server = await start_lookup(port, lookup)
    remotes = [rpc.Remote(f"127.0.0.1:{port}") for _ in range(2)]
    try:
        first, second = (deltas(r, tmp_path) for r in remotes)
        alone = deltas(remotes[0])  # a worker with no folder to share keeps its own
        lookup.gate_closed = True
        before = time.time()
        with pytest.raises(HttpError) as refused:
            await first.get(int(time.time()) - 7200, 2)
        assert refused.value.status == 503
        closed_at = second.gate_closed_at()
        assert closed_at is not None and before <= closed_at <= time.time()
        assert alone.gate_closed_at() is None
        lookup.gate_closed = False
        assert (await second.get(int(time.time()) - 7200, 2)).body == BODY
        assert first.gate_closed_at() is None and second.gate_closed_at() is None
    finally:
        for remote in remotes:
            await remote.close()
        await server.stop(None)
