"""Test peers and sinks for the downloader.

- :class:`ScriptedPeer` is a real BOLT 8 responder on loopback (the downloader's own transport in
  the responder role) whose behaviour each test scripts: an honest gossip server by default, and
  every kind of misbehaviour on request.
- :class:`MemorySink` is an in-process sink with the IngestClient's window semantics (bounded
  unacknowledged messages; ``send`` waits when full). The peer-side tests use it because they
  assert exactly what the downloader forwards and need acknowledgements on demand (to hold the
  window full), which the real service cannot be told to do; everything that needs the store
  (tests/downloader/test_with_persistence.py) runs the real persistence service.
- :func:`make_graph` signs a small synthetic graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from lnsync.chain import chain_hash
from lnsync.gossip import control as c
from lnsync.gossip import features as feat
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.signing import (
    pubkey_of,
    sign_channel_announcement,
    sign_channel_update,
    sign_node_announcement,
)
from lnsync.peer.transport import NoiseTransport, PeerClosed, TransportError, handshake
from services.downloader.sink import SyncCounts

MAINNET = chain_hash("bitcoin")
REGTEST = chain_hash("regtest")
PEER_SECRET = hashlib.sha256(b"scripted-peer").digest()
PEER_ID = pubkey_of(PEER_SECRET)
GOSSIP_QUERIES_OPTIONAL = feat.from_bits([feat.GOSSIP_QUERIES + 1])


# ------------------------------------------------------------------------------------ graphs


def node_secret(i: int) -> bytes:
    return hashlib.sha256(f"scripted-node-{i}".encode()).digest()


def scid(i: int) -> int:
    return ((600_000 + i) << 40) | (i << 16) | 1


@dataclass
class Graph:
    """Signed gossip in dump order: per channel its announcement and two updates, then nodes."""

    announcements: dict[int, bytes] = field(default_factory=dict)
    updates: dict[int, list[bytes]] = field(default_factory=dict)
    nodes: list[bytes] = field(default_factory=list)
    origins: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (scid, direction) -> secret

    def dump(self) -> list[bytes]:
        out: list[bytes] = []
        for s, ann in self.announcements.items():
            out.append(ann)
            out.extend(self.updates[s])
        return out + self.nodes

    def matching(self, flt: q.GossipTimestampFilter) -> list[bytes]:
        """The dump a ``gossip_timestamp_filter`` asks for (BOLT 7): updates and node announcements
        in its window, each announcement before its channel's first update in the window. Junk a
        test planted (anything without a readable timestamp) is always sent."""
        if flt.first_timestamp == 0 and flt.timestamp_range == 0xFFFFFFFF:
            return self.dump()

        def wanted(raw: bytes) -> bool:
            try:
                return flt.matches(m.decode_gossip(raw).timestamp)  # type: ignore[union-attr]
            except Exception:
                return True

        out: list[bytes] = []
        for s, ann in self.announcements.items():
            ups = [u for u in self.updates[s] if wanted(u)]
            if ups:
                out += [ann, *ups]
        return out + [n for n in self.nodes if wanted(n)]

    def channel(self, s: int) -> list[bytes]:
        return [self.announcements[s], *self.updates[s]]

    def update(self, s: int, direction: int, timestamp: int, fee: int = 7, chain: bytes = MAINNET) -> bytes:
        return sign_channel_update(
            self.origins[(s, direction)], chain, s, timestamp, direction, 40, 1000, fee, 10, 10**9
        )


def make_graph(
    channels: int, nodes: int = 6, chain: bytes = MAINNET, timestamp: int = 1_700_000_000
) -> Graph:
    g = Graph()
    secrets = [node_secret(i) for i in range(nodes)]
    for i in range(channels):
        s = scid(i)
        a, b = secrets[i % nodes], secrets[(i + 1 + i // nodes) % nodes]
        if a == b:
            b = secrets[(i + 2) % nodes]
        btc_a, btc_b = hashlib.sha256(b"btc-a" + a).digest(), hashlib.sha256(b"btc-b" + b).digest()
        g.announcements[s] = sign_channel_announcement(chain, s, a, b, btc_a, btc_b)
        first, second = sorted((a, b), key=pubkey_of)
        g.origins[(s, 0)], g.origins[(s, 1)] = first, second
        g.updates[s] = [g.update(s, d, timestamp + i, chain=chain) for d in (0, 1)]
    g.nodes = [sign_node_announcement(x, timestamp, alias=f"n{i}".encode()) for i, x in enumerate(secrets)]
    return g


# -------------------------------------------------------------------------------------- sink


class MemorySink:
    """Keeps what it is sent; acknowledges at once (``auto_ack``) or when the test says so."""

    def __init__(self, window: int = 10_000, *, auto_ack: bool = True) -> None:
        self.window = window
        self.auto_ack = auto_ack
        self.messages: list[tuple[bytes, int]] = []
        self.funding: dict[bytes, int] = {}  # announcement -> funding_sats it was sent with
        self.acked = 0
        self.reports: list[tuple[str, SyncCounts]] = []
        self.caught_up: list[int] = []  # caught_up_to of each report
        self.fail_reports = 0  # the next N reports raise
        # What resume_point and known_channels answer (None: a fresh store, sync from scratch);
        # known_channels raises after ``fail_known_after`` channels when that is set.
        self.resume_at: int | None = None
        self.stored_channels: list[tuple[int, bytes, bytes]] = []
        self.fail_known_after: int | None = None
        self._changed = asyncio.Condition()

    @property
    def raws(self) -> list[bytes]:
        return [raw for raw, _ in self.messages]

    @property
    def unacked(self) -> int:
        return len(self.messages) - self.acked

    async def start(self) -> None:
        return None

    async def send(self, raw: bytes, received_at_us: int, funding_sats: int | None = None) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.unacked < self.window)
            self.messages.append((raw, received_at_us))
            if funding_sats is not None:
                self.funding[raw] = funding_sats
            if self.auto_ack:
                self.acked = len(self.messages)
            self._changed.notify_all()

    @property
    def rejections(self) -> dict[str, int]:
        return {}

    async def ack(self, n: int | None = None) -> None:
        async with self._changed:
            self.acked = len(self.messages) if n is None else min(len(self.messages), self.acked + n)
            self._changed.notify_all()

    async def flush(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.unacked == 0)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.messages) >= count)

        await asyncio.wait_for(enough(), timeout)

    async def report_sync_complete(self, peer_id: str, counts: SyncCounts, caught_up_to: int) -> None:
        if self.fail_reports:
            self.fail_reports -= 1
            raise ConnectionError("persistence unavailable")
        self.reports.append((peer_id, counts))
        self.caught_up.append(caught_up_to)

    async def resume_point(self, peer_id: str) -> int | None:
        return self.resume_at

    async def known_channels(self, max_channels: int) -> AsyncIterator[tuple[int, bytes, bytes]]:
        for i, channel in enumerate(self.stored_channels[:max_channels]):
            if i == self.fail_known_after:
                raise ConnectionError("persistence went away")
            yield channel

    async def close(self) -> None:
        return None


# -------------------------------------------------------------------------------------- peer


@dataclass
class PeerBehaviour:
    """How the honest part of a scripted peer behaves."""

    chain: bytes = MAINNET
    networks: tuple[bytes, ...] | None = (MAINNET,)
    features: bytes = GOSSIP_QUERIES_OPTIONAL
    answer_pings: bool = True
    answer_range: bool = True
    answer_scid_queries: bool = False
    dump: bool = True
    # channels listed in the range reply but left out of the dump (to be fetched by scid query)
    withheld: frozenset[int] = frozenset()


class PeerConnection:
    """The scripted peer's side of one connection."""

    def __init__(self, noise: NoiseTransport, graph: Graph, behaviour: PeerBehaviour) -> None:
        self.noise = noise
        self.graph = graph
        self.behaviour = behaviour
        self.received: list[bytes] = []
        self.their_init: c.Init | None = None
        self.filter: q.GossipTimestampFilter | None = None
        self.dumped = asyncio.Event()
        self.closed = asyncio.Event()

    async def send(self, raw: bytes) -> None:
        await self.noise.send(raw)

    async def send_init(self) -> None:
        b = self.behaviour
        await self.send(c.Init(features=b.features, networks=b.networks).encode())

    async def serve(self) -> None:
        """Answer like an honest gossip peer until the connection ends."""
        b = self.behaviour
        try:
            while True:
                raw = await self.noise.read_message()
                self.received.append(raw)
                t = m.message_type(raw)
                if t == c.INIT:
                    self.their_init = c.decode_init(raw)
                elif t == c.PING and b.answer_pings:
                    pong = c.decode_ping(raw).pong()
                    if pong is not None:
                        await self.send(pong.encode())
                elif t == q.QUERY_CHANNEL_RANGE and b.answer_range:
                    query = q.decode_query_channel_range(raw)
                    scids = tuple(sorted(self.graph.announcements))
                    reply = q.ReplyChannelRange(
                        b.chain, query.first_blocknum, query.number_of_blocks, True, scids
                    )
                    await self.send(reply.encode())
                elif t == q.GOSSIP_TIMESTAMP_FILTER and b.dump:
                    self.filter = q.decode_gossip_timestamp_filter(raw)
                    for msg in self.graph.matching(self.filter):
                        if self._withheld(msg):
                            continue
                        self.noise.write_message(msg)
                    await self.noise.drain()
                    self.dumped.set()
                elif t == q.QUERY_SHORT_CHANNEL_IDS and b.answer_scid_queries:
                    query = q.decode_query_short_channel_ids(raw)
                    for s in query.short_channel_ids:
                        if s in self.graph.announcements:
                            for msg in self.graph.channel(s):
                                self.noise.write_message(msg)
                    await self.send(q.ReplyShortChannelIdsEnd(b.chain, True).encode())
        except (TransportError, ConnectionError):
            pass
        finally:
            self.closed.set()

    def _withheld(self, msg: bytes) -> bool:
        if not self.behaviour.withheld or m.message_type(msg) == m.NODE_ANNOUNCEMENT:
            return False
        decoded = m.decode_gossip(msg)
        return getattr(decoded, "short_channel_id", None) in self.behaviour.withheld


Script = Callable[[PeerConnection], Awaitable[None]]


async def honest(conn: PeerConnection) -> None:
    await conn.send_init()
    await conn.serve()


class ScriptedPeer:
    """A BOLT 8 responder on loopback; each connection runs ``script`` (default: :func:`honest`)."""

    def __init__(
        self,
        graph: Graph | None = None,
        script: Script = honest,
        behaviour: PeerBehaviour | None = None,
        host: str = "127.0.0.1",
        secret: bytes = PEER_SECRET,
    ) -> None:
        self.graph = graph or Graph()
        self.secret = secret  # several peers in one test need distinct node ids
        self.script = script
        self.behaviour = behaviour or PeerBehaviour()
        self.host = host
        self.connections: list[PeerConnection] = []
        self.connected = asyncio.Event()
        self.handshake_failures = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedPeer:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{pubkey_of(self.secret).hex()}@{host}:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            noise = await handshake(reader, writer, self.secret, None, timeout=5)
        except TransportError:
            self.handshake_failures += 1
            writer.close()
            self._tasks.discard(task)
            return
        conn = PeerConnection(noise, self.graph, self.behaviour)
        self.connections.append(conn)
        self.connected.set()
        try:
            await self.script(conn)
        except (PeerClosed, ConnectionError):
            pass
        finally:
            conn.closed.set()
            with contextlib.suppress(Exception):
                await noise.close()
            self._tasks.discard(task)
