"""A restarted or reconnecting downloader asks its peer only for recent gossip.

The peer-side tests use :class:`MemorySink` (it says what the store would answer); the last one
runs the real persistence service: a downloader syncs, a second one (a restart) resumes from what
persistence reports, receives only the recent part, and verifies and stores new updates for
channels it never saw announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from lnsync import rpc
from lnsync.config import PeerAddress
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from services.downloader.downloader import RESUME_MARGIN, Downloader
from services.downloader.forward import PersistenceSink
from services.downloader.options import PeerOptions
from services.downloader.sink import GossipSink
from tests.downloader.scripted import MAINNET, Graph, MemorySink, ScriptedPeer, make_graph
from tests.downloader.test_session import FAST, eventually, running
from tests.stack import Stack, until

DAY = 86400


def stored_channels(graph: Graph) -> list[tuple[int, bytes, bytes]]:
    out = []
    for raw in graph.announcements.values():
        ann = m.decode_channel_announcement(raw)
        out.append((ann.short_channel_id, ann.node_id_1, ann.node_id_2))
    return out


def sent_types(conn_received: list[bytes]) -> list[int]:
    return [m.message_type(raw) for raw in conn_received]


def old_graph(channels: int) -> Graph:
    return make_graph(channels, timestamp=int(time.time()) - 3 * DAY)


async def test_a_resumed_downloader_asks_for_recent_gossip_and_verifies_old_channels():
    now = int(time.time())
    graph = old_graph(20)
    scids = list(graph.announcements)
    fresh = graph.update(scids[3], 0, now - 60, fee=9)
    graph.updates[scids[3]][0] = fresh
    sink = MemorySink()
    sink.resume_at = now - 600
    sink.stored_channels = stored_channels(graph)
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(peer.connected.wait(), 5)
        conn = peer.connections[0]
        await asyncio.wait_for(conn.dumped.wait(), 5)
        assert conn.filter is not None and conn.filter.first_timestamp == now - 600 - RESUME_MARGIN
        assert q.QUERY_CHANNEL_RANGE not in sent_types(conn.received)  # no initial sync again
        await sink.wait_for(2)
        # Only the recent part: the fresh update and its channel's announcement.
        assert sorted(sink.raws) == sorted([graph.announcements[scids[3]], fresh])
        assert d.stats.state == "synced" and d.stats.initial_sync_complete
        # Live gossip for a channel announced before this process started verifies at once.
        live = graph.update(scids[7], 1, now, fee=11)
        await conn.send(live)
        await sink.wait_for(3)
        assert sink.raws[-1] == live
        assert d.stats.pending["held"] == 0 and d.stats.invalid_total == 0
        # A forged update for such a channel is still caught.
        forged = graph.update(scids[8], 1, now, fee=12)
        await conn.send(forged[:10] + bytes([forged[10] ^ 1]) + forged[11:])
        await eventually(lambda: d.stats.invalid_total == 1)
        assert sink.reports == []  # the sync was reported by the earlier process


async def test_without_the_stored_channels_a_downloader_syncs_from_scratch():
    graph = old_graph(10)
    sink = MemorySink()
    sink.resume_at = int(time.time()) - 600
    sink.stored_channels = stored_channels(graph)
    sink.fail_known_after = 4
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        conn = peer.connections[0]
        assert conn.filter is not None and conn.filter.first_timestamp == 0
        assert q.QUERY_CHANNEL_RANGE in sent_types(conn.received)
        assert sorted(sink.raws) == sorted(graph.dump())
        assert len(sink.reports) == 1


async def test_no_resume_point_means_a_full_sync():
    graph = old_graph(5)
    sink = MemorySink()
    sink.stored_channels = stored_channels(graph)  # ignored without a resume point
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert peer.connections[0].filter.first_timestamp == 0  # type: ignore[union-attr]
        assert sorted(sink.raws) == sorted(graph.dump())


async def test_a_reconnect_after_the_sync_asks_from_the_last_connection_end():
    graph = old_graph(10)
    sink = MemorySink()
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        first = peer.connections[0]
        assert first.filter is not None and first.filter.first_timestamp == 0
        session = d.session
        assert session is not None and session.caught_up_at is not None
        await first.noise.close()  # the peer drops us
        await eventually(lambda: len(peer.connections) == 2 and peer.connections[1].filter is not None)
        second = peer.connections[1]
        assert second.filter is not None
        assert abs(second.filter.first_timestamp - (time.time() - RESUME_MARGIN)) < 30
        assert q.QUERY_CHANNEL_RANGE not in sent_types(second.received)
        await asyncio.sleep(0.3)
        assert len(sink.raws) == len(graph.dump())  # the old graph did not cross the wire again
        assert d.stats.duplicates == 0


async def test_a_reconnect_before_the_backfill_was_over_keeps_the_earlier_point():
    """A resumed connection that drops before its backfill drained has not caught up: the next
    connection must ask from the same point, not from when the first one ended."""
    now = int(time.time())
    graph = old_graph(4)
    sink = MemorySink()
    sink.resume_at = now - 2 * DAY
    sink.stored_channels = stored_channels(graph)
    slow = replace(FAST, sync=replace(FAST.sync, settle_seconds=30.0))
    async with ScriptedPeer(graph) as peer, running(peer, sink, slow) as d:
        await asyncio.wait_for(peer.connected.wait(), 5)
        await asyncio.wait_for(peer.connections[0].dumped.wait(), 5)
        await peer.connections[0].noise.close()
        await eventually(lambda: len(peer.connections) == 2 and peer.connections[1].filter is not None)
        for conn in peer.connections:
            assert conn.filter is not None
            assert conn.filter.first_timestamp == now - 2 * DAY - RESUME_MARGIN
        assert d.resume_from == now - 2 * DAY


# -- with the real persistence service ----------------------------------------------------------


@contextlib.asynccontextmanager
async def downloader_into(
    target: str, peer: ScriptedPeer, options: PeerOptions = FAST
) -> AsyncIterator[tuple[Downloader, PersistenceSink]]:
    address = PeerAddress.parse(peer.address)
    sink = PersistenceSink(target, address.node_id, window=1000)
    await sink.start()
    sink_: GossipSink = sink
    d = Downloader(address, MAINNET, sink_, options)
    task = asyncio.create_task(d.run())
    try:
        yield d, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()
        await sink.close()


async def until_stored(database_url: str, raw: bytes, timeout: float = 10.0) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while not await conn.fetchval("SELECT count(*) FROM channel_updates WHERE raw = $1", raw):
            assert time.monotonic() < deadline, "the update never reached the store"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_restarted_downloader_resumes_from_persistence(database_url: str, short_tmp: Path) -> None:
    now = int(time.time())
    graph = old_graph(40)
    scids = list(graph.announcements)
    total = len(graph.dump())
    stack = Stack(database_url, short_tmp)
    try:
        await stack.start_healthy("persistence")
        target = stack.target("persistence")
        async with ScriptedPeer(graph) as peer:
            async with downloader_into(target, peer) as (d, _):
                await asyncio.wait_for(d.sync_reported.wait(), 20)
                assert d.stats.forwarded.total() == total
            # A new update published while the downloader was down, then the restart.
            fresh = graph.update(scids[5], 1, now - 30, fee=21)
            graph.updates[scids[5]][1] = fresh
            async with downloader_into(target, peer) as (d, _):
                await eventually(lambda: len(peer.connections) == 2 and peer.connections[1].dumped.is_set())
                conn = peer.connections[1]
                assert (
                    conn.filter is not None and abs(conn.filter.first_timestamp - (now - RESUME_MARGIN)) < 120
                )
                assert d.stats.initial_sync_complete and d.stats.state == "synced"
                # Live updates for channels this process never saw announced.
                live = [graph.update(s, 0, now, fee=31) for s in scids[10:13]]
                for raw in live:
                    await conn.send(raw)
                for raw in [fresh, *live]:
                    await until_stored(database_url, raw)
                received = sum(d.stats.received[k] for k in ("channel_announcement", "channel_update"))
                assert received == 2 + len(live), d.stats.received  # not the 120 of the graph
                assert d.stats.pending["held"] == 0 and d.stats.invalid_total == 0
        # What seeded it: the stored channels, the newest by scid when the caller holds fewer.
        async with rpc.channel(target) as ch:
            stub = persistence_pb2_grpc.PersistenceStub(ch)
            request = persistence_pb2.KnownChannelsRequest(max_channels=5)
            chunks = [c async for c in stub.KnownChannels(request, timeout=10)]
        got = [(k.short_channel_id, k.node_id_1, k.node_id_2) for c in chunks for k in c.channels]
        assert got == sorted(stored_channels(graph))[-5:]
    finally:
        stack.close()


async def peer_state(target: str, peer_id: str) -> persistence_pb2.PeerSyncState:
    async with rpc.channel(target) as ch:
        status = await persistence_pb2_grpc.PersistenceStub(ch).GetSyncStatus(
            persistence_pb2.GetSyncStatusRequest(), timeout=10
        )
    return next(p for p in status.peers if p.peer_id == peer_id)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_downloader_killed_while_catching_up_resumes_from_the_point_it_had_reached(
    database_url: str, short_tmp: Path
) -> None:
    """Down for two days, restarted, killed again before its backfill was over: the deliveries of
    that short run are recent, but only the caught-up point says how far the store really holds
    the peer's gossip. The next start must ask from there (the old rule, last delivery minus an
    hour, would leave most of the two days unasked)."""
    now = int(time.time())
    graph = old_graph(12)
    scids = list(graph.announcements)
    reporting = replace(FAST, caught_up_interval=0.2)
    stack = Stack(database_url, short_tmp)
    try:
        await stack.start_healthy("persistence")
        target = stack.target("persistence")
        async with ScriptedPeer(graph) as peer:
            peer_id = PeerAddress.parse(peer.address).node_id
            async with downloader_into(target, peer, reporting) as (d, _):
                await asyncio.wait_for(d.sync_reported.wait(), 20)
                await until(lambda: _caught_up_after(target, peer_id, now - 5), 10, "a caught-up report")
            # The store as a downloader that has been down for two days left it.
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute(
                    "UPDATE peers SET caught_up_to = to_timestamp($2), last_message_at = to_timestamp($2)"
                    " WHERE peer_id = $1", peer_id, now - 2 * DAY,
                )  # fmt: skip
            finally:
                await conn.close()
            # Meanwhile the peer got new gossip, spread over the two days.
            backlog = [
                graph.update(s, 0, now - (i + 1) * 3 * 3600, fee=40 + i) for i, s in enumerate(scids[:6])
            ]
            for s, raw in zip(scids, backlog, strict=False):
                graph.updates[s][0] = raw
            # The restart: it never settles (30 s), so it is killed while still catching up.
            never_settles = replace(reporting, sync=replace(FAST.sync, settle_seconds=30.0))
            async with downloader_into(target, peer, never_settles) as (d, _):
                await eventually(lambda: len(peer.connections) == 2 and peer.connections[1].dumped.is_set())
                assert peer.connections[1].filter.first_timestamp == now - 2 * DAY - RESUME_MARGIN  # type: ignore[union-attr]
                for raw in backlog[:2]:
                    await until_stored(database_url, raw)
            state = await peer_state(target, peer_id)
            assert state.caught_up_to == now - 2 * DAY  # never caught up: the point did not move
            assert state.last_message_at >= now - 60  # while deliveries were recent

            async with downloader_into(target, peer, reporting) as (d, _):
                await eventually(lambda: len(peer.connections) == 3 and peer.connections[2].dumped.is_set())
                third = peer.connections[2]
                assert third.filter is not None
                assert (
                    third.filter.first_timestamp == now - 2 * DAY - RESUME_MARGIN
                )  # not last delivery - 1 h
                for raw in backlog:
                    await until_stored(database_url, raw)
                # Caught up this time: the point moves to the present.
                await until(lambda: _caught_up_after(target, peer_id, now - 5), 10, "a caught-up report")
    finally:
        stack.close()


async def _caught_up_after(target: str, peer_id: str, t: int) -> bool:
    return (await peer_state(target, peer_id)).caught_up_to >= t
