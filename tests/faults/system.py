"""The whole system on loopback for fault tests: ``lnsync up`` (its supervisor restarts what dies),
scripted Lightning peers that misbehave on request, and clients that record every answer.

Nothing is mocked: the peers are real BOLT 8 responders (tests/downloader/scripted.py), the
services are the production processes started by ``lnsync up``, the database is real PostgreSQL.
The test injects faults from outside (SIGKILL, ``pg_ctl stop``) and afterwards reads what the
clients saw, what the store holds and how long each process took to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil

from lnsync import rpc
from lnsync.gossip import messages as m
from lnsync.gossip import queries as q
from lnsync.gossip.signing import pubkey_of
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from tests.conftest import free_port, free_ports
from tests.downloader.scripted import Graph, PeerBehaviour, PeerConnection, ScriptedPeer, make_graph

GRPC_SERVICES = ("persistence", "lookup", "snapshotter")
# Answers a client may get while a dependency is down or not ready yet: it retries them.
RETRYABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
RETRYABLE_HTTP = {503}
CONNECTION_REFUSED = "connection"  # the gateway itself was down: the client's retry case too


# ------------------------------------------------------------------------------------- peers


@dataclass
class FaultPeer:
    """A gossip peer whose dump is paced (so faults land in the middle of it) and holds every
    message it ever sent, live updates included: any connection's dump resends all of them, so the
    store must end up with exactly :meth:`sent`.

    ``mode``: ``honest``; ``disconnect`` (first connection closes mid-dump); ``stall`` (first
    connection goes silent mid-dump: no gossip, no pongs); ``flood`` (first connection repeats its
    dump as fast as it can).
    """

    name: str
    channels: int
    mode: str = "honest"
    pace: int = 60  # messages per 50 ms tick
    timestamp: int = field(default_factory=lambda: int(time.time()) - 7200)
    graph: Graph = field(init=False)
    peer: ScriptedPeer = field(init=False)
    live: list[bytes] = field(default_factory=list)
    _open: set[PeerConnection] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.secret = hashlib.sha256(f"fault-peer-{self.name}".encode()).digest()
        self.graph = make_graph(self.channels, nodes=8, timestamp=self.timestamp)
        behaviour = PeerBehaviour(dump=False, answer_scid_queries=True)
        self.peer = ScriptedPeer(self.graph, self._script, behaviour, secret=self.secret)
        self._next_ts = self.timestamp + self.channels + 1

    @property
    def node_id(self) -> str:
        return pubkey_of(self.secret).hex()

    @property
    def connections(self) -> int:
        return len(self.peer.connections)

    def sent(self) -> set[bytes]:
        return set(self.graph.dump())

    async def __aenter__(self) -> FaultPeer:
        await self.peer.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.peer.__aexit__(*exc)

    async def send_live_update(self) -> bytes:
        """A new channel_update, sent to every connection whose dump is done (and kept for later dumps)."""
        s = sorted(self.graph.announcements)[len(self.live) % self.channels]
        raw = self.graph.update(s, len(self.live) % 2, self._next_ts, fee=len(self.live) + 10)
        self._next_ts += 1
        self.graph.updates[s].append(raw)
        self.live.append(raw)
        for conn in list(self._open):
            with contextlib.suppress(Exception):
                await conn.send(raw)
        return raw

    async def _script(self, conn: PeerConnection) -> None:
        first = len(self.peer.connections) == 1
        await conn.send_init()
        serving = asyncio.create_task(conn.serve())
        try:
            while not any(m.message_type(r) == q.GOSSIP_TIMESTAMP_FILTER for r in conn.received):
                if serving.done():
                    return
                await asyncio.sleep(0.02)
            dump = self.graph.dump()
            if first and self.mode == "flood":
                for _ in range(40):
                    for raw in dump:
                        conn.noise.write_message(raw)
                    await conn.noise.drain()
            half = len(dump) // 2
            for i in range(0, len(dump), self.pace):
                if first and self.mode in ("disconnect", "stall") and i >= half:
                    if self.mode == "disconnect":
                        return  # the caller closes the connection: a peer gone mid-dump
                    serving.cancel()  # silent: reads nothing, answers nothing
                    await asyncio.Event().wait()
                for raw in dump[i : i + self.pace]:
                    conn.noise.write_message(raw)
                await conn.noise.drain()
                await asyncio.sleep(0.05)
            # Live updates made while this connection dumped were sent to nobody on it yet.
            for raw in self.live:
                if raw not in dump:
                    conn.noise.write_message(raw)
            await conn.noise.drain()
            self._open.add(conn)
            await serving
        finally:
            self._open.discard(conn)
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await serving


# ------------------------------------------------------------------------------- the system


@dataclass
class Recovery:
    service: str
    phase: str
    seconds: float
    killed_at: float


@dataclass
class UpSystem:
    """``lnsync up`` with every port chosen for this test, as one supervised process tree."""

    workdir: Path
    peers: list[FaultPeer]
    database_url: str = ""  # empty: lnsync up's embedded PostgreSQL in workdir/data/pg
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    recoveries: list[Recovery] = field(default_factory=list)
    max_rss: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.ports = {name: free_port() for name in (*GRPC_SERVICES, "gateway", "gateway-admin")}
        self.downloader_base = free_ports(len(self.peers))  # downloader i listens on base + i
        self.log_path = self.workdir / "up.log"

    def target(self, name: str) -> str:
        if name.startswith("downloader-"):
            index = next(i for i, p in enumerate(self.peers) if p.node_id.startswith(name[11:]))
            return f"127.0.0.1:{self.downloader_base + index}"
        return f"127.0.0.1:{self.ports[name]}"

    @property
    def url(self) -> str:
        return f"http://{self.target('gateway')}"

    @property
    def service_names(self) -> list[str]:
        return [*GRPC_SERVICES, *(f"downloader-{p.node_id[:8]}" for p in self.peers), "gateway"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
        env.update(
            LNSYNC_LOG_LEVEL="info",
            LNSYNC_INGEST_LAG="1",
            LNSYNC_PERSISTENCE__LISTEN=self.target("persistence"),
            LNSYNC_LOOKUP__LISTEN=self.target("lookup"),
            LNSYNC_SNAPSHOTTER__LISTEN=self.target("snapshotter"),
            LNSYNC_SNAPSHOTTER__INTERVAL="10800",
            LNSYNC_DOWNLOADER__LISTEN=f"127.0.0.1:{self.downloader_base}",
            LNSYNC_DOWNLOADER__SYNC_SETTLE="1",
            LNSYNC_DOWNLOADER__BACKOFF_MIN="0.2",
            LNSYNC_DOWNLOADER__BACKOFF_MAX="2",
            LNSYNC_GATEWAY__WORKERS="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        argv = [sys.executable, "-m", "lnsync", "up", "--plaintext", "--network", "bitcoin"]
        argv += ["--data-dir", str(self.workdir / "data"), "--http-port", str(self.ports["gateway"])]
        argv += ["--admin-port", str(self.ports["gateway-admin"])]
        if self.database_url:
            argv += ["--database-url", self.database_url]
        for p in self.peers:
            argv += ["--peer", p.peer.address]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def first_traceback(self) -> str | None:
        """The log around its first traceback, or None if it has none."""
        log = self.log()
        at = log.find("Traceback")
        return None if at < 0 else log[max(0, at - 1500) : at + 4500]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    # -- the supervised children ------------------------------------------------------------------

    def children(self) -> dict[str, psutil.Process]:
        """The service processes ``lnsync up`` runs now, by service name."""
        assert self.proc is not None
        out: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                argv = child.cmdline()
                if "serve" not in argv:
                    continue
                service = argv[argv.index("serve") + 1]
                if service == "downloader":
                    service = "downloader-" + argv[argv.index("--peer") + 1][:8]
                out[service] = child
        return out

    def sample_rss(self) -> None:
        for name, proc in self.children().items():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                self.max_rss[name] = max(self.max_rss[name], rss)

    async def healthy(self, name: str) -> bool:
        if name == "gateway":
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r,
                ):
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False
        return await rpc.check_health(self.target(name), timeout=1)

    async def wait_all_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for name in self.service_names:
            while not await self.healthy(name):
                assert self.proc is not None and self.proc.poll() is None, f"lnsync up exited:\n{self.log()}"
                assert time.monotonic() < deadline, (
                    f"{name} not healthy after {timeout}s:\n{self.log()[-4000:]}"
                )
                await asyncio.sleep(0.1)

    async def kill_and_time_recovery(self, name: str, phase: str, timeout: float = 60) -> Recovery:
        """kill -9 the service; wait until the supervisor's new process answers its health check."""
        old = self.children()[name]
        old.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(old.wait, 10)
        while True:
            new = self.children().get(name)
            if new is not None and new.pid != old.pid and await self.healthy(name):
                break
            assert time.monotonic() - killed_at < timeout, f"{name} did not come back:\n{self.log()[-4000:]}"
            await asyncio.sleep(0.05)
        recovery = Recovery(name, phase, time.monotonic() - killed_at, killed_at)
        self.recoveries.append(recovery)
        return recovery


# ----------------------------------------------------------------------------------- clients


@dataclass
class Answer:
    at: float
    client: str
    outcome: str  # "200", "503", "UNAVAILABLE", "connection", ...


@dataclass
class Clients:
    """Wallet-like HTTP clients on the gateway and gRPC clients of lookup and the snapshotter,
    each in a loop, recording every answer until stopped."""

    system: UpSystem
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._http("snapshot", "/snapshot/v2/0", 0.05)),
            asyncio.create_task(self._http("snapshot-delta", "/snapshot/v2/{hour_ago}", 0.1)),
            asyncio.create_task(self._http("delta", "/delta/v2/{hour_ago}", 0.25)),
            asyncio.create_task(self._lookup(0.3)),
            asyncio.create_task(self._snapshots(0.2)),
            asyncio.create_task(self._rss(0.5)),
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _record(self, client: str, outcome: str) -> None:
        self.answers.append(Answer(time.monotonic(), client, outcome))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _http(self, name: str, path: str, every: float) -> None:
        timeout = aiohttp.ClientTimeout(total=20)
        # No decompression: the body must be exactly Content-Length bytes, gzip or not.
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            while not self._stop.is_set():
                url = self.system.url + path.format(hour_ago=int(time.time()) - 3600)
                try:
                    async with session.get(url) as resp:
                        body = await resp.read()
                        outcome = str(resp.status)
                        if resp.status == 200 and len(body) != int(resp.headers["Content-Length"]):
                            outcome = "truncated"
                except (aiohttp.ClientConnectionError, ConnectionError):
                    outcome = CONNECTION_REFUSED
                except TimeoutError:
                    outcome = "timeout"
                self._record(name, outcome)
                await self._pause(every)

    async def _lookup(self, every: float) -> None:
        async with rpc.channel(self.system.target("lookup")) as ch:
            stub = lookup_pb2_grpc.LookupStub(ch)
            while not self._stop.is_set():
                request = lookup_pb2.ComputeDeltaRequest(
                    last_sync_timestamp=int(time.time()) - 3600, version=2
                )
                self._record("grpc-lookup", await _grpc_outcome(stub.ComputeDelta(request, timeout=20)))
                await self._pause(every)

    async def _snapshots(self, every: float) -> None:
        async with rpc.channel(self.system.target("snapshotter")) as ch:
            stub = snapshots_pb2_grpc.SnapshotsStub(ch)
            while not self._stop.is_set():
                request = snapshots_pb2.GetSnapshotRequest(timestamp=0, version=2)
                self._record("grpc-snapshot", await _grpc_outcome(stub.GetSnapshot(request, timeout=20)))
                await self._pause(every)

    async def _rss(self, every: float) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self.system.sample_rss)
            await self._pause(every)

    # -- verdicts ---------------------------------------------------------------------------------

    def failures(self) -> list[Answer]:
        """Answers that are neither a success nor a retryable "come back later"."""
        ok = {
            "200",
            "304",
            "OK",
            CONNECTION_REFUSED,
            *map(str, RETRYABLE_HTTP),
            *(c.name for c in RETRYABLE_GRPC),
        }
        return [a for a in self.answers if a.outcome not in ok]

    def lost_generation(self) -> list[Answer]:
        """Snapshot answers that were not a snapshot after one had been served (the generation vanished).

        The gateway process being down (connection refused) or the snapshotter being down (gRPC
        UNAVAILABLE) is a dead process, not a lost generation; a 503 or NOT_FOUND is."""
        out: list[Answer] = []
        for client, success, down in (
            ("snapshot", "200", CONNECTION_REFUSED),
            ("grpc-snapshot", "OK", "UNAVAILABLE"),
        ):
            mine = [a for a in self.answers if a.client == client]
            first = next((a.at for a in mine if a.outcome == success), None)
            if first is not None:
                out += [a for a in mine if a.at > first and a.outcome not in (success, down)]
        return out

    def summary(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = {}
        for a in self.answers:
            table.setdefault(a.client, Counter())[a.outcome] += 1
        return {k: dict(v) for k, v in sorted(table.items())}


async def _grpc_outcome(call: Any) -> str:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


# ------------------------------------------------------------------------------------- store


def loss_report(peers: list[FaultPeer], rows: list[bytes]) -> dict[str, int]:
    """Messages the peers sent that the store lacks, and rows stored more than once.

    Node announcements are stored per node (the latest), so peers sharing nodes count each once."""
    sent: set[bytes] = set().union(*(p.sent() for p in peers))
    stored = set(rows)
    return {
        "sent": len(sent),
        "stored": len(rows),
        "lost": len(sent - stored),
        "duplicated": len(rows) - len(stored),
        "unexpected": len(stored - sent),
    }


def metric_sum(text: str, name: str, label_filter: str = "") -> float:
    """Sum of a Prometheus metric's samples in exposition ``text`` (those whose labels contain
    ``label_filter``, when given)."""
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label_filter in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape(listen: str) -> str:
    """The metrics text a service exposes on ``listen`` (its ``--metrics-listen``)."""
    async with aiohttp.ClientSession() as s, s.get(f"http://{listen}/metrics") as r:
        return await r.text()
