"""The demo peer: the bundled graph re-timed and re-signed validly, its state kept across runs, and a
real downloader syncing the whole graph from it over BOLT 8 and then receiving its fresh updates."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lnsync.chain import chain_hash
from lnsync.config import PeerAddress
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.archive import read_archive
from lnsync.gossip.signing import pubkey_of, sign_channel_announcement, signed_message
from lnsync.gossip.validate import check_channel_announcement, check_channel_update, check_node_announcement
from services.demopeer.graph import DEFAULT_DATASET, RECENT_WINDOW, STALE_AFTER, DemoGraph, dataset_secrets
from services.demopeer.server import DemoPeer, DemoPeerOptions, demo_peer_address
from services.downloader.downloader import Downloader
from tests.conftest import free_port
from tests.downloader.scripted import MemorySink
from tests.downloader.test_session import FAST
from tests.test_cli import clean_env, lnsync

MAINNET = chain_hash("bitcoin")
NOW = 1_800_000_000


def check_all_valid(graph: DemoGraph) -> None:
    for raw in graph.messages():
        msg = m.decode_gossip(raw)
        if isinstance(msg, m.ChannelAnnouncement):
            check_channel_announcement(msg, MAINNET)
        elif isinstance(msg, m.ChannelUpdate):
            ann = graph.channels[msg.short_channel_id]
            check_channel_update(msg, MAINNET, ann.node_id_2 if msg.direction else ann.node_id_1)
        else:
            check_node_announcement(msg)


def test_dataset_is_retimed_into_the_recent_window_keeping_order_and_policies() -> None:
    with DEFAULT_DATASET.open("rb") as f:
        original = DemoGraph.from_messages((r.raw for r in read_archive(f)), dataset_secrets())
    graph, resumed = DemoGraph.load(DEFAULT_DATASET, None, NOW)
    assert not resumed
    assert (len(graph.channels), len(graph.updates), len(graph.nodes)) == (934, 1868, 50)
    check_all_valid(graph)
    stamps = [u.timestamp for u in graph.updates.values()]
    assert min(stamps) >= NOW - 60 - RECENT_WINDOW and max(stamps) == NOW - 60
    keys = sorted(graph.updates)
    by_old_time = sorted(keys, key=lambda k: original.updates[k].timestamp)
    new_times = [graph.updates[k].timestamp for k in by_old_time]
    assert new_times == sorted(new_times), "the dataset's order of updates is kept"
    for k in keys:  # only the timestamp and the signature changed
        a, b = original.updates[k], graph.updates[k]
        assert a.raw[66 + 32 + 8 + 4 :] == b.raw[66 + 32 + 8 + 4 :]


def test_fee_changes_are_signed_newer_and_different() -> None:
    graph, _ = DemoGraph.load(DEFAULT_DATASET, None, NOW)
    before = dict(graph.updates)
    new = graph.change_fees(5, NOW - 120, random.Random(1))  # a clock behind the gossip: still newer
    assert len(new) == 5
    check_all_valid(graph)
    for raw in new:
        cu = m.decode_channel_update(raw)
        old = before[(cu.short_channel_id, cu.direction)]
        assert cu.timestamp > old.timestamp
        assert cu.fee_proportional_millionths != old.fee_proportional_millionths
        assert graph.updates[(cu.short_channel_id, cu.direction)].raw == raw


def test_state_is_resumed_unless_stale_or_damaged(tmp_path: Path) -> None:
    state = tmp_path / "demo.gossip"
    graph, _ = DemoGraph.load(DEFAULT_DATASET, state, NOW)
    graph.change_fees(3, NOW, random.Random(2))
    graph.save(state)
    again, resumed = DemoGraph.load(DEFAULT_DATASET, state, NOW + 3600)
    assert resumed and again.messages() == graph.messages()
    later, resumed = DemoGraph.load(DEFAULT_DATASET, state, NOW + STALE_AFTER + 3600)
    assert not resumed and later.newest_timestamp() == NOW + STALE_AFTER + 3600 - 60
    state.write_bytes(state.read_bytes()[:1000])  # truncated mid-record
    fresh, resumed = DemoGraph.load(DEFAULT_DATASET, state, NOW)
    assert not resumed and len(fresh.channels) == 934


def test_timestamp_filter_sends_announcements_before_their_updates() -> None:
    graph, _ = DemoGraph.load(DEFAULT_DATASET, None, NOW)
    cut = NOW - 3600
    sent = graph.matching(q.GossipTimestampFilter(MAINNET, cut, 0xFFFFFFFF))
    announced: set[int] = set()
    updates = 0
    for raw in sent:
        msg = m.decode_gossip(raw)
        if isinstance(msg, m.ChannelAnnouncement):
            announced.add(msg.short_channel_id)
        elif isinstance(msg, m.ChannelUpdate):
            assert msg.timestamp >= cut and msg.short_channel_id in announced
            updates += 1
        else:
            assert msg.timestamp >= cut
    assert 0 < updates == sum(1 for u in graph.updates.values() if u.timestamp >= cut)
    assert len(graph.matching(q.GossipTimestampFilter(MAINNET, 0, 0xFFFFFFFF))) == 934 + 1868 + 50


@contextlib.asynccontextmanager
async def demo_peer(tmp_path: Path) -> AsyncIterator[DemoPeer]:
    listen = f"127.0.0.1:{free_port()}"
    options = DemoPeerOptions(
        listen=listen,
        health_listen="unused",
        state=tmp_path / "demo.gossip",
        dataset=DEFAULT_DATASET,
        publish_interval=3600,  # the test publishes by hand
    )
    peer = DemoPeer(options)

    class Ready:
        async def set(self, ready: bool) -> None:
            return None

    task = asyncio.create_task(peer.run(Ready()))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if peer._server is not None:
                break
            await asyncio.sleep(0.02)
        yield peer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_a_downloader_syncs_everything_then_gets_live_updates(tmp_path: Path) -> None:
    sink = MemorySink()
    async with demo_peer(tmp_path) as peer:
        address = demo_peer_address(peer.options.listen)
        d = Downloader(PeerAddress.parse(address), MAINNET, sink, FAST)
        task = asyncio.create_task(d.run())
        try:
            await asyncio.wait_for(d.sync_reported.wait(), 20)
            assert sorted(sink.raws) == sorted(peer.graph.messages())
            assert d.stats.invalid_total == 0
            counts = d.pipeline.counts()
            assert (counts.channel_announcements, counts.channel_updates, counts.node_announcements) == (
                934,
                1868,
                50,
            )
            started = time.monotonic()
            await peer.publish()
            await sink.wait_for(934 + 1868 + 50 + 3, timeout=10)
            assert time.monotonic() - started < 10
            live = [m.decode_channel_update(raw) for raw in sink.raws[-3:]]
            assert all(peer.graph.updates[(u.short_channel_id, u.direction)].raw == u.raw for u in live)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await d.close()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["demo-peer", "--dataset", "{bad}", "--state", "{state}"], "demo peer: "),
        (["demo-peer", "--publish-interval", "0"], "--publish-interval must be > 0"),
        (["up", "--demo", "--peer", "02" + "11" * 32 + "@127.0.0.1:1"], "drop --peer"),
        (["up", "--demo", "--network", "signet"], "--demo serves mainnet gossip"),
    ],
)
def test_demo_misuse_is_one_clear_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    bad = tmp_path / "not-gossip.bin"
    bad.write_bytes(b"\x00\x10 too short")
    argv = [a.format(bad=bad, state=tmp_path / "state") for a in args]
    out = lnsync(*argv, env=clean_env(LNSYNC_DATA_DIR=str(tmp_path)))
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_larger_dataset_made_the_same_way_is_served_with_its_nodes_secrets(tmp_path: Path) -> None:
    """The whole re-signed mainnet topology numbers its 17,324 nodes the same way: nodes past the
    bundled file's 50 (here node-60 and node-75) are found and their messages re-signed."""
    secrets = [hashlib.sha256(f"node-{i}".encode()).digest() for i in (60, 75)]
    ann = sign_channel_announcement(MAINNET, (700_000 << 40) | (1 << 16), *secrets, *secrets)
    decoded = m.decode_channel_announcement(ann)
    origin = {decoded.node_id_1: secrets[0] if pubkey_of(secrets[0]) == decoded.node_id_1 else secrets[1]}
    body = m.encode_channel_update_body(
        MAINNET, decoded.short_channel_id, 1_770_000_000, 0, 40, 1, 1000, 10, 10**9, 1
    )
    update = signed_message(m.CHANNEL_UPDATE, (origin[decoded.node_id_1],), body)
    dataset = tmp_path / "bigger.bin"
    dataset.write_bytes(b"".join(len(r).to_bytes(2, "big") + r for r in (ann, update)))
    graph, resumed = DemoGraph.load(dataset, None, NOW)
    assert not resumed and len(graph.channels) == 1 and len(graph.updates) == 1
    check_all_valid(graph)
    assert max(u.timestamp for u in graph.updates.values()) == NOW - 60
