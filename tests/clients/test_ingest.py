"""IngestClient on its own terms: a bounded window that pushes back, and patience while
persistence is away."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from lnsync.clients.ingest import IngestClient, IngestRejected
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from tests.conftest import free_port
from tests.persistence.conftest import channel_update, start_persistence

pytestmark = pytest.mark.timeout(60)


async def test_send_waits_on_a_full_window_and_everything_lands_once_persistence_starts(
    database_url: str,
) -> None:
    port = free_port()
    updates = [channel_update((600_000 + i) << 40, 0, 1_770_000_000) for i in range(25)]
    running = None
    try:
        async with IngestClient(f"127.0.0.1:{port}", "02" * 33, window=10, backoff_max=0.3) as client:
            for raw in updates[:10]:
                await client.send(raw)  # room in the window: returns at once, nothing is listening
            blocked = asyncio.create_task(client.send(updates[10]))
            await asyncio.sleep(0.5)
            assert not blocked.done() and not client.connected
            assert client.counters.sent == 10 and client.counters.unacked == 10
            with pytest.raises(TimeoutError):
                await client.flush(timeout=0.2)

            running = await start_persistence(database_url, port=port)
            assert await blocked == 11
            for raw in updates[11:]:
                await client.send(raw)
            await client.flush(timeout=20)
            assert client.counters.stored == 25 and client.counters.unacked == 0
    finally:
        if running is not None:
            await running.stop()


async def test_a_stream_persistence_refuses_fails_fast_instead_of_retrying(persistence) -> None:
    client = IngestClient(persistence.target, "", backoff_max=0.1)  # an empty peer id is refused
    await client.start()
    try:
        await client.send(channel_update(600_000 << 40, 0, 1_770_000_000))
        with pytest.raises(IngestRejected, match="INVALID_ARGUMENT"):
            await client.flush(timeout=10)
        with pytest.raises(IngestRejected):
            await client.send(channel_update(600_001 << 40, 0, 1_770_000_000))
        # No retry loop: one attempt, or two when gRPC core reported the first abort as INTERNAL
        # (it does, rarely, for a stream aborted while the client is still sending; INTERNAL is
        # retryable, and the retry then gets the real refusal).
        assert client.counters.streams in (1, 2)
        assert client.counters.unacked == 1
    finally:
        await client.close()


class _AbortingPersistence(persistence_pb2_grpc.PersistenceServicer):
    """A scripted ``Persistence.Ingest`` for fault injection, not a stand-in for the service: the
    first ``aborts`` streams are aborted (UNAVAILABLE) after a request or two, while the client is
    still writing, the way a killed or restarting persistence ends them; later streams acknowledge
    every request. Only a scripted server can end streams at exactly that moment, many times."""

    def __init__(self, aborts: int) -> None:
        self.aborts = aborts
        self.streams = 0
        self.received: set[int] = set()

    async def Ingest(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        self.streams += 1
        doomed = self.streams <= self.aborts
        requests = 0
        async for request in request_iterator:
            if request.HasField("header"):
                continue
            requests += 1
            if doomed and requests >= 1 + self.streams % 2:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted abort")
            self.received.update(msg.seq for msg in request.messages)
            if not doomed:
                last = request.messages[-1].seq
                yield persistence_pb2.IngestAck(acked_seq=last, stored=len(request.messages))


async def test_streams_ended_while_the_client_writes_never_stop_the_client() -> None:
    """A stream can finish between two writes; the next write then raises InvalidStateError
    rather than AioRpcError. That must count as one more failed stream (retried), not end the
    client's task, which would leave every later message unsent and ``flush`` waiting forever."""
    servicer = _AbortingPersistence(aborts=40)
    server = grpc.aio.server()
    persistence_pb2_grpc.add_PersistenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    updates = [channel_update((600_000 + i) << 40, 0, 1_770_000_000) for i in range(3000)]
    try:
        client = IngestClient(
            f"127.0.0.1:{port}", "02" * 33, window=3000, max_request_messages=5, backoff_min=0.001,
            backoff_max=0.01,
        )  # fmt: skip
        async with client:
            for raw in updates:
                await client.send(raw)
            await client.flush(timeout=30)
        assert client.counters.acked == len(updates) and client.counters.unacked == 0
        assert servicer.received == set(range(1, len(updates) + 1))
        assert client.counters.streams == servicer.streams > servicer.aborts
    finally:
        await server.stop(None)
