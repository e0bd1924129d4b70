"""PostgreSQL connections for the services that use the store (asyncpg pools, with retry)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from lnsync import schema
from lnsync.chain import chain_hash
from lnsync.config import ConfigError, Settings
from lnsync.logs import redact
from lnsync.retry import Backoff, retry

log = logging.getLogger(__name__)

# Errors that mean "the database is not reachable right now" rather than "the query is wrong".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    TimeoutError,
)
# Errors after which the same statement may succeed later: the above, and trouble on a live server.
RETRYABLE: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failures, deadlocks
    asyncpg.exceptions.OperatorInterventionError,  # cancelled statements, shutdowns
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a fail-over in progress
)
# How often a service whose health follows the store checks it (:func:`watch`).
WATCH_INTERVAL = 2.0


def require_database_url(settings: Settings) -> str:
    """``database_url``, or a ConfigError that says how to set it."""
    if not settings.database_url:
        raise ConfigError(
            "database_url is not set: give --database-url or LNSYNC_DATABASE_URL "
            "(`lnsync up` starts an embedded PostgreSQL and sets it for its services)"
        )
    return settings.database_url


class StoreService:
    """What every service that uses the store holds: its settings, the store's URL (a ConfigError
    at construction if there is none), its chain, and once started its pool (:func:`open_store`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = require_database_url(settings)
        self.chain_hash = chain_hash(settings.network)
        self.pool: Any = None


async def _init_connection(conn: Any) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """A pool to ``url``; waits (with backoff) until the server accepts connections."""

    async def connect() -> asyncpg.Pool:
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, timeout=10, **kwargs
        )

    log.info("connecting to %s", redact(url))
    return await retry(
        connect, "connecting to PostgreSQL", retry_on=TRANSIENT_ERRORS, backoff=Backoff(0.5, 15)
    )


async def check_connect(url: str, timeout: float = 5.0) -> None:
    """Connect once and disconnect: raise with a readable message if the database is unreachable."""
    conn = await asyncpg.connect(url, timeout=timeout)
    await conn.close()


async def open_store(url: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """The start of every service that uses the store: a pool to ``url`` (waiting for the server)
    with the migrations applied, retried with backoff while the database is not ready for them."""
    pool = await create_pool(url, min_size=min_size, max_size=max_size, **kwargs)

    async def migrate() -> None:
        async with pool.acquire() as conn:
            await schema.migrate(conn)

    await retry(migrate, "applying migrations", retry_on=RETRYABLE, backoff=Backoff(0.5, 15))
    return pool


async def watch(
    pool: asyncpg.Pool,
    on_change: Callable[[bool], Awaitable[None]],
    *,
    interval: float = WATCH_INTERVAL,
    healthy: Callable[[], bool] = lambda: True,
) -> None:
    """Forever (cancel to stop): every ``interval`` ask the store for ``SELECT 1`` and report
    ``on_change(ok)``, ok being that it answered and ``healthy()`` (the service's own judgement,
    e.g. persistence's writer not failing). How a service's health follows the database."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with pool.acquire(timeout=interval) as conn:
                await conn.fetchval("SELECT 1", timeout=interval)
        except RETRYABLE:
            await on_change(False)
        else:
            await on_change(healthy())
