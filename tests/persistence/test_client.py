"""IngestClient on its own terms: a bounded window that pushes back, and patience while
persistence is away."""

from __future__ import annotations

import asyncio

import pytest

from services.persistence.client import IngestClient, IngestRejected
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
