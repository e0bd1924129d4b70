"""Run one lnsync service in the foreground: what each container (or `lnsync up` child) runs.

Services: persistence, lookup, snapshotter, gateway, downloader (one peer per process),
peer-controller (Kubernetes only), random-peers (the observer's random peer set).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib

from lnsync import logs, rpc
from lnsync.config import load_settings

# service name -> module providing `async def main(settings) -> int`
SERVICES: dict[str, str] = {
    "persistence": "services.persistence.server",
    "lookup": "services.lookup.server",
    "snapshotter": "services.snapshotter.server",
    "gateway": "services.gateway.server",
    "downloader": "services.downloader.server",
    "peer-controller": "services.peer_controller.server",
    "random-peers": "services.observer.random_peers",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", choices=sorted(SERVICES), help="which service to run")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (overrides the config)")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus metrics address")
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL URL (overrides $LNSYNC_DATABASE_URL)"
    )
    parser.add_argument("--peer", metavar="PUBKEY@HOST:PORT", help="the peer (downloader only)")
    parser.add_argument("--network", help="bitcoin (mainnet), testnet, testnet4, signet or regtest")


def run(args: argparse.Namespace) -> int:
    section: dict[str, str] = {}
    if args.listen:
        section["listen"] = args.listen
    if args.metrics_listen:
        section["metrics_listen"] = args.metrics_listen
    if args.peer:
        if args.service != "downloader":
            raise SystemExit("lnsync serve: --peer only applies to the downloader")
        section["peer"] = args.peer
    overrides: dict[str, object] = {
        "log_level": args.log_level,
        "database_url": args.database_url,
        "network": args.network,
    }
    if section:
        name = "observer" if args.service == "random-peers" else args.service.replace("-", "_")
        overrides[name] = section
    settings = load_settings(args.config, **overrides)
    logs.configure(args.service, settings.log_level, settings.log_format)
    rpc.configure_tls(settings.tls)
    module = importlib.import_module(SERVICES[args.service])
    try:
        return int(asyncio.run(module.main(settings)))
    except KeyboardInterrupt:
        return 0
