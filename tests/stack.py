"""Real lnsync service processes on loopback for integration and fault tests.

``Stack`` gives each test its own ports and environment (a fresh database from the
``database_url`` fixture), starts ``lnsync serve <service>`` subprocesses exactly as a container
or ``lnsync up`` would, waits for the gRPC health protocol to report SERVING, and stops (or
kills) them. Nothing here is a mock: these are the production processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from lnsync import rpc
from lnsync.gossip.messages import decode_gossip
from lnsync.rgs.history import GossipHistory
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc
from services.persistence.store import Incoming, write_batch
from tests.conftest import free_port
from tests.rgs.histories import MAINNET, START, event_message, random_events

SERVICES = ("persistence", "lookup", "snapshotter", "gateway", "downloader")
# The peer id tests report a finished initial sync for.
SYNCED_PEER = "02" + "ab" * 32


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        """kill -9: no clean-up at all."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    database_url: str
    workdir: Path
    network: str = "bitcoin"
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[ServiceProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in (*SERVICES, "gateway-admin"):
            self.ports.setdefault(name, free_port())

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
        env.update(
            LNSYNC_DATABASE_URL=self.database_url,
            LNSYNC_NETWORK=self.network,
            LNSYNC_DATA_DIR=str(self.workdir),
            LNSYNC_LOG_LEVEL="debug",
            LNSYNC_PERSISTENCE__LISTEN=self.target("persistence"),
            LNSYNC_LOOKUP__LISTEN=self.target("lookup"),
            LNSYNC_SNAPSHOTTER__LISTEN=self.target("snapshotter"),
            LNSYNC_GATEWAY__LISTEN=self.target("gateway"),
            LNSYNC_GATEWAY__ADMIN_LISTEN=self.target("gateway-admin"),
            LNSYNC_DOWNLOADER__LISTEN=self.target("downloader"),
            # Tests publish generations for their (past) histories themselves.
            LNSYNC_SNAPSHOTTER__FIRST_AFTER_SYNC="false",
        )
        env.update(self.extra_env)
        return env

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
        """``lnsync serve NAME``; ``env`` overrides settings for this process only (a second replica)."""
        log_path = self.workdir / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lnsync", "serve", name, *args],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        service = ServiceProcess(name, proc, log_path)
        self.processes.append(service)
        return service

    async def wait_healthy(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await rpc.check_health(self.target(name), timeout=1):
                return
            await asyncio.sleep(0.1)
        logs = "\n".join(p.log()[-3000:] for p in self.processes if p.name == name)
        raise AssertionError(f"{name} not healthy after {timeout}s:\n{logs}")

    async def start_healthy(self, name: str, *args: str, timeout: float = 60) -> ServiceProcess:
        service = self.start(name, *args)
        await self.wait_healthy(name, timeout)
        return service

    def close(self) -> None:
        """Stop every process, then print the tail of each log: pytest shows captured output only
        for a failing test, where these lines are what explains the failure."""
        for p in reversed(self.processes):
            p.stop()
        for p in self.processes:
            print(f"----- {p.log_path.name} (last lines) -----\n{p.log()[-6000:]}")


async def load_history(
    database_url: str, seed: int, days: int, channels: int = 40, start: int = START
) -> GossipHistory:
    """Write a random history straight into the store (as persistence would) and return its model."""
    history = GossipHistory(MAINNET)
    items = []
    for ev in random_events(seed, channels=channels, days=days, start=start):
        raw = event_message(ev)
        history.add_message(raw, ev.seen)
        items.append(Incoming(decode_gossip(raw), ev.seen * 1_000_000))
    conn = await asyncpg.connect(database_url)
    try:
        for i in range(0, len(items), 500):
            await write_batch(conn, items[i : i + 500])
    finally:
        await conn.close()
    return history


async def report_synced(stack: Stack, peer_id: str = SYNCED_PEER) -> None:
    """Tell persistence a peer finished its initial sync (opens the gate of lookup and snapshotter)."""
    async with rpc.channel(stack.target("persistence")) as ch:
        stub = persistence_pb2_grpc.PersistenceStub(ch)
        await stub.ReportSyncComplete(persistence_pb2.ReportSyncCompleteRequest(peer_id=peer_id), timeout=10)


async def regenerate(stack: Stack, reference_time: int, timeout: float = 300) -> int:
    """Publish a generation for ``reference_time``; returns its id.

    The snapshotter makes its own first generation (for now) as soon as the sync is done; wait for
    it first, so it cannot be published after (and instead of) the one asked for here.
    """
    async with rpc.channel(stack.target("snapshotter")) as ch:
        snaps = snapshots_pb2_grpc.SnapshotsStub(ch)
        deadline = time.monotonic() + 60
        while (await snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)).generation == 0:
            assert time.monotonic() < deadline, "the snapshotter made no generation of its own"
            await asyncio.sleep(0.2)
        # Older than that generation (for now): the tests' histories lie in the past.
        request = snapshots_pb2.RegenerateRequest(reference_time=reference_time, replace_newer=True)
        resp = await snaps.Regenerate(request, timeout=timeout)
        return int(resp.generation)


async def stored_gossip(database_url: str) -> list[bytes]:
    """Every stored gossip message (a node announcement is stored once per node: its latest)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT raw FROM channel_announcements UNION ALL SELECT raw FROM channel_updates "
            "UNION ALL SELECT raw FROM node_announcements"
        )
    finally:
        await conn.close()
    return [bytes(r[0]) for r in rows]


async def until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll the async ``check`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
