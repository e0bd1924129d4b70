"""The life cycle every lnsync service process shares.

``run_service`` starts the gRPC server at once (so liveness probes pass while dependencies are
still coming up) and runs the service's main coroutine, which sets the health status to SERVING
once its dependencies are reachable; only services that watch a dependency set it back (which
ones, and what they watch: docs/architecture.md, "Health"). On SIGTERM or SIGINT it stops
everything cleanly: health goes NOT_SERVING, in-flight calls get a grace period, then background
work is cancelled and connections closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from lnsync import rpc
from lnsync.config import parse_listen
from lnsync.metrics import set_build_info

log = logging.getLogger(__name__)

# In-flight calls get this long to finish after SIGTERM (inside a Kubernetes pod's grace period,
# which also covers the chart's preStop pause); then they are cancelled and streams end, so clients
# such as the Ingest client reconnect to another replica and re-send what was unacknowledged.
GRACE_SECONDS = 5.0


class Service(Protocol):
    """What a service provides to :func:`run_service`."""

    @property
    def service_names(self) -> Sequence[str]:
        """Fully-qualified gRPC service names, e.g. ("lnsync.v1.Lookup",)."""

    def register(self, server: grpc.aio.Server) -> None:
        """Add the service's servicers to ``server``."""

    async def run(self, ready: ReadySignal) -> None:
        """Connect dependencies (retrying with backoff), call ``ready.set(True)``, and keep working
        until cancelled. Returning ends the process normally; raising ends it with an error."""

    async def close(self) -> None:
        """Release connections after ``run`` was cancelled."""


class ReadySignal:
    """Lets a service report readiness through the gRPC health service."""

    def __init__(self, health: Any, names: Sequence[str]) -> None:
        self._health = health
        self._names = names
        self.is_ready = False
        self._stopping = False

    async def set(self, ready: bool) -> None:
        if self._stopping:
            return  # (a database watch still running must not say SERVING again)
        if ready != self.is_ready:
            log.info("health: %s", "SERVING" if ready else "NOT_SERVING")
        self.is_ready = ready
        await rpc.set_serving(self._health, self._names, ready)

    async def stop(self) -> None:
        """NOT_SERVING for good: the process is stopping."""
        await self.set(False)
        self._stopping = True


def start_metrics_server(listen: str) -> None:
    """Expose Prometheus metrics over HTTP (``/metrics``) in a background thread."""
    if not listen:
        return
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    start_http_server(port, addr=host)
    log.info("metrics on http://%s/metrics", listen)


async def run_service(name: str, listen: str, service: Service, metrics_listen: str = "") -> int:
    """Serve ``service`` on ``listen`` until a signal arrives; return the process exit code."""
    server = rpc.make_server()
    service.register(server)
    health = rpc.add_health_and_reflection(server, service.service_names)
    ready = ReadySignal(health, service.service_names)
    await ready.set(False)
    try:
        port = rpc.add_port(server, listen)
    except RuntimeError as exc:
        log.error("cannot listen on %s: %s", listen, exc)
        return 2
    if port == 0:
        log.error("cannot listen on %s (address in use?)", listen)
        return 2
    await server.start()
    set_build_info(name)
    start_metrics_server(metrics_listen)
    log.info("%s listening on %s", name, listen)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    main = asyncio.create_task(service.run(ready), name=f"{name}-main")
    stopper = asyncio.create_task(stop.wait())
    code = 0
    try:
        done, _ = await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if main in done and not main.cancelled() and main.exception() is not None:
            log.error("%s failed: %s", name, main.exception(), exc_info=main.exception())
            code = 1
    finally:
        log.info("%s stopping", name)
        await ready.stop()
        await server.stop(GRACE_SECONDS)
        for task in (main, stopper):
            task.cancel()
        await asyncio.gather(main, stopper, return_exceptions=True)
        await service.close()
        log.info("%s stopped", name)
    return code
