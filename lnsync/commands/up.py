"""Run the whole lnsync pipeline on this machine.

Starts PostgreSQL (an embedded server in the data directory unless --database-url is given), then
persistence, lookup, the snapshotter, one downloader per peer (and, with ``observer.random_peers``,
the observer's random peer set) and the gateway, each in its own
process talking gRPC on loopback. Ctrl-C (or SIGTERM) stops them all and PostgreSQL cleanly; the
data directory is kept, so the next `lnsync up` resumes where this one stopped.

--demo needs no internet: it also starts a local gossip peer serving a bundled real-topology graph
(934 mainnet channels, re-signed) that keeps publishing fee changes, and downloads from it alone.
Its data lives next to the normal data directory, in DATA_DIR-demo, unless --data-dir is given.

Progress (per-peer counts, sync state, snapshot generation) is a live view on a terminal, where the
services' logs go to DATA_DIR/logs/; otherwise it is log lines among the services' own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from lnsync import certs, db, logs, rpc
from lnsync.chain import normalize_network
from lnsync.config import ConfigError, Settings, load_settings, parse_listen
from lnsync.extras import MissingExtraError, require
from lnsync.pg import LocalPostgres, PostgresError
from lnsync.statusview import RunInfo, collect, gateway_url, render_table, render_text, summary
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
    parser.add_argument(
        "--admin-port",
        type=int,
        metavar="PORT",
        help="the gateway's admin port: status page, /api/status, /metrics (default 8081)",
    )
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="where the database and state live")
    parser.add_argument(
        "--database-url", metavar="URL", help="use this PostgreSQL instead of the embedded one"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="offline demo: a local peer serves a bundled real mainnet topology and keeps changing it",
    )
    parser.add_argument(
        "--plain", action="store_true", help="log lines instead of the live view, even on a terminal"
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="gRPC between the services without TLS (by default: mutual TLS with a certificate per "
        "service, made in DATA_DIR/tls); any local process could then store gossip",
    )


# What --demo changes for the services, unless the environment sets it: a local peer needs no
# minute of ingest lag, its dump settles at once, deltas may be asked for every few seconds, and
# one gateway worker serves one person.
DEMO_ENV = {
    "LNSYNC_GATEWAY__WORKERS": "1",
    "LNSYNC_INGEST_LAG": "5",
    "LNSYNC_DOWNLOADER__SYNC_SETTLE": "3",
    "LNSYNC_LOOKUP__TIMESTAMP_GRANULARITY": "5",
}
PROGRESS_EVERY = 2.0


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {
        "log_level": args.log_level,
        "network": args.network,
        "data_dir": args.data_dir,
        "database_url": args.database_url,
    }
    if args.peer:
        out["peers"] = args.peer
    gateway: dict[str, str] = {}
    if args.http_port is not None:
        gateway["listen"] = f"127.0.0.1:{args.http_port}"
    if args.admin_port is not None:
        gateway["admin_listen"] = f"127.0.0.1:{args.admin_port}"
    if gateway:
        out["gateway"] = gateway
    if args.demo:
        out.update(_demo_overrides(args))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo_overrides(args: argparse.Namespace) -> dict[str, object]:
    from services.demopeer.server import demo_peer_address

    if args.peer:
        raise ConfigError("--demo downloads from its own local peer only; drop --peer")
    if args.network and normalize_network(args.network) != "bitcoin":
        raise ConfigError("--demo serves mainnet gossip; drop --network")
    args.demo_listen = f"127.0.0.1:{_free_port()}"
    args.demo_health = f"127.0.0.1:{_free_port()}"
    return {"network": "bitcoin", "peers": [demo_peer_address(args.demo_listen)]}


def _demo_child(settings: Settings, env: dict[str, str], args: argparse.Namespace) -> Child:
    argv = python_argv(
        "demo-peer",
        "--listen", args.demo_listen,
        "--health-listen", args.demo_health,
        "--state", str(settings.data_dir / "demo-peer.gossip"),
    )  # fmt: skip
    return Child("demo-peer", argv, env, _grpc_health(args.demo_health))


def _child_env(settings: Settings, database_url: str, args: argparse.Namespace) -> dict[str, str]:
    """The environment every service process gets: the parent's, plus what `up` decided."""
    env = dict(os.environ)
    env["LNSYNC_DATABASE_URL"] = database_url
    env["LNSYNC_NETWORK"] = settings.network
    env["LNSYNC_DATA_DIR"] = str(settings.data_dir)
    env["LNSYNC_LOG_LEVEL"] = settings.log_level
    env["LNSYNC_PEERS"] = ",".join(str(p) for p in settings.peer_addresses)
    env["LNSYNC_GATEWAY__LISTEN"] = settings.gateway.listen
    env["LNSYNC_GATEWAY__ADMIN_LISTEN"] = settings.gateway.admin_listen
    if args.config:
        env["LNSYNC_CONFIG"] = str(Path(args.config).resolve())
    if args.demo:
        for key, value in DEMO_ENV.items():
            env.setdefault(key, value)
    return env


def _role(child: Child) -> str:
    """The certificate a child presents: its service's (all downloaders share one)."""
    return "downloader" if child.name.startswith("downloader-") else child.name


async def _secure(settings: Settings, args: argparse.Namespace, children: list[Child]) -> Path | None:
    """Mutual TLS between the children unless the operator chose otherwise: certificates per role
    in DATA_DIR/tls (made once), each child's own in its environment, ours (operator) for the
    health checks. Returns that directory, or None when the settings' TLS or plaintext is used."""
    if settings.tls.enabled:
        return None  # the operator's own certificates, shared by every service
    if args.plaintext:
        log.warning(
            "--plaintext: gRPC between the services is not authenticated; any local process can "
            "store gossip and regenerate snapshots"
        )
        return None
    directory = settings.data_dir / "tls"
    await asyncio.to_thread(certs.ensure, directory)
    for child in children:
        tls = certs.settings_for(directory, _role(child))
        child.env = {
            **child.env,
            "LNSYNC_TLS__ENABLED": "true",
            "LNSYNC_TLS__CERT_FILE": tls.cert_file,
            "LNSYNC_TLS__KEY_FILE": tls.key_file,
            "LNSYNC_TLS__CA_FILE": tls.ca_file,
            "LNSYNC_TLS__SERVER_NAME": tls.server_name,
        }
    rpc.configure_tls(certs.settings_for(directory, "operator"))
    return directory


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
    children: list[Child] = [
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
    if settings.observer.random_peers:
        # The observer's random peer set: one process running a downloader per chosen node.
        o = settings.observer
        argv = python_argv("serve", "random-peers")
        children.append(Child("random-peers", argv, env, _grpc_health(o.target)))
    children.append(
        Child("gateway", python_argv("serve", "gateway"), env, _http_health(settings.gateway.listen))
    )
    return children


def _downloader_targets(settings: Settings) -> dict[str, str]:
    host, base_port = parse_listen(settings.downloader.listen)
    return {str(p): f"{host}:{base_port + i}" for i, p in enumerate(settings.peer_addresses)}


def _ready_banner(run: RunInfo, data_dir: Path) -> list[str]:
    url, admin = run.gateway_url, run.status_url
    return [
        f"lnsync is ready. Status page: {admin}/ (the admin port; wallets use {url})",
        f"  curl -D - -o snapshot.bin {url}/snapshot/v2/0 && lnsync inspect snapshot.bin",
        f"  curl -o delta.bin {url}/delta/v2/<X-RGS-Timestamp>   (what changed since that snapshot)",
        f"  lnsync status --data-dir {data_dir}   (or: curl {admin}/api/status)",
    ]


class Progress:
    """Shows the stack's progress: a live view on a terminal, else a log line when something changes."""

    def __init__(self, run: RunInfo, data_dir: Path, live: Any | None) -> None:
        self.run = run
        self.data_dir = data_dir
        self.live = live
        self._last: dict[str, Any] = {}
        self._peer_lines: dict[str, tuple[str, float]] = {}
        self.ready = False

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            log.info("%s", line)

    async def watch(self) -> None:
        """Poll until cancelled. A failing poll is reported and the next one tried: the view must
        not go silent for the rest of the run because one answer was odd."""
        failing = False
        while True:
            try:
                self.show(await collect(self.run))
                failing = False
            except Exception:
                if not failing:
                    log.warning("progress view: could not read the stack's status", exc_info=True)
                failing = True
            await asyncio.sleep(PROGRESS_EVERY)

    def show(self, status: dict[str, Any]) -> None:
        facts = summary(status)
        last = self._last
        error = status.get("error")
        if error and error != last.get("error"):
            log.info("progress view: no status from the gateway yet (%s)", error)
        facts["error"] = error
        if facts["fully_synced"] and not last.get("fully_synced"):
            self.say(f"first full sync done: {facts['channels']} channels, {facts['nodes']} nodes")
        if facts["generation"] and facts["generation"] != last.get("generation"):
            self.say(f"serving snapshot generation {facts['generation']} (R={facts['reference_time']})")
        if facts["ready"] and not self.ready:
            self.ready = True
            for line in _ready_banner(self.run, self.data_dir):
                self.say(line)
        self._last = facts
        # The milestones above first: a rendering problem below must not hide them.
        if self.live is not None:
            self.live.update(render_table(status), refresh=True)
        else:
            self._log_peers(status)

    def _log_peers(self, status: dict[str, Any]) -> None:
        """One line per peer when its state changes, or every 30 s while its counts move."""
        now = time.monotonic()
        lines = render_text({**status, "downloaders": status.get("downloaders") or []})
        for line in (ln for ln in lines if ln.startswith("peer ")):
            peer = line.split()[1]
            state = line.split()[2]
            counts = line.split(";")[0]
            old = self._peer_lines.get(peer)
            if old is None or old[0].split()[2] != state or (old[0] != counts and now - old[1] >= 30):
                self._peer_lines[peer] = (counts, now)
                log.info("%s", line)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    pg: LocalPostgres | None = None
    url = settings.database_url
    if not url:
        try:
            pg = LocalPostgres(settings.data_dir / "pg")
            await asyncio.to_thread(pg.start)
            url = await asyncio.to_thread(pg.ensure_database)
        except PostgresError as exc:
            raise ConfigError(f"embedded PostgreSQL: {exc}") from None
    else:
        try:
            await db.check_connect(url)
        except Exception as exc:  # any connection failure is a configuration problem here
            raise ConfigError(f"cannot connect to the database at {logs.redact(url)}: {exc}") from None

    env = _child_env(settings, url, args)
    children = build_children(settings, env)
    if args.demo:
        children.insert(0, _demo_child(settings, env, args))
    tls_dir = await _secure(settings, args, children)
    live = None
    if sys.stdout.isatty() and not args.plain:
        log_dir = settings.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        for child in children:
            child.log_file = log_dir / f"{child.name}.log"
        from rich.live import Live

        live = Live(auto_refresh=False, transient=False)
    services = {
        "persistence": settings.persistence.target,
        "lookup": settings.lookup.target,
        "snapshotter": settings.snapshotter.target,
    }
    run = RunInfo(
        gateway_url(settings.gateway.listen),
        _downloader_targets(settings),
        os.getpid(),
        args.demo,
        str(tls_dir or ""),
        services,
        admin_url=gateway_url(settings.gateway.admin_listen),
    )
    run.write(settings.data_dir)
    supervisor = Supervisor(children)
    progress = Progress(run, settings.data_dir, live)
    loop = asyncio.get_running_loop()
    # SIGHUP too: closing the terminal must stop PostgreSQL and the services cleanly, not orphan them.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, supervisor.request_stop)
    watcher: asyncio.Task[None] | None = None
    try:
        if live is not None:
            live.start()
            progress.say(f"services log to {settings.data_dir / 'logs'}/; Ctrl-C stops everything")
        await supervisor.start()
        unhealthy = await supervisor.wait_healthy(HEALTH_TIMEOUT)
        if unhealthy:
            log.error("not healthy after %.0fs: %s", HEALTH_TIMEOUT, ", ".join(unhealthy))
        else:
            log.info(
                "all services healthy; gateway on %s/, status page on %s/ (Ctrl-C stops)",
                run.gateway_url, run.status_url,
            )  # fmt: skip
            progress.say(
                f"gateway on {run.gateway_url}/, status page on {run.status_url}/ - waiting for the "
                "first full sync and snapshots"
            )
        watcher = asyncio.create_task(progress.watch(), name="progress")
        await supervisor.supervise()
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        (settings.data_dir / "up.json").unlink(missing_ok=True)
        await supervisor.stop()
        if pg is not None:
            await asyncio.to_thread(pg.stop)
            log.info("PostgreSQL stopped")
        if live is not None:
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                live.stop()
    return 0


def _have_live_view() -> bool:
    """Whether rich (the [local] extra) is there to draw the live view; if not, say so."""
    try:
        require("rich.live", "lnsync up's live view")
    except MissingExtraError as exc:
        log.warning("%s; printing log lines instead", exc)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, **_overrides(args))
    if args.demo and args.data_dir is None:
        settings = settings.model_copy(
            update={"data_dir": settings.data_dir.with_name(settings.data_dir.name + "-demo")}
        )
    logs.configure("up", settings.log_level, settings.log_format)
    rpc.configure_tls(settings.tls)  # the health checks of the children
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if sys.stdout.isatty() and not args.plain and not _have_live_view():
        args.plain = True
    if sys.stdout.isatty() and not args.plain:
        # The live view owns the terminal: our own log lines go to a file, like the services'.
        (settings.data_dir / "logs").mkdir(exist_ok=True)
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(open(settings.data_dir / "logs" / "up.log", "a"))  # noqa: SIM115 - lives as long as the process
    return asyncio.run(_run(settings, args))
