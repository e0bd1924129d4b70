"""The demo gossip peer: a small Lightning node that only gossips, for ``lnsync up --demo``.

It accepts BOLT 8 connections (the downloader's own transport, in the responder role), exchanges
BOLT 1 ``init`` offering gossip_queries, and answers BOLT 7 like a real node:
``query_channel_range`` with the channels in the asked blocks, ``query_short_channel_ids`` with
those channels (and their nodes), ``gossip_timestamp_filter`` with the gossip in the window and,
from then on, every new update that falls in it. Every ``publish_interval`` seconds it changes a
few channels' fees (:mod:`services.demopeer.graph`), so the stack behind it sees live gossip.

Health (gRPC, for the supervisor) is SERVING once the gossip port is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from lnsync.chain import chain_hash
from lnsync.config import ConfigError, parse_listen
from lnsync.gossip import control as c
from lnsync.gossip import features as feat
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.errors import GossipError
from lnsync.gossip.signing import pubkey_of
from lnsync.peer.transport import NoiseTransport, TransportError, handshake, set_nodelay
from lnsync.service import ReadySignal, run_service
from services.demopeer.graph import DemoDataError, DemoGraph

log = logging.getLogger(__name__)

# The demo peer's identity: fixed, so `lnsync up --demo` knows the pubkey to dial. A second demo
# peer (a cluster test with two peers) takes another name and so another node id.
DEFAULT_IDENTITY = "lnsync-demo-peer"


def demo_secret(identity: str = DEFAULT_IDENTITY) -> bytes:
    """The node secret of the demo peer called ``identity`` (public by design: demo data only)."""
    return hashlib.sha256(identity.encode()).digest()


DEMO_SECRET = demo_secret()
FEATURES = feat.from_bits([feat.GOSSIP_QUERIES + 1])  # gossip_queries, optional
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
# reply_channel_range: scids per reply (8 bytes each, well inside one 65,535-byte message).
SCIDS_PER_REPLY = 4000


@dataclass(frozen=True)
class DemoPeerOptions:
    listen: str  # the gossip (BOLT 8) port
    health_listen: str  # gRPC health, for the supervisor
    state: Path  # where the current messages are kept between runs
    dataset: Path
    publish_interval: float = 5.0
    updates_per_publish: int = 3
    network: str = "bitcoin"
    identity: str = DEFAULT_IDENTITY


class DemoConnection:
    """One downloader (or any peer) connected to the demo peer."""

    def __init__(self, noise: NoiseTransport, peer: DemoPeer) -> None:
        self.noise = noise
        self.peer = peer
        self.filter: q.GossipTimestampFilter | None = None

    async def run(self) -> None:
        await self.noise.send(c.Init(features=FEATURES, networks=(self.peer.chain,)).encode())
        while True:
            raw = await self.noise.read_message()
            if len(raw) < 2:
                continue
            try:
                await self._handle(m.message_type(raw), raw)
            except GossipError as exc:  # unreadable: tell the peer, as a node would, and go on
                log.info(
                    "demo peer: unreadable message from %s: %s", self.noise.remote_pubkey.hex()[:16], exc
                )
                await self.noise.send(
                    c.ErrorMessage(bytes(32), str(exc)[:200].encode(), warning=True).encode()
                )

    async def _handle(self, t: int, raw: bytes) -> None:
        g = self.peer.graph
        if t == c.PING:
            pong = c.decode_ping(raw).pong()
            if pong is not None:
                await self.noise.send(pong.encode())
        elif t == q.QUERY_CHANNEL_RANGE:
            query = q.decode_query_channel_range(raw)
            if query.chain_hash != self.peer.chain:
                return
            await self._reply_range(query)
        elif t == q.QUERY_SHORT_CHANNEL_IDS:
            scid_query = q.decode_query_short_channel_ids(raw)
            nodes: dict[bytes, None] = {}
            for scid in scid_query.short_channel_ids:
                if scid in g.channels:
                    for msg in g.channel_messages(scid):
                        self.noise.write_message(msg)
                    ann = g.channels[scid]
                    nodes[ann.node_id_1] = nodes[ann.node_id_2] = None
            for msg in g.node_messages(nodes):
                self.noise.write_message(msg)
            await self.noise.send(q.ReplyShortChannelIdsEnd(scid_query.chain_hash, True).encode())
        elif t == q.GOSSIP_TIMESTAMP_FILTER:
            flt = q.decode_gossip_timestamp_filter(raw)
            if flt.chain_hash != self.peer.chain:
                return
            self.filter = flt
            sent = g.matching(flt)
            for msg in sent:
                self.noise.write_message(msg)
            await self.noise.drain()
            log.info(
                "demo peer: sent %d messages from timestamp %d to %s",
                len(sent), flt.first_timestamp, self.noise.remote_pubkey.hex()[:16],
            )  # fmt: skip
        # init, pongs, replies and gossip from the other side: nothing to answer

    async def _reply_range(self, query: q.QueryChannelRange) -> None:
        end = min(query.end_blocknum, 1 << 32)
        scids = self.peer.graph.scids_in_blocks(query.first_blocknum, end)
        chunks = [scids[i : i + SCIDS_PER_REPLY] for i in range(0, len(scids), SCIDS_PER_REPLY)] or [[]]
        first = query.first_blocknum
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            # Consecutive replies cover the query without gaps; the last one reaches its end.
            upto = end if last else (chunks[i + 1][0] >> 40)
            reply = q.ReplyChannelRange(self.peer.chain, first, upto - first, True, tuple(chunk))
            self.noise.write_message(reply.encode())
            first = upto
        await self.noise.drain()

    async def relay(self, messages: list[bytes]) -> None:
        """Send the new updates this connection's filter asks for."""
        flt = self.filter
        if flt is None:
            return
        for raw in messages:
            if flt.matches(m.decode_channel_update(raw).timestamp):
                self.noise.write_message(raw)
        await self.noise.drain()


class DemoPeer:
    """The listener, the graph and the publisher; also the health-only gRPC service."""

    service_names = ("lnsync.DemoPeer",)

    def __init__(self, options: DemoPeerOptions) -> None:
        self.options = options
        self.chain = chain_hash(options.network)
        self.graph, resumed = DemoGraph.load(options.dataset, options.state, int(time.time()))
        self.resumed = resumed
        self.connections: set[DemoConnection] = set()
        self.rng = random.Random()
        self.published = 0
        self._server: asyncio.Server | None = None

    def register(self, server: grpc.aio.Server) -> None:
        return None  # health only

    async def run(self, ready: ReadySignal) -> None:
        o = self.options
        o.state.parent.mkdir(parents=True, exist_ok=True)
        self.graph.save(o.state)
        host, port = parse_listen(o.listen)
        self._server = await asyncio.start_server(self._accept, host, port)
        g = self.graph
        log.info(
            "demo peer %s@%s: %d channels, %d updates, %d nodes (%s)",
            pubkey_of(demo_secret(o.identity)).hex(), o.listen, len(g.channels), len(g.updates), len(g.nodes),
            "resumed from its state file" if self.resumed else "re-timed from the bundled dataset",
        )  # fmt: skip
        await ready.set(True)
        while True:
            await asyncio.sleep(o.publish_interval)
            await self.publish()

    async def publish(self) -> None:
        new = self.graph.change_fees(self.options.updates_per_publish, int(time.time()), self.rng)
        await asyncio.to_thread(self.graph.save, self.options.state)
        self.published += len(new)
        for conn in list(self.connections):
            with contextlib.suppress(TransportError, ConnectionError):
                await conn.relay(new)
        log.debug("demo peer: published %d channel updates", len(new))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        set_nodelay(writer)
        try:
            secret = demo_secret(self.options.identity)
            noise = await handshake(reader, writer, secret, None, timeout=HANDSHAKE_TIMEOUT)
        except TransportError as exc:
            log.info("demo peer: handshake failed: %s", exc)
            writer.close()
            return
        conn = DemoConnection(noise, self)
        self.connections.add(conn)
        who = noise.remote_pubkey.hex()[:16]
        log.info("demo peer: %s connected", who)
        try:
            await conn.run()
        except (TransportError, ConnectionError) as exc:
            log.info("demo peer: %s left (%s)", who, exc)
        finally:
            self.connections.discard(conn)
            await noise.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                await conn.noise.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)


def demo_peer_address(listen: str, identity: str = DEFAULT_IDENTITY) -> str:
    """``pubkey@host:port`` of the demo peer called ``identity`` listening on ``listen``."""
    host, port = parse_listen(listen)
    return f"{pubkey_of(demo_secret(identity)).hex()}@{host}:{port}"


async def main(options: DemoPeerOptions) -> int:
    try:
        peer = DemoPeer(options)
    except DemoDataError as exc:
        raise ConfigError(f"demo peer: {exc}") from None
    return await run_service("demo-peer", options.health_listen, peer)
