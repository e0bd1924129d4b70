"""Clock rules through the real services (issue 20): an update dated far in the future never
becomes its direction's latest, so it cannot freeze the direction for the updates that follow.

Persistence and lookup run as ``lnsync serve`` processes on real PostgreSQL; the blobs lookup
serves are applied by LDK's own RGS client (``tests/ldk.py``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from lnsync import rpc
from lnsync.clients.ingest import IngestClient
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from tests.ldk import LdkRgsClient
from tests.persistence.conftest import channel_announcement, channel_update
from tests.rgs.histories import DAY
from tests.stack import Stack, report_synced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
PEER = "07" * 33


async def _delta(stack: Stack, last_sync: int) -> tuple[int, bytes]:
    """A dynamic v2 delta for ``last_sync`` (R = now - ingest_lag): (its timestamp, the blob)."""
    async with rpc.channel(stack.target("lookup")) as ch:
        request = lookup_pb2.ComputeDeltaRequest(last_sync_timestamp=last_sync, version=2)
        info, data = await rpc.join_chunks(lookup_pb2_grpc.LookupStub(ch).ComputeDelta(request, timeout=60))
    assert info is not None
    return info.timestamp, data


async def test_a_future_dated_update_never_freezes_its_direction(
    database_url: str, short_tmp: Path, ldk_client: LdkRgsClient
) -> None:
    """After a full sync, one update dated 30 days ahead and then real later updates of the same
    direction: the future one is rejected (counted), and LDK, fed the deltas, holds the real fees."""
    stack = Stack(
        database_url,
        short_tmp,
        extra_env={"LNSYNC_INGEST_LAG": "1", "LNSYNC_LOOKUP__TIMESTAMP_GRANULARITY": "1"},
    )
    scid = 906_000 << 40
    now = int(time.time())
    try:
        await stack.start_healthy("persistence")
        await report_synced(stack)
        await stack.start_healthy("lookup")
        async with IngestClient(stack.target("persistence"), PEER) as client:
            await client.send(channel_announcement(scid))
            await client.send(channel_update(scid, 0, now - 100, fee_ppm=100))
            await client.send(channel_update(scid, 1, now - 100, fee_ppm=110))
            await client.send(channel_update(scid, 0, now + 30 * DAY, fee_ppm=9999))
            await client.send(channel_update(scid, 0, now - 50, fee_ppm=200))
            await client.flush(timeout=20)
        rejections = dict(client.counters.rejections)
        await asyncio.sleep(2.5)  # past R = now - ingest_lag
        with ldk_client.new_graph() as graph:
            stamp, blob = await _delta(stack, 0)
            assert graph.apply(blob, now=int(time.time())).accepted
            direction = graph.dump().channels[scid].one_to_two
            assert direction is not None and direction.fee_proportional_millionths == 200

            # A later real update still supersedes: the next delta carries it.
            async with IngestClient(stack.target("persistence"), PEER) as client:
                await client.send(channel_update(scid, 0, int(time.time()), fee_ppm=300))
                await client.flush(timeout=20)
            await asyncio.sleep(2.5)
            _, blob = await _delta(stack, stamp)
            assert graph.apply(blob, now=int(time.time())).accepted
            direction = graph.dump().channels[scid].one_to_two
            assert direction is not None and direction.fee_proportional_millionths == 300

        conn = await asyncpg.connect(database_url)
        try:
            latest = await conn.fetchval(
                "SELECT max(timestamp) FROM channel_updates WHERE scid = $1 AND direction = 0", scid
            )
        finally:
            await conn.close()
        assert latest < now + DAY
        assert rejections == {"timestamp_in_future": 1}
    finally:
        stack.close()
