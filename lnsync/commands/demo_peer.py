"""Run the demo gossip peer: a local Lightning node that serves a bundled real-topology graph,
re-timed to now, and keeps publishing fee changes (what ``lnsync up --demo`` downloads from).

It needs no internet. Its node id is fixed (derived from ``--identity``, so that a second demo peer
can have another); ``lnsync up --demo`` starts it and points a downloader at it.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from lnsync import logs, rpc
from lnsync.config import ConfigError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default="127.0.0.1:19735", metavar="HOST:PORT", help="gossip (BOLT 8) port"
    )
    parser.add_argument(
        "--health-listen", default="127.0.0.1:50080", metavar="HOST:PORT", help="gRPC health port"
    )
    parser.add_argument(
        "--state", type=Path, metavar="FILE", help="state file (default: DATA_DIR/demo-peer.gossip)"
    )
    parser.add_argument(
        "--dataset", type=Path, metavar="FILE", help="gossip to serve ([u16 length][message] records)"
    )
    parser.add_argument(
        "--identity",
        default="lnsync-demo-peer",
        metavar="NAME",
        help="name the node id is derived from (a second demo peer needs another one)",
    )
    parser.add_argument(
        "--print-address",
        action="store_true",
        help="print this peer's pubkey@host:port (from --identity and --listen) and exit",
    )
    parser.add_argument("--publish-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--updates-per-publish", type=int, default=3, metavar="N")


def run(args: argparse.Namespace) -> int:
    from services.demopeer.graph import DEFAULT_DATASET
    from services.demopeer.server import DemoPeerOptions, demo_peer_address, main

    if args.print_address:
        print(demo_peer_address(args.listen, args.identity))
        return 0

    settings = load_settings(args.config, log_level=args.log_level)
    rpc.configure_tls(settings.tls)  # its health service speaks what the others do
    logs.configure("demo-peer", settings.log_level, settings.log_format)
    if args.publish_interval <= 0 or args.updates_per_publish < 1:
        raise ConfigError("--publish-interval must be > 0 and --updates-per-publish at least 1")
    options = DemoPeerOptions(
        listen=args.listen,
        health_listen=args.health_listen,
        state=args.state or settings.data_dir / "demo-peer.gossip",
        dataset=args.dataset or DEFAULT_DATASET,
        publish_interval=args.publish_interval,
        updates_per_publish=args.updates_per_publish,
        network=settings.network,
        identity=args.identity,
    )
    try:
        return asyncio.run(main(options))
    except KeyboardInterrupt:
        return 0
