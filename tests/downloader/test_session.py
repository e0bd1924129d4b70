"""The downloader against scripted BOLT 8 peers: the honest path, then every misbehaviour."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from lnsync.config import ConfigError, PeerAddress, load_settings
from lnsync.gossip import control as c
from lnsync.gossip import features as feat
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.signing import sign_channel_update, signed_message
from services.downloader.downloader import Downloader
from services.downloader.options import PeerOptions
from services.downloader.sync import SyncSettings
from tests.downloader.scripted import (
    MAINNET,
    PEER_ID,
    REGTEST,
    MemorySink,
    PeerBehaviour,
    ScriptedPeer,
    make_graph,
)

FAST = PeerOptions(
    stall_timeout=2.0,
    ping_interval=0.5,
    ping_timeout=1.0,
    tick=0.05,
    backoff_min=0.05,
    backoff_max=0.2,
    sync=SyncSettings(
        settle_seconds=0.3, settled_rate=10, grace=0.1, range_timeout=1.0, scid_query_timeout=0.5
    ),
)


def running(peer: ScriptedPeer, sink: MemorySink, options: PeerOptions = FAST):
    return running_at(peer.address, sink, options)


@contextlib.asynccontextmanager
async def running_at(
    address: str, sink: MemorySink, options: PeerOptions = FAST
) -> AsyncIterator[Downloader]:
    d = Downloader(PeerAddress.parse(address), MAINNET, sink, options)
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()


async def test_honest_peer_full_dump_and_sync_report():
    graph = make_graph(20)
    sink = MemorySink()
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert sorted(sink.raws) == sorted(graph.dump())
        assert sink.reports == [(peer.address.split("@")[0], d.pipeline.counts())]
        assert d.pipeline.counts().channel_updates == 40
        assert d.stats.initial_sync_complete and d.stats.state == "synced"
        assert d.stats.invalid_total == 0


def flip(raw: bytes, at: int = 10) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]


async def eventually(check, timeout: float = 5.0) -> None:
    async def until() -> None:
        while not check():  # noqa: ASYNC110 - polls counters that have no event to wait on
            await asyncio.sleep(0.01)

    await asyncio.wait_for(until(), timeout)


async def test_bad_signatures_are_counted_and_never_forwarded():
    graph = make_graph(6)
    channels = list(graph.announcements)
    bad_update = flip(graph.updates[channels[1]][0])
    graph.updates[channels[1]][0] = bad_update
    bad_ann = flip(graph.announcements[channels[2]], 295)  # in the scid: all four signatures fail
    graph.announcements[channels[2]] = bad_ann
    sink = MemorySink()
    options = replace(FAST, pending_ttl=0.2)
    async with ScriptedPeer(graph) as peer, running(peer, sink, options) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        await eventually(lambda: d.stats.pending["expired"] == 2)
        assert d.stats.invalid == {"bad_signature": 2}
        assert bad_update not in sink.raws and bad_ann not in sink.raws
        # the bad announcement's updates could never be verified: held, then aged out
        assert not set(graph.updates[channels[2]]) & set(sink.raws)
        assert d.stats.pending["held"] == 2
        assert len(sink.raws) == len(graph.dump()) - 4
        assert d.stats.connections == 1 and not d.stats.disconnects  # bad gossip alone is no reason to leave


async def test_wrong_chain_in_init_disconnects_clearly_and_backs_off(caplog):
    caplog.set_level("WARNING")
    sink = MemorySink()
    behaviour = PeerBehaviour(networks=(REGTEST,))
    async with ScriptedPeer(make_graph(2), behaviour=behaviour) as peer, running(peer, sink) as d:
        await eventually(lambda: d.stats.disconnects["wrong_chain"] >= 2)
        assert not sink.messages
        assert not any(m.message_type(raw) == 265 for conn in peer.connections for raw in conn.received)
    assert f"serves other chains ({REGTEST.hex()}), not ours ({MAINNET.hex()})" in caplog.text


async def test_gossip_for_another_chain_is_invalid():
    graph = make_graph(2)
    other = make_graph(1, chain=REGTEST)
    graph.nodes.append(next(iter(other.announcements.values())))
    sink = MemorySink()
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert d.stats.invalid == {"wrong_chain": 1}
        assert len(sink.raws) == len(graph.dump()) - 1


async def test_unknown_required_feature_disconnects():
    behaviour = PeerBehaviour(features=feat.from_bits([7, 100]))
    async with ScriptedPeer(make_graph(1), behaviour=behaviour) as peer, running(peer, MemorySink()) as d:
        await eventually(lambda: d.stats.disconnects["unknown_required_feature"] >= 1)
        assert d.stats.state in ("backoff", "connecting")


async def test_truncated_frame_then_reconnect_gets_everything():
    graph = make_graph(5)

    async def script(conn):
        await conn.send_init()
        if len(peer.connections) == 1:
            # a frame header announcing 200 bytes, 20 of them, then the connection closes
            header = conn.noise._send.encrypt(struct.pack(">H", 200))
            conn.noise.write_raw(header + bytes(20))
            await conn.noise.drain()
            return
        await conn.serve()

    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert d.stats.disconnects == {"closed": 1}
        assert sorted(sink.raws) == sorted(graph.dump())
        assert d.stats.connections == 2


async def test_oversized_gossip_is_dropped_and_counted():
    graph = make_graph(2)
    s = next(iter(graph.announcements))
    big = sign_channel_update(graph.origins[(s, 0)], MAINNET, s, 1_800_000_000, 0, 40, 1000, 7, 10, 10**9)
    body = big[66:] + bytes(2000)  # 2000 bytes we do not understand, validly signed
    big = signed_message(m.CHANNEL_UPDATE, (graph.origins[(s, 0)],), body)
    graph.nodes.append(big)
    sink = MemorySink()
    async with ScriptedPeer(graph) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert d.stats.invalid == {"oversized": 1}
        assert big not in sink.raws
        assert len(sink.raws) == len(graph.dump()) - 1


async def test_unknown_even_message_disconnects_unknown_odd_is_ignored():
    async def script(conn):
        await conn.send_init()
        await conn.send(struct.pack(">H", 32769) + b"odd is fine")
        serving = asyncio.create_task(conn.serve())
        await conn.dumped.wait()
        await conn.send(struct.pack(">H", 32770) + b"even is not")
        await serving

    graph = make_graph(3)
    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink) as d:
        await eventually(lambda: d.stats.disconnects["unknown_even_type"] >= 1)
        assert d.stats.invalid["unknown_even_type"] >= 1
        assert d.stats.received["unknown_odd"] >= 1
        assert sorted(set(sink.raws)) == sorted(graph.dump())  # everything before it was kept


async def test_silence_is_a_stall():
    async def no_init(conn):
        await asyncio.sleep(30)

    async def init_then_nothing(conn):
        await conn.send_init()
        await asyncio.sleep(30)  # reads nothing, answers no ping

    options = replace(FAST, init_timeout=0.3, ping_interval=0.2, ping_timeout=0.3)
    async with ScriptedPeer(script=no_init) as peer, running(peer, MemorySink(), options) as d:
        await eventually(lambda: d.stats.disconnects["stall"] >= 1)
    async with ScriptedPeer(script=init_then_nothing) as peer, running(peer, MemorySink(), options) as d:
        await eventually(lambda: d.stats.disconnects["stall"] >= 1)
        assert d.stats.received["init"] == 1


async def test_error_disconnects_warning_does_not(caplog):
    caplog.set_level("WARNING")

    async def script(conn):
        await conn.send_init()
        await conn.send(c.ErrorMessage(data=b"careful", warning=True).encode())
        serving = asyncio.create_task(conn.serve())
        await conn.dumped.wait()
        await asyncio.sleep(0.1)
        await conn.send(c.ErrorMessage(data=b"go away").encode())
        await serving

    graph = make_graph(2)
    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink) as d:
        await eventually(lambda: d.stats.disconnects["peer_error"] >= 1)
        assert d.stats.peer_messages["warning"] >= 1 and d.stats.peer_messages["error"] >= 1
        assert sorted(set(sink.raws)) == sorted(graph.dump())
    assert "warns: careful" in caplog.text and "sent an error: go away" in caplog.text


async def test_too_many_invalid_messages_drop_the_peer():
    graph = make_graph(1)
    s = next(iter(graph.announcements))

    async def script(conn):
        await conn.send_init()
        await conn.send(graph.announcements[s])
        for i in range(10):
            await conn.send(flip(graph.update(s, 0, 1_800_000_000 + i)))
        await conn.serve()

    async with (
        ScriptedPeer(graph, script) as peer,
        running(peer, MemorySink(), replace(FAST, max_invalid=5)) as d,
    ):
        await eventually(lambda: d.stats.disconnects["too_many_invalid"] >= 1)
        assert d.stats.invalid["bad_signature"] >= 6  # the sixth within the window was one too many


async def test_floods_are_throttled_then_dropped():
    graph = make_graph(1)
    s = next(iter(graph.announcements))
    update = graph.updates[s][0]

    async def script(conn):
        await conn.send_init()
        await conn.send(graph.announcements[s])
        for _ in range(200):
            conn.noise.write_message(update)
        await conn.noise.drain()
        await conn.serve()

    options = replace(FAST, rate_limit=200, rate_burst=20, max_junk=100)
    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink, options) as d:
        await eventually(lambda: d.stats.disconnects["flood"] >= 1)
        assert d.stats.throttled_seconds > 0.2  # ~100 messages beyond the burst at 200/s
        assert sink.raws.count(update) == 1


async def test_update_before_its_announcement_waits_then_is_verified():
    graph = make_graph(3)
    s = list(graph.announcements)[1]
    early = graph.update(s, 1, 1_750_000_000)  # newer than the dump's, not in the future

    async def script(conn):
        await conn.send_init()
        await conn.send(early)  # live update overtaking the dump
        await conn.serve()

    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert d.stats.pending == {"held": 1, "released": 1}
        assert early in sink.raws
        assert sink.raws.index(early) > sink.raws.index(graph.announcements[s])
        assert len(d.pipeline.pending) == 0


async def test_channels_missing_from_the_dump_are_queried_by_scid():
    graph = make_graph(8)
    withheld = frozenset(list(graph.announcements)[2:5])
    behaviour = PeerBehaviour(answer_scid_queries=True, withheld=withheld)
    sink = MemorySink()
    async with ScriptedPeer(graph, behaviour=behaviour) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert sorted(sink.raws) == sorted(graph.dump())
        queries = [
            q.decode_query_short_channel_ids(r) for r in peer.connections[0].received if r[:2] == b"\x01\x05"
        ]
        assert [set(x.short_channel_ids) for x in queries] == [set(withheld)]
        tracker = d.session.tracker if d.session else None
        assert tracker is not None and tracker.missing_at_completion == 0


async def test_a_peer_that_never_answers_scid_queries_still_completes():
    """Like LDK: the range lists channels the dump lacks and scid queries get no answer."""
    graph = make_graph(6)
    withheld = frozenset(list(graph.announcements)[:2])
    behaviour = PeerBehaviour(answer_scid_queries=False, withheld=withheld)
    sink = MemorySink()
    async with ScriptedPeer(graph, behaviour=behaviour) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        tracker = d.session.tracker if d.session else None
        assert tracker is not None
        assert tracker.missing_at_completion == 2 and tracker.peer_answers_scid_queries is False
        assert len(sink.raws) == len(graph.dump()) - 6
        assert d.stats.connections == 1


async def test_full_window_stops_reading_the_peer_until_acknowledged():
    graph = make_graph(40)  # 120 channel messages + 6 node announcements
    total = len(graph.dump())
    sink = MemorySink(window=10, auto_ack=False)
    options = replace(FAST, stall_timeout=0.3, ping_interval=0.1, ping_timeout=0.2)
    async with ScriptedPeer(graph) as peer, running(peer, sink, options) as d:
        await sink.wait_for(10)
        await asyncio.sleep(1.0)  # far longer than the stall timeout: holding back is not a stall
        assert len(sink.messages) == 10 and sink.unacked == 10
        gossip_read = sum(
            d.stats.received[k] for k in ("channel_announcement", "channel_update", "node_announcement")
        )
        assert gossip_read == 11  # the one waiting for room; the rest stays in the socket
        assert d.stats.unacked() == 10
        assert not d.stats.disconnects
        while len(sink.messages) < total:
            await sink.ack()
            await asyncio.sleep(0.005)
        await sink.ack()
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        assert sorted(sink.raws) == sorted(graph.dump())
        assert d.stats.connections == 1


async def test_reconnect_replays_are_not_verified_or_forwarded_again():
    graph = make_graph(10)

    async def script(conn):
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())
        await conn.dumped.wait()
        if len(peer.connections) == 1:
            await asyncio.sleep(0.05)
            serving.cancel()
            return
        await serving

    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        await eventually(lambda: d.stats.duplicates == len(graph.dump()))
        assert sorted(sink.raws) == sorted(graph.dump())  # each exactly once
        assert d.stats.connections == 2 and d.stats.disconnects == {"closed": 1}
        assert len(sink.reports) == 1


async def test_garbage_instead_of_a_handshake():
    async def garbage(reader, writer):
        writer.write(bytes(range(50)))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = PeerAddress.parse(f"{PEER_ID.hex()}@127.0.0.1:{port}")
    d = Downloader(peer, MAINNET, MemorySink(), FAST)
    task = asyncio.create_task(d.run())
    try:
        await eventually(lambda: d.stats.disconnects["handshake"] >= 1)
        assert d.stats.connections == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()  # untracks its metrics: later tests of the same peer id read theirs alone
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host", ["::1", "localhost"])
async def test_ipv6_and_dns_names(host):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    graph = make_graph(2)
    sink = MemorySink()
    listen = "::1" if host == "::1" else "127.0.0.1"
    async with ScriptedPeer(graph, host=listen) as peer:
        address = peer.address if host == "::1" else f"{PEER_ID.hex()}@localhost:{peer.port}"
        async with running_at(address, sink) as d:
            await asyncio.wait_for(d.sync_reported.wait(), 10)
            assert sorted(sink.raws) == sorted(graph.dump())


def test_tor_peers_fail_clearly():
    with pytest.raises(ConfigError, match=r"Tor \(.onion\) peers are not supported"):
        load_settings(downloader={"peer": f"{PEER_ID.hex()}@{'a' * 56}.onion:9735"})


async def test_queries_and_pings_from_the_peer_are_answered():
    async def script(conn):
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())
        await conn.dumped.wait()
        await conn.send(q.QueryChannelRange(MAINNET, 100, 50).encode())
        await conn.send(q.QueryShortChannelIds(MAINNET, (1, 2)).encode())
        await conn.send(c.Ping(7).encode())
        await conn.send(c.Ping(65532).encode())  # BOLT 1: must not be answered
        await serving

    async with ScriptedPeer(make_graph(1), script) as peer, running(peer, MemorySink()) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 10)
        conn = peer.connections[0]
        await eventually(lambda: any(r[:2] == b"\x01\x06" for r in conn.received))
        await eventually(lambda: any(r[:2] == b"\x01\x08" for r in conn.received))
        replies = {m.message_type(r): r for r in conn.received}
        # One final reply (sync_complete set, as BOLT 7 requires of the last) covering the query.
        assert q.decode_reply_channel_range(replies[q.REPLY_CHANNEL_RANGE]) == q.ReplyChannelRange(
            MAINNET, 100, 50, True, ()
        )
        assert (
            q.decode_reply_short_channel_ids_end(replies[q.REPLY_SHORT_CHANNEL_IDS_END]).full_information
            is False
        )
        await eventually(lambda: d.stats.received["ping"] == 2)
        await eventually(lambda: any(r == c.Pong(bytes(7)).encode() for r in conn.received))
        assert not any(m.message_type(r) == c.PONG and len(r) > 1000 for r in conn.received)
        assert conn.their_init is not None and conn.their_init.networks == (MAINNET,)
        assert feat.supports(conn.their_init.features, feat.GOSSIP_QUERIES)


async def test_a_peer_that_lists_channels_but_never_sends_them_is_not_called_synced():
    graph = make_graph(30)
    behaviour = PeerBehaviour(dump=False)
    options = replace(FAST, sync=replace(FAST.sync, stuck_timeout=0.5))
    sink = MemorySink()
    async with ScriptedPeer(graph, behaviour=behaviour) as peer, running(peer, sink, options) as d:
        await eventually(lambda: d.stats.disconnects["sync_incomplete"] >= 1)
        assert not d.sync_reported.is_set() and not sink.reports
        assert d.stats.state != "synced"


async def test_an_unreachable_peer_is_retried_with_growing_backoff():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = replace(FAST, backoff_min=0.02, backoff_max=10)
    async with running_at(f"{PEER_ID.hex()}@127.0.0.1:{port}", MemorySink(), options) as d:
        await eventually(lambda: d.stats.attempts >= 5)
        assert d.stats.disconnects["connect"] >= 4 and d.stats.connections == 0
        delays = [d.backoff.next_delay() for _ in range(3)]  # the schedule it is on: doubling
        assert delays[2] > delays[0] * 2
