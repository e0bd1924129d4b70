"""Fault tests: a kill -9 of the service, a PostgreSQL restart in the middle of ingest, and a
downloader asking where to resume while the database is still down.

The first two run a real IngestClient against the real service over a socket and check the store
afterwards: nothing acknowledged is lost, nothing is stored twice, and the per-peer counters
(written in the same transactions as the messages) agree with the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from lnsync import rpc
from lnsync.clients.ingest import IngestClient
from lnsync.service import run_service
from lnsync.v1 import persistence_pb2, persistence_pb2_grpc
from services.downloader.forward import PersistenceSink
from services.persistence.server import PersistenceService
from tests.conftest import free_port
from tests.persistence.conftest import (
    RunningPersistence,
    channel_announcement,
    channel_update,
    persistence_settings,
    start_persistence,
)
from tests.stack import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
PEER = "02" + "ab" * 32
NOW = int(time.time())


def history(channels: int, updates: int) -> list[bytes]:
    out = [channel_announcement((700_000 + c) << 40, c, c + 1) for c in range(channels)]
    for k in range(updates):
        for c in range(channels):
            out.append(channel_update((700_000 + c) << 40, k % 2, NOW - 20_000 + k, fee_ppm=k))
    return out


async def stored_raws(url: str) -> list[bytes]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT raw FROM channel_announcements UNION ALL SELECT raw FROM channel_updates"
        )
        return [bytes(r[0]) for r in rows]
    finally:
        await conn.close()


async def peer_counters(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT stored, duplicates FROM peers WHERE peer_id = $1", PEER)
        return int(row["stored"]), int(row["duplicates"])
    finally:
        await conn.close()


async def send_all(client: IngestClient, messages: list[bytes]) -> None:
    for i, raw in enumerate(messages):
        await client.send(raw)
        if i % 50 == 0:
            await asyncio.sleep(0.002)  # a steady producer, so that faults land mid-stream


async def test_acknowledged_messages_survive_kill_9_and_unacknowledged_are_resent_once(
    database_url: str, short_tmp: Path
) -> None:
    messages = history(channels=200, updates=30)  # 6,200 messages
    target = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "LNSYNC_LOG_LEVEL": "warning"}

    async def spawn(n: int) -> asyncio.subprocess.Process:
        log = (short_tmp / f"persistence-{n}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lnsync", "serve", "persistence", "--listen", target,
            "--database-url", database_url, env=env, stdout=log, stderr=log,
        )  # fmt: skip
        await until(lambda: rpc.check_health(target, "lnsync.v1.Persistence"), 30, "persistence to serve")
        return proc

    procs = [await spawn(1)]
    try:
        async with IngestClient(target, PEER, window=1500, backoff_min=0.05, backoff_max=0.5) as client:
            producer = asyncio.create_task(send_all(client, messages))

            async def enough_acked() -> bool:
                return client.counters.acked >= 2000

            await until(enough_acked, 30, "2000 acknowledgements")
            procs[0].send_signal(signal.SIGKILL)
            await procs[0].wait()
            acked = client.counters.acked
            assert client.counters.unacked > 0, "the kill should land with messages in flight"
            survivors = set(await stored_raws(database_url))
            assert set(messages[:acked]) <= survivors  # everything acknowledged is durable

            procs.append(await spawn(2))
            await producer
            await client.flush(timeout=60)
        c = client.counters
        assert c.streams >= 2 and c.resent > 0 and c.unacked == 0 and c.rejected == 0
        rows = await stored_raws(database_url)
        assert len(rows) == len(set(rows)) == len(messages) and set(rows) == set(messages)
        stored, duplicates = await peer_counters(database_url)
        assert stored == len(messages)  # every message counted as new exactly once, across the crash
        assert duplicates == c.duplicates  # re-sends of messages committed before the kill
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def pg_ctl(root: Path, action: str) -> str:
    """Start (returning the database URL) or crash-stop our own PostgreSQL from a helper process:
    forking this process, whose gRPC threads are busy, to run PostgreSQL as another user is unsafe."""
    code = (
        "import sys; from pathlib import Path; from lnsync.pg import LocalPostgres\n"
        "pg = LocalPostgres(Path(sys.argv[1]))\n"
        "if sys.argv[2] == 'start': pg.start(); print(pg.ensure_database('lnsync'))\n"
        "else: pg.stop('immediate')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(root), action, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"PostgreSQL {action} failed"
    return out.decode().strip()


async def test_postgres_restart_mid_ingest_loses_nothing_and_the_service_survives(short_tmp: Path) -> None:
    # Durable settings (not the test fixtures' fsync=off): a crash must not lose committed data.
    root = short_tmp / "pg"
    url = await pg_ctl(root, "start")
    running = None
    try:
        running = await start_persistence(url)
        messages = history(channels=200, updates=25)  # 5,200 messages
        async with IngestClient(
            running.target, PEER, window=2000, backoff_min=0.05, backoff_max=0.5
        ) as client:
            producer = asyncio.create_task(send_all(client, messages))

            async def acked_some() -> bool:
                return client.counters.acked >= 1000

            await until(acked_some, 30, "1000 acknowledgements")
            await pg_ctl(root, "stop")  # immediate: as abrupt as a crash

            async def not_serving() -> bool:
                return not await rpc.check_health(running.target, "lnsync.v1.Persistence")

            await until(not_serving, 15, "health NOT_SERVING while PostgreSQL is down")
            acked_during_outage = client.counters.acked
            await asyncio.sleep(1.0)
            assert client.counters.acked == acked_during_outage  # nothing acknowledged without a database
            assert client.counters.unacked > 0
            assert not running.task.done()  # the service neither crashed nor exited

            await pg_ctl(root, "start")
            await running.wait_serving(30)
            await producer
            await client.flush(timeout=60)
        assert client.counters.unacked == 0 and client.counters.rejected == 0
        rows = await stored_raws(url)
        assert len(rows) == len(set(rows)) == len(messages)
        stored, _ = await peer_counters(url)
        assert stored == len(messages)
    finally:
        if running is not None:
            await running.stop()
        with contextlib.suppress(Exception):
            await pg_ctl(root, "stop")


async def test_a_downloader_starting_before_the_database_still_resumes(short_tmp: Path) -> None:
    """Persistence serves before its database pool is up and answers UNAVAILABLE meanwhile: a
    downloader asking where to resume must wait for the answer, not fall back to a full sync of
    the whole graph (a restart under load in CI did exactly that)."""
    root = short_tmp / "pg"
    url = await pg_ctl(root, "start")
    running = sink = None
    try:
        running = await start_persistence(url)
        caught_up_to = int(time.time()) - 60
        stub = persistence_pb2_grpc.PersistenceStub(rpc.channel(running.target))
        await stub.ReportSyncComplete(
            persistence_pb2.ReportSyncCompleteRequest(peer_id=PEER, caught_up_to=caught_up_to)
        )
        await running.stop()
        await pg_ctl(root, "stop")

        # Persistence starts again with its database down: it serves, but not the store yet.
        settings = persistence_settings(url)
        service = PersistenceService(settings)
        task = asyncio.create_task(run_service("persistence", settings.persistence.listen, service))
        running = RunningPersistence(settings.persistence.listen, service, task, settings)
        sink = PersistenceSink(settings.persistence.listen, PEER, window=100)
        await sink.start()
        asking = asyncio.create_task(sink.resume_point(PEER))
        await asyncio.sleep(3.0)
        assert not asking.done(), "answered without a database"
        await pg_ctl(root, "start")
        assert await asyncio.wait_for(asking, 60) == caught_up_to
    finally:
        if sink is not None:
            await sink.close()
        if running is not None:
            await running.stop()
        with contextlib.suppress(Exception):
            await pg_ctl(root, "stop")
