"""A real stack for the gateway tests: persistence, lookup, snapshotter and the gateway as processes.

A random gossip history is written straight into the store (as persistence would), one peer
reports its initial sync complete, the snapshotter publishes a generation for a reference time
inside the history, and the gateway (two worker processes, as configured by default) is started
once it can serve that generation. The stack is shared by the gateway tests of a session; tests
that change it (a new generation, a killed snapshotter) leave it serving.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from lnsync.pg import LocalPostgres
from lnsync.rgs.history import GossipHistory
from tests.conftest import fresh_database
from tests.rgs.histories import DAY, START
from tests.stack import SYNCED_PEER, Stack, load_history, regenerate, report_synced

INTERVAL = 3 * 3600
PEER = SYNCED_PEER
MAX_DYNAMIC = 2
CACHE_MAX_AGE = 1234
CACHE_S_MAXAGE = 4321
CACHE_STALE_WHILE_REVALIDATE = 77
CACHE_STALE_IF_ERROR = 8888
GRANULARITY = 60


async def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
    """One request on a new connection (so any worker may answer): status, headers, raw body.

    Unless ``headers`` say otherwise the request asks for no content coding (aiohttp would offer gzip).
    """
    headers = {"Accept-Encoding": "identity", **(headers or {})}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.request(method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as r,
    ):
        return r.status, r.headers, await r.read()


def raw_status(port: int, request: bytes) -> int:
    """Send raw bytes to the gateway; the status code of its answer (0 if it just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else 0


async def wait_up(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await get(base + "/healthz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "the gateway did not start"
        await asyncio.sleep(0.1)


async def wait_generation(admin: str, generation: int, timeout: float = 30) -> None:
    """Until every worker serves ``generation`` (ten fresh connections in a row to the admin
    listener, which every worker serves too, say so)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 10:
        assert time.monotonic() < deadline, f"the gateway did not pick up generation {generation}"
        try:
            status, _, body = await get(admin + "/api/status")
        except aiohttp.ClientError:
            status, body = 0, b""
        if status == 200 and f'"generation": {generation},'.encode() in body:
            streak += 1
        else:
            streak = 0
            await asyncio.sleep(0.2)


@dataclass
class GatewayStack:
    stack: Stack
    history: GossipHistory
    base: str
    reference_time: int
    generation: int

    @property
    def admin(self) -> str:
        """The admin listener's base URL (metrics, status, the status page, the OpenAPI document)."""
        return f"http://{self.stack.target('gateway-admin')}"

    @property
    def gateway(self) -> Any:
        return next(p for p in reversed(self.stack.processes) if p.name == "gateway")


def aligned(t: int) -> int:
    return t - t % INTERVAL


@pytest.fixture(scope="session")
async def synced(pg_server: LocalPostgres, template_db: str) -> AsyncIterator[GatewayStack]:
    workdir = Path(tempfile.mkdtemp(prefix="lnsync-gw-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    async with fresh_database(pg_server, template_db) as url:
        history = await load_history(url, seed=21, days=20)
        stack = Stack(
            url,
            workdir,
            extra_env={
                "LNSYNC_SNAPSHOTTER__INTERVAL": str(INTERVAL),
                "LNSYNC_INGEST_LAG": "1",
                "LNSYNC_LOOKUP__TIMESTAMP_GRANULARITY": str(GRANULARITY),
                "LNSYNC_GATEWAY__MAX_DYNAMIC": str(MAX_DYNAMIC),
                "LNSYNC_GATEWAY__CACHE_MAX_AGE": str(CACHE_MAX_AGE),
                "LNSYNC_GATEWAY__CACHE_S_MAXAGE": str(CACHE_S_MAXAGE),
                "LNSYNC_GATEWAY__CACHE_STALE_WHILE_REVALIDATE": str(CACHE_STALE_WHILE_REVALIDATE),
                "LNSYNC_GATEWAY__CACHE_STALE_IF_ERROR": str(CACHE_STALE_IF_ERROR),
            },
        )
        try:
            await stack.start_healthy("persistence")
            try:
                await report_synced(stack)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # Until the persistence service lands, lookup and the snapshotter serve nothing.
                pytest.skip("needs the persistence service's sync state (ReportSyncComplete)")
            await stack.start_healthy("lookup")
            await stack.start_healthy("snapshotter")
            R = aligned(START + 17 * DAY)
            generation = await regenerate(stack, R)
            stack.start("gateway")
            base = f"http://{stack.target('gateway')}"
            await wait_generation(f"http://{stack.target('gateway-admin')}", generation)
            yield GatewayStack(stack, history, base, R, generation)
        finally:
            stack.close()
            shutil.rmtree(workdir, ignore_errors=True)
