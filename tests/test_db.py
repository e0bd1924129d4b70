"""lnsync/db.py: the store's URL, and the watch every service whose health follows the store runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lnsync import db
from lnsync.config import ConfigError, Settings


def test_a_missing_database_url_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match="LNSYNC_DATABASE_URL"):
        db.require_database_url(Settings())
    assert db.require_database_url(Settings(database_url="postgresql://x/y")) == "postgresql://x/y"


class _Pool:
    """Answers SELECT 1 while ``up``."""

    def __init__(self) -> None:
        self.up = True

    @contextlib.asynccontextmanager
    async def acquire(self, timeout: float) -> AsyncIterator[Any]:
        if not self.up:
            raise ConnectionRefusedError("down")
        yield self

    async def fetchval(self, sql: str, timeout: float) -> int:
        return 1


async def test_the_watch_reports_the_store_and_the_services_own_judgement() -> None:
    pool, reports, healthy = _Pool(), asyncio.Queue[bool](), [True]
    watch = db.watch(pool, reports.put, interval=0.01, healthy=lambda: healthy[0])  # type: ignore[arg-type]
    task = asyncio.create_task(watch)

    async def next_report() -> bool:
        while not reports.empty():  # drop what was reported before the change
            reports.get_nowait()
        return await asyncio.wait_for(reports.get(), 5)

    try:
        assert await next_report() is True
        pool.up = False
        assert await next_report() is False
        pool.up = True
        assert await next_report() is True
        healthy[0] = False  # reachable, but the service says it is not well (persistence's writer)
        assert await next_report() is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
