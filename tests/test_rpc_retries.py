"""Client channels retry reads on another replica, never writes.

Two real gRPC servers on sockets stand for two replicas behind one name; one of them is going away
and answers every call UNAVAILABLE (what a pod does in a rollout once it stops serving). A channel
from :func:`lnsync.rpc.channel` spreads calls over both addresses: every read must still succeed
(gRPC retried it on the other one), while a write that hit the departing replica fails back to
its caller, who alone knows whether sending it again is safe.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from lnsync import rpc
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc, persistence_pb2, persistence_pb2_grpc
from tests.conftest import free_port, free_ports

CALLS = 24


class Replica(lookup_pb2_grpc.LookupServicer, persistence_pb2_grpc.PersistenceServicer):  # type: ignore[misc]
    def __init__(self, leaving: bool) -> None:
        self.leaving = leaving
        self.calls = 0

    async def _answer(self, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        if self.leaving:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")

    async def GraphSummary(
        self, request: lookup_pb2.GraphSummaryRequest, context: grpc.aio.ServicerContext
    ) -> lookup_pb2.GraphSummaryResponse:
        await self._answer(context)
        return lookup_pb2.GraphSummaryResponse(channels=7)

    async def ReportSyncComplete(
        self, request: persistence_pb2.ReportSyncCompleteRequest, context: grpc.aio.ServicerContext
    ) -> persistence_pb2.ReportSyncCompleteResponse:
        await self._answer(context)
        return persistence_pb2.ReportSyncCompleteResponse(fully_synced=True)


async def start(replica: Replica) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    lookup_pb2_grpc.add_LookupServicer_to_server(replica, server)
    persistence_pb2_grpc.add_PersistenceServicer_to_server(replica, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


@pytest.mark.timeout(60)
async def test_reads_are_retried_on_another_replica_and_writes_are_not() -> None:
    staying, leaving = Replica(leaving=False), Replica(leaving=True)
    servers = [await start(staying), await start(leaving)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in servers)
    try:
        async with rpc.channel(target) as channel:
            lookup = lookup_pb2_grpc.LookupStub(channel)
            for _ in range(CALLS):
                answer = await lookup.GraphSummary(lookup_pb2.GraphSummaryRequest(), timeout=10)
                assert answer.channels == 7
            assert leaving.calls > 0, "round robin never picked the departing replica"
            assert staying.calls >= CALLS

            persistence = persistence_pb2_grpc.PersistenceStub(channel)
            codes = []
            for _ in range(CALLS):
                try:
                    request = persistence_pb2.ReportSyncCompleteRequest()
                    await persistence.ReportSyncComplete(request, timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
            assert grpc.StatusCode.UNAVAILABLE in codes, "a write was retried by the channel"
            assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    finally:
        for server, _ in servers:
            await server.stop(None)


class Streaming(lookup_pb2_grpc.LookupServicer):  # type: ignore[misc]
    """Answers ComputeDelta after a short computation, as lookup does."""

    async def ComputeDelta(
        self, request: lookup_pb2.ComputeDeltaRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[lookup_pb2.BlobChunk]:
        await asyncio.sleep(0.02)
        yield lookup_pb2.BlobChunk(info=lookup_pb2.BlobInfo(size=3), data=b"LDK")


async def serve_streaming(port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=rpc._SERVER_OPTIONS)
    lookup_pb2_grpc.add_LookupServicer_to_server(Streaming(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@pytest.mark.timeout(90)
async def test_reads_in_flight_while_replicas_stop_gracefully_all_succeed() -> None:
    """A replica stopping with a grace period (run_service on SIGTERM) can end a call that raced
    with its shutdown as CANCELLED rather than UNAVAILABLE (seen in cluster rollouts: 1 request in
    thousands); reads retry on that too. Replicas stop and come back in turn under 8 callers."""
    first = free_ports(2)
    ports = [first, first + 1]
    servers = [await serve_streaming(port) for port in ports]
    failures: Counter[str] = Counter()
    done = 0
    stop = asyncio.Event()

    async def caller(stub: lookup_pb2_grpc.LookupStub) -> None:
        nonlocal done
        while not stop.is_set():
            try:
                _, data = await rpc.join_chunks(
                    stub.ComputeDelta(lookup_pb2.ComputeDeltaRequest(version=2), timeout=10)
                )
                assert data == b"LDK"
                done += 1
            except grpc.aio.AioRpcError as exc:
                failures[f"{exc.code().name} {exc.details()}"] += 1

    async def churn() -> None:
        for i in range(6):
            await asyncio.sleep(1.5)
            k = i % 2
            await servers[k].stop(5)
            await asyncio.sleep(0.5)
            servers[k] = await serve_streaming(ports[k])
        stop.set()

    try:
        async with rpc.channel("ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)) as channel:
            stub = lookup_pb2_grpc.LookupStub(channel)
            await asyncio.gather(churn(), *(caller(stub) for _ in range(8)))
    finally:
        for server in servers:
            await server.stop(None)
    assert done > 500
    assert not failures, f"{dict(failures)} of {done + sum(failures.values())} reads failed"
