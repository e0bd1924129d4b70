"""Hostile peers, bounded (issue 25): each a real BOLT 8 peer (tests/downloader/scripted.py)
scripted to misbehave; the downloader must spend bounded bytes, memory and time on it and end the
connection with a clear reason."""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import replace

import pytest

from lnsync.gossip import control as c
from lnsync.gossip import queries as q
from tests.downloader.scripted import MAINNET, MemorySink, PeerBehaviour, ScriptedPeer, make_graph
from tests.downloader.test_session import FAST, eventually, running

PONG_BYTES = 65531  # the largest pong a ping may ask for


async def test_a_ping_flood_asking_for_large_pongs_gets_few_answers() -> None:
    """Each ping asks for a 65,531-byte pong: answered within the pong byte budget (a burst of
    256 kB, then 32 kB/s), the rest counted as junk, so the peer is dropped; before, every ping was
    answered (65 kB each)."""
    flood = 200

    async def script(conn):  # type: ignore[no-untyped-def]
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())  # reads what we send, pongs included
        await conn.dumped.wait()
        for _ in range(flood):
            conn.noise.write_message(c.Ping(PONG_BYTES).encode())
        await conn.noise.drain()
        await serving

    options = replace(FAST, max_junk=100)
    async with ScriptedPeer(make_graph(2), script) as peer, running(peer, MemorySink(), options) as d:
        await eventually(lambda: d.stats.disconnects["flood"] >= 1, 10)
        conn = peer.connections[0]
        await asyncio.wait_for(conn.closed.wait(), 5)
        big = [r for r in conn.received if len(r) > PONG_BYTES]
        assert len(big) <= options.pong_bytes_burst // PONG_BYTES + 1, len(big)
        assert d.stats.peer_messages["ping_unanswered"] >= 100
        assert d.stats.bytes_out < 10 * (PONG_BYTES + 100), d.stats.bytes_out


async def test_a_65535_byte_unknown_even_message_ends_the_connection() -> None:
    async def script(conn):  # type: ignore[no-untyped-def]
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())
        await conn.dumped.wait()
        await conn.send(struct.pack(">H", 32770) + bytes(65533))  # the largest BOLT 8 message
        await serving

    graph = make_graph(2)
    sink = MemorySink()
    async with ScriptedPeer(graph, script) as peer, running(peer, sink) as d:
        await eventually(lambda: d.stats.disconnects["unknown_even_type"] >= 1)
        assert sorted(set(sink.raws)) == sorted(graph.dump())


@pytest.mark.parametrize(
    "junk",
    [
        struct.pack(">H", 32769) + bytes(100),  # unknown odd type
        c.Init(features=b"\x80", networks=(MAINNET,)).encode(),  # a second init
        c.Pong(bytes(300)).encode(),  # a pong to no ping of ours (ours ask for 1..255 bytes)
        q.ReplyShortChannelIdsEnd(MAINNET, True).encode(),  # to no query of ours
        q.GossipTimestampFilter(MAINNET, 0, 0xFFFFFFFF).encode(),  # we relay nothing to filter
    ],
    ids=["unknown_odd", "second_init", "unsolicited_pong", "reply_short_channel_ids_end", "timestamp_filter"],
)
async def test_floods_of_useless_messages_drop_the_peer(junk: bytes) -> None:
    async def script(conn):  # type: ignore[no-untyped-def]
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())
        await conn.dumped.wait()
        for _ in range(400):
            conn.noise.write_message(junk)
        await conn.noise.drain()
        await serving

    graph = make_graph(2)
    sink = MemorySink()
    options = replace(FAST, max_junk=100)
    async with ScriptedPeer(graph, script) as peer, running(peer, sink, options) as d:
        await eventually(lambda: d.stats.disconnects["flood"] >= 1, 10)
        assert sorted(set(sink.raws)) == sorted(graph.dump())


async def test_a_channel_range_that_never_ends_is_given_up_on_time() -> None:
    """A reply_channel_range every 0.2 s that never reaches the end of our query (each reply
    extended the deadline, so the sync waited for ever): the range is given up at
    range_max_seconds after the query, and the sync completes without it."""

    async def script(conn):  # type: ignore[no-untyped-def]
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())
        block = 0
        while not conn.closed.is_set():
            reply = q.ReplyChannelRange(MAINNET, block, 1, False, ())
            await conn.send(reply.encode())
            block += 1
            await asyncio.sleep(0.2)
        await serving

    graph = make_graph(3)
    options = replace(FAST, sync=replace(FAST.sync, range_timeout=1.0, range_max_seconds=2.0))
    sink = MemorySink()
    behaviour_started = time.monotonic()
    behaviour = PeerBehaviour(answer_range=False)  # only the script's endless replies
    async with ScriptedPeer(graph, script, behaviour) as peer, running(peer, sink, options) as d:
        await asyncio.wait_for(d.sync_reported.wait(), 15)
        assert d.stats.invalid["bad_range_reply"] == 0
        assert time.monotonic() - behaviour_started < 10
        assert sorted(set(sink.raws)) == sorted(graph.dump())
