"""Lookup with a read replica (``lookup.database_url``): deltas are read there only when it holds
everything the blob may contain, and a lagging or failing replica falls back to the primary with
the same answer. The last test runs a real streaming replica (pg_basebackup) and pauses its replay."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from lnsync import schema
from lnsync.config import Settings
from lnsync.pg import LocalPostgres
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.model import DeltaParams
from lnsync.rgs.policy import DYNAMIC_APPLY_LAG
from services.lookup import metrics, server
from services.lookup.server import LookupService, replica_is_current
from tests.conftest import free_port
from tests.rgs.histories import DAY, START
from tests.stack import load_history


def reads(database: str) -> float:
    return metrics.READS.labels(database)._value.get()


def test_a_replica_is_current_once_it_replayed_past_r_plus_the_ingest_lag():
    R, lag = 1_700_000_000, 60
    assert replica_is_current(False, None, R, lag)  # not in recovery: a primary sees everything
    assert not replica_is_current(True, None, R, lag)  # nothing replayed yet
    assert not replica_is_current(True, R + lag, R, lag)  # a commit at R + lag may still be missing
    assert replica_is_current(True, R + lag + server.REPLICA_MARGIN, R, lag)


@pytest.mark.slow
async def test_lookup_reads_the_replica_only_when_it_is_current(database_url: str, monkeypatch) -> None:
    history = await load_history(database_url, seed=5, days=6)
    R, T = START + 5 * DAY, START + 3 * DAY
    expected = encode(compute_delta(history.delta_input(T, R), DeltaParams(apply_lag=DYNAMIC_APPLY_LAG)), 2)

    async def delta(replica_url: str) -> bytes:
        """T's delta from a new lookup (empty caches) reading ``replica_url`` besides the primary."""
        service = LookupService(Settings(database_url=database_url, lookup={"database_url": replica_url}))
        await service.connect()
        try:
            return encode(await service._delta_set(T, R, DYNAMIC_APPLY_LAG, 1), 2)
        finally:
            await service.close()

    # The same server as the "replica" (not in recovery: current): graph and delta come from it.
    before = reads("replica"), reads("primary")
    assert await delta(database_url) == expected
    assert (reads("replica"), reads("primary")) == (before[0] + 2, before[1])
    # A standby that has not replayed up to R + ingest_lag: the primary answers, the same bytes.
    with monkeypatch.context() as patch:
        patch.setattr(server, "REPLAY_SQL", f"SELECT true AS standby, {R}::float8 AS replayed")
        before = reads("replica"), reads("primary")
        assert await delta(database_url) == expected
        assert (reads("replica"), reads("primary")) == (before[0], before[1] + 2)
    # A replica that cannot be reached: the primary answers; the replica is tried once, then left
    # alone for a while (the graph's read failed, the delta's read went straight to the primary).
    failures = []
    monkeypatch.setattr(server.log, "warning", lambda *args: failures.append(args))
    before = reads("replica"), reads("primary")
    assert await delta(f"postgresql://lnsync@127.0.0.1:{free_port()}/lnsync") == expected
    assert (reads("replica"), reads("primary")) == (before[0], before[1] + 2)
    assert len(failures) == 1


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[LocalPostgres, LocalPostgres]]:
    """A primary and a real streaming replica of it (pg_basebackup -R), on Unix sockets."""
    root = Path(tempfile.mkdtemp(prefix="lnsync-r-", dir="/tmp"))
    root.chmod(0o755)
    primary = LocalPostgres(root / "p", ephemeral=True)
    replica = LocalPostgres(root / "r", ephemeral=True)
    try:
        primary.start()
        replica._prepare_dirs()
        backup = primary._run(
            "pg_basebackup", "-D", str(replica.data_dir), "-h", str(primary.socket_dir), "-U", "postgres",
            "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        assert backup.returncode == 0, backup.stderr
        replica.start()
        yield primary, replica
    finally:
        for server in (replica, primary):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
async def test_a_real_replica_is_read_once_it_has_replayed_enough(primary_and_replica) -> None:
    primary, replica = primary_and_replica
    primary_url = primary.ensure_database("lnsync")
    conn = await asyncpg.connect(primary_url)
    try:
        await schema.migrate(conn)
        await conn.execute("CREATE TABLE probe (t float8)")
    finally:
        await conn.close()
    await load_history(primary_url, seed=7, days=6)
    replica_url = replica.url("lnsync")

    async def primary_write() -> float:
        """Commit a transaction on the primary; its commit time (the primary's clock)."""
        conn = await asyncpg.connect(primary_url)
        try:
            return float(
                await conn.fetchval("INSERT INTO probe SELECT extract(epoch FROM now()) RETURNING t")
            )
        finally:
            await conn.close()

    async def on_replica(sql: str) -> Any:
        conn = await asyncpg.connect(replica_url)
        try:
            return await conn.fetchrow(sql)
        finally:
            await conn.close()

    async def delta(T: int, R: int) -> tuple[bytes, str]:
        """T's delta for R from a new lookup, and which database it read."""
        service = LookupService(Settings(database_url=primary_url, lookup={"database_url": replica_url}))
        await service.connect()
        try:
            before = reads("replica")
            data = encode(await service._delta_set(T, R, DYNAMIC_APPLY_LAG, 1), 2)
            return data, "replica" if reads("replica") > before else "primary"
        finally:
            await service.close()

    committed = await primary_write()
    await until_replayed(on_replica, committed)
    # An old reference time: the replica has replayed far past it and answers, as the primary would.
    R, T = START + 5 * DAY, START + 3 * DAY
    state = await on_replica(server.REPLAY_SQL)
    assert state["standby"] is True
    old = await delta(T, R)
    assert old[1] == "replica"
    # Replay paused: a reference time whose commits the replica may lack goes to the primary.
    await on_replica("SELECT pg_wal_replay_pause()")
    committed = await primary_write()
    state = await on_replica(server.REPLAY_SQL)
    recent = int(committed) - 60  # a dynamic R: needs every commit up to R + ingest_lag = committed
    assert state["replayed"] < recent + 60 + server.REPLICA_MARGIN
    behind = await delta(recent - DAY, recent)
    assert behind[1] == "primary"
    # Replay resumed and a later commit replayed: the replica answers, with the same bytes.
    await on_replica("SELECT pg_wal_replay_resume()")
    await asyncio.sleep(server.REPLICA_MARGIN + 0.1)
    await until_replayed(on_replica, await primary_write())
    assert await delta(recent - DAY, recent) == (behind[0], "replica")
    assert old[0] == (await delta(T, R))[0]


async def until_replayed(on_replica: Any, committed: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = await on_replica(server.REPLAY_SQL)
        if state["replayed"] is not None and state["replayed"] >= committed:
            return
        assert time.monotonic() < deadline, f"the replica did not replay {committed} ({state})"
        await asyncio.sleep(0.05)
