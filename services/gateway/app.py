"""The gateway's HTTP applications: routes, handlers and the middleware that renders errors.

Two applications share one :class:`Gateway` per worker. The public one (``gateway.listen``, what
wallets and a CDN reach) serves the RGS routes (the URL shapes LDK clients use with the reference
server), with CORS, and the probes:

* ``/snapshot/<T>`` and ``/snapshot/v2/<T>``: the precomputed snapshot for last sync T (v1, v2);
* ``/delta/<T>`` and ``/delta/v2/<T>``: a delta computed now by lookup;
* ``/healthz`` and ``/readyz``.

The admin one (``gateway.admin_listen``, local or cluster-internal) serves the operator routes:
``/metrics``, ``/api/status``, ``/`` (status page) and ``/openapi.json``, and the probes too. On
the public port those are 404. Nothing is served from the filesystem: the page is read once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from lnsync.chain import chain_hash
from lnsync.chain import sources as chain_sources
from lnsync.config import Settings
from services.gateway import metrics, openapi
from services.gateway.blobs import cache_control, respond
from services.gateway.cors import Cors
from services.gateway.deltas import DynamicDeltas
from services.gateway.errors import HttpError
from services.gateway.shared import SharedFacts
from services.gateway.snapshots import SnapshotCache
from services.gateway.status import StatusCollector
from services.gateway.timestamps import BadTimestamp, parse_timestamp
from services.gateway.upstream import Upstreams
from services.gateway.volume import VolumeSampler, persistence_probe

log = logging.getLogger(__name__)

# Requests carry no body; headers and the request line are bounded by the parser settings below.
CLIENT_MAX_SIZE = 1024
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 64
# How long a starting worker waits for the snapshotter's current generation before it listens.
FIRST_LOAD_TIMEOUT = 15.0
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """The parts one worker process holds: upstream channels, the snapshot cache, dynamic deltas,
    status collection and the gossip volume sampler."""

    def __init__(self, settings: Settings, workers: int = 1, shared_folder: Path | None = None) -> None:
        self.settings = settings
        g = settings.gateway
        self.upstreams = Upstreams(settings)
        shared = SharedFacts(shared_folder)  # what every worker must answer alike
        stale = (g.cache_stale_while_revalidate, g.cache_stale_if_error)
        self.snapshots = SnapshotCache(
            self.upstreams.snapshots_stub,
            chain_hash(settings.network),
            cache_control(g.cache_max_age, g.cache_s_maxage, *stale),
        )
        self.deltas = DynamicDeltas(
            self.upstreams.lookup.remote,
            # gateway.max_dynamic bounds the whole gateway: each worker gets its share.
            max_concurrent=max(1, -(-g.max_dynamic // workers)),
            cache=(g.cache_max_age, g.cache_s_maxage, *stale),
            shared=shared,
        )
        self.cors = Cors(tuple(g.cors_origins))
        self.volume = VolumeSampler()
        self.volume.add_probe(*persistence_probe(self.upstreams.lookup_stub))
        self.chain = chain_sources.from_settings(settings.chain)
        self.status = StatusCollector(
            self.upstreams, self.snapshots, self.deltas, self.volume, self.chain, shared
        )
        self.page = resources.files("services.gateway").joinpath("status_page.html").read_bytes()
        self.openapi = json.dumps(openapi.document(), indent=1).encode()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, app: web.Application) -> None:
        # Load the current generation before the port opens (aiohttp binds after on_startup): a
        # restarted worker must not answer 503 for snapshots the one it replaces was serving.
        try:
            await asyncio.wait_for(self.snapshots.refresh(), FIRST_LOAD_TIMEOUT)
        except TimeoutError:
            log.warning(
                "no snapshot generation loaded within %.0f s; serving without one", FIRST_LOAD_TIMEOUT
            )
        self._tasks = [
            asyncio.create_task(self.snapshots.run(), name="snapshot-cache"),
            asyncio.create_task(self.volume.run(), name="volume-sampler"),
        ]

    async def close(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.deltas.close()
        await self.upstreams.close()
        if self.chain is not None:
            await self.chain.close()


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def _timestamp(request: web.Request) -> int:
    try:
        return parse_timestamp(request.match_info["timestamp"], time.time())
    except BadTimestamp as exc:
        raise HttpError(400, str(exc)) from None


def _snapshot(version: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY_KEY]
        return respond(request.headers, gw.snapshots.select(_timestamp(request), version))

    return handler


def _delta(version: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY_KEY]
        return respond(request.headers, await gw.deltas.get(_timestamp(request), version))

    return handler


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


def _json(body: Any, status: int = 200, retry_after: int | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store", **_NOSNIFF}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, indent=1))


async def readyz(request: web.Request) -> web.StreamResponse:
    ready, body = await request.app[GATEWAY_KEY].status.readiness()
    return _json(body, 200 if ready else 503, None if ready else 10)


async def api_status(request: web.Request) -> web.StreamResponse:
    return _json(await request.app[GATEWAY_KEY].status.status())


async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def index(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": _PAGE_CSP, **_NOSNIFF}
    return web.Response(body=request.app[GATEWAY_KEY].page, headers=headers)


async def openapi_json(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Type": "application/json", **_NOSNIFF}
    return web.Response(body=request.app[GATEWAY_KEY].openapi, headers=headers)


def _error(status: int, reason: str, retry_after: int | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store", **_NOSNIFF}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(status=status, text=reason + "\n", headers=headers)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render errors as one-line text, and count every answer by route and status."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except HttpError as exc:
        response = _error(exc.status, exc.reason, exc.retry_after)
    except web.HTTPException as exc:  # the router's 404 and 405
        response = _error(exc.status, exc.reason)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "GET, HEAD")
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path[:200])
        response = _error(500, "internal error")
    metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    metrics.REQUESTS.labels(route, str(response.status)).inc()
    if response.status == 200 and isinstance(response, web.Response) and response.body is not None:
        metrics.RESPONSE_BYTES.labels(route).inc(response.content_length or 0)
    return response


# The RGS routes: (path, handler); the only ones with CORS.
RGS_ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/snapshot/v2/{timestamp}", _snapshot(2)),
    ("/snapshot/{timestamp}", _snapshot(1)),
    ("/delta/v2/{timestamp}", _delta(2)),
    ("/delta/{timestamp}", _delta(1)),
)
_RGS_PATHS = frozenset(path for path, _ in RGS_ROUTES)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the CORS headers to every answer of an RGS route (errors too: a page must read a 429's
    Retry-After). Outside :func:`observe`, so it sees the answers that renders."""
    response = await handler(request)
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in _RGS_PATHS or request.method == "OPTIONS":
        return response
    policy = request.app[GATEWAY_KEY].cors
    response.headers.update(policy.headers(request.headers.get("Origin")))
    if policy.vary:
        vary = response.headers.get("Vary")
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    return response


async def preflight(request: web.Request) -> web.StreamResponse:
    """A browser's CORS preflight for an RGS route: 204, and the CORS headers if its origin may."""
    return web.Response(status=204, headers=request.app[GATEWAY_KEY].cors.preflight(request.headers))


def _app(gateway: Gateway, middlewares: list[Any]) -> web.Application:
    app = web.Application(middlewares=middlewares, client_max_size=CLIENT_MAX_SIZE)
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def build_app(gateway: Gateway) -> web.Application:
    """The public application; it starts and stops ``gateway`` (start it before the admin one)."""
    app = _app(gateway, [cors, observe])
    for path, handler in RGS_ROUTES:
        app.router.add_get(path, handler)
        if gateway.cors.enabled:
            app.router.add_route("OPTIONS", path, preflight)
    app.on_startup.append(gateway.start)
    app.on_cleanup.append(gateway.close)
    return app


def build_admin_app(gateway: Gateway) -> web.Application:
    """The operator application on the same ``gateway`` (which the public application runs)."""
    app = _app(gateway, [observe])
    r = app.router
    r.add_get("/metrics", metrics_endpoint)
    r.add_get("/api/status", api_status)
    r.add_get("/openapi.json", openapi_json)
    r.add_get("/", index)
    return app
