"""Run the whole lnsync pipeline on this machine.

Starts PostgreSQL (an embedded server in the data directory unless --database-url is given), then
persistence, lookup, the snapshotter, one downloader per peer and the gateway, each in its own
process talking gRPC on loopback. Ctrl-C (or SIGTERM) stops them all and PostgreSQL cleanly; the
data directory is kept, so the next `lnsync up` resumes where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

import aiohttp

from lnsync import db, logs, rpc
from lnsync.config import ConfigError, Settings, load_settings, parse_listen
from lnsync.pg import LocalPostgres, PostgresError
from lnsync.supervisor import Child, HealthCheck, Supervisor, python_argv

log = logging.getLogger("lnsync.up")

HEALTH_TIMEOUT = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--network", help="bitcoin (default), testnet, testnet4, signet or regtest")
    parser.add_argument(
        "--peer",
        action="append",
        metavar="PUBKEY@HOST:PORT",
        help="a peer to download gossip from (repeatable)",
    )
    parser.add_argument("--http-port", type=int, metavar="PORT", help="gateway port (default 8080)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="where the database and state live")
    parser.add_argument(
        "--database-url", metavar="URL", help="use this PostgreSQL instead of the embedded one"
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {
        "log_level": args.log_level,
        "network": args.network,
        "data_dir": args.data_dir,
        "database_url": args.database_url,
    }
    if args.peer:
        out["peers"] = args.peer
    if args.http_port is not None:
        out["gateway"] = {"listen": f"127.0.0.1:{args.http_port}"}
    return out


def _child_env(settings: Settings, database_url: str, args: argparse.Namespace) -> dict[str, str]:
    """The environment every service process gets: the parent's, plus what `up` decided."""
    env = dict(os.environ)
    env["LNSYNC_DATABASE_URL"] = database_url
    env["LNSYNC_NETWORK"] = settings.network
    env["LNSYNC_DATA_DIR"] = str(settings.data_dir)
    env["LNSYNC_LOG_LEVEL"] = settings.log_level
    env["LNSYNC_PEERS"] = ",".join(str(p) for p in settings.peer_addresses)
    env["LNSYNC_GATEWAY__LISTEN"] = settings.gateway.listen
    if args.config:
        env["LNSYNC_CONFIG"] = str(Path(args.config).resolve())
    return env


def _grpc_health(target: str) -> HealthCheck:
    async def check() -> bool:
        return await rpc.check_health(target, timeout=1.0)

    return check


def _http_health(listen: str) -> HealthCheck:
    host, port = parse_listen(listen)
    url = f"http://{host}:{port}/healthz"

    async def check() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    return check


def build_children(settings: Settings, env: dict[str, str]) -> list[Child]:
    children = [
        Child(
            "persistence", python_argv("serve", "persistence"), env, _grpc_health(settings.persistence.target)
        ),
        Child("lookup", python_argv("serve", "lookup"), env, _grpc_health(settings.lookup.target)),
        Child(
            "snapshotter", python_argv("serve", "snapshotter"), env, _grpc_health(settings.snapshotter.target)
        ),
    ]
    host, base_port = parse_listen(settings.downloader.listen)
    for i, peer in enumerate(settings.peer_addresses):
        listen = f"{host}:{base_port + i}"
        argv = python_argv("serve", "downloader", "--peer", str(peer), "--listen", listen)
        children.append(Child(f"downloader-{peer.node_id[:8]}", argv, env, _grpc_health(listen)))
    children.append(
        Child("gateway", python_argv("serve", "gateway"), env, _http_health(settings.gateway.listen))
    )
    return children


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    pg: LocalPostgres | None = None
    url = settings.database_url
    if not url:
        pg = LocalPostgres(settings.data_dir / "pg")
        try:
            await asyncio.to_thread(pg.start)
            url = await asyncio.to_thread(pg.ensure_database)
        except PostgresError as exc:
            raise ConfigError(f"embedded PostgreSQL: {exc}") from None
    else:
        try:
            await db.check_connect(url)
        except Exception as exc:  # any connection failure is a configuration problem here
            raise ConfigError(f"cannot connect to the database at {logs.redact(url)}: {exc}") from None

    supervisor = Supervisor(build_children(settings, _child_env(settings, url, args)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    try:
        await supervisor.start()
        unhealthy = await supervisor.wait_healthy(HEALTH_TIMEOUT)
        if unhealthy:
            log.error("not healthy after %.0fs: %s", HEALTH_TIMEOUT, ", ".join(unhealthy))
        else:
            host, port = parse_listen(settings.gateway.listen)
            log.info("all services healthy; gateway on http://%s:%d/ (Ctrl-C stops)", host, port)
        await supervisor.supervise()
    finally:
        await supervisor.stop()
        if pg is not None:
            await asyncio.to_thread(pg.stop)
            log.info("PostgreSQL stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, **_overrides(args))
    logs.configure("up", settings.log_level, settings.log_format)
    rpc.configure_tls(settings.tls)  # the health checks of the children
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(settings, args))
