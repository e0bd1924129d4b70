"""The quiet observer against a real LDK node (tools/ldk/peer.mjs): the downloader relays no gossip to
its peer, even after the peer asked for gossip and relayed some, and answers the peer's gossip
queries as BOLT 7 requires of a node that keeps no graph (services/downloader/session.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.signing import pubkey_of
from tests.downloader.scripted import MemorySink
from tests.downloader.test_ldk_downloader import FIXTURE, MAINNET, fresh_update, run_until_synced, stop
from tests.ldk import GossipTestClient, LdkPeer, LdkPeerFactory, PeerStats, read_records

pytestmark = pytest.mark.interop


async def until(peer: LdkPeer, test: object, timeout: float = 15.0) -> PeerStats:
    """Poll the LDK peer's stats until ``test(stats)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await asyncio.to_thread(peer.stats)
        if test(stats):  # type: ignore[operator]
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; LDK saw {stats.from_peers}")
        await asyncio.sleep(0.1)


def test_an_empty_range_reply_covers_the_query() -> None:
    reply = q.empty_range_reply(q.QueryChannelRange(MAINNET, 700_000, 0))
    assert reply.first_blocknum == 700_000 and reply.end_blocknum > 700_000
    assert reply.sync_complete and reply.short_channel_ids == ()


async def test_the_observer_relays_nothing_and_answers_queries(ldk_peer_factory: LdkPeerFactory) -> None:
    fixture = list(read_records(FIXTURE))
    peer = ldk_peer_factory(FIXTURE, network="bitcoin")
    sink = MemorySink()
    d, task, _ = await run_until_synced(peer.address, sink)
    try:
        (ours,) = [p.node_id for p in (await asyncio.to_thread(peer.stats)).peers if p.inbound]
        # LDK asked us for gossip (its gossip_timestamp_filter) and now relays a fresh update.
        update = fresh_update(fixture)
        assert (await asyncio.to_thread(peer.feed, update)).broadcast
        for _ in range(200):
            if update in sink.raws:
                break
            await asyncio.sleep(0.05)
        assert update in sink.raws
        # LDK queries us; we answer what BOLT 7 asks of a node that keeps no graph.
        await asyncio.to_thread(peer.query_channel_range, ours, 0, 0xFFFFFFFF)
        scid = m.decode_channel_announcement(fixture[0]).short_channel_id
        await asyncio.to_thread(peer.query_short_channel_ids, ours, [scid])
        stats = await until(
            peer, lambda s: s.from_peers.get(ours.hex(), {}).get("reply_short_channel_ids_end")
            and s.from_peers[ours.hex()]["reply_channel_range"],
        )  # fmt: skip
        seen = stats.from_peers[ours.hex()]
        assert seen["reply_channel_range"] == [
            {"first_blocknum": 0, "number_of_blocks": 0xFFFFFFFF, "sync_complete": True, "scids": 0}
        ]
        assert {"full_information": False} in seen["reply_short_channel_ids_end"]
        # A BOLT 8 client that does relay: LDK counts its gossip, so the count below could fail.
        secret = b"\x11" * 32
        with GossipTestClient(peer.node_id, peer.port, secret=secret) as relaying:
            relaying.send(update)
            await until(peer, lambda s: s.from_peers.get(pubkey_of(secret).hex(), {}).get("gossip"))
        stats = await asyncio.to_thread(peer.stats)
        assert stats.from_peers[ours.hex()]["gossip"] == {}  # not one gossip message from us
        assert ours in [p.node_id for p in stats.peers]  # and LDK found nothing to disconnect us for
        assert d.stats.reconnects == 0
    finally:
        await stop(d, task)
