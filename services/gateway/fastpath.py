"""The public port's fast path: a held snapshot answered without going through aiohttp.

What wallets and CDNs ask the gateway for, nearly always, is ``GET /snapshot/v2/<T>``: a blob the
worker already holds in memory. Through aiohttp that costs ~40 % of a worker's time in request
objects, routing, middlewares and header rendering, and the body is copied into the socket on top
(``bench/bench_gateway.py``, profile in ``docs/benchmarks.md``). Here a connection of the public
port reads its requests itself (:class:`services.gateway.limits.LimitedSite`) and answers the
plain ones (:func:`FastPath.answer`) with a status line and headers built once per blob and answer
kind, and the blob's own bytes object, handed to the transport in one ``writelines`` (one
``writev``; the body is never copied in user space).

Only a strict subset of HTTP/1.1 is answered here: ``GET`` or ``HEAD`` of
``/snapshot/<T>`` or ``/snapshot/v2/<T>`` (digits only), well-formed header lines within aiohttp's
limits, no body or framing headers (``Content-Length``, ``Transfer-Encoding``), no ``Upgrade`` or
``Expect``, ``Connection`` absent or ``keep-alive``, a timestamp that parses and a generation
held. Anything else (and any request that would not be a 200 or 304) is handed, with every byte
not yet answered, to aiohttp, which serves that connection from then on, errors and limits
included. The answers are the ones aiohttp gives (same negotiation, :func:`blobs.negotiate`; same
headers, CORS and metrics), which ``tests/gateway/test_gateway_fastpath.py`` checks byte for byte
but for the date.
"""

from __future__ import annotations

import logging
import re
import time
from email.utils import formatdate

from aiohttp.http import SERVER_SOFTWARE

from services.gateway import metrics
from services.gateway.blobs import Blob, negotiate
from services.gateway.cors import Cors
from services.gateway.errors import HttpError
from services.gateway.snapshots import SnapshotCache
from services.gateway.timestamps import BadTimestamp, parse_timestamp

log = logging.getLogger(__name__)

# A request head (request line and headers) the fast path reads: longer ones go to aiohttp, which
# enforces its own limits on them (services.gateway.app: MAX_LINE_SIZE, MAX_FIELD_SIZE, MAX_HEADERS).
MAX_HEAD = 8192
# How every request this path answers begins.
_PREFIXES = (b"GET /snapshot", b"HEAD /snapshot")
MAX_HEADER_LINES = 64
MAX_HEADER_LINE = 4096

_REQUEST_LINE = re.compile(rb"(GET|HEAD) /snapshot/(v2/)?([0-9]{1,10}) HTTP/1\.1\r\n")
# A header line: a token, a colon, a value of visible ASCII, spaces and tabs (no obs-fold, no
# control or non-ASCII bytes: those go to aiohttp's parser).
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\x20-\x7e\t]*)\r\n")
# Request headers the answer depends on (their first occurrence, as aiohttp's headers.get gives).
_WANTED = frozenset((b"accept-encoding", b"if-none-match", b"if-modified-since", b"origin"))
# Headers that change the framing or the connection: such a request is aiohttp's.
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"upgrade", b"expect", b"connection"))

# aiohttp's Server header (every answer of the port looks alike) and the blank line.
_SERVER_AND_END = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode()

ROUTES = {1: "/snapshot/{timestamp}", 2: "/snapshot/v2/{timestamp}"}


class _Date:
    """The ``Date`` header line, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


def _head(blob: Blob, zipped: bool, not_modified: bool, cors: dict[str, str], vary_origin: bool) -> bytes:
    """Status line and headers of an answer for ``blob`` but ``Date``, ``Server`` and the blank line: the
    headers :func:`services.gateway.blobs.respond` and the CORS middleware give, in their order."""
    headers = blob.gzip_headers if zipped and blob.gzip_headers is not None else blob.identity_headers
    lines = [b"HTTP/1.1 304 Not Modified\r\n" if not_modified else b"HTTP/1.1 200 OK\r\n"]
    for name, value in headers.items():
        if not_modified and name in ("Content-Type", "Content-Encoding"):
            continue
        if name == "Vary" and vary_origin:
            value = f"{value}, Origin"
        lines.append(f"{name}: {value}\r\n".encode())
    lines.extend(f"{name}: {value}\r\n".encode() for name, value in cors.items())
    if not not_modified:
        body = blob.gzip if zipped and blob.gzip is not None else blob.body
        lines.append(b"Content-Length: %d\r\n" % len(body))
    return b"".join(lines)


class FastPath:
    """Answers the plain snapshot requests of one worker's public port from ``snapshots``."""

    def __init__(self, snapshots: SnapshotCache, cors: Cors) -> None:
        self._snapshots = snapshots
        self._cors = cors
        self._date = _Date()
        self._seconds = {v: metrics.REQUEST_SECONDS.labels(route) for v, route in ROUTES.items()}
        self._bytes = {v: metrics.RESPONSE_BYTES.labels(route) for v, route in ROUTES.items()}
        self._answered = {
            (v, status): metrics.REQUESTS.labels(route, str(status))
            for v, route in ROUTES.items()
            for status in (200, 304)
        }

    @staticmethod
    def may_answer(start: bytes) -> bool:
        """Whether a request beginning with ``start`` (not yet a whole head) could be this path's:
        anything else goes to aiohttp at once, which rejects garbage (a TLS hello, a bad method)
        without waiting for a blank line that may never come."""
        return any(start[: len(p)] == p[: len(start)] for p in _PREFIXES)

    def answer(self, head: bytes) -> list[bytes] | None:
        """The buffers to write for the request ``head`` (request line to the blank line, included),
        or None: the request is not one this path answers (aiohttp's, then)."""
        started = time.perf_counter()
        line = _REQUEST_LINE.match(head)
        if line is None:
            return None
        wanted: dict[bytes, bytes] = {}
        pos = line.end()
        end = len(head) - 2
        count = 0
        while pos < end:
            header = _HEADER_LINE.match(head, pos)
            count += 1
            if header is None or count > MAX_HEADER_LINES or header.end() - pos > MAX_HEADER_LINE:
                return None
            pos = header.end()
            name = header.group(1).lower()
            if name in _WANTED:
                if name not in wanted:
                    wanted[name] = header.group(2).strip(b" \t")
            elif name in _FRAMING and (
                name != b"connection" or header.group(2).strip(b" \t").lower() != b"keep-alive"
            ):
                return None
        if pos != end:
            return None
        version = 2 if line.group(2) else 1
        try:
            timestamp = parse_timestamp(line.group(3).decode(), time.time())
            blob = self._snapshots.select(timestamp, version)
        except (BadTimestamp, HttpError):
            return None  # aiohttp renders the error
        accept, inm, ims, origin = (
            None if (v := wanted.get(k)) is None else v.decode("ascii")
            for k in (b"accept-encoding", b"if-none-match", b"if-modified-since", b"origin")
        )
        zipped, not_modified = negotiate(blob, accept, inm, ims)
        allowed = self._cors.allow_origin(origin)
        key = (zipped, not_modified, allowed)
        prefix = blob.wire.get(key)
        if prefix is None:
            cors = self._cors.headers(origin)
            prefix = blob.wire[key] = _head(blob, zipped, not_modified, cors, self._cors.vary)
        out = [prefix + self._date.line() + _SERVER_AND_END]
        status = 304 if not_modified else 200
        if status == 200:
            body = blob.gzip if zipped and blob.gzip is not None else blob.body
            if line.group(1) == b"GET":
                out.append(body)
            self._bytes[version].inc(len(body))
        self._seconds[version].observe(time.perf_counter() - started)
        self._answered[(version, status)].inc()
        return out
