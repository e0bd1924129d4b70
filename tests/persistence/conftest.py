"""Fixtures for the persistence tests: the real service on a real socket, and gossip builders.

``start_persistence(database_url, **settings)`` runs the real service in this event loop through
``lnsync.service.run_service`` (gRPC server, health, writer, retention) and stops it by
cancelling that task, which runs the same shutdown path as a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lnsync import rpc
from lnsync.chain import chain_hash
from lnsync.config import Settings, load_settings
from lnsync.gossip import messages as m
from lnsync.gossip.signing import pubkey_of
from lnsync.service import run_service
from services.persistence.server import PersistenceService
from tests.conftest import free_port
from tests.stack import until

MAINNET = chain_hash("bitcoin")
ZERO_SIG = b"\0" * 64


def node_id(i: int) -> bytes:
    """A valid node id (a point on the curve: persistence checks that, not signatures)."""
    return pubkey_of(hashlib.sha256(b"node-%d" % i).digest())


def channel_announcement(scid: int, n1: int = 1, n2: int = 2, chain: bytes = MAINNET) -> bytes:
    a, b = sorted((node_id(n1), node_id(n2)))
    body = m.encode_channel_announcement_body(chain, scid, a, b, a, b)
    return m.with_type(m.CHANNEL_ANNOUNCEMENT, ZERO_SIG * 4, body)


def channel_update(
    scid: int,
    direction: int,
    timestamp: int,
    fee_ppm: int = 100,
    chain: bytes = MAINNET,
    disabled: bool = False,
) -> bytes:
    flags = direction | (m.CHANNEL_FLAG_DISABLED if disabled else 0)
    body = m.encode_channel_update_body(chain, scid, timestamp, flags, 40, 1000, 1000, fee_ppm, 10**9)
    return m.with_type(m.CHANNEL_UPDATE, ZERO_SIG, body)


def node_announcement(i: int, timestamp: int) -> bytes:
    body = m.encode_node_announcement_body(node_id(i), timestamp, alias=b"node%d" % i)
    return m.with_type(m.NODE_ANNOUNCEMENT, ZERO_SIG, body)


@dataclass
class RunningPersistence:
    target: str
    service: PersistenceService
    task: asyncio.Task[int]
    settings: Settings

    async def wait_serving(self, timeout: float = 20.0) -> None:
        await until(lambda: rpc.check_health(self.target, "lnsync.v1.Persistence"), timeout, "SERVING")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # run_service's handlers point at a dead event
            loop.remove_signal_handler(sig)


def persistence_settings(
    database_url: str, port: int | None = None, network: str = "bitcoin", **section: Any
) -> Settings:
    section.setdefault("prune_interval", 0)
    section["listen"] = f"127.0.0.1:{port or free_port()}"
    return load_settings(database_url=database_url, network=network, persistence=section)


async def start_persistence(database_url: str, **section: Any) -> RunningPersistence:
    settings = persistence_settings(database_url, **section)
    service = PersistenceService(settings)
    p = settings.persistence
    task = asyncio.create_task(run_service("persistence", p.listen, service))
    running = RunningPersistence(p.listen, service, task, settings)
    await running.wait_serving()
    return running


@pytest.fixture
async def persistence(database_url: str) -> AsyncIterator[RunningPersistence]:
    running = await start_persistence(database_url)
    yield running
    await running.stop()


@pytest.fixture
async def persistence_factory(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """``await persistence_factory(**persistence_settings)`` with cleanup."""
    started: list[RunningPersistence] = []

    async def factory(**section: Any) -> RunningPersistence:
        running = await start_persistence(database_url, **section)
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.stop()
