"""What one gateway worker allows a client: connections, time, log lines (issue 25).

* **Connection cap**: at most ``gateway.max_connections`` open connections per worker; one more is
  answered ``503`` with ``Retry-After`` and closed at once, so a flood of idle connections cannot
  use up the file limit and lock every other client out.
* **Header and idle timeout**: aiohttp's keep-alive timer, which this module's caller sets to
  ``gateway.header_timeout``, closes a connection that has not completed a request within that
  many seconds of opening, or of its previous answer (slow or half-sent requests included).
* **Half-close**: a client that shuts down its sending side after its request still gets the
  answer; the connection closes once it is written (requests pipelined behind it are not
  answered: the client said it is done).
* **Malformed requests** are logged as one WARNING line per ``MALFORMED_LOG_EVERY`` seconds with
  the count, instead of an ERROR with a traceback each.
* **File limit**: the soft RLIMIT_NOFILE is raised to the hard limit at start.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from services.gateway.metrics import CONNECTIONS, REFUSED

log = logging.getLogger(__name__)

MALFORMED_LOG_EVERY = 10.0
REFUSED_LINGER = 1.0
_REFUSED_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 33\r\n"
    b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections; retry later\n"
)


class ConnectionCount:
    """Open connections of one worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def opened(self) -> None:
        self.open += 1
        CONNECTIONS.inc()

    def closed(self) -> None:
        self.open -= 1
        CONNECTIONS.dec()


class _Connection(asyncio.Protocol):
    """A client connection: aiohttp's handler behind the count, answering after a half-close."""

    def __init__(self, inner: Any, count: ConnectionCount, grace: float) -> None:
        self._inner = inner
        self._count = count
        self._grace = grace
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._count.opened()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool:
        # aiohttp waiting for a request (none, or only part of one, arrived): nothing more can come,
        # close now. The same test aiohttp's own keep-alive timer makes.
        waiter = getattr(self._inner, "_waiter", None)
        if waiter is not None and not waiter.done():
            return False
        # A request is being answered: keep our sending side open (True) so the answer goes out;
        # close() accepts no further request and ends the connection once it is written.
        self._inner.close()
        transport = self._transport
        if transport is not None:  # whatever happens, the connection ends within the grace
            self._deadline = asyncio.get_running_loop().call_later(self._grace, transport.close)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._transport = None
        self._count.closed()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refused(asyncio.Protocol):
    """A connection over the cap: a 503, our side shut, and closed once the client closes or after
    ``REFUSED_LINGER`` seconds (closing at once with the request unread would reset the connection
    and lose the answer)."""

    def __init__(self) -> None:
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        REFUSED.inc()
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self._transport = transport
        transport.write(_REFUSED_ANSWER)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: it is refused whatever it says

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class LimitedSite(web.BaseSite):
    """A TCP site like aiohttp's, whose connections go through a :class:`ConnectionCount`."""

    __slots__ = ("_count", "_grace", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        grace: float,
        reuse_port: bool,
        backlog: int,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._count = ConnectionCount(max_connections)
        self._grace = grace

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    def _protocol(self) -> asyncio.Protocol:
        if self._count.open >= self._count.limit:
            return _Refused()
        factory: Callable[[], Any] | None = self._runner.server
        assert factory is not None
        return _Connection(factory(), self._count, self._grace)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            family=socket.AF_INET6 if ":" in self._host else socket.AF_INET,
        )


class MalformedRequestLog(logging.Filter):
    """Folds aiohttp's "Error handling request" records (a traceback per malformed request) into
    one WARNING line per ``every`` seconds with the count."""

    def __init__(
        self, every: float = MALFORMED_LOG_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._every = every
        self._clock = clock
        self._last = -every
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Error handling request"):
            return True
        self._held += 1
        now = self._clock()
        if now - self._last < self._every:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = "%d malformed HTTP request(s) in the last %.0f s; latest: %s"
        record.args = (self._held, min(now - self._last, self._every), _short(exc))
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._last, self._held = now, 0
        return True


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def install_log_filter() -> None:
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestLog())


def raise_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft
