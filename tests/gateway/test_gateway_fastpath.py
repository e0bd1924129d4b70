"""The public port's fast path (services/gateway/fastpath.py) against aiohttp's own answers.

One process, no upstreams: a :class:`Gateway` holding a made-up generation serves the same
application on two ports, one with the fast path (as the public port runs) and one without; every
request below must get the same answer from both (status, headers but ``Date``, body), whether the
fast path answered it or handed it to aiohttp. Then what only the fast path's own reading does:
pipelining, requests in pieces, the hand-off in mid-connection, the header timeout, half-close,
a client that does not read, and the metrics.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from lnsync.config import GatewaySettings, Settings
from lnsync.rgs import ladder
from services.gateway import app as gateway_app
from services.gateway import fastpath, limits, metrics, snapshots
from services.gateway.blobs import Blob
from tests.conftest import free_port

R = 1_750_172_400
DAY = 86_400
TIMEOUT = 1.5
rnd = random.Random(5)
BODY = b"LDK\x02" + bytes(rnd.getrandbits(8) for _ in range(200_000))
SMALL = b"LDK\x02" + bytes(40_000)  # compresses well: the gzip variant
OLD = f"/snapshot/v2/{R - DAY}"


def generation(cache_control: str) -> snapshots.Generation:
    blobs = {}
    for v in (1, 2):
        for scope in (DAY, ladder.FULL, ladder.NOTHING_NEW):
            body = BODY if scope == DAY else SMALL
            blobs[(v, scope)] = Blob.of(body, R, cache_control, R, gzip=gzip.compress(body, 1))
    return snapshots.Generation(
        id=1, reference_time=R, generated_at=R, interval=3 * 3600, scopes=[DAY],
        entries=[], blobs=blobs, loaded_at=0, last_modified=R,
    )  # fmt: skip


@dataclass
class Ports:
    fast: int
    plain: int
    site: limits.LimitedSite


@pytest.fixture(params=[["*"], ["https://wallet.example"]], ids=["any-origin", "listed-origin"])
async def ports(request: pytest.FixtureRequest) -> AsyncIterator[Ports]:
    settings = Settings(gateway=GatewaySettings(cors_origins=request.param, header_timeout=TIMEOUT))
    gw = gateway_app.Gateway(settings)

    async def hold(wait: float = 0) -> bool:
        if gw.snapshots.generation is None:
            gw.snapshots.generation = generation(gw.snapshots._cache_control)
        await asyncio.sleep(wait)
        return False

    gw.snapshots.refresh = hold  # type: ignore[method-assign]
    runner = web.AppRunner(gateway_app.build_app(gw), access_log=None, keepalive_timeout=TIMEOUT)
    await runner.setup()
    fast, plain = free_port(), free_port()

    def make_site(port: int, path: fastpath.FastPath | None) -> limits.LimitedSite:
        return limits.LimitedSite(
            runner, "127.0.0.1", port, max_connections=50, grace=TIMEOUT, reuse_port=False, backlog=64,
            fast=path,
        )  # fmt: skip

    sites = [make_site(fast, fastpath.FastPath(gw.snapshots, gw.cors)), make_site(plain, None)]
    for site in sites:
        await site.start()
    try:
        yield Ports(fast, plain, sites[0])
    finally:
        await runner.cleanup()


Answer = tuple[bytes, list[bytes], bytes]


async def read_answer(reader: asyncio.StreamReader, head_only: bool) -> Answer:
    """(status line, header lines but Date, body) of one answer."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head[:-4].split(b"\r\n")
    length = next((int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length:")), 0)
    body = b"" if head_only or status.split()[1] == b"304" else await reader.readexactly(length)
    return status, sorted(h for h in lines if not h.startswith(b"Date: ")), body


async def exchange(port: int, requests: list[bytes], pieces: int = 1) -> list[Answer]:
    """Send ``requests`` pipelined on one connection (in ``pieces`` writes); their answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = b"".join(requests)
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
            await writer.drain()
            if pieces > 1:
                await asyncio.sleep(0.01)
        return [await read_answer(reader, r.startswith(b"HEAD ")) for r in requests]
    finally:
        writer.close()


def req(target: str = OLD, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: gw", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


ALIKE = [
    req(),
    req(f"/snapshot/{R - DAY}"),
    req(method="HEAD"),
    req("/snapshot/v2/0", "Accept-Encoding: gzip"),
    req("/snapshot/v2/0", "Accept-Encoding: br, gzip;q=0"),
    req("/snapshot/v2/0", "Accept-Encoding: gzip", method="HEAD"),
    req(f"/snapshot/v2/{R + 30}"),  # ahead of the generation: nothing new at T
    req(OLD, "If-None-Match: *"),
    req(OLD, 'If-None-Match: "nope", W/"x"'),
    req(OLD, "If-Modified-Since: Tue, 17 Jun 2025 15:00:00 GMT"),
    req(OLD, "If-Modified-Since: Tue, 17 Jun 2025 14:59:59 GMT"),
    req(OLD, "If-Modified-Since: garbage"),
    req(OLD, "Origin: https://wallet.example"),
    req(OLD, "Origin: https://evil.example", "Accept-Encoding: gzip"),
    req(OLD, "Connection: keep-alive", "X-Whatever:  spaced value  ", "accept-encoding:gzip"),
    # handed to aiohttp
    req("/snapshot/v2/01"),
    req("/snapshot/v2/99999999999"),
    req("/snapshot/v3/1"),
    req("/snapshot/v2/1?x=1"),
    req("/healthz"),
    req(OLD, method="OPTIONS"),
    req(OLD, "Content-Length: 0"),
    req(OLD, "Transfer-Encoding: identity"),
    req(OLD, "Expect: 100-continue"),
    req(OLD, "X-Folded: a", " b"),
    req(OLD, "Bad Name: x"),
]


async def test_every_answer_is_aiohttps_answer(ports: Ports) -> None:
    for request in ALIKE:
        fast = await exchange(ports.fast, [request])
        plain = await exchange(ports.plain, [request])
        assert fast == plain, request
    _, headers, body = (await exchange(ports.fast, [req()]))[0]
    assert body == BODY
    # A conditional request with the tag just served: 304 from both.
    etag = next(h for h in headers if h.startswith(b"ETag: ")).split(b": ")[1].decode()
    for request in (req(OLD, f"If-None-Match: {etag}"), req(OLD, f"If-None-Match: W/{etag}, *")):
        fast, plain = await exchange(ports.fast, [request]), await exchange(ports.plain, [request])
        assert fast == plain and fast[0][0] == b"HTTP/1.1 304 Not Modified"


async def test_pipelined_pieces_and_a_hand_off_in_mid_connection(ports: Ports) -> None:
    seq = [req(), req(method="HEAD"), req("/snapshot/v2/0", "Accept-Encoding: gzip"), req("/nope"), req()]
    for pieces in (1, 7, 400):
        fast = await exchange(ports.fast, seq, pieces)
        assert fast == await exchange(ports.plain, seq, pieces)
        assert [a[0].split()[1] for a in fast] == [b"200", b"200", b"200", b"404", b"200"]
        assert fast[0][2] == fast[4][2] == BODY


async def test_idle_and_half_sent_connections_close_within_the_header_timeout(ports: Ports) -> None:
    loop = asyncio.get_running_loop()
    for first in (b"", b"GET /snapshot/v2/1 HTTP/1.1\r\nHost:", req()):
        reader, writer = await asyncio.open_connection("127.0.0.1", ports.fast)
        started = loop.time()
        writer.write(first)
        if first == req():
            await read_answer(reader, False)
            started = loop.time()
        assert await asyncio.wait_for(reader.read(), 3 * TIMEOUT) == b""  # closed by the server
        assert TIMEOUT * 0.8 <= loop.time() - started <= TIMEOUT * 2 + 0.5
        writer.close()


async def test_a_half_closed_client_gets_its_answers(ports: Ports) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ports.fast)
    writer.write(req() + req(method="HEAD"))
    writer.write_eof()
    assert (await read_answer(reader, False))[2] == BODY
    assert (await read_answer(reader, True))[0] == b"HTTP/1.1 200 OK"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_client_that_does_not_read_stops_being_read(ports: Ports) -> None:
    """Requests piled up behind unread answers are not answered (nor buffered without bound)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ports.fast)
    writer.transport.set_write_buffer_limits(high=1 << 30)
    writer.write(req() * 300)  # ~60 MB of answers if all were queued
    await asyncio.sleep(0.5)
    queued = [c for c in ports.site._fast_connections if c._writing_paused]  # white box
    assert len(queued) == 1
    transport = queued[0]._transport
    assert transport is not None
    assert transport.get_write_buffer_size() <= limits.FAST_WRITE_HIGH_WATER + len(BODY) + 1024
    answers = [await read_answer(reader, False) for _ in range(300)]  # then it catches up
    assert {a[2] for a in answers} == {BODY}
    writer.close()


async def test_fast_answers_are_counted_like_aiohttps(ports: Ports) -> None:
    route = fastpath.ROUTES[2]

    def counts() -> tuple[float, float, float]:
        return (
            metrics.REQUESTS.labels(route, "200")._value.get(),
            metrics.REQUESTS.labels(route, "304")._value.get(),
            metrics.RESPONSE_BYTES.labels(route)._value.get(),
        )

    before = counts()
    await exchange(ports.fast, [req(), req(OLD, "If-None-Match: *"), req(method="HEAD")])
    after = counts()
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (2, 1, 2 * len(BODY))


async def test_a_request_that_cannot_be_the_fast_paths_is_answered_without_waiting(ports: Ports) -> None:
    """A TLS hello or a foreign method has no blank line to wait for: aiohttp rejects it at once,
    as it does on a port without the fast path (not the header timeout's silent close)."""
    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        b"BREW /pot HTCPCP/1.0\r\n",
    ):
        for port in (ports.fast, ports.plain):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(garbage)
                answer = await asyncio.wait_for(reader.read(64), 10)
            finally:
                writer.close()
            # A 400 (the header timeout would only close the connection, silently).
            assert re.match(rb"HTTP/1\.[01] 400 ", answer), (garbage[:8], port, answer)
