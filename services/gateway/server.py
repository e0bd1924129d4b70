"""Gateway: the public HTTP front (snapshots, dynamic deltas, health, metrics, status)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from lnsync.config import Settings, parse_listen

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(settings: Settings) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


async def main(settings: Settings) -> int:
    host, port = parse_listen(settings.gateway.listen)
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("gateway listening on http://%s", settings.gateway.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0
