"""The public port and the admin listener, and what a CDN and a browser get from the RGS routes.

Over real sockets, in front of real lookup, snapshotter and persistence processes:

* the public port answers 404 for every operator route and the admin listener serves them (and no
  RGS route); both answer the probes;
* every RGS route (snapshot v1/v2, delta v1/v2) carries the configured ``Cache-Control``
  directives, a ``Last-Modified`` every replica agrees on (the generation's publication, a delta's
  reference time), ``If-Modified-Since`` gives 304 (and ``If-None-Match`` takes precedence), and
  CORS headers on answers and errors, with the preflight answered;
* a gateway configured with a list of origins echoes only those and says ``Vary: Origin``;
* a gateway whose admin port is taken refuses to start.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import pytest

from tests.conftest import free_port
from tests.gateway.conftest import (
    CACHE_MAX_AGE,
    CACHE_S_MAXAGE,
    CACHE_STALE_IF_ERROR,
    CACHE_STALE_WHILE_REVALIDATE,
    GRANULARITY,
    INTERVAL,
    GatewayStack,
    get,
    wait_generation,
    wait_up,
)

pytestmark = pytest.mark.slow

OPERATOR_ROUTES = {
    "/metrics": "text/plain",
    "/api/status": "application/json",
    "/": "text/html",
    "/openapi.json": "application/json",
}
ORIGIN = "https://wallet.example"


def rgs_routes(synced: GatewayStack) -> dict[str, bool]:
    """Path -> whether it is a dynamic delta, for a timestamp inside the held generation's ladder."""
    T = synced.reference_time - 2 * INTERVAL
    return {f"/snapshot/{T}": False, f"/snapshot/v2/{T}": False, f"/delta/{T}": True, f"/delta/v2/{T}": True}


async def held(synced: GatewayStack) -> dict[str, Any]:
    """The snapshot generation the gateway holds, as its admin listener reports it (other tests
    move it on: a restarted snapshotter publishes one for now)."""
    status, _, body = await get(synced.admin + "/api/status")
    assert status == 200
    snapshots: dict[str, Any] = json.loads(body)["snapshots"]
    return snapshots


def directives(cache_control: str) -> dict[str, str]:
    out = {}
    for item in cache_control.split(","):
        name, _, value = item.strip().partition("=")
        out[name] = value
    return out


def http_time(value: str) -> int:
    return int(parsedate_to_datetime(value).timestamp())


async def test_operator_routes_are_only_on_the_admin_listener(synced: GatewayStack) -> None:
    for path, content_type in OPERATOR_ROUTES.items():
        for method in ("GET", "HEAD"):
            status, _, _ = await get(synced.base + path, method=method)
            assert status == 404, (path, method, status)
        status, h, _ = await get(synced.admin + path)
        assert status == 200 and h["Content-Type"].startswith(content_type), (path, status)
        assert "Access-Control-Allow-Origin" not in h, path
    _, _, text = await get(synced.admin + "/metrics")
    # The public 404s were counted, by a worker that may not be the one that answered the scrape.
    assert b'lnsync_gateway_requests_total{route="unmatched",status="404"}' in text
    assert (await held(synced))["generation"] >= synced.generation
    document = json.loads((await get(synced.admin + "/openapi.json"))[2])
    assert document["paths"]["/metrics"]["servers"][0]["description"].startswith("the admin listener")
    assert "servers" not in document["paths"]["/snapshot/v2/{timestamp}"]
    # Both answer the probes; the admin listener serves no wallet.
    for base in (synced.base, synced.admin):
        for probe in ("/healthz", "/readyz"):
            assert (await get(base + probe))[0] == 200, (base, probe)
    for path in rgs_routes(synced):
        assert (await get(synced.admin + path))[0] == 404, path


async def _revalidate(url: str, headers: dict[str, str]) -> tuple[int, Any, bytes, Any]:
    """GET ``url``, then GET it again with ``headers`` plus ``If-Modified-Since`` = its Last-Modified.
    Returns (status, headers, body) of the second and the first's headers. A dynamic delta's answer
    moves on with each granularity step: if it did in between, try again."""
    for _ in range(3):
        status, first, _ = await get(url, {"Origin": ORIGIN})
        assert status == 200, url
        lm = first["Last-Modified"]
        status, h, body = await get(url, {"Origin": ORIGIN, "If-Modified-Since": lm, **headers})
        if status == 304 or h.get("Last-Modified") == lm:
            return status, h, body, first
    raise AssertionError(f"{url}: the answer kept changing")


async def test_cache_last_modified_and_cors_on_every_rgs_route(synced: GatewayStack) -> None:
    published = (await held(synced))["generated_at"]
    for path, dynamic in rgs_routes(synced).items():
        url = synced.base + path
        status, h, body = await get(url, {"Origin": ORIGIN})
        assert status == 200, (path, body)
        # Cache-Control: the configured directives; a delta at most one granularity step.
        cc = directives(h["Cache-Control"])
        fresh = (min(GRANULARITY, CACHE_MAX_AGE), min(GRANULARITY, CACHE_S_MAXAGE))
        if not dynamic:
            fresh = (CACHE_MAX_AGE, CACHE_S_MAXAGE)
        assert cc == {
            "public": "",
            "max-age": str(fresh[0]),
            "s-maxage": str(fresh[1]),
            "stale-while-revalidate": str(CACHE_STALE_WHILE_REVALIDATE),
            "stale-if-error": str(CACHE_STALE_IF_ERROR),
        }, path
        # Last-Modified: a delta's reference time (its X-RGS-Timestamp), a snapshot's publication.
        modified = http_time(h["Last-Modified"])
        assert modified == (int(h["X-RGS-Timestamp"]) if dynamic else published), path
        assert modified <= time.time()
        # CORS on the answer: any origin, and the headers a page may read.
        assert h["Access-Control-Allow-Origin"] == "*"
        exposed = {v.strip() for v in h["Access-Control-Expose-Headers"].split(",")}
        assert {"ETag", "X-RGS-Timestamp"} <= exposed
        assert "Origin" not in h["Vary"]  # "*": one cached copy for every origin
        # If-Modified-Since at Last-Modified (or later): 304 with the validators, no body.
        status, h304, empty, first = await _revalidate(url, {})
        assert (status, empty) == (304, b""), path
        for name in ("ETag", "Last-Modified", "Cache-Control", "Access-Control-Allow-Origin"):
            assert h304[name] == first[name], (path, name)
        later = formatdate(http_time(first["Last-Modified"]) + 3600, usegmt=True)
        assert (await get(url, {"If-Modified-Since": later}))[0] == 304, path
        assert (await get(url, {"If-Modified-Since": later}, method="HEAD"))[0] == 304, path
        # Earlier than Last-Modified, or a date that does not parse: the whole answer.
        earlier = formatdate(http_time(first["Last-Modified"]) - 1, usegmt=True)
        for value in (earlier, "yesterday", ""):
            status, _, again = await get(url, {"If-Modified-Since": value})
            assert status == 200 and again, (path, value)
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2): a tag that does not match
        # means 200 even though the date would give 304.
        status, _, _, _ = await _revalidate(url, {"If-None-Match": '"another"'})
        assert status == 200, path
        # The preflight a browser sends before a conditional GET.
        preflight = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match",
        }
        status, hp, nothing = await get(url, preflight, method="OPTIONS")
        assert (status, nothing) == (204, b""), path
        assert hp["Access-Control-Allow-Origin"] == "*"
        assert {m.strip() for m in hp["Access-Control-Allow-Methods"].split(",")} == {"GET", "HEAD"}
        assert "if-none-match" in hp["Access-Control-Allow-Headers"].lower()
        assert int(hp["Access-Control-Max-Age"]) > 0
    # Errors of the RGS routes carry CORS too (a page must be able to read a 400 or a 429).
    status, h, _ = await get(synced.base + "/snapshot/v2/abc", {"Origin": ORIGIN})
    assert status == 400 and h["Access-Control-Allow-Origin"] == "*"
    # Not on the other routes: no CORS headers, no preflight.
    status, h, _ = await get(synced.base + "/readyz", {"Origin": ORIGIN})
    assert status == 200 and "Access-Control-Allow-Origin" not in h
    assert (await get(synced.base + "/healthz", {"Origin": ORIGIN}, method="OPTIONS"))[0] == 405


async def test_a_list_of_origins_is_echoed_and_varies(synced: GatewayStack) -> None:
    port, admin = free_port(), free_port()
    allowed = "http://localhost:3000"
    env = {
        "LNSYNC_GATEWAY__LISTEN": f"127.0.0.1:{port}",
        "LNSYNC_GATEWAY__ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "LNSYNC_GATEWAY__WORKERS": "1",
        "LNSYNC_GATEWAY__CORS_ORIGINS": f"{ORIGIN}, {allowed}",
    }
    other = synced.stack.start("gateway", env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_up(base)
        await wait_generation(f"http://127.0.0.1:{admin}", (await held(synced))["generation"])
        url = f"{base}/snapshot/v2/0"
        for origin in (ORIGIN, allowed):
            status, h, _ = await get(url, {"Origin": origin})
            assert status == 200 and h["Access-Control-Allow-Origin"] == origin
            assert {v.strip() for v in h["Vary"].split(",")} == {"Accept-Encoding", "Origin"}
        status, h, _ = await get(url, {"Origin": "https://elsewhere.example"})
        assert status == 200 and "Access-Control-Allow-Origin" not in h and "Origin" in h["Vary"]
        asks = {"Access-Control-Request-Method": "GET"}
        status, h, _ = await get(url, {"Origin": allowed, **asks}, method="OPTIONS")
        assert status == 204 and h["Access-Control-Allow-Origin"] == allowed and h["Vary"] == "Origin"
        status, h, _ = await get(url, {"Origin": "https://elsewhere.example", **asks}, method="OPTIONS")
        assert status == 204 and "Access-Control-Allow-Origin" not in h
    finally:
        assert other.stop() == 0, other.log()[-3000:]


async def test_a_taken_admin_port_stops_the_start(synced: GatewayStack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        env = {
            "LNSYNC_GATEWAY__LISTEN": f"127.0.0.1:{free_port()}",
            "LNSYNC_GATEWAY__ADMIN_LISTEN": f"127.0.0.1:{busy}",
            "LNSYNC_GATEWAY__WORKERS": "1",
        }
        gateway = synced.stack.start("gateway", env=env)
        code = await asyncio.to_thread(gateway.proc.wait, 30)
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{busy}" in gateway.log()


async def test_snapshot_answers_ask_shared_caches_for_the_ladder_urls(synced: GatewayStack) -> None:
    """What makes a CDN's hit rate high: the URLs clients ask for are few. A client sends back the
    X-RGS-Timestamp it was given, which for snapshots is the generation's reference time, so every
    client that synced from one generation asks for the same URL."""
    _, h0, _ = await get(f"{synced.base}/snapshot/v2/0")
    _, h1, _ = await get(f"{synced.base}/snapshot/v2/{h0['X-RGS-Timestamp']}")
    assert int(h0["X-RGS-Timestamp"]) == int(h1["X-RGS-Timestamp"]) == (await held(synced))["reference_time"]
    assert "s-maxage" in h0["Cache-Control"] and "s-maxage" in h1["Cache-Control"]
    # Every worker (each request may reach another) says the same Last-Modified.
    modified = {(await get(f"{synced.base}/snapshot/v2/0"))[1]["Last-Modified"] for _ in range(6)}
    assert len(modified) == 1
