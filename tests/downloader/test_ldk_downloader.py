"""The downloader against a real LDK node (tools/ldk/peer.mjs) serving the 934-channel fixture."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lnsync.chain import chain_hash
from lnsync.config import PeerAddress
from lnsync.gossip import messages as m
from lnsync.gossip.signing import pubkey_of, sign_channel_update
from services.downloader.downloader import Downloader
from services.downloader.options import PeerOptions
from services.downloader.sync import RangeQuery, SyncSettings
from tests.downloader.scripted import MemorySink
from tests.ldk import LdkPeerFactory, read_records

pytestmark = pytest.mark.interop

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "cln2026_top50_resigned_mainnet.bin"
MAINNET = chain_hash("bitcoin")
OPTIONS = PeerOptions(
    tick=0.05,
    backoff_min=0.1,
    backoff_max=0.5,
    sync=SyncSettings(settle_seconds=0.5, settled_rate=20, grace=0.2, range_timeout=5, scid_query_timeout=1),
)


def fixture_secrets() -> dict[bytes, bytes]:
    """The fixture's node keys: secret = sha256(b"node-<index>")."""
    secrets = (hashlib.sha256(f"node-{i}".encode()).digest() for i in range(50))
    return {pubkey_of(s): s for s in secrets}


def fresh_update(fixture: list[bytes]) -> bytes:
    ann = m.decode_channel_announcement(fixture[0])
    old = next(
        u
        for u in map(m.decode_gossip, fixture)
        if isinstance(u, m.ChannelUpdate) and u.short_channel_id == ann.short_channel_id and u.direction == 1
    )
    return sign_channel_update(
        fixture_secrets()[ann.node_id_2], MAINNET, ann.short_channel_id, old.timestamp + 120, 1,
        old.cltv_expiry_delta, old.htlc_minimum_msat, old.fee_base_msat + 5,
        old.fee_proportional_millionths, old.htlc_maximum_msat,
    )  # fmt: skip


async def run_until_synced(address: str, sink: MemorySink, options: PeerOptions = OPTIONS):
    d = Downloader(PeerAddress.parse(address), MAINNET, sink, options)
    task = asyncio.create_task(d.run())
    t0 = time.perf_counter()
    await asyncio.wait_for(d.sync_reported.wait(), 60)
    return d, task, time.perf_counter() - t0


async def stop(d: Downloader, task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await d.close()


async def test_whole_fixture_then_a_live_update(ldk_peer_factory: LdkPeerFactory):
    fixture = list(read_records(FIXTURE))
    peer = ldk_peer_factory(FIXTURE, network="bitcoin")
    sink = MemorySink()
    d, task, seconds = await run_until_synced(peer.address, sink)
    try:
        assert sorted(sink.raws) == sorted(fixture)  # every message, byte for byte, once
        counts = d.pipeline.counts()
        assert (counts.channel_announcements, counts.channel_updates, counts.node_announcements) == (
            934, 1868, 50,
        )  # fmt: skip
        assert sink.reports == [(peer.node_id.hex(), counts)]
        assert d.stats.invalid_total == 0 and not d.stats.disconnects
        # LDK pings after every 32 messages and waits for the pong: all answered, no stall
        assert d.stats.received["ping"] >= len(fixture) // 34
        # over 500 messages in: the receive key rotated (BOLT 8, every 1000 nonces) at least once
        assert d.stats.received.total() > 500
        tracker = d.session.tracker if d.session else None
        assert tracker is not None and tracker.range is not None and len(tracker.range.scids) == 934
        assert tracker.missing_at_completion == 0

        fresh = fresh_update(fixture)
        t1 = time.perf_counter()
        assert (await asyncio.to_thread(peer.feed, fresh)).broadcast
        await sink.wait_for(len(fixture) + 1, timeout=10)
        live_ms = (time.perf_counter() - t1) * 1000
        assert sink.raws[-1] == fresh
        assert d.stats.forwarded["channel_update"] == 1869
        print(f"\nLDK fixture: synced in {seconds:.2f} s, live update after {live_ms:.0f} ms")
    finally:
        await stop(d, task)


async def test_ldk_quirks_late_node_announcements_and_unanswered_scid_queries(
    ldk_peer_factory: LdkPeerFactory,
):
    """With the pump off, LDK sends the node announcements only after our next message (the
    probe ping): the sync must not be reported before they arrive. And LDK never answers
    query_short_channel_ids: a channel listed but not dumped (here one we add to the range list
    LDK sent) is asked for once, the silence times out, and the sync still completes."""
    peer = ldk_peer_factory(FIXTURE, network="bitcoin", tick_ms=0)
    sink = MemorySink()
    d = Downloader(PeerAddress.parse(peer.address), MAINNET, sink, replace(OPTIONS, ping_interval=30))
    task = asyncio.create_task(d.run())
    try:

        def range_known() -> RangeQuery | None:
            tracker = d.session.tracker if d.session else None
            return tracker.range if tracker and tracker.range and tracker.range.done else None

        while (r := range_known()) is None:  # noqa: ASYNC110 - polls the session's state
            await asyncio.sleep(0.002)
        absent = (999_999 << 40) | 1
        r.scids.add(absent)
        await asyncio.wait_for(d.sync_reported.wait(), 60)
        ((_, counts),) = sink.reports
        assert counts.node_announcements == 50 and counts.channel_updates == 1868
        tracker = d.session.tracker if d.session else None
        assert tracker is not None
        # the first probe woke the stalled dump, a later one confirmed it had drained
        assert tracker.probes >= 2
        assert tracker.asked == {absent} and tracker.peer_answers_scid_queries is False
        assert tracker.missing_at_completion == 1
        assert d.stats.connections == 1 and not d.stats.disconnects  # LDK ignored the query
    finally:
        await stop(d, task)
