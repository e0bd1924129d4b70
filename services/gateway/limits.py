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
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from aiohttp import web
from aiohttp.tcp_helpers import tcp_keepalive

from services.gateway.fastpath import MAX_HEAD, FastPath
from services.gateway.metrics import CONNECTIONS, REFUSED

log = logging.getLogger(__name__)

MALFORMED_LOG_EVERY = 10.0
REFUSED_LINGER = 1.0
# The fast path's high-water mark of a connection's write buffer (which holds the blobs' own bytes
# objects, not copies): above it, no further request is read until the client has taken some.
FAST_WRITE_HIGH_WATER = 8 << 20
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


class FastConnections:
    """The connections of a site still reading their own requests (aiohttp does not know them)."""

    def __init__(self) -> None:
        self._open: set[_Connection] = set()
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, connection: _Connection) -> None:
        self._open.add(connection)
        self.empty.clear()

    def discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if not self._open:
            self.empty.set()

    def __iter__(self) -> Iterator[_Connection]:
        return iter(list(self._open))

    def __len__(self) -> int:
        return len(self._open)


class _Connection(asyncio.Protocol):
    """A client connection: aiohttp's handler behind the count, answering after a half-close.

    With a :class:`FastPath` (the public port) the connection starts by reading requests itself
    and answers the plain snapshot requests from memory; the first request it does not answer goes,
    with everything received after it, to aiohttp's handler, created then, which serves the
    connection from then on. While reading requests itself it keeps aiohttp's rules: the header
    timeout from opening or from the previous answer (not while an answer is still being sent), no
    further requests read while the transport's buffer is above its high-water mark, and an answer
    still being written when the client half-closes is finished before the connection closes.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        count: ConnectionCount,
        grace: float,
        fast: FastPath | None = None,
        fast_connections: FastConnections | None = None,
    ) -> None:
        self._factory = factory
        self._inner: Any = None
        self._count = count
        self._grace = grace
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._fast = fast
        self._fast_connections = fast_connections
        self._buffer = b""
        self._writing_paused = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self._count.opened()
        if self._fast is None:
            self._hand_off()
            return
        tcp_keepalive(self._transport)  # as aiohttp's handler does
        # One answer (status line, headers, the blob) never stops reading by itself: only answers
        # piling up for a client that does not read them.
        self._transport.set_write_buffer_limits(high=FAST_WRITE_HIGH_WATER)
        if self._fast_connections is not None:
            self._fast_connections.add(self)
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        self._idle_timer = loop.call_at(self._idle_since + self._grace, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._buffer += data
        if not self._writing_paused:
            self._answer()

    def _answer(self) -> None:
        """Answer the complete requests buffered, in order, until one is not the fast path's."""
        fast, transport = self._fast, self._transport
        assert fast is not None
        assert transport is not None
        while not self._writing_paused and self._inner is None:
            end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
            if end < 0:
                if len(self._buffer) >= MAX_HEAD or not fast.may_answer(self._buffer):
                    self._hand_off()  # aiohttp answers the oversized or foreign request
                return
            head = self._buffer[: end + 4]
            try:
                out = fast.answer(head)
            except Exception:
                log.exception("fast path failed on a request; aiohttp answers it")
                out = None
            if out is None:
                self._hand_off()
                return
            self._buffer = self._buffer[end + 4 :]
            transport.writelines(out)  # may pause writing at once
            self._idle_since = asyncio.get_running_loop().time()

    def _hand_off(self) -> None:
        """From now on aiohttp's handler serves this connection, starting with what is buffered."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._fast_connections is not None:
            self._fast_connections.discard(self)
        self._inner = self._factory()
        self._inner.connection_made(self._transport)
        if self._transport is not None and self._fast is not None:
            self._transport.set_write_buffer_limits()  # aiohttp's drain uses the default marks
        data, self._buffer = self._buffer, b""
        if data:
            self._inner.data_received(data)

    def _check_idle(self) -> None:
        """The header timeout while reading requests itself: close a connection that has not sent
        a complete request within ``grace`` seconds of opening or of its previous answer."""
        self._idle_timer = None
        transport = self._transport
        if transport is None or self._inner is not None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._writing_paused or transport.get_write_buffer_size() > 0:
            self._idle_since = now  # still sending an answer: the client is not idle
        if now < self._idle_since + self._grace:
            self._idle_timer = loop.call_at(self._idle_since + self._grace, self._check_idle)
            return
        transport.close()

    def shut(self) -> None:
        """Stop serving (the worker is stopping): close once what was answered is written."""
        if self._inner is None and self._transport is not None:
            self._close_after_writing()

    def _close_after_writing(self) -> None:
        transport = self._transport
        assert transport is not None
        transport.close()  # sends what is buffered first
        if self._deadline is None:  # whatever happens, the connection ends within the grace
            self._deadline = asyncio.get_running_loop().call_later(self._grace, transport.abort)

    def eof_received(self) -> bool:
        if self._inner is None:
            # Every complete request was answered (or waits behind answers the client does not
            # read): the client is done. Close once the answers are written.
            self._close_after_writing()
            return True
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
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._fast_connections is not None:
            self._fast_connections.discard(self)
        self._transport = None
        self._count.closed()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()
            return
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
            return
        self._writing_paused = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
            self._idle_since = asyncio.get_running_loop().time()
            self._answer()


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
    """A TCP site like aiohttp's, whose connections go through a :class:`ConnectionCount`, and,
    given a :class:`FastPath`, start on it (:class:`_Connection`)."""

    __slots__ = ("_count", "_fast", "_fast_connections", "_grace", "_host", "_port", "_reuse_port")

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
        fast: FastPath | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._count = ConnectionCount(max_connections)
        self._grace = grace
        self._fast = fast
        self._fast_connections = FastConnections()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    def _protocol(self) -> asyncio.Protocol:
        if self._count.open >= self._count.limit:
            return _Refused()
        factory: Callable[[], Any] | None = self._runner.server
        assert factory is not None
        return _Connection(factory, self._count, self._grace, self._fast, self._fast_connections)

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

    async def stop(self) -> None:
        """Stop accepting; the fast path's connections close once their answers are written
        (aiohttp's are drained by its runner's clean-up)."""
        await super().stop()
        for connection in self._fast_connections:
            connection.shut()

    async def drained(self, timeout: float) -> None:
        """Wait, up to ``timeout`` seconds, until the fast path's connections have closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._fast_connections.empty.wait(), timeout)


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
