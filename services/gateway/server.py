"""Gateway: the public HTTP front (snapshots, dynamic deltas, health) and its admin listener.

``lnsync serve gateway`` runs ``gateway.workers`` worker processes that share the listening port
(``SO_REUSEPORT``: the kernel spreads connections over them), because one Python process cannot
fill a machine's cores with 200 kB responses. Each worker is a complete gateway
(:class:`services.gateway.app.Gateway`) with its own snapshot cache, on uvloop; the parent only
starts them, restarts one that dies, and stops them all on SIGTERM/SIGINT.

The admin listener (``gateway.admin_listen``: metrics, status, the status page) is served the
same way, by every worker on a second ``SO_REUSEPORT`` socket, rather than by one worker or the
parent: any worker can answer every admin route for the whole gateway (``/metrics`` merges all
workers' files, ``/api/status`` reads the same upstreams and generation), so the listener stays up
while one worker restarts, the workers stay alike, and the parent holds no gateway state of its own
(a snapshot cache there would cost another copy of every blob). The parent reserves both ports
first, so a port taken by someone else fails the start at once. The one folder the parent makes
for the workers holds their settings, their Prometheus files and what lookup's sync gate last
learned (:mod:`services.gateway.shared`), so /readyz answers alike on every worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from aiohttp import http_writer, web

from lnsync import logs, rpc
from lnsync.config import Settings, parse_listen
from lnsync.retry import Backoff
from lnsync.supervisor import Child, Supervisor
from services.gateway import limits
from services.gateway.app import (
    MAX_FIELD_SIZE,
    MAX_HEADERS,
    MAX_LINE_SIZE,
    Gateway,
    build_admin_app,
    build_app,
)
from services.gateway.fastpath import FastPath

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
# On SIGTERM a worker stops accepting at once (readiness probes then fail), lets requests in flight
# finish for up to this long (within STOP_TIMEOUT) and closes idle keep-alive connections.
DRAIN_SECONDS = 8.0
RESTART_DELAY = 1.0
# The parent's metrics folder (all workers' Prometheus files): <tmp>/<prefix><parent pid>-<random>.
METRICS_DIR_PREFIX = "lnsync-gateway-metrics-"
# A worker that fails this many times within a minute is not restarted again: the gateway exits.
MAX_QUICK_FAILURES = 5
# Open connections per worker on the admin listener (scrapers and operators, not the public).
ADMIN_MAX_CONNECTIONS = 64


async def serve(settings: Settings, workers: int, reuse_port: bool, shared_folder: Path | None = None) -> int:
    """Run one gateway worker on ``gateway.listen`` and ``gateway.admin_listen`` until SIGTERM/SIGINT
    (``shared_folder``: the folder its supervisor made for all workers)."""
    g = settings.gateway
    limits.install_log_filter()
    files = limits.raise_file_limit()
    if files < g.max_connections + ADMIN_MAX_CONNECTIONS + 64:
        log.warning(
            "open-files limit %d is below gateway.max_connections (%d): clients may be refused by the "
            "kernel before the cap answers 503", files, g.max_connections,
        )  # fmt: skip
    gateway = Gateway(settings, workers, shared_folder)
    # The public runner first: its start-up loads the snapshot generation, its clean-up closes
    # the gateway; the admin application only borrows it.
    runners = [
        _runner(build_app(gateway), g.header_timeout),
        _runner(build_admin_app(gateway), g.header_timeout),
    ]
    for runner in runners:
        await runner.setup()
    # The public port answers plain snapshot requests itself (services/gateway/fastpath.py).
    fast = FastPath(gateway.snapshots, gateway.cors)
    sites = [
        (g.listen, _site(runners[0], g.listen, g.max_connections, g.header_timeout, reuse_port, fast)),
        (
            g.admin_listen,
            _site(runners[1], g.admin_listen, ADMIN_MAX_CONNECTIONS, g.header_timeout, reuse_port),
        ),
    ]
    started: list[limits.LimitedSite] = []
    try:
        for listen, site in sites:
            try:
                await site.start()
            except OSError as exc:
                log.error("cannot listen on %s: %s", listen, exc)
                return 2
            started.append(site)
        log.info("gateway listening on http://%s (admin: http://%s)", g.listen, g.admin_listen)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("gateway draining: no new connections, %.0f s for requests in flight", DRAIN_SECONDS)
        return 0
    finally:
        for site in started:  # both ports stop accepting at once, then requests in flight finish
            await site.stop()
        # Answers of the fast path still being sent, beside aiohttp's requests in flight.
        drained = [asyncio.create_task(site.drained(DRAIN_SECONDS)) for site in started]
        for runner in reversed(runners):
            await runner.cleanup()
        await asyncio.gather(*drained)


def _runner(app: web.Application, header_timeout: float) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log=None,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        shutdown_timeout=DRAIN_SECONDS,
        keepalive_timeout=header_timeout,
    )


def _site(
    runner: web.AppRunner,
    listen: str,
    max_connections: int,
    header_timeout: float,
    reuse_port: bool,
    fast: FastPath | None = None,
) -> limits.LimitedSite:
    host, port = parse_listen(listen)
    return limits.LimitedSite(
        runner,
        host,
        port,
        max_connections=max_connections,
        grace=header_timeout,
        reuse_port=reuse_port,
        backlog=1024,
        fast=fast,
    )


def worker_main(argv: list[str]) -> int:  # pragma: no cover - runs in a worker process
    """One worker process (``python -m services.gateway.worker SETTINGS_FILE WORKERS INDEX``)."""
    settings_file, workers, index = argv[0], int(argv[1]), int(argv[2])
    settings = Settings.model_validate_json(Path(settings_file).read_text())
    logs.configure(f"gateway/{index}", settings.log_level, settings.log_format)
    rpc.configure_tls(settings.tls)  # a new interpreter: the parent's set-up is not inherited
    # uvloop: about 30 % more 200 kB responses per second than asyncio's own loop (bench_gateway).
    _write_headers_and_body_without_joining()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, workers, reuse_port=True, shared_folder=Path(settings_file).parent))


def _write_headers_and_body_without_joining() -> None:
    """Let aiohttp hand headers and body to the transport as two buffers (one ``writev``).

    On the Python versions whose asyncio ``writelines`` had a bug (before 3.12.9 / 3.13.2) aiohttp
    instead joins them into one new bytes object: a copy of every ~200 kB snapshot per request.
    The workers run on uvloop, whose transports implement ``writelines`` themselves, so the
    workaround does not apply to them. Only called in uvloop workers.
    """
    if hasattr(http_writer, "SKIP_WRITELINES"):
        http_writer.SKIP_WRITELINES = False


def _reserve_port(listen: str) -> socket.socket:
    """Bind (without listening) with SO_REUSEPORT so a port taken by someone else fails at once."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def _supervise(settings: Settings, workers: int) -> int:
    """Run ``workers`` worker processes under :class:`lnsync.supervisor.Supervisor` (restarted when
    they die; the gateway gives up when they keep dying, or at once on exit code 2, a bad setting)."""
    reserved: list[socket.socket] = []
    for listen in (settings.gateway.listen, settings.gateway.admin_listen):
        try:
            reserved.append(_reserve_port(listen))
        except OSError as exc:
            log.error("cannot listen on %s: %s", listen, exc)
            for sock in reserved:
                sock.close()
            return 2
    _remove_orphaned_metrics_dirs()
    metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")  # mode 0700
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    settings_file = Path(metrics_dir) / "settings.json"  # the workers' settings, not in their argv
    settings_file.write_text(settings.model_dump_json())
    failures: list[float] = []

    def mark_dead(pid: int, code: int) -> None:
        log.warning("gateway worker %d exited with %s", pid, code)
        _mark_dead(metrics_dir, pid)

    def give_up(child: Child, code: int) -> int | None:
        now = time.monotonic()
        failures[:] = [t for t in failures if now - t < 60] + [now]
        if len(failures) >= MAX_QUICK_FAILURES or code == 2:
            log.error("gateway workers keep failing; stopping")
            return 2 if code == 2 else 1
        return None

    async def alive() -> bool:
        return True

    children = [
        Child(
            f"gateway-{i}",
            [sys.executable, "-m", "services.gateway.worker", str(settings_file), str(workers), str(i)],
            dict(os.environ),
            alive,
            backoff=Backoff(RESTART_DELAY, RESTART_DELAY),
            on_exit=mark_dead,
        )
        for i in range(workers)
    ]
    supervisor = Supervisor(children, stop_timeout=STOP_TIMEOUT, give_up=give_up)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    code: int | None = 0
    try:
        await supervisor.start()
        log.info(
            "gateway: %d workers on http://%s (admin: http://%s)",
            workers, settings.gateway.listen, settings.gateway.admin_listen,
        )  # fmt: skip
        code = await supervisor.supervise()
    finally:
        await supervisor.stop()
        for sock in reserved:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("gateway stopped")
    return code or 0


def _remove_orphaned_metrics_dirs() -> list[str]:
    """Remove the metrics folders of gateways that died without cleaning up (kill -9): those named
    after a process that no longer exists, and owned by this user. The folders removed."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*"):
        pid_text = path.name[len(METRICS_DIR_PREFIX) :].split("-", 1)[0]
        try:
            if not pid_text.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        except OSError:
            continue  # gone meanwhile, or a live process of another user
    if removed:
        log.info("removed %d metrics folder(s) of gateways that were killed", len(removed))
    return removed


def _mark_dead(metrics_dir: str, pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


async def main(settings: Settings) -> int:
    return await _supervise(settings, settings.gateway.workers)
