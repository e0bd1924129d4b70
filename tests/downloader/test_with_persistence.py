"""End to end with real processes: a real LDK node, ``lnsync serve downloader`` and ``lnsync serve
persistence`` on loopback, a real PostgreSQL. The store must hold exactly the peer's graph, also
when persistence is killed (kill -9) in the middle of the dump."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from lnsync import rpc
from lnsync.v1 import downloader_pb2, downloader_pb2_grpc, persistence_pb2, persistence_pb2_grpc
from tests.conftest import free_port
from tests.downloader.test_ldk_downloader import FIXTURE, fresh_update
from tests.ldk import LdkPeerFactory, read_records
from tests.stack import Stack, stored_gossip, until

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.timeout(120)]


async def downloader_status(stack: Stack) -> downloader_pb2.DownloaderStatus:
    async with rpc.channel(stack.target("downloader")) as ch:
        stub = downloader_pb2_grpc.DownloaderStub(ch)
        return await stub.GetStatus(downloader_pb2.GetDownloaderStatusRequest(), timeout=5)


async def peer_synced(stack: Stack, peer_id: str) -> persistence_pb2.PeerSyncState | None:
    async with rpc.channel(stack.target("persistence")) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        status = await stub.GetSyncStatus(persistence_pb2.GetSyncStatusRequest(), timeout=5)
    return next((p for p in status.peers if p.peer_id == peer_id and p.initial_sync_complete), None)


def stack_for(database_url: str, workdir: Path, **env: str) -> Stack:
    return Stack(database_url, workdir, extra_env={"LNSYNC_DOWNLOADER__SYNC_SETTLE": "0.5", **env})


async def test_the_whole_graph_reaches_postgres_then_live_gossip(
    database_url: str, short_tmp: Path, ldk_peer_factory: LdkPeerFactory
) -> None:
    fixture = list(read_records(FIXTURE))
    peer = ldk_peer_factory(FIXTURE, network="bitcoin")
    metrics = f"127.0.0.1:{free_port()}"
    stack = stack_for(database_url, short_tmp)
    try:
        await stack.start_healthy("persistence")
        args = ("--peer", peer.address, "--metrics-listen", metrics)
        downloader = await stack.start_healthy("downloader", *args)
        synced = await until(lambda: peer_synced(stack, peer.node_id.hex()), 60, "the sync report")
        assert (synced.channel_announcements, synced.channel_updates, synced.node_announcements) == (
            934, 1868, 50,
        )  # fmt: skip
        rows = await stored_gossip(database_url)
        assert sorted(rows) == sorted(fixture)  # exactly the peer's graph, each message once

        status = await downloader_status(stack)
        assert status.connected and status.state == "synced" and status.initial_sync_complete
        assert (status.channel_announcements, status.channel_updates, status.node_announcements) == (
            934, 1868, 50,
        )  # fmt: skip
        assert status.unacknowledged == 0 and status.invalid == 0

        fresh = fresh_update(fixture)
        t0 = time.perf_counter()
        assert (await asyncio.to_thread(peer.feed, fresh)).broadcast
        await until(lambda: _has(database_url, fresh), 10, "the live update in the store")
        live_ms = (time.perf_counter() - t0) * 1000

        async with aiohttp.ClientSession() as http, http.get(f"http://{metrics}/metrics") as resp:
            text = await resp.text()
        label = f'peer="{peer.node_id.hex()}"'
        assert f'lnsync_downloader_messages_forwarded_total{{{label},type="channel_update"}} 1869.0' in text
        assert f"lnsync_downloader_connected{{{label}}} 1.0" in text
        assert f"lnsync_downloader_persistence_rejections_total{{{label}" not in text  # none refused
        print(f"\nlive update: peer to PostgreSQL in {live_ms:.0f} ms")
        assert downloader.stop() == 0  # SIGTERM: a clean shutdown
    finally:
        stack.close()


async def _has(url: str, raw: bytes) -> bool:
    return raw in await stored_gossip(url)


async def test_killing_persistence_mid_dump_loses_nothing(
    database_url: str, short_tmp: Path, ldk_peer_factory: LdkPeerFactory
) -> None:
    fixture = list(read_records(FIXTURE))
    peer = ldk_peer_factory(FIXTURE, network="bitcoin")
    stack = stack_for(database_url, short_tmp, LNSYNC_DOWNLOADER__MAX_UNACKED="100")
    try:
        persistence = await stack.start_healthy("persistence")
        await stack.start_healthy("downloader", "--peer", peer.address)

        async def mid_dump() -> downloader_pb2.DownloaderStatus | None:
            s = await downloader_status(stack)
            return s if s.channel_announcements + s.channel_updates >= 300 else None

        before = await until(mid_dump, 30, "the dump to start")
        persistence.kill()  # kill -9
        forwarded = before.channel_announcements + before.channel_updates + before.node_announcements
        assert forwarded < len(fixture), "the kill should land in the middle of the dump"
        await asyncio.sleep(0.5)
        stalled = await downloader_status(stack)
        assert stalled.unacknowledged > 0  # held in the window, not lost
        assert stalled.unacknowledged <= 100  # and the window is bounded: the peer is not read

        await stack.start_healthy("persistence")
        await until(lambda: peer_synced(stack, peer.node_id.hex()), 60, "the sync report")
        rows = await stored_gossip(database_url)
        assert len(rows) == len(set(rows)) == len(fixture)
        assert set(rows) == set(fixture)
        status = await downloader_status(stack)
        assert status.unacknowledged == 0 and status.initial_sync_complete
    finally:
        stack.close()
