"""The gateway over real HTTP, in front of real lookup, snapshotter and persistence processes.

* An LDK client (the real one) fetches ``/snapshot/v2/0``, then ``/snapshot/v2/<returned T>`` from
  the next generation, and ends with the graph the store holds at that generation's time.
* Caching headers, 304, gzip (the snapshotter's bytes), HEAD, 400/404/405 and malformed requests.
* Dynamic deltas equal lookup's answers, identical requests are computed once, and more distinct
  computations than ``gateway.max_dynamic`` get 429 with Retry-After.
* With the snapshotter killed, the held generation is still served (and /readyz stays ready).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import time

import pytest

from lnsync import rpc
from lnsync.rgs.delta import compute_delta
from lnsync.rgs.encode import encode
from lnsync.rgs.model import DeltaParams
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from tests.gateway.conftest import (
    CACHE_MAX_AGE,
    GRANULARITY,
    INTERVAL,
    MAX_DYNAMIC,
    GatewayStack,
    get,
    raw_status,
    regenerate,
    wait_generation,
)
from tests.ldk import LdkRgsClient

pytestmark = pytest.mark.slow


async def test_ldk_client_syncs_through_the_gateway(synced: GatewayStack, ldk_client: LdkRgsClient) -> None:
    R1 = synced.reference_time
    status, headers, full = await get(f"{synced.base}/snapshot/v2/0")
    assert status == 200, full
    with ldk_client.new_graph("bitcoin") as graph:
        first = graph.apply(full, now=R1)
        assert first.accepted and first.timestamp == R1, first.error_message
        assert int(headers["X-RGS-Timestamp"]) == first.timestamp
        # The next generation, one interval later; the client asks with the timestamp it was given.
        R2 = R1 + INTERVAL
        generation = await regenerate(synced.stack, R2)
        await wait_generation(synced.admin, generation)
        synced.reference_time, synced.generation = R2, generation
        status, _, delta = await get(f"{synced.base}/snapshot/v2/{first.timestamp}")
        assert status == 200 and len(delta) < len(full)
        second = graph.apply(delta, now=R2)
        assert second.accepted and second.timestamp == R2, second.error_message
        got = graph.dump()
        status, _, nothing = await get(f"{synced.base}/snapshot/v2/{second.timestamp}")
        assert status == 200 and len(nothing) == 53  # "nothing new"
    # What the store holds at R2, computed by the engine in memory and read back by LDK.
    with ldk_client.new_graph("bitcoin") as reference:
        want = encode(compute_delta(synced.history.delta_input(0, R2), DeltaParams()), 2)
        assert reference.apply(want, now=R2).accepted
        expected = reference.dump()
    live = {s for s, c in expected.channels.items() if c.one_to_two and c.two_to_one}
    assert live and live <= set(got.channels)
    for scid in live:
        mine, theirs = got.channels[scid], expected.channels[scid]
        for a, b in ((mine.one_to_two, theirs.one_to_two), (mine.two_to_one, theirs.two_to_one)):
            assert a is not None and b is not None
            fields = ("fee_base_msat", "fee_proportional_millionths", "cltv_expiry_delta", "enabled")
            assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields], scid


async def test_snapshot_caching_headers_gzip_304_and_head(synced: GatewayStack) -> None:
    T = synced.reference_time - 2 * INTERVAL
    url = f"{synced.base}/snapshot/v2/{T}"
    status, h, body = await get(url)
    assert status == 200
    assert h["Content-Type"] == "application/octet-stream"
    assert int(h["Content-Length"]) == len(body)
    assert body[:4] == b"LDK\x02"
    etag = f'"{hashlib.sha256(body).hexdigest()}"'
    assert h["ETag"] == etag
    assert h["Cache-Control"].startswith(f"public, max-age={CACHE_MAX_AGE}, ")
    assert h["Vary"] == "Accept-Encoding"
    assert int(h["X-RGS-Timestamp"]) == synced.reference_time
    # Conditional requests: the matching tag (also weak, also in a list) gives 304 without a body.
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        status, h304, empty = await get(url, {"If-None-Match": inm})
        assert (status, empty, h304["ETag"]) == (304, b"", etag), inm
    status, _, again = await get(url, {"If-None-Match": '"something-else"'})
    assert (status, again) == (200, body)
    # gzip: the snapshotter's compressed bytes, their own tag; refused codings are respected.
    status, hz, zipped = await get(url, {"Accept-Encoding": "br, gzip;q=0.5"})
    assert status == 200 and hz["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == body and len(zipped) < len(body)
    assert hz["ETag"] == f'"{hashlib.sha256(body).hexdigest()}-gzip"'
    assert int(hz["Content-Length"]) == len(zipped)
    status, _, _ = await get(url, {"Accept-Encoding": "gzip", "If-None-Match": hz["ETag"]})
    assert status == 304
    for refuse in ("gzip;q=0", "identity", "br"):
        status, hi, plain = await get(url, {"Accept-Encoding": refuse})
        assert status == 200 and "Content-Encoding" not in hi and plain == body, refuse
    # HEAD: the same headers, no body.
    status, hh, nobody = await get(url, method="HEAD")
    assert status == 200 and nobody == b""
    assert (hh["Content-Length"], hh["ETag"], hh["X-RGS-Timestamp"]) == (
        str(len(body)),
        etag,
        str(synced.reference_time),
    )
    # v1 at the same URL shape the reference server uses.
    status, _, v1 = await get(f"{synced.base}/snapshot/{T}")
    assert status == 200 and v1[:4] == b"LDK\x01"


async def test_bad_timestamps_and_unknown_paths(synced: GatewayStack) -> None:
    future = int(time.time()) + 3600
    for bad in ("-1", "+1", "01", "1.5", "1e3", "abc", "4294967296", "99999999999", str(future), "%D9%A1"):
        for prefix in ("/snapshot/", "/snapshot/v2/", "/delta/", "/delta/v2/"):
            status, h, body = await get(synced.base + prefix + bad)
            assert status == 400, (prefix, bad, status)
            assert body.count(b"\n") == 1 and b"timestamp" in body
            assert h["Content-Type"].startswith("text/plain")
    unknown = ("/snapshot", "/snapshot/v3/1", "/snapshot/v2/1/", "/delta/v2/1/x", "/etc/passwd", "/../..//x")
    for path in unknown:
        status, _, _ = await get(synced.base + path)
        assert status in (400, 404), (path, status)
    status, h, _ = await get(f"{synced.base}/snapshot/v2/0", method="POST")
    assert status == 405


async def test_malformed_and_oversized_requests_are_4xx(synced: GatewayStack) -> None:
    port = synced.stack.ports["gateway"]
    oversized = [
        b"GET /snapshot/v2/" + b"1" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
        b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
    ]
    for request in oversized:
        status = await asyncio.to_thread(raw_status, port, request)
        assert 400 <= status < 500, (request[:60], status)
    garbage = [
        b"BREW /snapshot/v2/0 HTCPCP/1.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        b"GET /snapshot/v2/\x00\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ]
    for request in garbage:
        status = await asyncio.to_thread(raw_status, port, request)
        assert status == 0 or 400 <= status < 500, (request[:60], status)
    # A body on a GET is never read: the request is answered, the body ignored.
    ignored = b"GET /snapshot/v2/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100
    assert await asyncio.to_thread(raw_status, port, ignored) == 200
    # The gateway is still there and well.
    assert (await get(f"{synced.base}/healthz"))[0] == 200


async def test_dynamic_deltas_match_lookup_coalesce_and_are_bounded(synced: GatewayStack) -> None:
    T = synced.reference_time - 5 * 3600
    status, h, body = await get(f"{synced.base}/delta/v2/{T}")
    assert status == 200, body
    R = int(h["X-RGS-Timestamp"])
    assert R % GRANULARITY == 0 and time.time() >= R
    assert h["Cache-Control"].startswith(f"public, max-age={GRANULARITY}, s-maxage={GRANULARITY}, ")
    assert h["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    async with rpc.channel(synced.stack.target("lookup")) as ch:
        lookup = lookup_pb2_grpc.LookupStub(ch)
        _, direct = await rpc.join_chunks(
            lookup.ComputeDelta(
                lookup_pb2.ComputeDeltaRequest(last_sync_timestamp=T, version=2, reference_time=R), timeout=60
            )
        )
    assert body == direct

    async def counts() -> dict[str, float]:
        _, _, text = await get(f"{synced.admin}/metrics")
        found = re.findall(rb'lnsync_gateway_dynamic_total\{result="(\w+)"\} ([0-9.e+]+)', text)
        return {k.decode(): float(v) for k, v in found}

    # Identical requests at once: every answer the same, computed at most once per worker.
    T2 = T - 7
    before = await counts()
    answers = await asyncio.gather(*(get(f"{synced.base}/delta/v2/{T2}") for _ in range(12)))
    after = await counts()
    assert {a[0] for a in answers} == {200} and len({a[2] for a in answers}) == 1
    computed = after.get("computed", 0) - before.get("computed", 0)
    shared = sum(after.get(k, 0) - before.get(k, 0) for k in ("coalesced", "hit"))
    assert 1 <= computed <= 2 and shared == 12 - computed
    # Many distinct computations at once: beyond the bound the answer is 429 with Retry-After.
    results = await asyncio.gather(*(get(f"{synced.base}/delta/v2/{T - 100 - i}") for i in range(24)))
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0 and statuses.count(200) >= MAX_DYNAMIC
    assert all(r[1]["Retry-After"].isdigit() for r in results if r[0] == 429)


async def test_cached_snapshots_survive_a_killed_snapshotter(synced: GatewayStack) -> None:
    url = f"{synced.base}/snapshot/v2/{synced.reference_time - INTERVAL}"
    status, h, body = await get(url)
    assert status == 200
    snapshotter = next(p for p in synced.stack.processes if p.name == "snapshotter" and p.alive())
    snapshotter.kill()
    for _ in range(20):
        status, h2, again = await get(url)
        assert (status, again, h2["ETag"]) == (200, body, h["ETag"])
    deadline = time.monotonic() + 15
    while True:  # until the gateway has noticed: still ready, and it says what is degraded
        status, _, ready = await get(f"{synced.base}/readyz")
        assert status == 200
        if b'"snapshotter"' in ready:
            break
        assert time.monotonic() < deadline, ready
        await asyncio.sleep(0.3)
    status, _, again = await get(url)
    assert (status, again) == (200, body)
    await synced.stack.start_healthy("snapshotter")
    status, _, again = await get(url)
    assert (status, again) == (200, body)
